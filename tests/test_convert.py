"""One source item to store-ready sequences (data_catalog.convert), on synthetic inputs.

BVH items are written from :func:`mocap_core.procedural.procedural_walk`, a skeleton with the
Bandai-Namco joint names, by :func:`walk_bvh_text` below (also used by the flow tests).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from data_catalog.convert import CONTACT_HEIGHT_M, MIN_SEQUENCE_FRAMES, convert_item
from data_catalog.readers import READERS, check_reader_options
from data_catalog.sources import ItemBytes, ItemRef
from data_catalog.types import ReaderError
from mocap_core.joint_sets import get_joint_set
from mocap_core.procedural import procedural_walk
from mocap_core.rotations import matrix_to_euler
from mocap_core.skeleton_mapping import apply_mapping, get_skeleton_mapping

BVH_OPTIONS = {"skeleton": "bandai_namco", "units": "cm", "up_axis": "y"}
UNIT_SCALE = {"cm": 100.0, "m": 1.0}


def walk_bvh_text(
    num_frames: int = 40,
    *,
    seed: int = 0,
    fps: float = 30.0,
    units: str = "cm",
    lift_m: float = 0.0,
    teleport: tuple[int, float] | None = None,
    rename: Mapping[str, str] | None = None,
    frames_declared: int | None = None,
) -> str:
    """A procedural walk written as BVH text with the Bandai-Namco joint names.

    Root and ``Hips`` carry 6 channels (positions then ``Zrotation Xrotation Yrotation``),
    the other joints 3 rotation channels; leaves get an End Site.

    Args:
        num_frames: frames of the walk.
        seed: walker variation seed.
        fps: frame rate written as ``Frame Time``.
        units: ``"cm"`` or ``"m"``, the file's length unit.
        lift_m: metres added to the root's height in every frame (off the ground).
        teleport: ``(frame, metres)``: from that frame on the root is shifted along x.
        rename: joint name replacements (an unknown skeleton).
        frames_declared: the ``Frames:`` count written (default ``num_frames``).
    """
    walk = procedural_walk(num_frames, fps=fps, seed=seed)
    names = [(rename or {}).get(n, n) for n in walk.joint_names]
    parents = walk.parents
    scale = UNIT_SCALE[units]
    translations = walk.local_translations.copy()
    translations[:, 0] = walk.root_translation
    translations[:, 0, 1] += lift_m
    if teleport is not None:
        translations[teleport[0] :, 0, 0] += teleport[1]
    translations *= scale
    euler = matrix_to_euler(walk.local_rotations, "ZXY", degrees=True)
    six_channels = {0} | set(np.flatnonzero(walk.translated_joints).tolist())
    order: list[int] = []
    lines = ["HIERARCHY"]

    def joint(index: int, depth: int) -> None:
        pad = "  " * depth
        keyword = "ROOT" if parents[index] < 0 else "JOINT"
        offset = walk.offsets[index] * scale
        lines.extend(
            [
                f"{pad}{keyword} {names[index]}",
                pad + "{",
                f"{pad}  OFFSET {offset[0]:.6f} {offset[1]:.6f} {offset[2]:.6f}",
            ]
        )
        if index in six_channels:
            channels = "6 Xposition Yposition Zposition Zrotation Xrotation Yrotation"
        else:
            channels = "3 Zrotation Xrotation Yrotation"
        lines.append(f"{pad}  CHANNELS {channels}")
        order.append(index)
        children = [c for c in range(len(names)) if parents[c] == index]
        for child in children:
            joint(child, depth + 1)
        if not children:
            lines.extend(
                [
                    f"{pad}  End Site",
                    pad + "  {",
                    f"{pad}    OFFSET 0 {0.05 * scale:.4f} 0",
                    pad + "  }",
                ]
            )
        lines.append(pad + "}")

    joint(0, 0)
    declared = num_frames if frames_declared is None else frames_declared
    lines += ["MOTION", f"Frames: {declared}", f"Frame Time: {1.0 / fps:.8f}"]
    for t in range(num_frames):
        values: list[float] = []
        for index in order:
            if index in six_channels:
                values.extend(translations[t, index])
            values.extend(euler[t, index])
        lines.append(" ".join(f"{v:.6f}" for v in values))
    return "\n".join(lines) + "\n"


def item(key: str, data: bytes | str, sidecars: Mapping[str, bytes] | None = None) -> ItemBytes:
    """An item as streamed from a source."""
    raw = data.encode() if isinstance(data, str) else data
    return ItemBytes(ItemRef(key, len(raw)), raw, dict(sidecars or {}))


def convert_bvh(
    data: bytes | str,
    *,
    key: str = "walk.bvh",
    joint_sets: Sequence[str] = ("smpl22", "coco17"),
    fps: float = 30.0,
    options: Mapping[str, str] = BVH_OPTIONS,
    sidecars: Mapping[str, bytes] | None = None,
):
    return convert_item(
        item(key, data, sidecars), reader="bvh", options=options, joint_sets=joint_sets, fps=fps
    )


def walk_joints(joint_set: str, num_frames: int = 40, seed: int = 0) -> np.ndarray:
    """The procedural walk mapped onto ``joint_set``: ``(T, J, 3)`` metres, y-up, on y = 0."""
    walk = procedural_walk(num_frames, seed=seed)
    mapping = get_skeleton_mapping("bandai_namco", joint_set)
    joints, _ = apply_mapping(mapping, walk.joint_names, walk.positions, walk.global_rotations)
    return joints


def npz_bytes(**arrays: object) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


# ------------------------------------------------------------------------------ 3D, BVH


def test_bvh_item_is_resampled_grounded_and_mapped() -> None:
    frames_60 = 81
    (sequence,) = convert_bvh(walk_bvh_text(frames_60, fps=60.0))
    # 80 intervals at 60 fps are 40 at 30 fps: frames 0, 2, ..., 80 of the source.
    assert sequence.num_frames == 41
    assert sequence.original_fps == 60.0
    smpl, coco = sequence.joints["smpl22"], sequence.joints["coco17"]
    assert smpl.shape == (41, 22, 3) and coco.shape == (41, 17, 3)
    assert smpl.dtype == np.float32
    # Grounded on the first joint set's feet: the 5th percentile of the lowest foot joint
    # per frame sits at the contact height.
    feet = get_joint_set("smpl22").foot_joints
    lowest = smpl[:, feet, 1].min(axis=1)
    assert np.percentile(lowest, 5) == pytest.approx(CONTACT_HEIGHT_M["smpl22"], abs=1e-4)
    # One vertical offset for both joint sets: both map Foot_L to their left ankle.
    smpl_names = get_joint_set("smpl22").joint_names
    coco_names = get_joint_set("coco17").joint_names
    np.testing.assert_allclose(
        smpl[:, smpl_names.index("left_ankle")], coco[:, coco_names.index("left_ankle")], atol=1e-6
    )
    # The resampled frames are the even source frames (linear resampling at exact times).
    walk60 = procedural_walk(frames_60, fps=60.0, seed=0)
    mapped, _ = apply_mapping(
        get_skeleton_mapping("bandai_namco", "smpl22"),
        walk60.joint_names,
        walk60.positions,
        walk60.global_rotations,
    )
    expected = mapped[::2] + np.array([0.0, smpl[0, 0, 1] - mapped[0, 0, 1], 0.0])
    np.testing.assert_allclose(smpl, expected, atol=1e-4)


def test_units_and_height_do_not_change_the_result() -> None:
    (cm,) = convert_bvh(walk_bvh_text(40, units="cm"))
    (metres,) = convert_bvh(
        walk_bvh_text(40, units="m", lift_m=1.5), options={**BVH_OPTIONS, "units": "m"}
    )
    for js in ("smpl22", "coco17"):
        np.testing.assert_allclose(cm.joints[js], metres.joints[js], atol=1e-4)


def test_derived_joints_are_valid_and_measured_flags_are_kept() -> None:
    (sequence,) = convert_bvh(walk_bvh_text(30))
    # Valid means derivable (DESIGN 4.1): face markers and interpolated spine2 included.
    for js in ("smpl22", "coco17"):
        assert sequence.valid[js].all()
        assert np.abs(sequence.joints[js]).sum(axis=(0, 2)).min() > 0  # none stored as 0
    measured = sequence.meta["measured"]
    coco_names = get_joint_set("coco17").joint_names
    smpl_names = get_joint_set("smpl22").joint_names
    derived_coco = {n for n, m in zip(coco_names, measured["coco17"], strict=True) if not m}
    derived_smpl = {n for n, m in zip(smpl_names, measured["smpl22"], strict=True) if not m}
    assert derived_coco == {"nose", "left_eye", "right_eye", "left_ear", "right_ear"}
    assert derived_smpl == {"spine2"}
    # The nose marker is above the shoulders (the head frame is placed correctly).
    nose = sequence.joints["coco17"][:, coco_names.index("nose")]
    shoulders = sequence.joints["coco17"][:, [5, 6]].mean(axis=1)
    assert (nose[:, 1] > shoulders[:, 1]).all()


def test_labels_sidecar_and_metadata() -> None:
    labels = {"content": 3, "style": 7}
    (sequence,) = convert_bvh(
        walk_bvh_text(30),
        options={**BVH_OPTIONS, "labels_sidecar": "json"},
        sidecars={".json": json.dumps(labels).encode()},
    )
    assert sequence.labels == labels
    assert sequence.meta["skeleton"] == "bandai_namco"
    assert sequence.source_key == "walk.bvh" and sequence.part == 0
    assert sequence.sequence_id == "walk.bvh#0"


def test_teleport_splits_and_short_runs_are_dropped() -> None:
    # A lasting 5 m jump at frame 30 breaks frame 30: runs 0-29 and 31-59.
    parts = convert_bvh(walk_bvh_text(60, teleport=(30, 5.0)))
    assert [(p.part, p.num_frames) for p in parts] == [(0, 30), (1, 29)]
    # Jump at frame 50: the run after it (9 frames) is too short and dropped.
    (only,) = convert_bvh(walk_bvh_text(60, teleport=(50, 5.0)))
    assert only.num_frames == 50
    assert MIN_SEQUENCE_FRAMES > 9


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (walk_bvh_text(10), "no clean run"),
        (walk_bvh_text(30, frames_declared=0), "zero frames"),
        (walk_bvh_text(30)[:-2000], r"truncated|values, expected \d+"),
        (walk_bvh_text(30).replace("MOTION", "MOTOIN"), "MOTION"),
        (walk_bvh_text(30, rename={"Hips": "pelvis_bone"}), "Hips"),
    ],
    ids=["too-short", "empty", "truncated", "malformed", "unknown-joint"],
)
def test_bad_bvh_raises_reader_error_naming_item(text: str, problem: str) -> None:
    with pytest.raises(ReaderError, match=problem) as error:
        convert_bvh(text, key="clips/bad.bvh")
    assert "clips/bad.bvh" in str(error.value)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_values_are_rejected(value: str) -> None:
    lines = walk_bvh_text(30).splitlines()
    motion = lines.index("MOTION") + 3
    numbers = lines[motion + 5].split()
    numbers[4] = value
    lines[motion + 5] = " ".join(numbers)
    with pytest.raises(ReaderError, match="non-finite") as error:
        convert_bvh("\n".join(lines) + "\n", key="x.bvh")
    assert "x.bvh" in str(error.value)


def test_unreadable_item_raises_its_source_error() -> None:
    broken = ItemBytes(ItemRef("a.bvh", 10), None, error="archive x.zip, member a.bvh: bad CRC")
    with pytest.raises(ReaderError, match="bad CRC"):
        convert_item(broken, reader="bvh", options={}, joint_sets=["smpl22"], fps=30.0)


# ------------------------------------------------------------------ 3D, joints arrays


def test_joints_array_item_and_missing_keys() -> None:
    joints = walk_joints("coco17", 40)
    good = npz_bytes(joints=joints, joint_set="coco17", fps=30.0)
    (sequence,) = convert_item(
        item("a.npz", good), reader="joints_array", options={}, joint_sets=["coco17"], fps=30.0
    )
    offset = sequence.joints["coco17"][0, 0, 1] - joints[0, 0, 1]
    np.testing.assert_allclose(sequence.joints["coco17"], joints + [0, offset, 0], atol=1e-5)
    assert sequence.meta["measured"]["coco17"] == [True] * 17
    wrong = npz_bytes(poses=joints, joint_set="coco17", fps=30.0)
    with pytest.raises(ReaderError, match=r"b\.npz.*missing key\(s\) \['joints'\]"):
        convert_item(
            item("b.npz", wrong), reader="joints_array", options={}, joint_sets=["coco17"], fps=30
        )


# ------------------------------------------------------------------------------ 2D


def walk_keypoints(num_frames: int = 40) -> np.ndarray:
    """``(T, 17, 3)`` COCO-17 pixels of the walk seen from the side, confidence 0.9."""
    joints = walk_joints("coco17", num_frames)
    u = 320.0 + 150.0 * joints[..., 2]
    v = 420.0 - 150.0 * joints[..., 1]
    return np.stack([u, v, np.full_like(u, 0.9)], axis=-1).astype(np.float32)


def test_tracks_npz_split_at_frame_gap_with_camera() -> None:
    keypoints = walk_keypoints(40)
    frame = np.r_[0:20, 25:45]  # frames 20-24 missing: two runs of 20
    keypoints[3, 4, 2] = 0.0  # one missing keypoint stays not valid
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    data = npz_bytes(keypoints=keypoints, joint_set="coco17", fps=30.0, frame=frame)
    parts = convert_item(
        item("t.npz", data),
        reader="tracks_npz",
        options={"width": 640, "height": 480, "K": K.tolist()},
        joint_sets=["coco17"],
        fps=30.0,
    )
    assert [p.num_frames for p in parts] == [20, 20]
    assert [p.meta["first_frame"] for p in parts] == [0, 25]
    first = parts[0]
    assert first.valid["coco17"][3, 4] == np.False_ and first.valid["coco17"].sum() == 20 * 17 - 1
    valid = first.valid["coco17"]
    np.testing.assert_allclose(
        first.joints["coco17"][valid][:, :2], keypoints[:20][valid][:, :2], atol=1e-3
    )
    assert (first.width, first.height) == (640, 480)
    np.testing.assert_allclose(first.K, K)


def test_tracks_npz_wrong_keys_and_wrong_store_joint_set() -> None:
    data = npz_bytes(points=walk_keypoints(20), fps=30.0)
    with pytest.raises(ReaderError, match=r"t\.npz.*missing key"):
        convert_item(
            item("t.npz", data), reader="tracks_npz", options={}, joint_sets=["coco17"], fps=30
        )
    good = npz_bytes(keypoints=walk_keypoints(20), joint_set="coco17", fps=30.0)
    with pytest.raises(ReaderError, match="smpl22"):
        convert_item(
            item("t.npz", good), reader="tracks_npz", options={}, joint_sets=["smpl22"], fps=30
        )


def openpose_zip(keypoints: np.ndarray) -> bytes:
    """A clip's OpenPose BODY_25 per-frame JSON files in a zip (COCO-17 -> BODY_25 slots)."""
    from data_catalog.readers.tracks2d import BODY25_TO_COCO17

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for t, frame in enumerate(keypoints):
            body = np.zeros((25, 3))
            body[list(BODY25_TO_COCO17)] = frame
            person = {"person_id": [-1], "pose_keypoints_2d": body.reshape(-1).tolist()}
            payload = json.dumps({"version": 1.3, "people": [person]})
            archive.writestr(f"clip/clip_{t:012d}_keypoints.json", payload)
    return buffer.getvalue()


def test_openpose_reader_reads_a_zipped_clip() -> None:
    keypoints = walk_keypoints(30)
    check_reader_options("openpose", {"fps": 30, "layout": "body25"})
    assert READERS["openpose"].kind == "2d"
    (sequence,) = convert_item(
        item("clips/clip.zip", openpose_zip(keypoints)),
        reader="openpose",
        options={"fps": 30, "layout": "body25"},
        joint_sets=["coco17"],
        fps=30.0,
    )
    assert sequence.num_frames == 30
    np.testing.assert_allclose(sequence.joints["coco17"], keypoints, atol=1e-4)
    with pytest.raises(ReaderError, match="clips/junk.zip"):
        convert_item(
            item("clips/junk.zip", b"PK\x03\x04 not really"),
            reader="openpose",
            options={},
            joint_sets=["coco17"],
            fps=30.0,
        )
