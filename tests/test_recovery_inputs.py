"""Tests for the discovery and loading of recovery inputs (DESIGN 4.3): clip kinds, ids,
camera precedence, folders / globs / archives, fingerprints and per-clip errors."""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from factories import make_tar, make_tree, make_zip

from data_catalog.recovery_inputs import (
    NO_CAMERA_REASON,
    ClipError,
    batch_clips,
    clip_fingerprint,
    clip_fingerprints,
    discover_clips,
    load_clip,
    load_clips,
)
from data_catalog.sources import SourceMissing
from data_catalog.types import Tracks2D


def camera(height_m: float, focal: float = 1000.0) -> dict:
    return {
        "width": 1280,
        "height": 720,
        "K": [[focal, 0.0, 640.0], [0.0, focal, 360.0], [0.0, 0.0, 1.0]],
        "height_m": height_m,
        "pitch_deg": 12.0,
        "roll_deg": 0.0,
    }


CAM_ROOT = camera(1.0)
CAM_RUN_FOLDER = camera(2.0)
CAM_CLIP_A = {  # the R, t form
    "width": 1280,
    "height": 720,
    "K": [[900.0, 0.0, 640.0], [0.0, 900.0, 360.0], [0.0, 0.0, 1.0]],
    "R": [[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]],
    "t": [0.0, 1.5, 4.0],
}
CAM_CLIP_C = camera(3.0)
CAM_RUN = camera(4.0)


def npz_bytes(num_frames: int = 8, *, joint_set: str = "coco17", fps: float = 25.0, **edit):
    rng = np.random.default_rng(num_frames)
    num_joints = {"coco17": 17, "smpl22": 22, "blazepose33": 33}[joint_set]
    keypoints = np.concatenate(
        [
            rng.uniform(0, 700, size=(num_frames, num_joints, 2)),
            rng.uniform(0.2, 1.0, size=(num_frames, num_joints, 1)),
        ],
        axis=-1,
    ).astype(np.float32)
    arrays = {"keypoints": keypoints, "joint_set": np.array(joint_set), "fps": np.array(fps)}
    arrays.update(edit)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def coco_bytes(num_frames: int = 5) -> bytes:
    detections = []
    for frame in range(num_frames):
        keypoints = []
        for j in range(17):
            keypoints += [100.0 + frame + j, 200.0 + 2 * j, 0.9]
        detections.append({"image_id": frame, "category_id": 1, "keypoints": keypoints})
    return json.dumps(detections).encode()


def openpose_frame(frame: int) -> bytes:
    values = []
    for j in range(25):
        values += [300.0 + j + frame, 100.0 + 3 * j, 0.8]
    return json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": values}]}).encode()


def tree_files() -> dict[str, bytes]:
    files = {
        "camera.json": json.dumps(CAM_ROOT).encode(),
        "walk/a.npz": npz_bytes(8),
        "walk/a.camera.json": json.dumps(CAM_CLIP_A).encode(),
        "walk/b.json": coco_bytes(5),
        "walk/c.npz": npz_bytes(6, joint_set="smpl22", fps=50.0),
        "walk/c_camera.json": json.dumps(CAM_CLIP_C).encode(),
        "run/camera.json": json.dumps(CAM_RUN_FOLDER).encode(),
        "run/deep/d.npz": npz_bytes(4),
        "video/e.MP4": b"\x00\x00\x00\x18ftypmp42 not really a video",
        "notes.txt": b"ignored",
        ".hidden/x.npz": npz_bytes(3),
    }
    for frame in range(3):
        files[f"run/op1/clip_{frame:012d}_keypoints.json"] = openpose_frame(frame)
    return files


EXPECTED = {  # clip id -> kind, camera key, scope
    "run/deep/d": ("npz", "run/camera.json", "folder"),
    "run/op1": ("openpose", "run/camera.json", "folder"),
    "video/e": ("video", "camera.json", "folder"),
    "walk/a": ("npz", "walk/a.camera.json", "clip"),
    "walk/b": ("coco_json", "camera.json", "folder"),
    "walk/c": ("npz", "walk/c_camera.json", "clip"),
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "clips", tree_files())


def by_id(refs) -> dict:
    return {ref.clip_id: ref for ref in refs}


# ---------------------------------------------------------------- discovery


