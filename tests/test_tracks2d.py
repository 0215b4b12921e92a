"""Tests for the 2D track readers: COCO results JSON, OpenPose JSON folders, tracks .npz."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from data_catalog.readers.tracks2d import (
    frame_number_from_name,
    read_coco_json,
    read_openpose_folder,
    read_tracks_npz,
)
from data_catalog.types import ReaderError
from mocap_core.joint_sets import COCO17

K = np.array([[1000.0, 0.0, 960.0], [0.0, 1000.0, 540.0], [0.0, 0.0, 1.0]])

# OpenPose's documented output orders, written out by name so that the reader's index tables
# are checked against names rather than against themselves.
BODY_25_NAMES = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip",
    "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
    "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel",
)  # fmt: skip
COCO_18_NAMES = (
    "Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "RHip",
    "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar",
)  # fmt: skip


def openpose_name(coco_name: str) -> str:
    """'left_shoulder' -> 'LShoulder', 'nose' -> 'Nose'."""
    if coco_name == "nose":
        return "Nose"
    side, part = coco_name.split("_")
    return ("L" if side == "left" else "R") + part.capitalize()


def coco_detection(frame, u0: float, score: float = 0.9, **extra) -> dict:
    kps = []
    for j in range(17):
        kps += [u0 + j, 2.0 * j, 0.5 + j / 40.0]
    return {"image_id": frame, "category_id": 1, "keypoints": kps, "score": score, **extra}


# ---------------------------------------------------------------- COCO results JSON


def test_coco_json_with_track_ids() -> None:
    dets = [coco_detection(f, 100.0 + f, track_id=7) for f in (2, 0, 1)]
    dets += [coco_detection(f"frames/clip_{f:06d}.jpg", 500.0, track_id=3) for f in (0, 1)]
    dets[0]["keypoints"][3 * 4 + 2] = 0.0  # right ear of track 7, frame 2 missing
    tracks = read_coco_json(
        json.dumps(dets).encode(), name="clip.json", fps=25.0, width=1920, height=1080, K=K
    )
    assert tracks.joint_set == "coco17" and tracks.fps == 25.0
    assert (tracks.width, tracks.height) == (1920, 1080)
    np.testing.assert_array_equal(tracks.K, K)
    np.testing.assert_array_equal(tracks.track_id, [3, 3, 7, 7, 7])
    np.testing.assert_array_equal(tracks.frame_index, [0, 1, 0, 1, 2])
    assert tracks.keypoints.shape == (5, 17, 3) and tracks.keypoints.dtype == np.float32
    np.testing.assert_allclose(tracks.keypoints[2:, 0, 0], [100.0, 101.0, 102.0])
    np.testing.assert_allclose(tracks.keypoints[0, :, 2], 0.5 + np.arange(17) / 40.0, rtol=1e-6)
    assert tracks.keypoints[4, 4, 2] == 0.0 and tracks.keypoints[4, 4, 0] == 0.0  # missing
    assert tracks.meta["confidence_mode"] == "score"
    assert set(tracks.tracks()) == {3, 7}


def test_coco_json_without_track_ids_ranks_by_score() -> None:
    dets = [
        coco_detection(0, 10.0, score=0.3),
        coco_detection(0, 20.0, score=0.8),
        coco_detection(1, 30.0, score=0.7),
        coco_detection(1, 40.0, score=0.05),
        {**coco_detection(1, 50.0), "category_id": 2},
    ]
    tracks = read_coco_json(
        json.dumps({"annotations": dets}).encode(), name="c.json", fps=30.0, min_detection_score=0.1
    )
    np.testing.assert_array_equal(tracks.track_id, [0, 0, 1])
    np.testing.assert_array_equal(tracks.frame_index, [0, 1, 0])
    np.testing.assert_allclose(tracks.keypoints[:, 0, 0], [20.0, 30.0, 10.0])
    assert tracks.meta["dropped_detections"] == {"not_person": 1, "low_score": 1}


def test_coco_visibility_flags_and_score_clipping() -> None:
    det = coco_detection(0, 0.0)
    flags = [2, 1, 0] * 5 + [2, 2]
    for j, v in enumerate(flags):
        det["keypoints"][3 * j + 2] = v
    tracks = read_coco_json(json.dumps([det]).encode(), name="gt.json", fps=30.0)
    assert tracks.meta["confidence_mode"] == "visibility"
    np.testing.assert_allclose(
        tracks.keypoints[0, :, 2], [{0: 0.0, 1: 0.5, 2: 1.0}[v] for v in flags]
    )
    # The same numbers read as scores are clipped into [0, 1].
    forced = read_coco_json(
        json.dumps([det]).encode(), name="gt.json", fps=30.0, confidence_mode="score"
    )
    np.testing.assert_allclose(forced.keypoints[0, :, 2], np.clip(flags, 0, 1))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty file"),
        (b'[{"image_id": 0, "keypoints": [1, 2', "malformed or truncated JSON"),
        (b"\xff\xfe\x00", "malformed"),
        (b'{"images": []}', "expected a list"),
        (b"[]", "empty sequence"),
        (json.dumps([{"image_id": 0, "keypoints": [0.0] * 50}]).encode(), "expected 51"),
        (json.dumps([{"image_id": 0, "score": 1.0}]).encode(), "no 'keypoints'"),
        (json.dumps([{"keypoints": [0.0] * 51}]).encode(), "no frame"),
        (
            json.dumps([{"image_id": "cover.jpg", "keypoints": [0.0] * 51}]).encode(),
            "no frame number",
        ),
        (
            json.dumps(
                [coco_detection(0, 1.0, track_id=1), coco_detection(0, 2.0, track_id=1)]
            ).encode(),
            "two detections",
        ),
        (
            json.dumps([coco_detection(0, 1.0, track_id=1), coco_detection(1, 2.0)]).encode(),
            "track_id",
        ),
        (json.dumps([coco_detection(0, 1.0)]).replace("1.0", "NaN", 1).encode(), "NaN or infinite"),
        (
            json.dumps([coco_detection(0, 1.0)]).replace("1.0", "Infinity", 1).encode(),
            "NaN or infinite",
        ),
    ],
)
def test_coco_bad_input(payload: bytes, message: str) -> None:
    with pytest.raises(ReaderError, match=message) as info:
        read_coco_json(payload, name="videos.zip:cam1/results.json", fps=30.0)
    assert "videos.zip:cam1/results.json" in str(info.value)


def test_coco_options_checked(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps([coco_detection(0, 1.0)]))
    assert read_coco_json(path, name=str(path), fps=30.0).keypoints.shape == (1, 17, 3)
    with pytest.raises(ReaderError, match="fps"):
        read_coco_json(path, name="r.json", fps=0.0)
    with pytest.raises(ReaderError, match="3x3"):
        read_coco_json(path, name="r.json", fps=30.0, K=np.eye(4))
    with pytest.raises(ReaderError, match="coco17"):
        read_coco_json(path, name="r.json", fps=30.0, joint_set="smpl22")


# ---------------------------------------------------------------- OpenPose


def openpose_frame(people: list[tuple[list[int] | None, np.ndarray]]) -> bytes:
    out = []
    for person_id, kps in people:
        person = {"pose_keypoints_2d": kps.reshape(-1).tolist(), "face_keypoints_2d": []}
        if person_id is not None:
            person["person_id"] = person_id
        out.append(person)
    return json.dumps({"version": 1.3, "people": out}).encode()


def openpose_person(num_points: int, offset: float) -> np.ndarray:
    kps = np.zeros((num_points, 3))
    kps[:, 0] = offset + np.arange(num_points)  # u encodes the source index
    kps[:, 1] = 100.0
    kps[:, 2] = 0.9
    return kps


@pytest.mark.parametrize(
    ("names", "layout"), [(BODY_25_NAMES, "body25"), (COCO_18_NAMES, "coco18")]
)
def test_openpose_layouts_map_to_coco17_by_name(names: tuple[str, ...], layout: str) -> None:
    files = {
        f"clip_{f:012d}_keypoints.json": openpose_frame(
            [(None, openpose_person(len(names), 1000.0))]
        )
        for f in range(3)
    }
    tracks = read_openpose_folder(files, name="clip.zip", fps=30.0)
    assert tracks.meta["openpose_layout"] == layout
    expected = [1000.0 + names.index(openpose_name(n)) for n in COCO17.joint_names]
    np.testing.assert_allclose(tracks.keypoints[0, :, 0], expected)
    np.testing.assert_array_equal(tracks.frame_index, [0, 1, 2])


def test_openpose_folder_people_and_tracking(tmp_path: Path) -> None:
    a, b = openpose_person(25, 0.0), openpose_person(25, 500.0)
    b[16, :] = 0.0  # LEye of person b not detected
    b[0, 2] = 1.02  # confidences are clipped into [0, 1]
    (tmp_path / "vid_000000000005_keypoints.json").write_bytes(
        openpose_frame([(None, a), (None, b)])
    )
    (tmp_path / "vid_000000000006_keypoints.json").write_bytes(openpose_frame([(None, a)]))
    (tmp_path / "vid_000000000007_keypoints.json").write_bytes(openpose_frame([]))
    (tmp_path / "notes.txt").write_text("not a frame")
    tracks = read_openpose_folder(tmp_path, name=str(tmp_path), fps=24.0, width=640, height=480)
    np.testing.assert_array_equal(tracks.track_id, [0, 0, 1])
    np.testing.assert_array_equal(tracks.frame_index, [5, 6, 5])
    assert tracks.keypoints[2, 1, 2] == 0.0  # left_eye (coco 1) of person b missing
    assert tracks.keypoints[2, 0, 2] == 1.0
    assert tracks.meta["num_files"] == 3 and (tracks.width, tracks.height) == (640, 480)

    # With person_id from OpenPose's tracker the ids are kept, whatever the order.
    files = {
        "f_0.json": openpose_frame([([4], a), ([9], b)]),
        "f_1.json": openpose_frame([([9], b), ([4], a)]),
    }
    tracked = read_openpose_folder(files, name="tracked.zip", fps=30.0)
    np.testing.assert_array_equal(tracked.track_id, [4, 4, 9, 9])
    np.testing.assert_allclose(tracked.keypoints[:, 0, 0], [0.0, 0.0, 500.0, 500.0])
    assert tracked.meta["track_id_source"] == ["person_id"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no OpenPose .json files"),
        ({"a_1.json": b"{"}, r"a_1\.json: malformed"),
        ({"a_1.json": b'{"people": 3}'}, "no 'people' list"),
        ({"cover.json": openpose_frame([])}, "no frame number"),
        ({"a_1.json": openpose_frame([]), "b_01.json": openpose_frame([])}, "frame 1 already read"),
        ({"a_1.json": openpose_frame([(None, np.zeros((20, 3)))])}, "match neither"),
        ({"a_1.json": openpose_frame([])}, "empty sequence"),
        ({"a_1.json": openpose_frame([([2], openpose_person(25, 0)), ([2], openpose_person(25, 9))])}, "repeated person_id"),
        ({"a_1.json": openpose_frame([(None, openpose_person(25, 0))]).replace(b"100.0", b"NaN", 1)}, "NaN or infinite"),
        ({"a_1.json": openpose_frame([(None, openpose_person(25, 0))]),
          "a_2.json": openpose_frame([(None, openpose_person(18, 0))])}, "mix OpenPose layouts"),
    ],
)  # fmt: skip
def test_openpose_bad_input(files: dict[str, bytes], message: str) -> None:
    with pytest.raises(ReaderError, match=message) as info:
        read_openpose_folder(files, name="takes.tar:take3", fps=30.0)
    assert "takes.tar:take3" in str(info.value)


def test_frame_number_from_name() -> None:
    assert frame_number_from_name("run2_000000000012_keypoints.json") == 12
    assert frame_number_from_name("dir7/000123.jpg") == 123
    assert frame_number_from_name("keypoints.json") is None


# ---------------------------------------------------------------- tracks .npz (DESIGN 4.3)


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_tracks_npz_round_trip() -> None:
    rng = np.random.default_rng(0)
    kps = np.concatenate([rng.uniform(0, 1000, (6, 22, 2)), rng.uniform(0, 1, (6, 22, 1))], axis=-1)
    kps[1, 3, 2] = 0.0
    data = npz_bytes(
        keypoints=kps,
        joint_set=np.array("smpl22"),
        fps=np.array(30.0),
        track_id=np.array([1, 0, 1, 0, 1, 0]),
        frame=np.array([10, 10, 11, 11, 12, 12]),
        K=K,
        width=np.array(1920),
        height=np.array(1080),
    )
    tracks = read_tracks_npz(data, name="clip.npz")
    assert tracks.joint_set == "smpl22" and tracks.fps == 30.0
    np.testing.assert_array_equal(tracks.track_id, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(tracks.frame_index, [10, 11, 12, 10, 11, 12])
    np.testing.assert_allclose(tracks.keypoints[3], kps[0], rtol=1e-6)
    assert tracks.keypoints[0, 3, 2] == 0.0 and tracks.keypoints[0, 3, 0] == 0.0
    np.testing.assert_array_equal(tracks.K, K)
    assert (tracks.width, tracks.height) == (1920, 1080)
    # Explicit options override the file's camera.
    other = read_tracks_npz(data, name="clip.npz", width=640, height=480)
    assert (other.width, other.height) == (640, 480)


def test_tracks_npz_without_frame_numbers_and_fps_option() -> None:
    kps = np.full((4, 17, 3), 0.5)
    tracks = read_tracks_npz(
        npz_bytes(keypoints=kps, joint_set=np.array("coco17")), name="c.npz", fps=25.0
    )
    np.testing.assert_array_equal(tracks.frame_index, [0, 1, 2, 3])
    assert tracks.fps == 25.0 and tracks.K is None
    nan = kps.copy()
    nan[2, 5, :] = np.nan
    data = npz_bytes(keypoints=nan, joint_set=np.array("coco17"), fps=np.array(30))
    with pytest.raises(ReaderError, match="NaN"):
        read_tracks_npz(data, name="nan.npz")
    read = read_tracks_npz(data, name="nan.npz", allow_nan=True)
    assert read.keypoints[2, 5, 2] == 0.0 and np.isfinite(read.keypoints).all()


GOOD = {
    "keypoints": np.full((3, 17, 3), 0.5),
    "joint_set": np.array("coco17"),
    "fps": np.array(30.0),
}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: b"", "empty file"),
        (lambda: b"PK\x03\x04 truncated", "truncated or corrupt"),
        (lambda: npz_bytes(**GOOD)[:-40], "truncated or corrupt"),
        (lambda: npz_bytes(keypoints=GOOD["keypoints"], fps=GOOD["fps"]), "missing key"),
        (lambda: npz_bytes(**{**GOOD, "joint_set": np.array("body_25")}), "unknown joint set"),
        (lambda: npz_bytes(**{**GOOD, "keypoints": np.full((3, 18, 3), 0.5)}), "18 joints"),
        (lambda: npz_bytes(**{**GOOD, "keypoints": np.zeros((0, 17, 3))}), "empty sequence"),
        (lambda: npz_bytes(**{**GOOD, "keypoints": np.full((3, 17, 3), 2.0)}), r"\[0, 1\]"),
        (lambda: npz_bytes(**{**GOOD, "keypoints": np.full((3, 17, 3), np.inf)}), "infinite"),
        (lambda: npz_bytes(**{**GOOD, "keypoints": np.full((3, 17, 2), 0.5)}), "shape"),
        (lambda: npz_bytes(**{**GOOD, "fps": np.array(-1.0)}), "positive"),
        (lambda: npz_bytes(**{**GOOD, "track_id": np.array([0, 1])}), "track_id"),
        (lambda: npz_bytes(**{**GOOD, "K": np.eye(2)}), "3x3"),
        (lambda: npz_bytes(**{**GOOD, "frame": np.array([0, 0, 1])}), "two detections"),
    ],
)
def test_tracks_npz_bad_input(make, message: str) -> None:
    with pytest.raises(ReaderError, match=message) as info:
        read_tracks_npz(make(), name="batch.tar:clip9.npz")
    assert "batch.tar:clip9.npz" in str(info.value)
