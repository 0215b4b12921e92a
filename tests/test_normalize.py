"""Tests for mocap_core.normalize: resampling, grounding, broken frames, units and up axis."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from mocap_core.joint_sets import SMPL22
from mocap_core.normalize import (
    find_broken_frames,
    ground,
    resample_positions,
    resample_rotations,
    resample_times,
    resample_tracks,
    split_at_broken,
    to_metres,
    to_y_up,
    up_axis_rotation,
)


def linear_motion(times: np.ndarray) -> np.ndarray:
    """(T, 2, 3) joints moving at constant velocity."""
    start = np.array([[0.1, 0.9, -0.3], [0.4, 1.5, 0.2]])
    velocity = np.array([[1.2, -0.1, 0.5], [-0.3, 0.2, 2.0]])
    return start + times[:, None, None] * velocity


# ---------------------------------------------------------------- resampling positions


def test_60_to_30_halves_frames_and_keeps_times() -> None:
    x = linear_motion(np.arange(301) / 60.0)
    out = resample_positions(x, 60, 30)
    assert out.shape == (151, 2, 3)
    np.testing.assert_allclose(out, x[::2], atol=1e-12)  # frame k at time k / 30 = source 2k
    np.testing.assert_allclose(resample_times(301, 60, 30), np.arange(151) * 2.0)


@pytest.mark.parametrize("method", ["linear", "pchip"])
@settings(max_examples=40, deadline=None)
@given(
    num_frames=st.integers(2, 200),
    fps_in=st.sampled_from([24.0, 25.0, 29.97, 30.0, 50.0, 60.0, 100.0, 120.0]),
    fps_out=st.sampled_from([20.0, 30.0, 60.0]),
)
def test_resampling_linear_motion_is_exact(
    method: str, num_frames: int, fps_in: float, fps_out: float
) -> None:
    x = linear_motion(np.arange(num_frames) / fps_in)
    out = resample_positions(x, fps_in, fps_out, method=method)
    expected_len = int(np.floor((num_frames - 1) * fps_out / fps_in + 1e-9)) + 1
    assert out.shape == (expected_len, 2, 3)
    times = np.arange(expected_len) / fps_out
    assert times[-1] <= (num_frames - 1) / fps_in + 1e-9  # no extrapolation
    np.testing.assert_allclose(out, linear_motion(times), atol=1e-9)


def test_linear_resampling_keeps_nan_local() -> None:
    x = linear_motion(np.arange(20) / 30.0)
    x[10] = np.nan
    out = resample_positions(x, 30, 30)
    assert np.isnan(out[10]).all()
    assert np.isfinite(np.delete(out, 10, axis=0)).all()
    up = resample_positions(x, 30, 60)  # frames 19, 20, 21 touch source frame 10
    bad = np.flatnonzero(np.isnan(up).any(axis=(1, 2)))
    np.testing.assert_array_equal(bad, [19, 20, 21])


def test_pchip_refuses_nan_and_bad_arguments() -> None:
    x = np.zeros((5, 1, 3))
    x[2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        resample_positions(x, 30, 20, method="pchip")
    with pytest.raises(ValueError, match="method"):
        resample_positions(np.zeros((5, 3)), 30, 20, method="cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fps_in"):
        resample_positions(np.zeros((5, 3)), 0, 20)
    with pytest.raises(ValueError, match="empty"):
        resample_positions(np.zeros((0, 3)), 30, 20)


# ---------------------------------------------------------------- resampling rotations


def test_slerp_matches_constant_angular_velocity() -> None:
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    omega = 3.0  # rad/s; 9 rad over the clip, so the quaternion sign flips along the way

    def rotation_at(t: np.ndarray) -> np.ndarray:
        return Rotation.from_rotvec(np.outer(omega * t, axis)).as_matrix()

    fps_in, fps_out, num_frames = 100.0, 30.0, 301
    source = np.stack(
        [
            rotation_at(np.arange(num_frames) / fps_in),
            np.broadcast_to(np.eye(3), (num_frames, 3, 3)),
        ],
        axis=1,
    )
    out = resample_rotations(source, fps_in, fps_out)
    times = np.arange(out.shape[0]) / fps_out
    assert out.shape == (91, 2, 3, 3)
    np.testing.assert_allclose(out[:, 0], rotation_at(times), atol=1e-9)
    np.testing.assert_allclose(out[:, 1], np.broadcast_to(np.eye(3), (91, 3, 3)), atol=1e-12)
    # Orthonormal with det +1.
    gram = np.einsum("tsij,tsik->tsjk", out, out)
    np.testing.assert_allclose(gram, np.broadcast_to(np.eye(3), gram.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(out), 1.0, atol=1e-12)


def test_slerp_halfway_between_two_frames() -> None:
    a = Rotation.from_euler("y", 10, degrees=True).as_matrix()
    b = Rotation.from_euler("y", 50, degrees=True).as_matrix()
    out = resample_rotations(np.stack([a, b])[:, None], 1.0, 2.0)  # times 0, 0.5, 1
    assert out.shape == (3, 1, 3, 3)
    np.testing.assert_allclose(
        out[1, 0], Rotation.from_euler("y", 30, degrees=True).as_matrix(), atol=1e-12
    )


# ---------------------------------------------------------------- resampling 2D tracks


def test_resample_tracks_interpolates_and_keeps_missing() -> None:
    frames = np.array([0, 1, 2, 3, 4, 5, 6, 10, 11])  # frames 7..9 missing
    kps = np.zeros((len(frames), 2, 3))
    kps[:, 0, 0] = 10.0 * frames  # u moves 10 px per frame
    kps[:, 0, 1] = 5.0
    kps[:, 0, 2] = 0.9
    kps[:, 1, :2] = 50.0
    kps[:, 1, 2] = [0.8, 0.6, 0.0, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]  # joint 1 missing at frame 2
    out, out_frames = resample_tracks(kps, frames, 2.0, 3.0)
    # Output frame k is at source frame 2k/3. Kept: on a present frame, or between two
    # consecutive present frames; 6 2/3 .. 9 1/3 lie in the gap between frames 6 and 10.
    np.testing.assert_array_equal(out_frames, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16])
    source = out_frames * 2.0 / 3.0
    np.testing.assert_allclose(out[:, 0, 0], 10.0 * source, atol=1e-4)
    np.testing.assert_allclose(out[:, 0, 2], 0.9, atol=1e-6)
    # Joint 1: min of neighbours; frames 2/3 (0..1) -> 0.6; 4/3 (1..2) -> 0 missing; 2 -> 0.
    np.testing.assert_allclose(out[:4, 1, 2], [0.8, 0.6, 0.0, 0.0], atol=1e-6)
    assert np.all(out[2:4, 1, :2] == 0.0)
    assert out.dtype == np.float32 and out_frames.dtype == np.int32


def test_resample_tracks_60_to_30() -> None:
    frames = np.arange(0, 61)
    kps = np.ones((61, 17, 3))
    kps[..., 0] = frames[:, None] * 2.0
    out, out_frames = resample_tracks(kps, frames, 60, 30)
    np.testing.assert_array_equal(out_frames, np.arange(31))
    np.testing.assert_allclose(out[:, 0, 0], 4.0 * np.arange(31))
    with pytest.raises(ValueError, match="increasing"):
        resample_tracks(kps, frames[::-1], 60, 30)


# ---------------------------------------------------------------- grounding


def walking_feet(num_frames: int = 100) -> np.ndarray:
    """(T, 22, 3) SMPL-22-shaped joints whose feet alternate touching y = 0.3."""
    t = np.arange(num_frames) / 30.0
    joints = np.zeros((num_frames, 22, 3))
    joints[:, :, 1] = 1.2
    lift = 0.1 * np.abs(np.sin(2 * np.pi * t))
    for left, right in ((7, 8), (10, 11)):
        joints[:, left, 1] = 0.3 + np.where(np.sin(2 * np.pi * t) > 0, lift, 0.0)
        joints[:, right, 1] = 0.3 + np.where(np.sin(2 * np.pi * t) <= 0, lift, 0.0)
    return joints


def test_ground_puts_feet_on_the_floor() -> None:
    joints = walking_feet()
    grounded, offset = ground(joints, SMPL22.foot_joints)
    assert offset == pytest.approx(-0.3)
    feet = grounded[:, list(SMPL22.foot_joints), 1]
    np.testing.assert_allclose(feet.min(axis=1), 0.0, atol=1e-12)  # a foot down every frame
    np.testing.assert_allclose(grounded[..., 1] - joints[..., 1], -0.3)
    np.testing.assert_array_equal(grounded[..., [0, 2]], joints[..., [0, 2]])


def test_ground_ignores_a_single_glitch() -> None:
    joints = walking_feet()
    joints[40, 7, 1] = -5.0  # one frame's ankle far below the floor
    _, robust = ground(joints, SMPL22.foot_joints)
    _, minimum = ground(joints, SMPL22.foot_joints, method="minimum")
    assert robust == pytest.approx(-0.3)
    assert minimum == pytest.approx(5.0)
    _, lifted = ground(joints, SMPL22.foot_joints, foot_height=0.05)
    assert lifted == pytest.approx(-0.25)
    with pytest.raises(ValueError, match="method"):
        ground(joints, SMPL22.foot_joints, method="per_frame")  # type: ignore[arg-type]


# ---------------------------------------------------------------- broken frames


def test_nan_and_teleport_frames_split_the_sequence() -> None:
    t = np.arange(100) / 30.0
    joints = linear_motion(t)  # about 2 m/s, well under the limit
    joints[20] = np.nan  # dropped frame
    joints[50, 1] += [3.0, 0.0, 0.0]  # one-frame spike: 90 m/s out and back
    joints[70:] += [0.0, 0.0, 2.0]  # lasting jump (e.g. an identity switch)
    broken = find_broken_frames(joints, fps=30.0)
    np.testing.assert_array_equal(np.flatnonzero(broken), [20, 50, 70])
    runs = split_at_broken(joints, broken, min_length=10)
    assert runs == [slice(0, 20), slice(21, 50), slice(51, 70), slice(71, 100)]
    assert split_at_broken(joints, broken, min_length=25) == [slice(21, 50), slice(71, 100)]
    for run in runs:
        assert np.isfinite(joints[run]).all()


def test_invalid_joints_are_ignored_and_2d_missing_frames_are_broken() -> None:
    joints = linear_motion(np.arange(10) / 30.0)
    joints[3, 1] = np.nan
    assert find_broken_frames(joints, np.array([True, False]), fps=30).sum() == 0
    assert np.flatnonzero(find_broken_frames(joints, fps=30)).tolist() == [3]

    kps = np.ones((6, 17, 3))
    kps[2, :, 2] = 0.0  # nobody detected
    kps[4, 5, 0] = np.nan  # a present keypoint with no position
    kps[5, 6, :2] = np.nan  # NaN position of a missing keypoint does not matter...
    kps[5, 6, 2] = 0.0
    broken = find_broken_frames(kps, fps=30, kind="2d")
    np.testing.assert_array_equal(np.flatnonzero(broken), [2, 4])
    kps[1, 0, :2] = 5000.0
    fast = find_broken_frames(kps, fps=30, kind="2d", max_speed=10_000.0)
    assert fast[1]


def test_split_at_broken_edges() -> None:
    x = np.zeros(6)
    assert split_at_broken(x, np.zeros(6, bool), 1) == [slice(0, 6)]
    assert split_at_broken(x, np.ones(6, bool), 1) == []
    with pytest.raises(ValueError, match="shape"):
        split_at_broken(x, np.zeros(5, bool), 1)


# ---------------------------------------------------------------- units and up axis


def test_to_y_up_is_a_proper_rotation() -> None:
    R = up_axis_rotation("z")
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-15)
    np.testing.assert_allclose(to_y_up(np.array([0.0, 0.0, 1.0]), "z"), [0.0, 1.0, 0.0])
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 3))
    # Handedness kept: the cross product commutes with the change of frame.
    np.testing.assert_allclose(
        np.cross(to_y_up(a, "z"), to_y_up(b, "z")), to_y_up(np.cross(a, b), "z")
    )
    np.testing.assert_array_equal(to_y_up(a, "y"), a)
    with pytest.raises(ValueError, match="up axis"):
        to_y_up(a, "x")


def test_to_metres() -> None:
    np.testing.assert_allclose(to_metres(np.array([100.0, 250.0]), "cm"), [1.0, 2.5])
    np.testing.assert_allclose(to_metres(np.array([1000.0]), "mm"), [1.0])
    np.testing.assert_allclose(to_metres(np.array([10.0]), "in"), [0.254])
    with pytest.raises(ValueError, match="units"):
        to_metres(np.zeros(3), "furlong")
