"""Tests for mocap_core.rotations: known matrices, round trips, conventions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.transform import Rotation

from mocap_core.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    axis_rotation_matrix,
    euler_to_matrix,
    is_rotation_matrix,
    matrix_to_axis_angle,
    matrix_to_euler,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_slerp,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    rotation_6d_to_matrix,
    rotation_between_vectors,
    up_axis_rotation,
)

TAIT_BRYAN = ["".join(p) for p in itertools.permutations("XYZ")]
EX, EY, EZ = np.eye(3)

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
quaternions = arrays(np.float64, (4,), elements=st.floats(-1, 1)).filter(
    lambda q: np.linalg.norm(q) > 0.1
)
rotvecs = arrays(np.float64, (3,), elements=st.floats(-3.1, 3.1))


def random_rotations(n: int, seed: int = 0) -> np.ndarray:
    return Rotation.random(n, random_state=seed).as_matrix()


def test_elementary_rotations_are_right_handed() -> None:
    np.testing.assert_allclose(axis_rotation_matrix("Z", 90, degrees=True) @ EX, EY, atol=1e-12)
    np.testing.assert_allclose(axis_rotation_matrix("X", 90, degrees=True) @ EY, EZ, atol=1e-12)
    np.testing.assert_allclose(axis_rotation_matrix("y", np.pi / 2) @ EZ, EX, atol=1e-12)


def test_euler_order_is_multiplication_order() -> None:
    # R = Rz(90) @ Rx(90): y -> z (Rx) -> z (Rz); z -> -y (Rx) -> x (Rz).
    rot = euler_to_matrix(np.array([90.0, 90.0]), "ZX", degrees=True)
    np.testing.assert_allclose(rot @ EY, EZ, atol=1e-12)
    np.testing.assert_allclose(rot @ EZ, EX, atol=1e-12)
    angles = np.array([10.0, -35.0, 70.0])
    expected = (
        axis_rotation_matrix("Z", 10, degrees=True)
        @ axis_rotation_matrix("X", -35, degrees=True)
        @ axis_rotation_matrix("Y", 70, degrees=True)
    )
    np.testing.assert_allclose(euler_to_matrix(angles, "ZXY", degrees=True), expected, atol=1e-12)


@pytest.mark.parametrize("order", TAIT_BRYAN)
def test_euler_matches_scipy_intrinsic(order: str) -> None:
    angles = np.random.default_rng(1).uniform(-180, 180, size=(50, 3))
    expected = Rotation.from_euler(order, angles, degrees=True).as_matrix()
    np.testing.assert_allclose(euler_to_matrix(angles, order, degrees=True), expected, atol=1e-12)


def test_euler_vectorised_over_leading_dims_and_short_orders() -> None:
    angles = np.random.default_rng(2).uniform(-3, 3, size=(4, 5, 2))
    out = euler_to_matrix(angles, "YZ")
    assert out.shape == (4, 5, 3, 3)
    np.testing.assert_allclose(
        out[2, 3],
        axis_rotation_matrix("Y", angles[2, 3, 0]) @ axis_rotation_matrix("Z", angles[2, 3, 1]),
    )


@settings(max_examples=60, deadline=None)
@given(
    order=st.sampled_from(TAIT_BRYAN),
    a=st.floats(-179, 179),
    b=st.floats(-89, 89),
    c=st.floats(-179, 179),
)
def test_euler_round_trip(order: str, a: float, b: float, c: float) -> None:
    angles = np.array([a, b, c])
    back = matrix_to_euler(euler_to_matrix(angles, order, degrees=True), order, degrees=True)
    np.testing.assert_allclose(back, angles, atol=1e-6)


@pytest.mark.parametrize("order", TAIT_BRYAN)
def test_matrix_to_euler_reproduces_matrix_including_gimbal_lock(order: str) -> None:
    rots = random_rotations(40, seed=3)
    locked = euler_to_matrix(
        np.array([[30.0, 90.0, 20.0], [-50.0, -90.0, 10.0]]), order, degrees=True
    )
    rots = np.concatenate([rots, locked])
    back = euler_to_matrix(matrix_to_euler(rots, order), order)
    np.testing.assert_allclose(back, rots, atol=1e-6)


@settings(max_examples=80, deadline=None)
@given(q=quaternions)
def test_quaternion_matrix_round_trip(q: np.ndarray) -> None:
    rot = quaternion_to_matrix(q)
    assert is_rotation_matrix(rot)
    q_back = matrix_to_quaternion(rot)
    assert q_back[0] >= 0
    q_unit = q / np.linalg.norm(q)
    # q and -q are the same rotation.
    assert min(np.abs(q_back - q_unit).max(), np.abs(q_back + q_unit).max()) < 1e-9
    np.testing.assert_allclose(quaternion_to_matrix(q_back), rot, atol=1e-12)


def test_quaternion_convention_matches_scipy_scalar_first() -> None:
    rots = random_rotations(100, seed=4)
    ours = matrix_to_quaternion(rots)
    theirs = Rotation.from_matrix(rots).as_quat()[:, [3, 0, 1, 2]]
    theirs = np.where(theirs[:, :1] < 0, -theirs, theirs)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    # 180-degree rotations exercise every branch of the matrix -> quaternion conversion.
    flips = np.stack([np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])])
    np.testing.assert_allclose(quaternion_to_matrix(matrix_to_quaternion(flips)), flips, atol=1e-12)


@settings(max_examples=80, deadline=None)
@given(v=rotvecs)
def test_axis_angle_round_trips(v: np.ndarray) -> None:
    rot = axis_angle_to_matrix(v)
    assert is_rotation_matrix(rot)
    np.testing.assert_allclose(rot, Rotation.from_rotvec(v).as_matrix(), atol=1e-10)
    np.testing.assert_allclose(axis_angle_to_matrix(matrix_to_axis_angle(rot)), rot, atol=1e-9)
    back = quaternion_to_axis_angle(axis_angle_to_quaternion(v))
    np.testing.assert_allclose(axis_angle_to_matrix(back), rot, atol=1e-9)
    if np.linalg.norm(v) < np.pi - 1e-6:  # the rotation vector is unique below pi
        np.testing.assert_allclose(back, v, atol=1e-9)


def test_axis_angle_small_and_near_pi() -> None:
    tiny = np.array([1e-9, -2e-9, 3e-9])
    np.testing.assert_allclose(matrix_to_axis_angle(axis_angle_to_matrix(tiny)), tiny, atol=1e-15)
    near_pi = np.array([0.0, 0.0, np.pi - 1e-7])
    np.testing.assert_allclose(
        matrix_to_axis_angle(axis_angle_to_matrix(near_pi)), near_pi, atol=1e-6
    )
    half_turn = axis_angle_to_matrix(np.array([np.pi, 0.0, 0.0]))
    np.testing.assert_allclose(half_turn, np.diag([1.0, -1.0, -1.0]), atol=1e-12)


def test_rotation_6d_round_trip_and_gram_schmidt() -> None:
    rots = random_rotations(30, seed=5)
    six = matrix_to_rotation_6d(rots)
    assert six.shape == (30, 6)
    np.testing.assert_allclose(six[:, :3], rots[:, :, 0])
    np.testing.assert_allclose(rotation_6d_to_matrix(six), rots, atol=1e-12)
    noisy = six + np.random.default_rng(6).normal(scale=0.1, size=six.shape)
    assert is_rotation_matrix(rotation_6d_to_matrix(noisy)).all()
    with pytest.raises(ValueError, match="parallel"):
        rotation_6d_to_matrix(np.array([1.0, 0, 0, 2.0, 0, 0]))


def test_slerp_endpoints_midpoint_and_shortest_arc() -> None:
    q0 = matrix_to_quaternion(np.eye(3))
    q1 = matrix_to_quaternion(axis_rotation_matrix("Z", 90, degrees=True))
    np.testing.assert_allclose(quaternion_slerp(q0, q1, 0.0), q0, atol=1e-12)
    np.testing.assert_allclose(quaternion_slerp(q0, q1, 1.0), q1, atol=1e-12)
    mid = quaternion_to_matrix(quaternion_slerp(q0, q1, 0.5))
    np.testing.assert_allclose(mid, axis_rotation_matrix("Z", 45, degrees=True), atol=1e-12)
    # -q1 is the same rotation: slerp must still take the 90-degree path, not the 270.
    mid_flipped = quaternion_to_matrix(quaternion_slerp(q0, -q1, 0.5))
    np.testing.assert_allclose(mid_flipped, mid, atol=1e-12)
    # Constant angular speed: angles at t = 0.1 .. 0.9 grow linearly.
    ts = np.linspace(0.1, 0.9, 9)
    angles = np.linalg.norm(quaternion_to_axis_angle(quaternion_slerp(q0, q1, ts)), axis=-1)
    np.testing.assert_allclose(angles, ts * np.pi / 2, atol=1e-12)


def test_slerp_broadcasts_over_batches() -> None:
    q0 = matrix_to_quaternion(random_rotations(7, seed=7))
    q1 = matrix_to_quaternion(random_rotations(7, seed=8))
    out = quaternion_slerp(q0[:, None], q1[:, None], np.linspace(0, 1, 5)[None, :])
    assert out.shape == (7, 5, 4)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0)
    np.testing.assert_allclose(
        quaternion_to_matrix(out[:, -1]), quaternion_to_matrix(q1), atol=1e-12
    )


def test_up_axis_rotation_is_proper_and_maps_z_to_y() -> None:
    z_to_y = up_axis_rotation("z", "y")
    np.testing.assert_array_equal(z_to_y @ EZ, EY)
    np.testing.assert_array_equal(z_to_y @ EY, -EZ)
    np.testing.assert_array_equal(z_to_y @ EX, EX)
    assert np.linalg.det(z_to_y) == pytest.approx(1.0)
    np.testing.assert_array_equal(up_axis_rotation("y", "z") @ z_to_y, np.eye(3))
    np.testing.assert_array_equal(up_axis_rotation("y", "y"), np.eye(3))
    with pytest.raises(ValueError, match="source_up"):
        up_axis_rotation("x", "y")  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(
    angles=arrays(np.float64, (3,), elements=finite),
    order=st.sampled_from(TAIT_BRYAN + ["XYX", "ZZ"]),
)
def test_every_constructor_gives_det_plus_one(angles: np.ndarray, order: str) -> None:
    rot = euler_to_matrix(angles[: len(order)] if len(order) < 3 else angles, order, degrees=True)
    assert is_rotation_matrix(rot, atol=1e-9)
    assert np.linalg.det(rot) == pytest.approx(1.0, abs=1e-9)


def test_rotation_between_vectors() -> None:
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(2, 20, 3))
    rot = rotation_between_vectors(a, b)
    mapped = np.einsum("nij,nj->ni", rot, a / np.linalg.norm(a, axis=-1, keepdims=True))
    np.testing.assert_allclose(mapped, b / np.linalg.norm(b, axis=-1, keepdims=True), atol=1e-12)
    opposite = rotation_between_vectors(EX, -EX)
    np.testing.assert_allclose(opposite @ EX, -EX, atol=1e-12)
    assert is_rotation_matrix(opposite)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="unknown axes"):
        euler_to_matrix(np.zeros(3), "XYW")
    with pytest.raises(ValueError, match="shape"):
        euler_to_matrix(np.zeros(2), "XYZ")
    with pytest.raises(ValueError, match="Tait-Bryan"):
        matrix_to_euler(np.eye(3), "XYX")
    with pytest.raises(ValueError, match="zero-norm"):
        quaternion_to_matrix(np.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        matrix_to_quaternion(np.eye(4))
    assert not is_rotation_matrix(np.diag([1.0, 1.0, -1.0]))
