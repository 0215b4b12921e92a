"""Tests for SMPL fitting to joints (mocap_core.smpl_fit) with the synthetic SMPL model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from data_catalog.readers.amass import load_body_model, write_synthetic_smpl_model
from mocap_core.joint_sets import SMPL22
from mocap_core.kinematics import forward_kinematics
from mocap_core.rotations import axis_angle_to_matrix
from mocap_core.smpl_fit import (
    SmplFit,
    fit_smpl,
    smpl22_local_rotations_from_joints,
    smpl_rest_joints,
    weighted_kabsch,
)


@pytest.fixture(scope="module")
def smpl_module(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("smpl_fit_model")
    write_synthetic_smpl_model(folder, model_type="smpl", num_betas=10)
    return load_body_model(folder, model_type="smpl")[0].module


def walking_parameters(
    num_frames: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A walk-like motion at 30 fps: (transl (T, 3), global_orient (T, 3), body_pose (T, 69),
    betas (10,)). Legs and arms swing in opposite phase, knees and elbows bend the natural
    way, the body turns slowly while moving forward; a fixed random posture on top."""
    rng = np.random.default_rng(seed)
    time_s = np.arange(num_frames) / 30.0
    phase = 2.0 * np.pi * time_s / 1.1
    pose = np.broadcast_to(rng.normal(scale=0.05, size=(1, 23, 3)), (num_frames, 23, 3)).copy()
    pose[:, 21:] = 0.0  # SMPL's hand joints
    pose[:, 0, 0] += 0.45 * np.sin(phase)  # hips (joints 1, 2) flex and extend
    pose[:, 1, 0] -= 0.45 * np.sin(phase)
    pose[:, 3, 0] += 0.5 + 0.4 * np.sin(phase + 1.0)  # knees (4, 5) flex about +x
    pose[:, 4, 0] += 0.5 - 0.4 * np.sin(phase + 1.0)
    pose[:, 15, 2] -= 1.2  # shoulders (16, 17): arms down from the T-pose
    pose[:, 16, 2] += 1.2
    pose[:, 15, 0] += 0.3 * np.sin(phase)
    pose[:, 16, 0] -= 0.3 * np.sin(phase)
    pose[:, 17, 1] -= 0.4  # elbows (18, 19): left flexes about -y, right about +y
    pose[:, 18, 1] += 0.4
    orient = np.zeros((num_frames, 3))
    orient[:, 1] = 0.3 + 0.4 * time_s
    transl = np.stack(
        [1.2 * time_s * np.sin(0.3), 0.9 + 0.02 * np.sin(2 * phase), 1.2 * time_s * np.cos(0.3)],
        axis=1,
    )
    betas = rng.normal(scale=0.8, size=10)
    return transl, orient, pose.reshape(num_frames, 69), betas


def model_joints(
    module: Any, transl: np.ndarray, orient: np.ndarray, pose: np.ndarray, betas: np.ndarray
) -> np.ndarray:
    """``(T, 22, 3)`` float32 joints from the smplx module's own forward pass."""
    n = len(transl)
    with torch.no_grad():
        out = module(
            betas=torch.tensor(np.tile(betas, (n, 1)), dtype=torch.float32),
            global_orient=torch.tensor(orient, dtype=torch.float32),
            body_pose=torch.tensor(pose, dtype=torch.float32),
            transl=torch.tensor(transl, dtype=torch.float32),
        )
    return out.joints[:, :22].numpy()


def errors(fit: SmplFit, target: np.ndarray) -> np.ndarray:
    return np.linalg.norm(fit.joints - target, axis=-1)


def test_fit_recovers_a_known_walk(smpl_module: Any) -> None:
    transl, orient, pose, betas = walking_parameters(60, seed=0)
    target = model_joints(smpl_module, transl, orient, pose, betas)
    fit = fit_smpl(smpl_module, target)

    assert fit.transl.shape == (60, 3) and fit.global_orient.shape == (60, 3)
    assert fit.body_pose.shape == (60, 69) and fit.betas.shape == (10,)
    assert fit.joints.shape == (60, 22, 3) and fit.per_joint_error_m.shape == (22,)
    distance = errors(fit, target)
    # Measured: mean 0.43 mm, max 1.2 mm.
    assert distance.mean() < 0.002 and distance.max() < 0.005
    np.testing.assert_allclose(fit.per_joint_error_m, distance.mean(0), atol=1e-6)
    assert fit.mean_error_m == pytest.approx(distance.mean(), abs=1e-6)
    # The recovered parameters are the true ones, up to what joints cannot tell.
    assert np.abs(fit.betas - betas).max() < 0.25
    np.testing.assert_allclose(fit.transl, transl, atol=0.01)
    # The knees flex the natural way (+x) and follow the true flexion; the split between
    # knee and ankle twist is not observable from joints, so values differ by a few degrees.
    for joint in (4, 5):
        fitted, true = fit.body_pose[:, 3 * (joint - 1)], pose[:, 3 * (joint - 1)]
        assert np.all(fitted[true > 0.1] > 0.0)
        assert np.corrcoef(fitted, true)[0, 1] > 0.95
        assert np.abs(fitted - true).mean() < 0.15
    pose_rms = np.sqrt(np.mean(fit.body_pose**2))
    assert 0.8 < pose_rms / np.sqrt(np.mean(pose**2)) < 1.2
    # Joints whose rotation moves none of the 22 joints (feet, head, wrists, hands) stay zero.
    for joint in (10, 11, 15, 20, 21, 22, 23):
        assert np.all(fit.body_pose[:, 3 * (joint - 1) : 3 * joint] == 0.0)
    assert fit.transl.dtype == np.float32


