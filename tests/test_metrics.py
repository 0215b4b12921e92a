"""Tests for mocap_core.metrics: hand-computed cases, NaN handling, validation, invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from mocap_core import metrics as M
from mocap_core.joint_sets import SMPL22

FPS = 30.0

# Three joints: left hip, right hip, head (hip pair (0, 1), pelvis (0, 1, 0)).
TRIO = np.array([[0.1, 1.0, 0.0], [-0.1, 1.0, 0.0], [0.0, 1.7, 0.0]])
TRIO_HIPS = (0, 1)
# 90 degrees about +y: (x, y, z) -> (z, y, -x).
ROT_Y90 = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])


def smpl22_rest_pose() -> np.ndarray:
    """(22, 3) metres: a standing SMPL-22 skeleton, feet on y = 0, not planar."""
    return np.array(
        [
            [0.0, 0.95, 0.0], [0.09, 0.90, 0.0], [-0.09, 0.90, 0.0], [0.0, 1.05, -0.02],
            [0.10, 0.50, 0.02], [-0.10, 0.50, 0.02], [0.0, 1.18, -0.03], [0.10, 0.08, -0.02],
            [-0.10, 0.08, -0.02], [0.0, 1.25, -0.02], [0.11, 0.02, 0.10], [-0.11, 0.02, 0.10],
            [0.0, 1.45, -0.01], [0.08, 1.38, -0.02], [-0.08, 1.38, -0.02], [0.0, 1.60, 0.02],
            [0.18, 1.40, -0.03], [-0.18, 1.40, -0.03], [0.45, 1.40, -0.05], [-0.45, 1.40, -0.05],
            [0.70, 1.40, 0.0], [-0.70, 1.40, 0.0],
        ]
    )  # fmt: skip


def walking_sequence(num_frames: int, seed: int = 0) -> np.ndarray:
    """(T, 22, 3) metres: the rest pose on a curved path with a little per-joint wobble."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames) / FPS
    root = np.stack([0.8 * t, np.zeros_like(t), 0.3 * np.sin(1.5 * t)], axis=-1)
    wobble = 0.02 * np.sin(t[:, None, None] * 4.0 + rng.uniform(0, 6.3, size=(1, 22, 3)))
    return smpl22_rest_pose()[None] + root[:, None, :] + wobble


def similarity(points: np.ndarray, scale: float, rotation: np.ndarray, offset) -> np.ndarray:
    return scale * points @ rotation.T + np.asarray(offset)


# ------------------------------------------------------------------ hand-computed cases


def test_known_rotation_scale_offset_gives_hand_computed_errors():
    gt = np.repeat(TRIO[None], 6, axis=0)
    pred = similarity(gt, 2.0, ROT_Y90, [1.0, 0.0, 0.0])
    # Unaligned: per joint |2 R g + c - g| = sqrt(1.85), 1.5, sqrt(3.89) metres.
    expected_abs = (math.sqrt(1.85) + 1.5 + math.sqrt(3.89)) / 3 * 1000
    # Pelvis-centred: hips (+-0.1, 0, 0) -> (0, 0, -+0.2), head (0, .7, 0) -> (0, 1.4, 0).
    expected_mpjpe = (2 * math.sqrt(0.05) + 0.7) / 3 * 1000
    assert M.abs_mpjpe(pred, gt) == pytest.approx(expected_abs, rel=1e-12)
    assert M.mpjpe(pred, gt, TRIO_HIPS) == pytest.approx(expected_mpjpe, rel=1e-12)
    np.testing.assert_allclose(M.abs_mpjpe_per_frame(pred, gt), expected_abs, rtol=1e-12)
    assert M.pa_mpjpe(pred, gt) == pytest.approx(0.0, abs=1e-9)
    assert M.w_mpjpe(pred, gt) == pytest.approx(0.0, abs=1e-9)
    assert M.wa_mpjpe(pred, gt) == pytest.approx(0.0, abs=1e-9)
    # A static root aligns exactly; it travels nowhere, so the percentage is undefined.
    root_error = M.rte(pred, gt, TRIO_HIPS)
    assert root_error.mm == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(root_error.pct)