def test_discover_folder_kinds_ids_and_cameras(tree: Path) -> None:
    refs = discover_clips(tree)
    assert [r.clip_id for r in refs] == sorted(EXPECTED)
    for ref in refs:
        kind, camera_key, scope = EXPECTED[ref.clip_id]
        assert (ref.kind, ref.camera_key, ref.camera_scope) == (kind, camera_key, scope)
        assert ref.problem is None
    refs = by_id(refs)
    assert refs["run/op1"].keys == tuple(f"run/op1/clip_{f:012d}_keypoints.json" for f in range(3))
    assert refs["walk/a"].location == str(tree / "walk" / "a.npz")
    assert refs["run/op1"].location == str(tree / "run" / "op1")
    assert pickle.loads(pickle.dumps(refs["walk/a"])) == refs["walk/a"]


def test_load_each_kind_with_its_camera(tree: Path) -> None:
    refs = by_id(discover_clips(tree))
    a = load_clip(refs["walk/a"], CAM_RUN)
    assert a.kind == "npz" and a.camera == CAM_CLIP_A and a.camera_scope == "clip"
    assert a.camera_source == str(tree / "walk" / "a.camera.json")
    assert a.fps == 25.0 and a.tracks.keypoints.shape == (8, 17, 3)
    # The camera file's intrinsics are the clip's.
    np.testing.assert_array_equal(a.tracks.K, np.asarray(CAM_CLIP_A["K"]))
    assert (a.tracks.width, a.tracks.height) == (1280, 720)
    np.testing.assert_allclose(a.camera_model.center, [0.0, 1.5, 4.0])
    assert a.require_camera() is a.camera_model

    b = load_clip(refs["walk/b"], CAM_RUN, default_fps=24.0)
    assert b.kind == "coco_json" and b.camera == CAM_ROOT and b.fps == 24.0
    np.testing.assert_allclose(b.tracks.keypoints[3, 0], [103.0, 200.0, 0.9], rtol=1e-6)

    c = load_clip(refs["walk/c"])
    assert c.tracks.joint_set == "smpl22" and c.fps == 50.0 and c.camera == CAM_CLIP_C

    op = load_clip(refs["run/op1"])
    assert op.kind == "openpose" and op.camera == CAM_RUN_FOLDER
    assert op.tracks.keypoints.shape == (3, 17, 3)
    np.testing.assert_array_equal(op.tracks.frame_index, [0, 1, 2])
    assert op.tracks.keypoints[1, 0, 0] == 301.0  # BODY_25 nose, frame 1

    d = load_clip(refs["run/deep/d"])
    assert d.camera == CAM_RUN_FOLDER and d.camera_scope == "folder"


def test_camera_precedence_clip_over_folder_over_run(tmp_path: Path) -> None:
    files = {
        "top/x.npz": npz_bytes(5),
        "top/sub/y.npz": npz_bytes(6),
        "top/sub/y.camera.json": json.dumps(CAM_CLIP_A).encode(),
        "top/sub/z.npz": npz_bytes(7),
        "top/sub/camera.json": json.dumps(CAM_RUN_FOLDER).encode(),
    }
    root = make_tree(tmp_path / "in", files)
    refs = by_id(discover_clips(root))
    x, y, z = (load_clip(refs[k], CAM_RUN) for k in ("top/x", "top/sub/y", "top/sub/z"))
    assert (x.camera, x.camera_scope, x.camera_source) == (CAM_RUN, "run", "run")
    assert (y.camera, y.camera_scope) == (CAM_CLIP_A, "clip")
    assert (z.camera, z.camera_scope) == (CAM_RUN_FOLDER, "folder")
    # A folder camera above the clip's folder still applies, and beats the run's.
    (root / "camera.json").write_text(json.dumps(CAM_ROOT))
    x = load_clip(by_id(discover_clips(root))["top/x"], CAM_RUN)
    assert (x.camera, x.camera_scope) == (CAM_ROOT, "folder")


