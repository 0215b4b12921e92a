"""Tests for the generic joints-array reader (.npz / .npy) and the shared npz helpers."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from data_catalog.readers.arrays import load_npz, read_joints_array
from data_catalog.types import ReaderError
from mocap_core.joint_sets import SMPL22


def npz_bytes(compressed: bool = False, **arrays) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def smpl_joints(num_frames: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(num_frames, 22, 3))


def test_npz_round_trip_with_measured_flags() -> None:
    joints = smpl_joints()
    measured = np.ones(22, bool)
    measured[[10, 11]] = False
    motion = read_joints_array(
        npz_bytes(
            joints=joints, joint_set=np.array("smpl22"), fps=np.array(50.0), measured=measured
        ),
        name="a.npz",
    )
    assert motion.fps == 50.0 and motion.num_frames == 5
    np.testing.assert_array_equal(motion.joints["smpl22"], joints)
    np.testing.assert_array_equal(motion.measured["smpl22"], measured)
    assert motion.local_rotations is None and motion.meta["source_format"] == "joints_npz"


def test_npy_with_options_units_and_up_axis(tmp_path: Path) -> None:
    joints = smpl_joints() * 100.0  # centimetres
    joints[:, SMPL22.index("head")] = [0.0, 0.0, 170.0]  # z-up source: head at 1.7 m
    joints[:, SMPL22.index("left_hip")] = [10.0, 0.0, 90.0]  # left on +x
    path = tmp_path / "mocap.npy"
    path.write_bytes(npy_bytes(joints))
    motion = read_joints_array(
        path, name=str(path), joint_set="smpl22", fps=120.0, units="cm", up_axis="z"
    )
    out = motion.joints["smpl22"]
    np.testing.assert_allclose(out[0, SMPL22.index("head")], [0.0, 1.7, 0.0], atol=1e-12)
    # A rotation, not a swap: x is untouched, so the left hip stays on +x.
    np.testing.assert_allclose(out[0, SMPL22.index("left_hip")], [0.1, 0.9, 0.0], atol=1e-12)
    np.testing.assert_allclose(out[..., 0], joints[..., 0] / 100.0)
    assert motion.meta["source_units"] == "cm" and motion.meta["source_up_axis"] == "z"


def test_coco_family_targets() -> None:
    coco = np.random.default_rng(1).normal(size=(4, 17, 3))
    data = npz_bytes(joints=coco, joint_set=np.array("coco17"), fps=np.array(30))
    motion = read_joints_array(data, name="c.npz", target_joint_sets=("coco17", "coco17_pelvis"))
    with_pelvis = motion.joints["coco17_pelvis"]
    np.testing.assert_allclose(with_pelvis[:, 0], coco[:, 11:13].mean(axis=1))
    np.testing.assert_array_equal(with_pelvis[:, 1:], coco)
    assert not motion.measured["coco17_pelvis"][0] and motion.measured["coco17_pelvis"][1:].all()
    back = read_joints_array(
        npz_bytes(joints=with_pelvis, joint_set=np.array("coco17_pelvis"), fps=np.array(30)),
        name="p.npz",
        target_joint_sets=("coco17",),
    )
    np.testing.assert_array_equal(back.joints["coco17"], coco)


def test_nan_allowed_on_request() -> None:
    joints = smpl_joints()
    joints[2, 4] = np.nan
    data = npz_bytes(joints=joints, joint_set=np.array("smpl22"), fps=np.array(30.0))
    with pytest.raises(ReaderError, match=r"NaN in 1 frame\(s\) \(first 2\)"):
        read_joints_array(data, name="n.npz")
    motion = read_joints_array(data, name="n.npz", allow_nan=True)
    assert np.isnan(motion.joints["smpl22"][2, 4]).all()


def corrupt_member(data: bytes, member: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(member)
    start = (
        info.header_offset
        + 30
        + len(info.filename.encode())
        + len(info.extra)
        + info.compress_size // 2
    )
    corrupted = bytearray(data)
    for k in range(start, start + 8):
        corrupted[k] ^= 0xFF
    return bytes(corrupted)


GOOD = {"joints": smpl_joints(), "joint_set": np.array("smpl22"), "fps": np.array(30.0)}


@pytest.mark.parametrize(
    ("make", "options", "message"),
    [
        (lambda: b"", {}, "empty file"),
        (lambda: b"hello world", {}, "not an .npz"),
        (lambda: npz_bytes(**GOOD)[:100], {}, "truncated or corrupt"),
        (
            lambda: npy_bytes(GOOD["joints"])[:-50],
            {"joint_set": "smpl22", "fps": 30.0},
            "truncated or corrupt",
        ),
        (
            lambda: corrupt_member(npz_bytes(compressed=True, **GOOD), "joints.npy"),
            {},
            "'joints' is corrupt",
        ),
        (
            lambda: npz_bytes(positions=GOOD["joints"], fps=GOOD["fps"]),
            {},
            r"missing key\(s\) \['joints'\]",
        ),
        (lambda: npz_bytes(joints=GOOD["joints"], fps=GOOD["fps"]), {}, "no joint_set"),
        (lambda: npy_bytes(GOOD["joints"]), {"joint_set": "smpl22"}, "no fps"),
        (
            lambda: npz_bytes(**{**GOOD, "joint_set": np.array("h36m17")}),
            {},
            "unknown joint set 'h36m17'",
        ),
        (lambda: npz_bytes(**{**GOOD, "joints": np.zeros((0, 22, 3))}), {}, "empty sequence"),
        (lambda: npz_bytes(**{**GOOD, "joints": np.zeros((4, 17, 3))}), {}, "17 joints"),
        (lambda: npz_bytes(**{**GOOD, "joints": np.full((4, 22, 3), np.inf)}), {}, "infinite"),
        (lambda: npz_bytes(**{**GOOD, "joints": np.array([["a"]])}), {}, "numeric"),
        (lambda: npz_bytes(**GOOD, measured=np.ones(21, bool)), {}, r"\(22,\) bool"),
        (
            lambda: npz_bytes(**GOOD, measured=np.ones(22, bool), valid=np.ones(22, bool)),
            {},
            "not both",
        ),
        (lambda: npz_bytes(**GOOD), {"fps": 60.0}, "file says fps=30.0"),
        (lambda: npz_bytes(**GOOD, units=np.array("furlong")), {}, "unknown units"),
        (lambda: npz_bytes(**GOOD), {"up_axis": "x"}, "up axis"),
        (
            lambda: npz_bytes(**GOOD),
            {"target_joint_sets": ("coco17",)},
            "cannot map joint set 'smpl22'",
        ),
        (lambda: npz_bytes(**GOOD, extra=np.array([{"a": 1}], dtype=object)), {}, "pickled object"),
    ],
)
def test_bad_input(make, options: dict, message: str) -> None:
    with pytest.raises(ReaderError, match=message) as info:
        read_joints_array(make(), name="lab.zip:session2/take4.npz", **options)
    assert "lab.zip:session2/take4.npz" in str(info.value)


def test_load_npz_reads_every_member() -> None:
    arrays = load_npz(npz_bytes(a=np.arange(3), b=np.array("x")), name="m.npz")
    assert sorted(arrays) == ["a", "b"] and arrays["b"].item() == "x"
