"""Rotation conversions, vectorised over any leading dimensions (numpy).

Conventions (used throughout the project):

- Rotation matrices ``(..., 3, 3)`` act on column vectors, ``v_parent = R @ v_child``.
- Euler angles are **intrinsic** and the axis string is the **multiplication order**, as in
  BVH: channels ``Zrotation Xrotation Yrotation`` with values ``(a, b, c)`` give
  ``R = Rz(a) @ Rx(b) @ Ry(c)`` (``order="ZXY"``). Each elementary rotation is
  right-handed (counter-clockwise looking down the axis towards the origin).
- Quaternions are **scalar first**, ``(..., 4) = (w, x, y, z)``, unit norm; conversions from
  matrices return the representative with ``w >= 0``.
- Axis-angle is a rotation vector ``(..., 3)``: unit axis times the angle in radians.
- The 6D representation (Zhou et al., CVPR 2019) is the first two **columns** of the
  matrix, ``(..., 6) = (R[:, 0], R[:, 1])``; the inverse is Gram-Schmidt.
- Up-axis changes are proper rotations (det +1), never axis swaps: z-up -> y-up is a rotation
  of -90 degrees about x, which sends +z to +y and +y to -z.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

_AXIS_INDEX = {"X": 0, "Y": 1, "Z": 2}
_EPS = 1e-12


def _as_float(array: np.ndarray | float) -> np.ndarray:
    out = np.asarray(array)
    if not np.issubdtype(out.dtype, np.floating):
        out = out.astype(np.float64)
    return out


def _check_last_dims(name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if array.shape[array.ndim - len(shape) :] != shape or array.ndim < len(shape):
        raise ValueError(
            f"{name} must have shape (..., {', '.join(map(str, shape))}), got {array.shape}"
        )


def _normalise_order(order: str) -> str:
    if not isinstance(order, str) or not order:
        raise ValueError(f"Euler order must be a non-empty string of axes X/Y/Z, got {order!r}")
    upper = order.upper()
    bad = [c for c in upper if c not in _AXIS_INDEX]
    if bad:
        raise ValueError(f"Euler order {order!r} has unknown axes {bad}; use letters X, Y, Z")
    return upper


def axis_rotation_matrix(
    axis: str, angles: np.ndarray | float, *, degrees: bool = False
) -> np.ndarray:
    """Elementary right-handed rotation about one coordinate axis.

    Args:
        axis: ``"X"``, ``"Y"`` or ``"Z"`` (case-insensitive).
        angles: ``(...)`` angles, radians unless ``degrees``.

    Returns:
        ``(..., 3, 3)`` rotation matrices, dtype of ``angles`` (float64 for integers).
    """
    axis_upper = _normalise_order(axis)
    if len(axis_upper) != 1:
        raise ValueError(f"axis must be one of X, Y, Z, got {axis!r}")
    theta = _as_float(angles)
    if degrees:
        theta = np.deg2rad(theta)
    c, s = np.cos(theta), np.sin(theta)
    one, zero = np.ones_like(theta), np.zeros_like(theta)
    if axis_upper == "X":
        rows = ((one, zero, zero), (zero, c, -s), (zero, s, c))
    elif axis_upper == "Y":
        rows = ((c, zero, s), (zero, one, zero), (-s, zero, c))
    else:
        rows = ((c, -s, zero), (s, c, zero), (zero, zero, one))
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def euler_to_matrix(angles: np.ndarray, order: str, *, degrees: bool = False) -> np.ndarray:
    """Intrinsic Euler angles to rotation matrices, ``R = R_{order[0]} @ R_{order[1]} @ ...``.

    Args:
        angles: ``(..., K)`` angles, radians unless ``degrees``; ``angles[..., k]`` is the
            rotation about axis ``order[k]``.
        order: ``K`` axis letters, e.g. ``"ZXY"`` for BVH channels
            ``Zrotation Xrotation Yrotation``. Any length >= 1 and repeated axes are allowed.

    Returns:
        ``(..., 3, 3)`` rotation matrices.
    """
    order_upper = _normalise_order(order)
    angles_arr = _as_float(angles)
    if angles_arr.ndim < 1 or angles_arr.shape[-1] != len(order_upper):
        raise ValueError(
            f"angles must have shape (..., {len(order_upper)}) for order {order!r}, "
            f"got {angles_arr.shape}"
        )
    result = axis_rotation_matrix(order_upper[0], angles_arr[..., 0], degrees=degrees)
    for k in range(1, len(order_upper)):
        result = result @ axis_rotation_matrix(order_upper[k], angles_arr[..., k], degrees=degrees)
    return result


def matrix_to_euler(matrix: np.ndarray, order: str, *, degrees: bool = False) -> np.ndarray:
    """Rotation matrices to intrinsic Tait-Bryan angles (inverse of :func:`euler_to_matrix`).

    Args:
        matrix: ``(..., 3, 3)`` rotation matrices.
        order: three distinct axes, e.g. ``"ZXY"``.

    Returns:
        ``(..., 3)`` angles (radians unless ``degrees``); the middle angle lies in
        ``[-pi/2, pi/2]``, the others in ``(-pi, pi]``. At gimbal lock (middle angle
        +-90 degrees) the third angle is set to 0 and the first absorbs the rest.
    """
    order_upper = _normalise_order(order)
    if len(order_upper) != 3 or len(set(order_upper)) != 3:
        raise ValueError(f"matrix_to_euler needs three distinct axes (Tait-Bryan), got {order!r}")
    m = _as_float(matrix)
    _check_last_dims("matrix", m, (3, 3))
    i, j, k = (_AXIS_INDEX[c] for c in order_upper)
    # sign = +1 for cyclic orders (XYZ, YZX, ZXY), -1 otherwise.
    sign = 1.0 if (j - i) % 3 == 1 else -1.0
    # For R = Ri(a) Rj(b) Rk(c): R[i, k] = sign * sin(b); R[j, k], R[k, k] and R[i, j],
    # R[i, i] give the first and third angles.
    sin_b = np.clip(sign * m[..., i, k], -1.0, 1.0)
    b = np.arcsin(sin_b)
    cos_b = np.sqrt(np.clip(1.0 - sin_b**2, 0.0, None))
    regular = cos_b > 1e-7
    a = np.arctan2(-sign * m[..., j, k], m[..., k, k])
    c = np.arctan2(-sign * m[..., i, j], m[..., i, i])
    # Gimbal lock: only a +- c is defined; put everything in a using the j-th column.
    a_locked = np.arctan2(sign * m[..., k, j], m[..., j, j])
    a = np.where(regular, a, a_locked)
    c = np.where(regular, c, 0.0)
    out = np.stack([a, b, c], axis=-1)
    return np.rad2deg(out) if degrees else out


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rotation vectors (axis * angle, radians) ``(..., 3)`` to matrices ``(..., 3, 3)``.

    Rodrigues' formula with a Taylor expansion near zero so small angles stay exact.
    """
    v = _as_float(rotvec)
    _check_last_dims("rotvec", v, (3,))
    theta2 = np.sum(v * v, axis=-1)
    theta = np.sqrt(theta2)
    small = theta < 1e-4
    safe_theta = np.where(small, 1.0, theta)
    # sin(t)/t and (1 - cos(t))/t^2 with series for small t.
    a = np.where(small, 1.0 - theta2 / 6.0, np.sin(safe_theta) / safe_theta)
    b = np.where(small, 0.5 - theta2 / 24.0, (1.0 - np.cos(safe_theta)) / safe_theta**2)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = np.zeros_like(x)
    skew = np.stack(
        [
            np.stack([zero, -z, y], axis=-1),
            np.stack([z, zero, -x], axis=-1),
            np.stack([-y, x, zero], axis=-1),
        ],
        axis=-2,
    )
    eye = np.broadcast_to(np.eye(3, dtype=v.dtype), skew.shape)
    return eye + a[..., None, None] * skew + b[..., None, None] * (skew @ skew)