def test_no_camera_is_flagged_not_raised(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "in", {"a.npz": npz_bytes(5)})
    (ref,) = discover_clips(root)
    assert ref.camera_key is None
    clip = load_clip(ref)
    assert clip.camera is None and clip.camera_model is None and not clip.has_camera
    assert clip.tracks.keypoints.shape == (5, 17, 3)
    with pytest.raises(ClipError, match="no camera") as caught:
        clip.require_camera()
    assert caught.value.reason == NO_CAMERA_REASON and caught.value.clip_id == "a"
    assert load_clip(ref, CAM_RUN).camera == CAM_RUN


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archives_give_the_same_clips_as_the_folder(tree: Path, tmp_path: Path, kind) -> None:
    files = tree_files()
    if kind == "zip":
        archive = make_zip(tmp_path / "clips.zip", files)
    else:
        archive = make_tar(tmp_path / "clips.tar.gz", files, compression="gz")
    from_folder = by_id(discover_clips(tree))
    from_archive = by_id(discover_clips(archive))
    assert set(from_archive) == set(EXPECTED)
    for clip_id, ref in from_archive.items():
        assert (ref.kind, ref.camera_key, ref.camera_scope) == EXPECTED[clip_id]
        assert ref.keys == from_folder[clip_id].keys
    assert from_archive["walk/a"].location == f"{archive}!/walk/a.npz"

    refs = [r for r in from_archive.values() if r.kind != "video"]
    loaded = load_clips(refs, CAM_RUN)
    for ref, clip in zip(refs, loaded, strict=True):
        expected = load_clip(from_folder[ref.clip_id], CAM_RUN)
        assert clip.clip_id == ref.clip_id and clip.camera == expected.camera
        np.testing.assert_array_equal(clip.tracks.keypoints, expected.tracks.keypoints)
        # The hash is of content, not of where it was read.
        assert clip.input_sha256 == expected.input_sha256
        assert clip.source_sha256 == expected.source_sha256


def test_glob_input_finds_cameras_outside_the_glob(tree: Path) -> None:
    refs = discover_clips(str(tree / "walk" / "*.npz"))
    assert [r.clip_id for r in refs] == ["a", "c"]
    assert [r.camera_key for r in refs] == ["a.camera.json", "c_camera.json"]
    deep = discover_clips(str(tree / "**" / "d.npz"))
    assert [(r.clip_id, r.camera_key) for r in deep] == [("run/deep/d", "run/camera.json")]
    assert load_clip(deep[0]).camera == CAM_RUN_FOLDER
    single = discover_clips(tree / "walk" / "b.json")
    assert [(r.clip_id, r.kind) for r in single] == [("b", "coco_json")]
    assert discover_clips(str(tree / "*.nothing")) == []


def test_ids_keep_extensions_when_they_collide_and_openpose_at_root(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "in", {"x.npz": npz_bytes(3), "x.json": coco_bytes(3)})
    assert [r.clip_id for r in discover_clips(root)] == ["x.json", "x.npz"]
    op = make_tree(
        tmp_path / "op_clip", {f"f_{i}_keypoints.json": openpose_frame(i) for i in (0, 1)}
    )
    (ref,) = discover_clips(op)
    assert (ref.clip_id, ref.kind, len(ref.keys)) == ("op_clip", "openpose", 2)
    assert load_clip(ref).tracks.keypoints.shape == (2, 17, 3)


def test_missing_input(tmp_path: Path) -> None:
    with pytest.raises(SourceMissing, match="does not exist"):
        discover_clips(tmp_path / "nothing")
    with pytest.raises(SourceMissing, match="does not exist"):
        discover_clips(str(tmp_path / "nothing" / "*.npz"))


# ---------------------------------------------------------------- per-clip errors


def test_broken_clips_raise_clip_errors_naming_them(tmp_path: Path) -> None:
    nan = np.full((4, 17, 3), np.nan, np.float32)
    files = {
        "camera.json": json.dumps(CAM_ROOT).encode(),
        "good.npz": npz_bytes(5),
        "nan.npz": npz_bytes(4, keypoints=nan),
        "joints.npz": npz_bytes(4, keypoints=np.ones((4, 12, 3), np.float32)),
        "garbage.npz": b"not an npz at all",
        "blaze.npz": npz_bytes(4, joint_set="blazepose33"),
        "dark.npz": npz_bytes(4, keypoints=np.zeros((4, 17, 3), np.float32)),
        "truncated.json": b'[{"image_id": 0, "keypoints": [1, 2',
        "badcam.npz": npz_bytes(4),
        "badcam.camera.json": json.dumps({"width": 10}).encode(),
        "twocams.npz": npz_bytes(4),
        "twocams.camera.json": json.dumps(CAM_ROOT).encode(),
        "twocams_camera.json": json.dumps(CAM_ROOT).encode(),
        "notjson.npz": npz_bytes(4),
        "notjson_camera.json": b"{oops",
    }
    root = make_tree(tmp_path / "in", files)
    refs = discover_clips(root)
    results = dict(zip([r.clip_id for r in refs], load_clips(refs), strict=True))
    assert not isinstance(results.pop("good"), ClipError)
    expected = {
        "nan": "NaN",
        "joints": "12 joints but 'coco17' has 17",
        "garbage": "npz",
        "blaze": "recovery takes coco17 or smpl22",
        "dark": "no keypoint has a confidence above 0",
        "truncated": "malformed or truncated JSON",
        "badcam": "bad camera .*missing key 'height'",
        "twocams": "two per-clip camera files",
        "notjson": "is not a JSON object",
    }
    assert set(results) == set(expected)
    for clip_id, pattern in expected.items():
        error = results[clip_id]
        assert isinstance(error, ClipError), clip_id
        assert str(error).startswith(f"clip {clip_id!r} ("), str(error)
        assert error.clip_id == clip_id
        assert re.search(pattern, error.reason), (clip_id, error.reason)
    with pytest.raises(ClipError, match="clip 'nan'.*NaN"):
        load_clip(by_id(refs)["nan"])
    copy = pickle.loads(pickle.dumps(results["nan"]))
    assert (copy.clip_id, copy.reason, str(copy)) == (
        "nan",
        results["nan"].reason,
        str(results["nan"]),
    )