def test_fit_reports_model_forward_joints(smpl_module: Any) -> None:
    transl, orient, pose, betas = walking_parameters(12, seed=3)
    target = model_joints(smpl_module, transl, orient, pose, betas)
    fit = fit_smpl(smpl_module, target, num_iters=10)
    again = model_joints(smpl_module, fit.transl, fit.global_orient, fit.body_pose, fit.betas)
    np.testing.assert_allclose(fit.joints, again, atol=1e-6)


def test_missing_joints_still_fit(smpl_module: Any) -> None:
    transl, orient, pose, betas = walking_parameters(60, seed=1)
    target = model_joints(smpl_module, transl, orient, pose, betas)
    rng = np.random.default_rng(4)
    weights = (rng.uniform(size=(60, 22)) > 0.15).astype(np.float32)
    weights[20:40, 20] = 0.0  # the left wrist is lost for 20 frames
    target_with_nan = target.copy()
    target_with_nan[5, 12] = np.nan  # a NaN joint counts as missing too
    fit = fit_smpl(smpl_module, target_with_nan, joint_weights=weights)
    distance = errors(fit, target)
    observed = (weights > 0) & np.isfinite(target_with_nan).all(-1)
    # Measured: 0.5 mm on observed joints, 6 mm on the missing ones.
    assert distance[observed].mean() < 0.002
    assert distance[~observed].mean() < 0.03
    assert np.isfinite(fit.per_joint_error_m).all()


@pytest.mark.parametrize("missing_joint", [15, 0])  # the head; the pelvis (torso-based init)
def test_never_observed_joint_has_nan_error(smpl_module: Any, missing_joint: int) -> None:
    transl, orient, pose, betas = walking_parameters(20, seed=2)
    target = model_joints(smpl_module, transl, orient, pose, betas)
    weights = np.ones((20, 22))
    weights[:, missing_joint] = 0.0
    fit = fit_smpl(smpl_module, target, joint_weights=weights, num_iters=20)
    assert np.isnan(fit.per_joint_error_m[missing_joint])
    assert np.isfinite(np.delete(fit.per_joint_error_m, missing_joint)).all()
    assert errors(fit, target)[:, weights[0] > 0].mean() < 0.003


def test_chunked_fit_is_accurate_and_smooth_across_seams(smpl_module: Any) -> None:
    transl, orient, pose, betas = walking_parameters(90, seed=5)
    target = model_joints(smpl_module, transl, orient, pose, betas)
    fit = fit_smpl(smpl_module, target, chunk_frames=40, shape_frames=30, num_iters=30)
    assert errors(fit, target).mean() < 0.002
    assert np.abs(fit.betas - betas).max() < 0.3
    # The second differences at the chunk seams (frames 39/40 and 79/80) follow the target's.
    fit_accel = fit.joints[2:] - 2 * fit.joints[1:-1] + fit.joints[:-2]
    target_accel = target[2:] - 2 * target[1:-1] + target[:-2]
    for seam in (39, 79):
        for index in (seam - 2, seam - 1, seam):
            gap = np.linalg.norm(fit_accel[index] - target_accel[index], axis=-1)
            assert gap.max() < 0.003


def test_fit_leaves_the_body_model_untouched(smpl_module: Any) -> None:
    before = {name: buffer.clone() for name, buffer in smpl_module.named_buffers()}
    params_before = {name: p.detach().clone() for name, p in smpl_module.named_parameters()}
    transl, orient, pose, betas = walking_parameters(8, seed=6)
    fit_smpl(smpl_module, model_joints(smpl_module, transl, orient, pose, betas), num_iters=5)
    for name, buffer in smpl_module.named_buffers():
        assert torch.equal(buffer, before[name]), name
    for name, parameter in smpl_module.named_parameters():
        assert torch.equal(parameter.detach(), params_before[name]), name


def test_smplh_model_fits_with_ten_betas(tmp_path: Path) -> None:
    write_synthetic_smpl_model(tmp_path, model_type="smplh", num_betas=16, file_format="npz")
    module = load_body_model(tmp_path, model_type="smplh", num_betas=16)[0].module
    transl, orient, pose, betas = walking_parameters(15, seed=7)
    n = len(transl)
    with torch.no_grad():
        target = (
            module(
                betas=torch.tensor(np.tile(np.r_[betas, np.zeros(6)], (n, 1)), dtype=torch.float32),
                global_orient=torch.tensor(orient, dtype=torch.float32),
                body_pose=torch.tensor(pose[:, :63], dtype=torch.float32),
                left_hand_pose=torch.zeros(n, 45),
                right_hand_pose=torch.zeros(n, 45),
                transl=torch.tensor(transl, dtype=torch.float32),
            )
            .joints[:, :22]
            .numpy()
        )
    fit = fit_smpl(module, target, num_iters=30)
    assert fit.betas.shape == (10,) and fit.body_pose.shape == (15, 69)
    assert errors(fit, target).mean() < 0.002


