"""Tests for BVH export (data_catalog.export_bvh), read back with the project's BVH reader."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from data_catalog.export_bvh import (
    bvh_from_joints,
    bvh_from_smpl,
    bvh_text,
    fixed_skeleton_rest_joints,
    write_bvh,
)
from data_catalog.readers.amass import load_body_model, write_synthetic_smpl_model
from data_catalog.readers.bvh import read_bvh
from mocap_core.joint_sets import SMPL22
from mocap_core.kinematics import bone_lengths
from mocap_core.procedural import procedural_walk
from mocap_core.rotations import axis_angle_to_matrix
from mocap_core.skeleton_mapping import apply_mapping, get_skeleton_mapping
from mocap_core.smpl_fit import SmplFit, smpl_rest_joints
from mocap_core.synthetic_smpl import synthetic_rest_joints

LEAVES = ("left_foot", "right_foot", "head", "left_wrist", "right_wrist")


@pytest.fixture(scope="module")
def smpl_module(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("export_bvh_model")
    write_synthetic_smpl_model(folder, model_type="smpl", num_betas=10)
    return load_body_model(folder, model_type="smpl")[0].module


@pytest.fixture(scope="module")
def walk_joints() -> np.ndarray:
    walk = procedural_walk(90, fps=30.0, seed=2, turn_deg_per_s=20.0)
    mapping = get_skeleton_mapping("bandai_namco", "smpl22")
    joints, _ = apply_mapping(mapping, walk.joint_names, walk.positions, walk.global_rotations)
    return joints


def known_fit(module: Any, num_frames: int = 25, seed: int = 0) -> SmplFit:
    """A SmplFit made from known parameters (the export does not care how they were found)."""
    rng = np.random.default_rng(seed)
    transl = np.cumsum(rng.normal(scale=0.02, size=(num_frames, 3)), axis=0) + [0.0, 0.9, 0.0]
    orient = rng.normal(scale=0.6, size=(num_frames, 3))
    body_pose = rng.normal(scale=0.4, size=(num_frames, 69))
    body_pose[:, 63:] = 0.0
    betas = rng.normal(scale=1.0, size=10)
    with torch.no_grad():
        joints = (
            module(
                betas=torch.tensor(np.tile(betas, (num_frames, 1)), dtype=torch.float32),
                global_orient=torch.tensor(orient, dtype=torch.float32),
                body_pose=torch.tensor(body_pose, dtype=torch.float32),
                transl=torch.tensor(transl, dtype=torch.float32),
            )
            .joints[:, :22]
            .numpy()
        )
    f32 = np.float32
    return SmplFit(
        transl.astype(f32),
        orient.astype(f32),
        body_pose.astype(f32),
        betas.astype(f32),
        joints,
        np.zeros(22, dtype=f32),
    )


def by_name(motion: Any) -> list[int]:
    return [motion.joint_index(name) for name in SMPL22.joint_names]


@pytest.mark.parametrize("units", ["cm", "m"])
def test_smpl_export_reads_back_to_the_fit_joints(smpl_module: Any, units: str) -> None:
    fit = known_fit(smpl_module)
    motion = read_bvh(bvh_from_smpl(fit, smpl_module, 30.0, units=units), units=units)
    assert motion.num_frames == 25 and motion.fps == 30.0
    assert set(motion.joint_names) == set(SMPL22.joint_names)
    index = by_name(motion)
    # Same tree as smpl22, by name.
    for joint, parent in enumerate(SMPL22.parents):
        read_parent = motion.parents[index[joint]]
        assert (read_parent == -1) if parent < 0 else (read_parent == index[parent])
    assert len(motion.channels[index[0]]) == 6
    assert all(len(motion.channels[index[j]]) == 3 for j in range(1, 22))
    assert sorted(motion.joint_names[site.parent] for site in motion.end_sites) == sorted(LEAVES)
    # Forward kinematics of the file gives the fit's joints (float32 model vs text: < 0.05 mm).
    np.testing.assert_allclose(motion.positions[:, index], fit.joints, atol=5e-5)
    # Offsets are the fitted shape's rest bones; rotations are the fit's axis-angles.
    rest = smpl_rest_joints(smpl_module, fit.betas)
    for joint in range(1, 22):
        bone = rest[joint] - rest[SMPL22.parents[joint]]
        np.testing.assert_allclose(motion.offsets[index[joint]], bone, atol=2e-6)
    np.testing.assert_allclose(
        motion.local_rotations[:, index[0]], axis_angle_to_matrix(fit.global_orient), atol=1e-6
    )
    np.testing.assert_allclose(
        motion.local_rotations[:, index[18]],
        axis_angle_to_matrix(fit.body_pose[:, 51:54]),
        atol=1e-6,
    )
    # The wrist End Sites are the model's hand joints.
    left_wrist_site = next(s for s in motion.end_sites if s.parent == index[20])
    np.testing.assert_allclose(left_wrist_site.offset, rest[22] - rest[20], atol=2e-6)


def test_smpl_export_default_unit_is_centimetres(smpl_module: Any) -> None:
    fit = known_fit(smpl_module, num_frames=3)
    text = bvh_from_smpl(fit, smpl_module, 25.0)
    in_metres = read_bvh(text, units="m")
    in_cm = read_bvh(text, units="cm")
    np.testing.assert_allclose(in_metres.positions, 100.0 * in_cm.positions)
    assert read_bvh(text).units_detected == "cm"
    pelvis_line = text.splitlines()[3].split()  # OFFSET of the root: the rest pelvis in cm
    rest = smpl_rest_joints(smpl_module, fit.betas)
    np.testing.assert_allclose([float(v) for v in pelvis_line[1:]], 100.0 * rest[0], atol=1e-5)


def test_joints_export_reproduces_a_rigid_walk(walk_joints: np.ndarray) -> None:
    motion = read_bvh(bvh_from_joints(walk_joints, 30.0), units="cm")
    error = np.linalg.norm(motion.positions[:, by_name(motion)] - walk_joints, axis=-1)
    # The procedural walk's skeleton is rigid, so the fixed skeleton matches it exactly.
    # Measured: mean 1e-5 mm, max 3e-5 mm (the 6 decimals of the text).
    assert error.max() < 1e-6
    assert motion.fps == 30.0


def test_joints_export_of_noisy_joints_stays_close(walk_joints: np.ndarray) -> None:
    noisy = walk_joints + np.random.default_rng(0).normal(scale=0.002, size=walk_joints.shape)
    motion = read_bvh(bvh_from_joints(noisy, 30.0, units="m"), units="m")
    error = np.linalg.norm(motion.positions[:, by_name(motion)] - noisy, axis=-1)
    # 2 mm noise per axis (3.5 mm per joint) with a fixed skeleton. Measured: mean 2.6 mm,
    # max 9.8 mm.
    assert error.mean() < 0.004 and error.max() < 0.015
    # Every bone of the file has the sequence's median length.
    lengths = np.median(bone_lengths(SMPL22.parents, noisy), axis=0)
    index = by_name(motion)
    for joint in (4, 5, 7, 8, 10, 11, 15, 16, 17, 18, 19, 20, 21):
        assert np.linalg.norm(motion.offsets[index[joint]]) == pytest.approx(
            lengths[joint], abs=1e-6
        )


def test_t_pose_gives_the_template_skeleton_and_identity_rotations() -> None:
    template = synthetic_rest_joints("smpl")[:22]
    joints = np.repeat((template + [0.3, 0.95, -1.0])[None], 4, axis=0)
    rest = fixed_skeleton_rest_joints(joints)
    np.testing.assert_allclose(rest, template - template[0], atol=1e-12)
    motion = read_bvh(bvh_from_joints(joints, 60.0), units="cm")
    identity = np.broadcast_to(np.eye(3), motion.local_rotations.shape)
    np.testing.assert_allclose(motion.local_rotations, identity, atol=1e-7)
    np.testing.assert_allclose(motion.positions[:, by_name(motion)], joints, atol=1e-7)


def test_bvh_text_round_trips_rotations_including_gimbal_lock() -> None:
    num_frames = 40
    rotations = Rotation.random(num_frames * 22, random_state=3).as_matrix()
    rotations = rotations.reshape(num_frames, 22, 3, 3)
    # ZXY with the middle (X) angle at +-90 degrees: gimbal lock.
    rotations[0, 5] = Rotation.from_euler("ZXY", [30.0, 90.0, 10.0], degrees=True).as_matrix()
    rotations[1, 5] = Rotation.from_euler("ZXY", [-20.0, -90.0, 70.0], degrees=True).as_matrix()
    offsets = (
        synthetic_rest_joints("smpl")[:22]
        - synthetic_rest_joints("smpl")[np.maximum(np.array(SMPL22.parents), 0)]
    )
    roots = np.random.default_rng(1).normal(size=(num_frames, 3))
    text = bvh_text(offsets, {}, roots, rotations, 120.0, units="m")
    motion = read_bvh(text, units="m")
    np.testing.assert_allclose(motion.local_rotations[:, by_name(motion)], rotations, atol=1e-6)
    np.testing.assert_allclose(motion.positions[:, motion.joint_index("pelvis")], roots, atol=1e-6)
    assert motion.fps == 120.0


def test_write_bvh_is_atomic(tmp_path: Path, walk_joints: np.ndarray, monkeypatch: Any) -> None:
    text = bvh_from_joints(walk_joints[:5], 30.0)
    path = write_bvh(tmp_path / "out" / "walk.bvh", text)
    assert path.read_text() == text
    assert read_bvh(path, units="cm").num_frames == 5

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_bvh(path, bvh_from_joints(walk_joints[:7], 30.0))
    assert path.read_text() == text  # the previous file is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["walk.bvh"]  # no temporary left


def test_bad_inputs_raise(tmp_path: Path, walk_joints: np.ndarray, smpl_module: Any) -> None:
    with pytest.raises(ValueError, match="shape"):
        bvh_from_joints(walk_joints[:, :21], 30.0)
    bad = walk_joints.copy()
    bad[3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        bvh_from_joints(bad, 30.0)
    with pytest.raises(ValueError, match="skeleton"):
        bvh_from_joints(walk_joints, 30.0, skeleton="per_frame")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fps"):
        bvh_from_joints(walk_joints, 0.0)
    with pytest.raises(ValueError, match="units"):
        bvh_from_joints(walk_joints, 30.0, units="mm")  # type: ignore[arg-type]
    collapsed = walk_joints.copy()
    collapsed[:, 2] = collapsed[:, 1]  # both hips at one point in every frame
    with pytest.raises(ValueError, match="pelvis"):
        bvh_from_joints(collapsed, 30.0)
    with pytest.raises(TypeError, match="SmplFit"):
        bvh_from_smpl("not a fit", smpl_module, 30.0)  # type: ignore[arg-type]
    fit = known_fit(smpl_module, num_frames=2)
    broken = SmplFit(
        fit.transl,
        fit.global_orient,
        fit.body_pose[:, :63],
        fit.betas,
        fit.joints,
        fit.per_joint_error_m,
    )
    with pytest.raises(ValueError, match="body_pose"):
        bvh_from_smpl(broken, smpl_module, 30.0)
    with pytest.raises(ValueError, match="HIERARCHY"):
        write_bvh(tmp_path / "x.bvh", "not a bvh")
    with pytest.raises(TypeError, match="str"):
        write_bvh(tmp_path / "x.bvh", b"HIERARCHY")  # type: ignore[arg-type]
