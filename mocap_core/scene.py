"""Placing a motion in a camera's world and seeing it from a rig of cameras.

Shared by the demo, the training-data pipeline (random yaw and ground placement, projection
into a sampled rig, trimming of frames far outside the images) and the evaluation protocol.
"""

from __future__ import annotations

import numpy as np

from mocap_core.cameras import project_points


def yaw_matrix(yaw_rad: float) -> np.ndarray:
    """``(3, 3)`` rotation about world +Y (y-up) by ``yaw_rad`` (right-handed)."""
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def place_motion(
    joints: np.ndarray,
    *,
    centre_xz: np.ndarray,
    yaw_rad: float = 0.0,
    root_index: int = 0,
) -> np.ndarray:
    """Turn a motion about the vertical and move it over a ground point.

    The motion is rotated by ``yaw_rad`` about the vertical through the mean ground position
    of its root, then shifted so that this mean lands on ``centre_xz``. Heights are kept, so a
    grounded motion stays grounded.

    Args:
        joints: ``(T, J, 3)`` metres, world, y-up, ground y = 0.
        centre_xz: ``(2,)`` metres, target ground position (x, z) of the root's mean.
        yaw_rad: rotation about +Y, radians.
        root_index: joint whose trajectory defines the motion's position.

    Returns:
        ``(T, J, 3)`` of the input's dtype.
    """
    joints = np.asarray(joints)
    if joints.ndim != 3 or joints.shape[-1] != 3:
        raise ValueError(f"joints: expected (T, J, 3), got {joints.shape}")
    anchor = joints[:, root_index, :].mean(axis=0)
    anchor[1] = 0.0
    rotated = (joints - anchor) @ yaw_matrix(yaw_rad).T
    offset = np.array([centre_xz[0], 0.0, centre_xz[1]])
    return (rotated + offset).astype(joints.dtype, copy=False)


def project_to_views(
    joints: np.ndarray,
    K: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    dist: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Project a motion into every camera of a rig.

    Args:
        joints: ``(T, J, 3)`` metres, world.
        K, R, t, dist: stacked cameras ``(V, 3, 3)``, ``(V, 3, 3)``, ``(V, 3)``, ``(V, 5)``.

    Returns:
        ``pixels (V, T, J, 2)`` pixel coordinates and ``depth (V, T, J)`` metres (camera z).
    """
    T, J, _ = joints.shape
    pixels, depth = project_points(joints.reshape(1, T * J, 3), K, R, t, dist)
    return pixels.reshape(-1, T, J, 2), depth.reshape(-1, T, J)


def outside_image_distance(pixels: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """How far each point lies outside its image, in pixels (0 inside).

    Args:
        pixels: ``(V, ..., 2)`` pixel coordinates.
        sizes: ``(V, 2)`` image ``(width, height)``.

    Returns:
        ``(V, ...)`` distance to the image rectangle, pixels.
    """
    shape = (sizes.shape[0],) + (1,) * (pixels.ndim - 2) + (2,)
    size = sizes.reshape(shape).astype(pixels.dtype)
    below = np.maximum(-pixels, 0.0)
    above = np.maximum(pixels - size, 0.0)
    return np.linalg.norm(below + above, axis=-1)


def clean_frame_run(bad_frames: np.ndarray) -> slice:
    """The longest run of good frames in a window (the reference keeps the clean prefix or
    suffix; the longest clean run generalises that to a bad stretch in the middle).

    Args:
        bad_frames: ``(T,) bool``, True where a frame must be trimmed.

    Returns:
        A slice of the longest run of False; ``slice(0, 0)`` when every frame is bad.
    """
    best, best_len, start = slice(0, 0), 0, None
    for i, bad in enumerate(np.append(bad_frames, True)):
        if not bad and start is None:
            start = i
        elif bad and start is not None:
            if i - start > best_len:
                best, best_len = slice(start, i), i - start
            start = None
    return best