def matrix_to_quaternion(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` to unit quaternions ``(..., 4)`` (w, x, y, z), w >= 0.

    Uses the numerically stable branch (largest of w, x, y, z) per element.
    """
    m = _as_float(matrix)
    _check_last_dims("matrix", m, (3, 3))
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4 * (w^2, x^2, y^2, z^2) from the trace; pick the largest to divide by.
    squares = np.stack(
        [
            1.0 + m00 + m11 + m22,
            1.0 + m00 - m11 - m22,
            1.0 - m00 + m11 - m22,
            1.0 - m00 - m11 + m22,
        ],
        axis=-1,
    )
    best = np.argmax(squares, axis=-1)
    root = 2.0 * np.sqrt(
        np.clip(np.take_along_axis(squares, best[..., None], -1)[..., 0], _EPS, None)
    )
    d21, d02, d10 = (
        m[..., 2, 1] - m[..., 1, 2],
        m[..., 0, 2] - m[..., 2, 0],
        m[..., 1, 0] - m[..., 0, 1],
    )
    s21, s02, s10 = (
        m[..., 2, 1] + m[..., 1, 2],
        m[..., 0, 2] + m[..., 2, 0],
        m[..., 1, 0] + m[..., 0, 1],
    )
    candidates = np.stack(
        [
            np.stack([0.25 * root, d21 / root, d02 / root, d10 / root], axis=-1),
            np.stack([d21 / root, 0.25 * root, s10 / root, s02 / root], axis=-1),
            np.stack([d02 / root, s10 / root, 0.25 * root, s21 / root], axis=-1),
            np.stack([d10 / root, s02 / root, s21 / root, 0.25 * root], axis=-1),
        ],
        axis=-2,
    )
    quat = np.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
    quat = quat / np.linalg.norm(quat, axis=-1, keepdims=True)
    return np.where(quat[..., :1] < 0.0, -quat, quat)


def quaternion_to_matrix(quaternion: np.ndarray) -> np.ndarray:
    """Quaternions ``(..., 4)`` (w, x, y, z) to rotation matrices ``(..., 3, 3)``.

    The input is normalised first; a zero quaternion raises ``ValueError``.
    """
    q = _as_float(quaternion)
    _check_last_dims("quaternion", q, (4,))
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(norm < _EPS):
        raise ValueError("quaternion_to_matrix got a zero-norm quaternion")
    w, x, y, z = np.moveaxis(q / norm, -1, 0)
    rows = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def quaternion_to_axis_angle(quaternion: np.ndarray) -> np.ndarray:
    """Quaternions ``(..., 4)`` (w, x, y, z) to rotation vectors ``(..., 3)``, angle in [0, pi]."""
    q = _as_float(quaternion)
    _check_last_dims("quaternion", q, (4,))
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[..., :1] < 0.0, -q, q)
    w, xyz = q[..., 0], q[..., 1:]
    sin_half = np.linalg.norm(xyz, axis=-1)
    angle = 2.0 * np.arctan2(sin_half, w)
    small = sin_half < 1e-8
    # angle / sin(angle/2) -> 2 / w as the angle -> 0.
    factor = np.where(small, 2.0 / np.maximum(w, _EPS), angle / np.where(small, 1.0, sin_half))
    return xyz * factor[..., None]


def axis_angle_to_quaternion(rotvec: np.ndarray) -> np.ndarray:
    """Rotation vectors ``(..., 3)`` (radians) to unit quaternions ``(..., 4)`` (w, x, y, z)."""
    v = _as_float(rotvec)
    _check_last_dims("rotvec", v, (3,))
    angle = np.linalg.norm(v, axis=-1)
    small = angle < 1e-8
    # sin(angle/2) / angle -> 1/2 as the angle -> 0.
    factor = np.where(
        small, 0.5 - angle**2 / 48.0, np.sin(angle / 2.0) / np.where(small, 1.0, angle)
    )
    quat = np.concatenate([np.cos(angle / 2.0)[..., None], v * factor[..., None]], axis=-1)
    return np.where(quat[..., :1] < 0.0, -quat, quat)


def matrix_to_axis_angle(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` to rotation vectors ``(..., 3)``, angle in [0, pi].

    Goes through the quaternion so that angles near pi stay accurate.
    """
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def matrix_to_rotation_6d(matrix: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` to the 6D representation ``(..., 6)``.

    The first two columns, concatenated: ``(R[..., :, 0], R[..., :, 1])``.
    """
    m = _as_float(matrix)
    _check_last_dims("matrix", m, (3, 3))
    return np.concatenate([m[..., :, 0], m[..., :, 1]], axis=-1)


def rotation_6d_to_matrix(rotation_6d: np.ndarray) -> np.ndarray:
    """6D representation ``(..., 6)`` to rotation matrices ``(..., 3, 3)`` by Gram-Schmidt.

    Any pair of non-parallel 3-vectors is accepted (a network output need not be
    orthonormal); parallel or zero vectors raise ``ValueError``.
    """
    r = _as_float(rotation_6d)
    _check_last_dims("rotation_6d", r, (6,))
    a1, a2 = r[..., :3], r[..., 3:]
    n1 = np.linalg.norm(a1, axis=-1, keepdims=True)
    if np.any(n1 < _EPS):
        raise ValueError("rotation_6d_to_matrix: first column has zero norm")
    b1 = a1 / n1
    u2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    n2 = np.linalg.norm(u2, axis=-1, keepdims=True)
    if np.any(n2 < _EPS):
        raise ValueError("rotation_6d_to_matrix: the two columns are parallel")
    b2 = u2 / n2
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-1)


