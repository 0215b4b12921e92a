"""Motion normalisation: frame-rate resampling, units, up axis, grounding, broken frames.

Pure numpy/scipy functions; the preparation pipeline applies them to what the readers return
(``data_catalog.types.Motion3D`` / ``Tracks2D``) before writing a Zarr store (DESIGN 4.1).

Conventions:

- Frame ``i`` of a sequence at ``fps`` is at time ``i / fps`` seconds; resampling keeps time 0
  and never extrapolates past the last source frame, so a clip of ``T`` frames at ``fps_in``
  becomes ``floor((T - 1) * fps_out / fps_in) + 1`` frames at ``fps_out``.
- World frame: metres, +Y up, ground plane y = 0 (docs/CONTRIBUTING.md).
- Up-axis changes are proper rotations (determinant +1), never axis swaps: a swap is a
  reflection and would turn a left arm into a right arm.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.spatial.transform import Rotation

# Source units accepted by :func:`to_metres`, as metres per unit.
UNIT_SCALES: dict[str, float] = {
    "m": 1.0,
    "metre": 1.0,
    "metres": 1.0,
    "meter": 1.0,
    "meters": 1.0,
    "cm": 0.01,
    "mm": 0.001,
    "in": 0.0254,
    "inch": 0.0254,
    "inches": 0.0254,
}

# Proper rotations taking a source up axis onto +Y. For "z" it is -90 degrees about +X:
# (x, y, z) -> (x, z, -y); +Z goes to +Y and the body's handedness is kept (det = +1).
_UP_AXIS_ROTATIONS: dict[str, np.ndarray] = {
    "y": np.eye(3),
    "z": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]),
}

# Floating-point slack when deciding whether a resampled time lands exactly on a source frame.
_TIME_EPS = 1e-9


def _check_fps(fps_in: float, fps_out: float) -> None:
    for label, value in (("fps_in", fps_in), ("fps_out", fps_out)):
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{label} must be a positive finite frame rate, got {value!r}")


def resample_times(num_frames: int, fps_in: float, fps_out: float) -> np.ndarray:
    """Source-frame positions of the resampled frames.

    Args:
        num_frames: number of source frames ``T`` (>= 1).
        fps_in: source frame rate (frames per second).
        fps_out: target frame rate.

    Returns:
        ``(T',) float64`` fractional source-frame indices ``k * fps_in / fps_out`` for
        ``k = 0 .. T'-1`` with ``T' = floor((T - 1) * fps_out / fps_in) + 1``; all lie in
        ``[0, T - 1]`` (no extrapolation).
    """
    _check_fps(fps_in, fps_out)
    if num_frames < 1:
        raise ValueError(f"cannot resample an empty sequence (num_frames={num_frames})")
    # The small slack keeps e.g. 300 * 30 / 60 = 150 from landing on 149.999... .
    num_out = int(np.floor((num_frames - 1) * fps_out / fps_in + _TIME_EPS)) + 1
    # Multiply before dividing so integer frame-rate ratios give exact positions.
    positions = np.arange(num_out, dtype=np.float64) * fps_in / fps_out
    return np.minimum(positions, num_frames - 1)


def _bracket(positions: np.ndarray, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Left source index and fraction towards the next frame for each position."""
    left = np.floor(positions + _TIME_EPS).astype(np.int64)
    left = np.clip(left, 0, max(num_frames - 2, 0))
    frac = positions - left
    frac[np.abs(frac) < _TIME_EPS] = 0.0
    return left, np.clip(frac, 0.0, 1.0)


def resample_positions(
    x: np.ndarray,
    fps_in: float,
    fps_out: float,
    *,
    method: Literal["linear", "pchip"] = "linear",
) -> np.ndarray:
    """Resample a time series of positions to another frame rate.

    ``linear`` (default) is exact for constant-velocity motion, never overshoots, and keeps a
    NaN local to the two output intervals that touch it (so broken frames can still be found
    afterwards). ``pchip`` is a shape-preserving piecewise cubic (no overshoot either, C1
    smooth); it needs finite input.

    Args:
        x: ``(T, ...)`` float positions (e.g. joints ``(T, J, 3)`` metres); time is axis 0.
        fps_in: source frame rate.
        fps_out: target frame rate.
        method: ``"linear"`` or ``"pchip"``.

    Returns:
        ``(T', ...) float64`` with ``T'`` as in :func:`resample_times`; frame ``k`` is at time
        ``k / fps_out``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1:
        raise ValueError("x must have a time axis (shape (T, ...))")
    num_frames = x.shape[0]
    positions = resample_times(num_frames, fps_in, fps_out)
    if num_frames == 1:
        return x.copy()
    if method == "linear":
        left, frac = _bracket(positions, num_frames)
        frac = frac.reshape((-1,) + (1,) * (x.ndim - 1))
        x0, x1 = x[left], x[left + 1]
        # Exactly-on-frame samples take the frame itself, so a NaN neighbour does not leak.
        out = np.where(frac == 0.0, x0, (1.0 - frac) * x0 + frac * x1)
        return out
    if method == "pchip":
        if not np.all(np.isfinite(x)):
            raise ValueError("pchip resampling needs finite input; split at broken frames first")
        spline = PchipInterpolator(np.arange(num_frames, dtype=np.float64), x, axis=0)
        return spline(positions)
    raise ValueError(f"unknown interpolation method {method!r}; use 'linear' or 'pchip'")


def _matrices_to_quaternions(rotations: np.ndarray) -> np.ndarray:
    flat = rotations.reshape(-1, 3, 3)
    quats = Rotation.from_matrix(flat).as_quat()  # (x, y, z, w); nearest rotation if not exact
    return quats.reshape(rotations.shape[:-2] + (4,))


def resample_rotations(rotations: np.ndarray, fps_in: float, fps_out: float) -> np.ndarray:
    """Resample per-frame rotations by quaternion slerp (shortest arc).

    Uses the same output times as :func:`resample_positions`, so positions and rotations of
    one sequence stay aligned.

    Args:
        rotations: ``(T, S, 3, 3)`` rotation matrices (e.g. local joint rotations of ``S``
            source-skeleton segments); slightly non-orthonormal input is projected onto the
            nearest rotation.
        fps_in: source frame rate.
        fps_out: target frame rate.

    Returns:
        ``(T', S, 3, 3) float64`` orthonormal rotation matrices (det +1).
    """
    rotations = np.asarray(rotations, dtype=np.float64)
    if rotations.ndim != 4 or rotations.shape[-2:] != (3, 3):
        raise ValueError(f"rotations must have shape (T, S, 3, 3), got {rotations.shape}")
    if not np.all(np.isfinite(rotations)):
        raise ValueError("rotations contain NaN or infinite values")
    num_frames, num_segments = rotations.shape[:2]
    positions = resample_times(num_frames, fps_in, fps_out)
    quats = _matrices_to_quaternions(rotations)
    if num_frames == 1:
        out = quats
    else:
        left, frac = _bracket(positions, num_frames)
        q0, q1 = quats[left], quats[left + 1]
        # q and -q are the same rotation; flip to the shorter arc before interpolating.
        dot = np.sum(q0 * q1, axis=-1, keepdims=True)
        q1 = np.where(dot < 0.0, -q1, q1)
        dot = np.clip(np.abs(dot), 0.0, 1.0)
        theta = np.arccos(dot)
        sin_theta = np.sin(theta)
        t = frac[:, None, None]
        small = sin_theta < 1e-8
        # For nearly identical rotations slerp degenerates to lerp (then renormalised).
        safe_sin = np.where(small, 1.0, sin_theta)
        w0 = np.where(small, 1.0 - t, np.sin((1.0 - t) * theta) / safe_sin)
        w1 = np.where(small, t, np.sin(t * theta) / safe_sin)
        out = w0 * q0 + w1 * q1
        out /= np.linalg.norm(out, axis=-1, keepdims=True)
    matrices = Rotation.from_quat(out.reshape(-1, 4)).as_matrix()
    return matrices.reshape(len(positions), num_segments, 3, 3)


def resample_tracks(
    keypoints: np.ndarray,
    frame_index: np.ndarray,
    fps_in: float,
    fps_out: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample one person's 2D track to another frame rate.

    An output frame ``k`` (time ``k / fps_out``) is produced only where the track has data
    around that time: on a source frame that is present, or between two present source
    frames that are consecutive (``f`` and ``f + 1``). Output frames falling in a gap of
    missing source frames are left out, as a missing detection is left out of ``Tracks2D``.
    u and v are interpolated linearly; the confidence is the minimum of the two neighbours,
    so a keypoint missing (confidence 0) on either side stays missing (u, v then 0).

    Args:
        keypoints: ``(T, J, 3)`` pixel u, v and confidence in [0, 1] of one track.
        frame_index: ``(T,)`` int, strictly increasing source frame numbers of the rows.
        fps_in: source frame rate.
        fps_out: target frame rate.

    Returns:
        ``keypoints (T', J, 3) float32`` and ``frame_index (T',) int32`` numbered at
        ``fps_out`` (frame 0 at time 0, like the source).
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    frames = np.asarray(frame_index)
    _check_fps(fps_in, fps_out)
    if keypoints.ndim != 3 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must have shape (T, J, 3), got {keypoints.shape}")
    if frames.shape != (keypoints.shape[0],):
        raise ValueError(f"frame_index must have shape ({keypoints.shape[0]},), got {frames.shape}")
    num_joints = keypoints.shape[1]
    if keypoints.shape[0] == 0:
        return np.zeros((0, num_joints, 3), np.float32), np.zeros((0,), np.int32)
    if np.any(np.diff(frames) <= 0):
        raise ValueError("frame_index must be strictly increasing (one track, sorted by frame)")
    frames = frames.astype(np.int64)
    first_out = int(np.ceil(frames[0] * fps_out / fps_in - _TIME_EPS))
    last_out = int(np.floor(frames[-1] * fps_out / fps_in + _TIME_EPS))
    out_frames = np.arange(first_out, last_out + 1, dtype=np.int64)
    positions = out_frames * fps_in / fps_out  # fractional source frame numbers
    on_frame = np.abs(positions - np.round(positions)) < 1e-6
    positions = np.where(on_frame, np.round(positions), positions)
    # Row of the last source frame at or before each output time.
    row = np.searchsorted(frames, positions + 1e-6, side="right") - 1
    row = np.clip(row, 0, len(frames) - 1)
    exact = on_frame & (frames[row] == positions)
    next_row = np.minimum(row + 1, len(frames) - 1)
    between = (
        ~exact
        & (next_row > row)
        & (frames[next_row] - frames[row] == 1)
        & (positions > frames[row])
        & (positions < frames[next_row])
    )
    keep = exact | between
    row, next_row, positions = row[keep], next_row[keep], positions[keep]
    exact = exact[keep]
    frac = np.where(exact, 0.0, positions - frames[row])[:, None]
    k0, k1 = keypoints[row], keypoints[next_row]
    uv = np.where(
        exact[:, None, None],
        k0[..., :2],
        (1 - frac[..., None]) * k0[..., :2] + frac[..., None] * k1[..., :2],
    )
    conf = np.where(exact[:, None], k0[..., 2], np.minimum(k0[..., 2], k1[..., 2]))
    uv = np.where(conf[..., None] > 0, uv, 0.0)
    out = np.concatenate([uv, conf[..., None]], axis=-1).astype(np.float32)
    return out, out_frames[keep].astype(np.int32)


def ground(
    joints: np.ndarray,
    foot_joints: tuple[int, ...] | list[int] | np.ndarray,
    method: Literal["per_sequence", "minimum"] = "per_sequence",
    *,
    percentile: float = 5.0,
    foot_height: float = 0.0,
) -> tuple[np.ndarray, float]:
    """Shift a sequence vertically so that its feet touch the ground plane y = 0.

    ``per_sequence`` (default): per frame take the lowest foot joint, then the ``percentile``
    (default 5th) of that over the sequence. It is robust: a single glitched frame with a foot
    far below the floor does not lift the whole motion, while in walking, standing or
    dancing most frames have a foot down, so a low percentile is the contact height. Jumps are
    fine as long as more than ``percentile`` % of the frames have a foot on the ground.
    ``minimum``: the single lowest foot sample (exact for clean data, glitch-sensitive).
    NaN samples are ignored.

    Args:
        joints: ``(T, J, 3)`` float metres, y-up.
        foot_joints: indices of the joints that touch the ground (``JointSet.foot_joints``).
        method: ``"per_sequence"`` or ``"minimum"``.
        percentile: low percentile used by ``per_sequence``, in [0, 100].
        foot_height: height the foot joints should have on contact (a joint centre sits a
            little above the sole); 0 puts the joints themselves on the floor.

    Returns:
        ``(grounded joints (T, J, 3) float64, offset)``, with ``grounded = joints + offset``
        applied to y only (``offset`` in metres; positive lifts the motion).
    """
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[-1] != 3:
        raise ValueError(f"joints must have shape (T, J, 3), got {joints.shape}")
    feet = np.asarray(foot_joints, dtype=np.int64)
    if feet.size == 0:
        raise ValueError("foot_joints is empty")
    if np.any((feet < 0) | (feet >= joints.shape[1])):
        raise ValueError(f"foot_joints {feet.tolist()} out of range for {joints.shape[1]} joints")
    heights = joints[:, feet, 1]
    finite = np.isfinite(heights)
    if not finite.any():
        raise ValueError("no finite foot joint heights to ground the sequence on")
    lowest = np.min(np.where(finite, heights, np.inf), axis=1)
    lowest = lowest[np.isfinite(lowest)]
    if method == "per_sequence":
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {percentile}")
        contact = float(np.percentile(lowest, percentile))
    elif method == "minimum":
        contact = float(lowest.min())
    else:
        raise ValueError(f"unknown grounding method {method!r}; use 'per_sequence' or 'minimum'")
    offset = foot_height - contact
    grounded = joints.copy()
    grounded[..., 1] += offset
    return grounded, offset


def _valid_mask(valid: np.ndarray | None, num_frames: int, num_joints: int) -> np.ndarray:
    if valid is None:
        return np.ones((num_frames, num_joints), dtype=bool)
    valid = np.asarray(valid, dtype=bool)
    if valid.shape == (num_joints,):
        return np.broadcast_to(valid, (num_frames, num_joints))
    if valid.shape == (num_frames, num_joints):
        return valid
    raise ValueError(
        f"valid must have shape ({num_joints},) or ({num_frames}, {num_joints}), got {valid.shape}"
    )


def find_broken_frames(
    points: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    fps: float,
    kind: Literal["3d", "2d"] = "3d",
    max_speed: float | None = None,
) -> np.ndarray:
    """Flag frames that cannot be used.

    A frame is broken when:

    - any valid joint (3D) or any present keypoint (2D) has a NaN/inf coordinate, or a 2D
      confidence is non-finite;
    - 2D only: no keypoint is present (all confidences 0);
    - a valid joint moves faster than ``max_speed`` from the previous frame (a teleport:
      default 20 m/s for 3D, far beyond human limb speeds; off for 2D unless given, in
      pixels per second). A one-frame spike (a jump away and straight back) flags only the
      spike frame; a lasting jump flags the first frame after it, which splits the sequence.

    Args:
        points: ``(T, J, 3)`` joints (3D metres) or keypoints (2D pixel u, v, confidence).
        valid: ``(J,)`` or ``(T, J)`` bool, joints that exist (3D: measured or derivable);
            None means all. For 2D, keypoints with confidence 0 are treated as absent too.
        fps: frame rate, to turn per-frame displacement into speed.
        kind: ``"3d"`` or ``"2d"``.
        max_speed: speed threshold (m/s for 3D, px/s for 2D); None takes the default.

    Returns:
        ``(T,) bool``, True where the frame is broken.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must have shape (T, J, 3), got {points.shape}")
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    num_frames, num_joints = points.shape[:2]
    mask = _valid_mask(valid, num_frames, num_joints)
    if kind == "3d":
        coords = points
        present = mask
        broken = np.any(~np.isfinite(coords) & present[..., None], axis=(1, 2))
        threshold = 20.0 if max_speed is None else max_speed
    elif kind == "2d":
        coords = points[..., :2]
        conf = points[..., 2]
        bad_conf = np.any(~np.isfinite(conf) & mask, axis=1)
        present = mask & np.isfinite(conf) & (conf > 0)
        broken = bad_conf | np.any(~np.isfinite(coords) & present[..., None], axis=(1, 2))
        broken |= ~present.any(axis=1)
        threshold = max_speed
    else:
        raise ValueError(f"kind must be '3d' or '2d', got {kind!r}")
    if threshold is None or num_frames < 2:
        return broken
    limit = threshold / fps  # largest allowed displacement between consecutive frames
    both = present[1:] & present[:-1]
    step = np.linalg.norm(coords[1:] - coords[:-1], axis=-1)
    jump = np.any(both & (step > limit), axis=1)  # jump[t] is between frame t and t + 1
    # Over two frames the allowance doubles; a spike returns to where it left from.
    both2 = present[2:] & present[:-2]
    step2 = np.linalg.norm(coords[2:] - coords[:-2], axis=-1)
    smooth_over_two = ~np.any(both2 & (step2 > 2 * limit), axis=1)
    spike = np.zeros(num_frames, dtype=bool)
    spike[1:-1] = jump[:-1] & jump[1:] & smooth_over_two
    teleport = np.zeros(num_frames, dtype=bool)
    teleport[1:] = jump
    # The jump back out of a spike frame is not the next frame's fault.
    teleport[2:] &= ~spike[1:-1]
    return broken | teleport | spike


def split_at_broken(x: np.ndarray, broken: np.ndarray, min_length: int) -> list[slice]:
    """Clean runs of frames between broken ones.

    Args:
        x: ``(T, ...)`` the sequence (only its length is used; passed so that the lengths are
            checked against each other).
        broken: ``(T,) bool`` from :func:`find_broken_frames`.
        min_length: shortest run kept, in frames (>= 1).

    Returns:
        ``slice`` objects over axis 0, in order, covering runs of non-broken frames of at
        least ``min_length`` frames; broken frames are dropped.
    """
    broken = np.asarray(broken, dtype=bool)
    num_frames = np.shape(x)[0]
    if broken.shape != (num_frames,):
        raise ValueError(f"broken must have shape ({num_frames},), got {broken.shape}")
    if min_length < 1:
        raise ValueError(f"min_length must be >= 1, got {min_length}")
    good = np.concatenate([[False], ~broken, [False]]).astype(np.int8)
    edges = np.diff(good)
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1)
    return [
        slice(int(a), int(b)) for a, b in zip(starts, stops, strict=True) if b - a >= min_length
    ]


def up_axis_rotation(up_axis: str) -> np.ndarray:
    """``(3, 3)`` proper rotation (det +1) taking ``up_axis`` ("y" or "z") onto +Y.

    For "z" (AMASS, many mocap exports) it is -90 degrees about +X: (x, y, z) -> (x, z, -y).
    Apply as ``points @ R.T``; a global orientation ``R_root`` becomes ``R @ R_root``.
    """
    try:
        return _UP_AXIS_ROTATIONS[up_axis.lower()].copy()
    except (KeyError, AttributeError):
        raise ValueError(f"unknown up axis {up_axis!r}; use 'y' or 'z'") from None


def to_y_up(points: np.ndarray, up_axis: str) -> np.ndarray:
    """Rotate points from a ``up_axis``-up frame to the project's y-up frame.

    Args:
        points: ``(..., 3)`` positions in the source frame.
        up_axis: ``"y"`` (returned unchanged, as a float64 copy) or ``"z"``.

    Returns:
        ``(..., 3) float64`` positions, +Y up; a proper rotation, so handedness is kept.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-1:] != (3,):
        raise ValueError(f"points must have shape (..., 3), got {points.shape}")
    return points @ up_axis_rotation(up_axis).T


def to_metres(points: np.ndarray, units: str) -> np.ndarray:
    """Scale positions to metres.

    Args:
        points: ``(...)`` positions in ``units``.
        units: one of ``UNIT_SCALES`` ("m", "cm", "mm", "in", ...).

    Returns:
        ``(...) float64`` positions in metres.
    """
    try:
        scale = UNIT_SCALES[units.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown units {units!r}; known: {sorted(set(UNIT_SCALES))}") from None
    return np.asarray(points, dtype=np.float64) * scale