def test_procrustes_recovers_known_similarity():
    source = smpl22_rest_pose()
    rotation = Rotation.from_euler("xyz", [20, -35, 70], degrees=True).as_matrix()
    target = similarity(source, 0.8, rotation, [0.5, -1.0, 2.0])
    aligned, (s, r, t) = M.procrustes_align(source, target)
    assert float(s) == pytest.approx(0.8, rel=1e-12)
    np.testing.assert_allclose(r, rotation, atol=1e-12)
    np.testing.assert_allclose(t, [0.5, -1.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(aligned, target, atol=1e-12)
    # Rigid fit of the same pair keeps s = 1 and still finds the rotation.
    _, (s_rigid, r_rigid, _) = M.procrustes_align(source, target, scale=False)
    assert float(s_rigid) == 1.0
    np.testing.assert_allclose(r_rigid, rotation, atol=1e-9)


def test_pure_offset_changes_only_the_absolute_error():
    gt = walking_sequence(40)
    pred = gt + np.array([0.3, 0.0, 0.4])
    assert M.abs_mpjpe(pred, gt) == pytest.approx(500.0, rel=1e-12)
    assert M.mpjpe(pred, gt, SMPL22) == pytest.approx(0.0, abs=1e-9)
    assert M.pa_mpjpe(pred, gt) == pytest.approx(0.0, abs=1e-9)
    assert M.w_mpjpe(pred, gt) == pytest.approx(0.0, abs=1e-9)
    assert M.wa_mpjpe(pred, gt) == pytest.approx(0.0, abs=1e-9)
    assert M.rte(pred, gt, SMPL22).mm == pytest.approx(0.0, abs=1e-9)
    assert M.accel_error(pred, gt, FPS) == pytest.approx(0.0, abs=1e-9)


def test_reflection_is_not_aligned_away():
    # Octahedron (+-3, 0, 0), (0, +-2, 0), (0, 0, +-1) mirrored in x. The best proper
    # alignment is a half-turn about y (flipping the weakest axis z) with s = (18+8-2)/28 = 6/7;
    # errors 3/7, 2/7 and 13/7 per pair of points give a mean of 6/7 m.
    gt_pose = np.array([[3, 0, 0], [-3, 0, 0], [0, 2, 0], [0, -2, 0], [0, 0, 1], [0, 0, -1.0]])
    pred_pose = gt_pose * np.array([-1.0, 1.0, 1.0])
    aligned, (s, r, _) = M.procrustes_align(pred_pose, gt_pose)
    assert np.linalg.det(r) == pytest.approx(1.0)
    assert float(s) == pytest.approx(6 / 7)
    np.testing.assert_allclose(aligned, gt_pose * np.array([6 / 7, 6 / 7, -6 / 7]), atol=1e-12)
    pa = M.pa_mpjpe(pred_pose[None], gt_pose[None])
    assert pa == pytest.approx(6000 / 7, rel=1e-12)


def test_noise_on_one_joint_gives_the_expected_increase():
    gt = walking_sequence(50)
    rng = np.random.default_rng(3)
    noise = rng.normal(scale=0.02, size=(50, 3))
    head = SMPL22.index("head")
    pred = gt.copy()
    pred[:, head] += noise
    per_frame_expected = np.linalg.norm(noise, axis=-1) / 22 * 1000
    np.testing.assert_allclose(M.abs_mpjpe_per_frame(pred, gt), per_frame_expected, rtol=1e-9)
    # The head is not a hip, so pelvis centring leaves the increase unchanged.
    np.testing.assert_allclose(M.mpjpe_per_frame(pred, gt, SMPL22), per_frame_expected, rtol=1e-9)
    assert M.pa_mpjpe(pred, gt) > 0


def test_offset_hip_moves_the_pelvis_for_every_joint():
    gt = walking_sequence(10)
    pred = gt.copy()
    pred[:, SMPL22.hip_pair[0]] += np.array([0.0, 0.06, 0.08])  # |d| = 0.1 m
    # The pelvis moves by d/2, so every pelvis-centred joint is off by |d|/2 = 50 mm.
    assert M.mpjpe(pred, gt, SMPL22) == pytest.approx(50.0, rel=1e-9)
    assert M.abs_mpjpe(pred, gt) == pytest.approx(100.0 / 22, rel=1e-9)


def test_rte_of_a_doubled_straight_trajectory():
    # Root at x = 0.1 i (i = 0..4) against 0.2 i: no rigid transform removes the scale;
    # centred errors are 0.1 |i - 2| -> mean 0.12 m over a 0.4 m walk = 30 %.
    steps = np.arange(5)[:, None, None] * np.array([0.1, 0.0, 0.0])
    gt = smpl22_rest_pose()[None] + steps
    pred = smpl22_rest_pose()[None] + 2 * steps
    np.testing.assert_allclose(
        M.rte_per_frame(pred, gt, SMPL22), [200, 100, 0, 100, 200], atol=1e-9
    )
    root_error = M.rte(pred, gt, SMPL22)
    assert root_error.mm == pytest.approx(120.0, rel=1e-12)
    assert root_error.pct == pytest.approx(30.0, rel=1e-12)


def test_rte_percentage_uses_the_path_length_not_the_net_displacement():
    # Out and back: x = 0, .1, .2, .1, 0 (path 0.4 m, net 0 m) against twice that. Centred
    # errors .08, .02, .12, .02, .08 m -> 64 mm, 16 % of the path.
    x = np.array([0.0, 0.1, 0.2, 0.1, 0.0])[:, None, None]
    gt = smpl22_rest_pose()[None] + x * np.array([1.0, 0.0, 0.0])
    pred = smpl22_rest_pose()[None] + 2 * x * np.array([1.0, 0.0, 0.0])
    root_error = M.rte(pred, gt, SMPL22)
    assert root_error.mm == pytest.approx(64.0, rel=1e-9)
    assert root_error.pct == pytest.approx(16.0, rel=1e-9)


def test_w_mpjpe_anchors_on_the_first_two_frames():
    gt = walking_sequence(4)
    drift = np.array([0.0, 0.0, 0.01, 0.02])[:, None, None] * np.array([1.0, 0.0, 0.0])
    pred = gt + drift
    np.testing.assert_allclose(M.w_mpjpe_per_frame(pred, gt), [0, 0, 10, 20], atol=1e-9)
    assert M.w_mpjpe(pred, gt) == pytest.approx(7.5, rel=1e-9)
    # WA fits all four frames, so it sees less than W's start-anchored error.
    assert 0 < M.wa_mpjpe(pred, gt) < M.w_mpjpe(pred, gt)


def test_chunks_are_aligned_separately_and_a_short_final_chunk_is_kept():
    gt = walking_sequence(150)
    rotation = Rotation.from_euler("y", 30, degrees=True).as_matrix()
    pred = gt.copy()
    pred[:100] = similarity(gt[:100], 1.1, rotation, [0.5, 0.0, -0.2])
    pred[100:] = similarity(gt[100:], 0.9, rotation.T, [-1.0, 0.1, 0.3])
    # 100 + 50 frames: each chunk holds one exact similarity, so both errors vanish...
    assert np.nanmax(M.w_mpjpe_per_frame(pred, gt)) == pytest.approx(0.0, abs=1e-9)
    assert np.nanmax(M.wa_mpjpe_per_frame(pred, gt)) == pytest.approx(0.0, abs=1e-9)
    # ...while a single 150-frame chunk cannot fit both halves.
    assert M.wa_mpjpe(pred, gt, chunk_size=150) > 10.0
    assert M.w_mpjpe(pred, gt, chunk_size=150) > 10.0


def test_constant_velocity_has_zero_jitter_and_accel_error():
    t = np.arange(20)[:, None, None]
    gt = smpl22_rest_pose()[None] + t * np.array([0.02, 0.0, 0.01])
    pred = smpl22_rest_pose()[None] + 0.1 + t * np.array([0.03, 0.0, -0.01])
    assert M.jitter(pred, FPS) == pytest.approx(0.0, abs=1e-6)
    assert M.jitter(gt, FPS) == pytest.approx(0.0, abs=1e-6)
    assert M.accel_error(pred, gt, FPS) == pytest.approx(0.0, abs=1e-6)


def test_circular_motion_has_the_analytic_third_difference():
    # x = A (cos(k theta), 0, sin(k theta)): |third difference| = 8 A sin^3(theta / 2) exactly,
    # |second difference| = 4 A sin^2(theta / 2); both tend to A w^3 and A w^2.
    radius, omega = 0.5, 2 * math.pi * 1.5
    theta = omega / FPS
    k = np.arange(60)
    path = radius * np.stack([np.cos(k * theta), np.zeros(60), np.sin(k * theta)], axis=-1)
    joints = smpl22_rest_pose()[None] + path[:, None, :]
    expected_jitter = 8 * radius * math.sin(theta / 2) ** 3 * FPS**3
    per_window = M.jitter_per_frame(joints, FPS)
    assert per_window.shape == (57,)
    np.testing.assert_allclose(per_window, expected_jitter, rtol=1e-9)
    assert expected_jitter == pytest.approx(radius * omega**3, rel=0.03)
    static = np.repeat(smpl22_rest_pose()[None], 60, axis=0)
    expected_accel = 4 * radius * math.sin(theta / 2) ** 2 * FPS**2
    assert M.accel_error(static, joints, FPS) == pytest.approx(expected_accel, rel=1e-9)


def test_sinusoid_jitter_matches_the_analytic_formula():
    # x_k = A sin(k theta): third forward difference = -8 A sin^3(theta/2) cos(theta (k + 1.5)).
    amplitude, theta = 0.1, 0.3
    k = np.arange(40)
    joints = np.zeros((40, 1, 3))
    joints[:, 0, 0] = amplitude * np.sin(k * theta)
    expected = (
        8 * amplitude * math.sin(theta / 2) ** 3 * np.abs(np.cos(theta * (k[:-3] + 1.5))) * FPS**3
    )
    np.testing.assert_allclose(M.jitter_per_frame(joints, FPS), expected, rtol=1e-8, atol=1e-9)


def test_constant_acceleration_difference_gives_its_magnitude():
    t = np.arange(30) / FPS
    accel = np.array([3.0, 0.0, 4.0])  # 5 m/s^2
    gt = walking_sequence(30)
    pred = gt + 0.5 * t[:, None, None] ** 2 * accel
    np.testing.assert_allclose(M.accel_error_per_frame(pred, gt, FPS), 5.0, rtol=1e-6)


def planted_feet(num_frames: int) -> np.ndarray:
    return np.repeat(smpl22_rest_pose()[None], num_frames, axis=0)


def test_foot_sliding_of_a_foot_moving_one_cm_per_frame_is_ten_mm():
    gt = planted_feet(20)  # ankles at 0.08 m, feet at 0.02 m, all still: all in contact
    pred = gt + np.arange(20)[:, None, None] * np.array([0.01, 0.0, 0.0])
    assert M.foot_contact(gt, SMPL22, FPS).all()
    assert M.foot_sliding(pred, gt, SMPL22, FPS) == pytest.approx(10.0, rel=1e-9)
    per_step = M.foot_sliding_per_frame(pred, gt, SMPL22, FPS)
    assert per_step.shape == (19, 4)
    np.testing.assert_allclose(per_step, 10.0, rtol=1e-9)
    assert M.foot_sliding(gt, gt, SMPL22, FPS) == 0.0


def test_foot_sliding_counts_only_contact_frames():
    gt = planted_feet(20)
    right_foot = [SMPL22.index("right_ankle"), SMPL22.index("right_foot")]
    gt[:, right_foot, 1] += 0.3  # right foot held in the air: low speed but too high
    pred = gt.copy()
    pred[:, [SMPL22.index("left_ankle"), SMPL22.index("left_foot")], 0] += (
        np.arange(20)[:, None] * 0.01
    )
    pred[:, right_foot, 0] += np.arange(20)[:, None] * 0.05
    assert M.foot_sliding(pred, gt, SMPL22, FPS) == pytest.approx(10.0, rel=1e-9)
    # Without the height test the raised foot counts too: (2 * 10 + 2 * 50) / 4 = 30 mm.
    assert M.foot_sliding(pred, gt, SMPL22, FPS, height_threshold_m=None) == pytest.approx(30.0)


def test_a_fast_ground_truth_foot_is_not_in_contact():
    gt = planted_feet(10) + np.arange(10)[:, None, None] * np.array([0.05, 0.0, 0.0])  # 1.5 m/s
    assert not M.foot_contact(gt, SMPL22, FPS).any()
    assert math.isnan(M.foot_sliding(gt + 0.01, gt, SMPL22, FPS))
    # 1 cm/frame at 30 fps is 0.3 m/s: contact just under a slightly higher threshold.
    slow = planted_feet(10) + np.arange(10)[:, None, None] * np.array([0.0099, 0.0, 0.0])
    assert M.foot_contact(slow, SMPL22, FPS).all()


# ---------------------------------------------------------------------------- NaN handling


def test_invalid_frames_are_excluded():
    gt = walking_sequence(30)
    pred = gt + np.random.default_rng(1).normal(scale=0.01, size=gt.shape)
    pred_nan = pred.copy()
    pred_nan[7, 3, 1] = np.nan
    gt_inf = gt.copy()
    gt_inf[12, 0, 0] = np.inf
    keep = np.ones(30, dtype=bool)
    keep[[7, 12]] = False
    for per_frame in (M.pa_mpjpe_per_frame, M.abs_mpjpe_per_frame):
        errors = per_frame(pred_nan, gt_inf)
        assert np.isnan(errors[[7, 12]]).all()
        np.testing.assert_allclose(errors[keep], per_frame(pred[keep], gt[keep]))
    assert M.mpjpe(pred_nan, gt_inf, SMPL22) == pytest.approx(M.mpjpe(pred[keep], gt[keep], SMPL22))
    assert M.rte(pred_nan, gt_inf, SMPL22).mm == pytest.approx(
        M.rte(pred[keep], gt[keep], SMPL22).mm
    )


def test_difference_windows_touching_an_invalid_frame_are_dropped():
    t = np.arange(12)[:, None, None]
    gt = smpl22_rest_pose()[None] + t * np.array([0.02, 0.0, 0.0])
    pred = gt.copy()
    pred[5] = np.nan
    jitter_windows = M.jitter_per_frame(pred, FPS)
    assert np.isnan(jitter_windows[2:6]).all()  # windows starting at frames 2..5 touch frame 5
    assert np.isfinite(np.delete(jitter_windows, [2, 3, 4, 5])).all()
    assert M.jitter(pred, FPS) == pytest.approx(0.0, abs=1e-6)
    accel_windows = M.accel_error_per_frame(pred, gt, FPS)
    assert np.isnan(accel_windows[3:6]).all()
    assert M.accel_error(pred, gt, FPS) == pytest.approx(0.0, abs=1e-6)
    # Another mask (e.g. invalid ground truth) is honoured too.
    mask = np.ones(12, dtype=bool)
    mask[0] = False
    assert np.isnan(M.jitter_per_frame(gt, FPS, valid=mask)[0])


def test_no_complete_window_gives_nan_not_an_error():
    gt = walking_sequence(5)
    pred = gt.copy()
    pred[2] = np.nan
    assert math.isnan(M.jitter(pred, FPS))
    assert math.isnan(M.accel_error(pred, gt, FPS))


def test_w_mpjpe_fits_on_the_first_valid_frames_of_a_chunk():
    gt = walking_sequence(6)
    pred = gt + np.array([0.0, 0.0, 0.0, 0.01, 0.02, 0.03])[:, None, None] * [1.0, 0, 0]
    pred[0] = np.nan  # the fit uses frames 1 and 2 (both exact)
    np.testing.assert_allclose(M.w_mpjpe_per_frame(pred, gt)[1:], [0, 0, 10, 20, 30], atol=1e-9)


def test_all_nan_input_raises():
    gt = walking_sequence(8)
    pred = np.full_like(gt, np.nan)
    calls = [
        lambda: M.pa_mpjpe(pred, gt),
        lambda: M.mpjpe(pred, gt, SMPL22),
        lambda: M.abs_mpjpe(pred, gt),
        lambda: M.w_mpjpe(pred, gt),
        lambda: M.wa_mpjpe(pred, gt),
        lambda: M.rte(pred, gt, SMPL22),
        lambda: M.jitter(pred, FPS),
        lambda: M.accel_error(pred, gt, FPS),
        lambda: M.foot_sliding(pred, gt, SMPL22, FPS),
        lambda: M.evaluate_sequence(pred, gt, SMPL22, FPS),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="non-finite"):
            call()


# ------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("pred_shape", "gt_shape", "message"),
    [
        ((10, 22, 3), (10, 21, 3), "same shape"),
        ((10, 22, 2), (10, 22, 2), r"\(T, J, 3\)"),
        ((22, 3), (22, 3), r"\(T, J, 3\)"),
        ((10, 0, 3), (10, 0, 3), "no joints"),
    ],
)
def test_bad_shapes_raise(pred_shape, gt_shape, message):
    with pytest.raises(ValueError, match=message):
        M.abs_mpjpe(np.zeros(pred_shape), np.zeros(gt_shape))


def test_bad_arguments_raise_clear_errors():
    gt = walking_sequence(10)
    with pytest.raises(ValueError, match="at least 4 frames"):
        M.jitter(gt[:3], FPS)
    with pytest.raises(ValueError, match="at least 3 frames"):
        M.accel_error(gt[:2], gt[:2], FPS)
    with pytest.raises(ValueError, match="at least 4 frames"):
        M.evaluate_sequence(gt[:3], gt[:3], SMPL22, FPS)
    with pytest.raises(ValueError, match="fps"):
        M.jitter(gt, 0.0)
    with pytest.raises(TypeError, match="fps"):
        M.jitter(gt, "30")
    with pytest.raises(ValueError, match="chunk_size"):
        M.w_mpjpe(gt, gt, chunk_size=0)
    with pytest.raises(ValueError, match="22 joints but the arrays have 3"):
        M.mpjpe(np.zeros((5, 3, 3)), np.zeros((5, 3, 3)), SMPL22)
    with pytest.raises(ValueError, match="out of range"):
        M.mpjpe(gt, gt, (0, 22))
    with pytest.raises(TypeError, match="numeric"):
        M.abs_mpjpe(np.full((2, 1, 3), "a"), np.zeros((2, 1, 3)))
    with pytest.raises(ValueError, match="finite"):
        M.procrustes_align(np.array([[np.nan, 0, 0]]), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="positive sum"):
        M.procrustes_align(np.ones((4, 3)), np.ones((4, 3)), weights=np.zeros(4))
    with pytest.raises(ValueError, match="bool array"):
        M.jitter(gt, FPS, valid=np.ones(9, dtype=bool))


# ------------------------------------------------------------------------ summary and table


def test_evaluate_sequence_returns_every_key():
    gt = walking_sequence(120)
    rotation = Rotation.from_euler("y", 40, degrees=True).as_matrix()
    pred = similarity(gt, 1.05, rotation, [0.2, 0.0, -0.1])
    row = M.evaluate_sequence(pred, gt, SMPL22, FPS)
    assert set(row) == set(M.METRIC_KEYS) | {"num_frames"}
    assert all(isinstance(value, float) for value in row.values())
    assert row["num_frames"] == 120.0
    for key in ("pa_mpjpe_mm", "w_mpjpe100_mm", "wa_mpjpe100_mm"):
        assert row[key] == pytest.approx(0.0, abs=1e-8)
    assert row["abs_mpjpe_mm"] > 100.0
    assert row["mpjpe_mm"] > 10.0
    assert row["rte_pct"] > 0 and row["rte_mm"] > 0  # the 1.05 scale survives a rigid fit
    assert row["jitter_m_s3"] == pytest.approx(1.05 * M.jitter(gt, FPS), rel=1e-9)
    assert math.isnan(row["foot_sliding_mm"])  # the gt walks at >= 0.8 m/s: never in contact

    planted = planted_feet(10)
    sliding = planted + np.arange(10)[:, None, None] * np.array([0.01, 0.0, 0.0])
    assert M.evaluate_sequence(sliding, planted, SMPL22, FPS)["foot_sliding_mm"] == pytest.approx(
        10.0
    )

    gt_nan = gt.copy()
    gt_nan[50] = np.nan
    assert M.evaluate_sequence(pred, gt_nan, SMPL22, FPS)["num_frames"] == 119.0


def test_aggregate_is_frame_weighted_and_skips_nan():
    rows = [
        {"pa_mpjpe_mm": 10.0, "rte_pct": math.nan, "num_frames": 100.0},
        {"pa_mpjpe_mm": 30.0, "rte_pct": 2.0, "num_frames": 300.0},
    ]
    table = M.aggregate(rows)
    assert table["pa_mpjpe_mm"] == pytest.approx(25.0)
    assert table["rte_pct"] == pytest.approx(2.0)
    assert table["num_frames"] == 400.0
    assert table["num_sequences"] == 2.0
    assert M.aggregate(rows, weights=[1.0, 1.0])["pa_mpjpe_mm"] == pytest.approx(20.0)
    with pytest.raises(ValueError, match="at least one row"):
        M.aggregate([])
    with pytest.raises(ValueError, match="one weight per row"):
        M.aggregate(rows, weights=[1.0])
    with pytest.raises(ValueError, match="keys"):
        M.aggregate([rows[0], {"pa_mpjpe_mm": 1.0, "num_frames": 5.0}])
    with pytest.raises(ValueError, match="pass weights"):
        M.aggregate([{"pa_mpjpe_mm": 1.0}])


# ------------------------------------------------------------------- property-based tests

rotations = st.tuples(*[st.floats(-1.0, 1.0) for _ in range(4)]).filter(
    lambda q: 0.1 < math.sqrt(sum(c * c for c in q))
)
offsets = st.tuples(*[st.floats(-5.0, 5.0) for _ in range(3)])
scales = st.floats(0.2, 5.0)


def rotation_from(quaternion) -> np.ndarray:
    return Rotation.from_quat(np.asarray(quaternion)).as_matrix()


@settings(max_examples=40, deadline=None)
@given(quaternion=rotations, scale=scales, offset=offsets, seed=st.integers(0, 2**16))
def test_random_similarity_is_aligned_away(quaternion, scale, offset, seed):
    gt = walking_sequence(12, seed=seed)
    rotation = rotation_from(quaternion)
    pred = similarity(gt, scale, rotation, offset)
    assert M.pa_mpjpe(pred, gt) == pytest.approx(0.0, abs=1e-6)
    assert M.w_mpjpe(pred, gt, chunk_size=5) == pytest.approx(0.0, abs=1e-6)
    assert M.wa_mpjpe(pred, gt, chunk_size=5) == pytest.approx(0.0, abs=1e-6)
    _, (s, r, t) = M.procrustes_align(pred[0], gt[0])
    assert float(s) == pytest.approx(1 / scale, rel=1e-6)
    np.testing.assert_allclose(r, rotation.T, atol=1e-6)
    # Rigid motion of the root is removed by the RTE fit.
    assert M.rte(similarity(gt, 1.0, rotation, offset), gt, SMPL22).mm == pytest.approx(
        0.0, abs=1e-6
    )


@settings(max_examples=40, deadline=None)
@given(quaternion=rotations, scale=scales, offset=offsets, seed=st.integers(0, 2**16))
def test_pa_mpjpe_ignores_a_similarity_of_the_prediction(quaternion, scale, offset, seed):
    gt = walking_sequence(6, seed=seed)
    pred = gt + np.random.default_rng(seed).normal(scale=0.05, size=gt.shape)
    moved = similarity(pred, scale, rotation_from(quaternion), offset)
    np.testing.assert_allclose(
        M.pa_mpjpe_per_frame(moved, gt), M.pa_mpjpe_per_frame(pred, gt), rtol=1e-6, atol=1e-6
    )


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    quaternion=rotations,
    scale=scales,
    offset=offsets,
    fit_scale=st.booleans(),
)
def test_procrustes_is_a_proper_least_squares_optimum(seed, quaternion, scale, offset, fit_scale):
    rng = np.random.default_rng(seed)
    batch_source = rng.normal(size=(3, 7, 3))
    batch_target = rng.normal(size=(3, 7, 3))
    weights = rng.uniform(0.1, 1.0, size=(3, 7))
    aligned, (s, r, t) = M.procrustes_align(batch_source, batch_target, fit_scale, weights)
    assert s.shape == (3,) and r.shape == (3, 3, 3) and t.shape == (3, 3)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-9)
    np.testing.assert_allclose(
        r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-9
    )
    best = (weights * ((aligned - batch_target) ** 2).sum(-1)).sum(-1)
    # Any other proper similarity (rigid when the scale is not fitted) does no better.
    other = similarity(batch_source, scale if fit_scale else 1.0, rotation_from(quaternion), offset)
    other_cost = (weights * ((other - batch_target) ** 2).sum(-1)).sum(-1)
    assert (best <= other_cost + 1e-9).all()
    # Batched results equal one-at-a-time results.
    single, _ = M.procrustes_align(batch_source[1], batch_target[1], fit_scale, weights[1])
    np.testing.assert_allclose(aligned[1], single, atol=1e-12)