def quaternion_slerp(q0: np.ndarray, q1: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions along the shorter arc.

    Args:
        q0, q1: ``(..., 4)`` quaternions (w, x, y, z), broadcastable to each other.
        t: interpolation parameter, ``(...)`` broadcastable against the quaternions' leading
            dims; 0 gives ``q0``, 1 gives ``q1`` (or ``-q1``, the same rotation).

    Returns:
        ``(..., 4)`` unit quaternions (sign not canonicalised, so sequences stay continuous).
    """
    a = _as_float(q0)
    b = _as_float(q1)
    _check_last_dims("q0", a, (4,))
    _check_last_dims("q1", b, (4,))
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    tt = _as_float(t)[..., None]
    dot = np.sum(a * b, axis=-1, keepdims=True)
    # q and -q are one rotation: flip to interpolate along the shorter arc.
    b = np.where(dot < 0.0, -b, b)
    dot = np.abs(dot)
    close = dot > 0.9995
    omega = np.arccos(np.clip(dot, -1.0, 1.0))
    sin_omega = np.where(close, 1.0, np.sin(omega))
    w0 = np.where(close, 1.0 - tt, np.sin((1.0 - tt) * omega) / sin_omega)
    w1 = np.where(close, tt, np.sin(tt * omega) / sin_omega)
    out = w0 * a + w1 * b
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


UpAxis = Literal["y", "z"]


def up_axis_rotation(source_up: UpAxis, target_up: UpAxis = "y") -> np.ndarray:
    """Proper rotation ``(3, 3)`` taking a ``source_up`` world to a ``target_up`` world.

    ``z -> y`` is a rotation of -90 degrees about x (+z goes to +y, +y goes to -z);
    ``y -> z`` is its inverse; equal axes give the identity. Apply as
    ``p_target = R @ p_source`` to points and ``G_target = R @ G_source`` to global
    orientations.
    """
    for name, axis in (("source_up", source_up), ("target_up", target_up)):
        if axis not in ("y", "z"):
            raise ValueError(f"{name} must be 'y' or 'z', got {axis!r}")
    if source_up == target_up:
        return np.eye(3)
    angle = -np.pi / 2 if source_up == "z" else np.pi / 2
    rot = axis_rotation_matrix("X", angle)
    # Exact zeros and ones instead of 6e-17 so that converted data compare exactly.
    return np.round(rot)


def is_rotation_matrix(matrix: np.ndarray, atol: float = 1e-6) -> np.ndarray:
    """``(...)`` bool: whether each ``(..., 3, 3)`` matrix is orthonormal with det +1."""
    m = _as_float(matrix)
    _check_last_dims("matrix", m, (3, 3))
    eye = np.eye(3)
    orthonormal = np.all(np.abs(np.swapaxes(m, -1, -2) @ m - eye) <= atol, axis=(-2, -1))
    return orthonormal & (np.abs(np.linalg.det(m) - 1.0) <= atol)


def rotation_between_vectors(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Smallest rotation ``(..., 3, 3)`` taking direction ``source`` to direction ``target``.

    Args:
        source, target: ``(..., 3)`` non-zero vectors (normalised internally).

    For opposite vectors the rotation is 180 degrees about an axis perpendicular to
    ``source``.
    """
    a = _as_float(source)
    b = _as_float(target)
    _check_last_dims("source", a, (3,))
    _check_last_dims("target", b, (3,))
    na = np.linalg.norm(a, axis=-1, keepdims=True)
    nb = np.linalg.norm(b, axis=-1, keepdims=True)
    if np.any(na < _EPS) or np.any(nb < _EPS):
        raise ValueError("rotation_between_vectors needs non-zero vectors")
    a, b = np.broadcast_arrays(a / na, b / nb)
    axis = np.cross(a, b)
    sin_angle = np.linalg.norm(axis, axis=-1)
    cos_angle = np.sum(a * b, axis=-1)
    angle = np.arctan2(sin_angle, cos_angle)
    # Opposite vectors: any perpendicular axis works; take a x e for the least aligned e.
    helper = np.where(
        (np.abs(a[..., 0]) < 0.9)[..., None], np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    )
    fallback = np.cross(a, helper)
    degenerate = sin_angle < 1e-9
    axis = np.where(degenerate[..., None], fallback, axis)
    axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    return axis_angle_to_matrix(axis * angle[..., None])