def test_rest_joints_follow_betas(smpl_module: Any) -> None:
    betas = np.zeros(10)
    betas[0] = 1.0  # the synthetic model's stature component: +3 % about the origin
    rest0 = smpl_rest_joints(smpl_module, np.zeros(10))
    rest1 = smpl_rest_joints(smpl_module, betas)
    assert rest0.shape == (24, 3)
    np.testing.assert_allclose(rest1, 1.03 * rest0, atol=1e-6)


def test_local_rotations_recover_hinged_limbs_exactly(smpl_module: Any) -> None:
    """Bent knees and elbows (pure hinge rotations) fix the thighs' and upper arms' twist:
    the solver returns the true rotations, so FK of them reproduces the joints exactly."""
    rng = np.random.default_rng(8)
    num_frames = 16
    rest = smpl_rest_joints(smpl_module, np.zeros(10))[:22]
    offsets = rest - rest[np.maximum(np.array(SMPL22.parents), 0)]
    offsets[0] = 0.0
    rotvecs = rng.normal(scale=0.3, size=(num_frames, 22, 3))
    rotvecs[:, [10, 11, 15, 20, 21]] = 0.0  # leaves: not observable
    for joint, axis, sign in ((4, 0, 1.0), (5, 0, 1.0), (18, 1, -1.0), (19, 1, 1.0)):
        rotvecs[:, joint] = 0.0
        rotvecs[:, joint, axis] = sign * rng.uniform(0.5, 1.5, size=num_frames)
    # Joints with one child only turn their bone: they inherit their parent's twist.
    for joint in (3, 6, 7, 8, 12, 13, 14):
        rotvecs[:, joint] = 0.0
    local = axis_angle_to_matrix(rotvecs)
    root_positions = rng.normal(size=(num_frames, 3))
    positions, _ = forward_kinematics(SMPL22.parents, offsets, local, root_positions)

    _, true_global = forward_kinematics(SMPL22.parents, offsets, local, root_positions)

    solved = smpl22_local_rotations_from_joints(positions, rest)
    again, solved_global = forward_kinematics(SMPL22.parents, offsets, solved, root_positions)
    np.testing.assert_allclose(again, positions, atol=1e-9)
    for joint in (0, 1, 2, 4, 5, 16, 17, 18, 19):
        np.testing.assert_allclose(solved[:, joint], local[:, joint], atol=1e-7, err_msg=str(joint))
    # The chest's frame is recovered; its twist relative to the pelvis is shared along the spine.
    np.testing.assert_allclose(solved_global[:, 9], true_global[:, 9], atol=1e-7)


def test_local_rotations_of_a_t_pose_are_identity(smpl_module: Any) -> None:
    rest = smpl_rest_joints(smpl_module, np.zeros(10))[:22]
    solved = smpl22_local_rotations_from_joints(rest[None] + [1.0, 0.0, 2.0], rest)
    np.testing.assert_allclose(solved, np.broadcast_to(np.eye(3), solved.shape), atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=2**31 - 1))
def test_weighted_kabsch_recovers_a_rotation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rotation = Rotation.random(random_state=seed).as_matrix()
    source = rng.normal(size=(5, 3))
    weights = rng.uniform(0.1, 2.0, size=5)
    target = (source @ rotation.T)[None]
    np.testing.assert_allclose(weighted_kabsch(source, target, weights)[0], rotation, atol=1e-9)


def test_bad_inputs_raise(smpl_module: Any) -> None:
    joints = np.zeros((4, 22, 3))
    with pytest.raises(ValueError, match="shape"):
        fit_smpl(smpl_module, np.zeros((4, 21, 3)))
    with pytest.raises(ValueError, match="joint_weights"):
        fit_smpl(smpl_module, joints, joint_weights=np.ones((4, 21)))
    with pytest.raises(ValueError, match=">= 0"):
        fit_smpl(smpl_module, joints, joint_weights=-np.ones((4, 22)))
    with pytest.raises(ValueError, match="no joint is observed"):
        fit_smpl(smpl_module, joints, joint_weights=np.zeros((4, 22)))
    with pytest.raises(ValueError, match="num_iters"):
        fit_smpl(smpl_module, joints, num_iters=0)
    with pytest.raises(ValueError, match="smooth_weight"):
        fit_smpl(smpl_module, joints, smooth_weight=-1.0)
    weights = np.zeros((4, 22))
    weights[:, [4, 7]] = 1.0  # a knee and an ankle only: nothing to place the torso with
    with pytest.raises(ValueError, match="torso"):
        fit_smpl(smpl_module, joints, joint_weights=weights)
    with pytest.raises(TypeError, match="smplx"):
        fit_smpl(lambda **kwargs: None, joints)