def test_unreadable_archive_member_fails_only_its_clip(tmp_path: Path) -> None:
    from factories import corrupt_zip_member

    files = {"a.npz": npz_bytes(5), "b.npz": npz_bytes(6)}
    archive = make_zip(tmp_path / "in.zip", files, compress=False)
    corrupt_zip_member(archive, "a.npz")
    refs = discover_clips(archive)
    a, b = load_clips(refs, CAM_RUN)
    assert isinstance(a, ClipError) and "cannot read" in a.reason
    assert b.tracks.keypoints.shape == (6, 17, 3)
    prints = clip_fingerprints(refs, CAM_RUN)
    assert isinstance(prints["a"], ClipError) and prints["b"] == b.input_sha256


def test_videos_need_a_detector(tree: Path) -> None:
    ref = by_id(discover_clips(tree))["video/e"]
    with pytest.raises(ClipError, match=r"mocap2to3\[video\]"):
        load_clip(ref)
    seen = []

    def detector(data: bytes, name: str) -> Tracks2D:
        seen.append((data[:8], name))
        keypoints = np.full((3, 17, 3), 0.5, np.float32)
        zeros = np.zeros(3, np.int32)
        return Tracks2D(keypoints, np.arange(3, dtype=np.int32), zeros, "coco17", 30.0)

    clip = load_clip(ref, video_reader=detector)
    assert seen == [(b"\x00\x00\x00\x18ftyp", "video/e")]
    assert clip.kind == "video" and clip.camera == CAM_ROOT and clip.fps == 30.0


# ---------------------------------------------------------------- fingerprints and batches


def test_fingerprint_matches_load_and_tracks_bytes_and_camera(tree: Path) -> None:
    refs = discover_clips(tree)
    prints = clip_fingerprints(refs, CAM_RUN)
    for ref in refs:
        assert clip_fingerprint(ref, CAM_RUN) == prints[ref.clip_id]
        if ref.kind != "video":
            assert load_clip(ref, CAM_RUN).input_sha256 == prints[ref.clip_id]
    assert len(set(prints.values())) == len(refs)

    by = by_id(refs)
    # The run's camera matters only to clips that use it.
    root_cam = make_tree(tree.parent / "nocam", {"k.npz": npz_bytes(5)})
    (k,) = discover_clips(root_cam)
    assert clip_fingerprint(k, CAM_RUN) != clip_fingerprint(k, CAM_ROOT)
    assert clip_fingerprint(k, None) != clip_fingerprint(k, CAM_RUN)
    assert clip_fingerprint(by["walk/a"], CAM_ROOT) == prints["walk/a"]
    # Key order in the camera JSON does not matter; its values do.
    reordered = dict(reversed(list(CAM_RUN.items())))
    assert clip_fingerprint(k, reordered) == clip_fingerprint(k, CAM_RUN)
    # Editing the folder camera or the keypoints changes the fingerprint.
    (tree / "run" / "camera.json").write_text(json.dumps(camera(2.5)))
    assert clip_fingerprint(by["run/deep/d"]) != prints["run/deep/d"]
    assert clip_fingerprint(by["run/op1"]) != prints["run/op1"]
    (tree / "walk" / "a.npz").write_bytes(npz_bytes(9))
    assert clip_fingerprint(by["walk/a"]) != prints["walk/a"]


def test_batch_clips(tree: Path) -> None:
    refs = discover_clips(tree)
    batches = batch_clips(refs, 4)
    assert [len(b) for b in batches] == [4, 2]
    assert [r for b in batches for r in b] == refs
    assert batch_clips(refs, 100) == [refs] and batch_clips([], 3) == []
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="batch_size"):
            batch_clips(refs, bad)
