"""Evaluation metrics for world-frame 3D joint sequences (DESIGN.md section 5).

Every metric compares a prediction ``pred`` with the ground truth ``gt``, both
``(T, J, 3)`` arrays of joint positions in metres in the world frame (+Y up, ground plane
y = 0), laid out by the same joint set: the caller selects the joints both sides share before
calling. The definitions follow the Mocap-2-to-3 reference code, which copies GVHMR/WHAM
(method-notes section 6.2); where this module departs from them the docstring says so.

Conventions shared by every function here:

- Units: joint errors in millimetres, jitter in m/s^3, acceleration error in m/s^2, foot
  sliding in millimetres per frame, RTE in millimetres and in percent.
- Pelvis: the mean of the two hips (``JointSet.hip_pair``), never a model's own root joint.
- Invalid frames: a frame is invalid when any coordinate of any joint of ``pred`` or ``gt``
  is not finite (NaN or inf). Invalid frames are left out of every metric and carry NaN in
  the per-frame arrays. A finite-difference term (jitter, acceleration, foot displacement) is
  used only when every frame it touches is valid. If every frame is invalid the function
  raises ``ValueError``; when a metric is undefined on the valid frames that remain (no full
  difference window, no foot contact, a ground truth that does not travel) it returns NaN.
- Arithmetic is float64 whatever the input dtype; per-frame arrays are float64.
- Means over a sequence are means over its valid frames (or valid difference windows).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from mocap_core.joint_sets import JointSet

MM_PER_M = 1000.0
UP_AXIS = 1  # world frame is +Y up (DESIGN 2.1)

DEFAULT_CHUNK_SIZE = 100
DEFAULT_W_ALIGN_FRAMES = 2
# Contact = the gt foot joint is low AND slow. 0.12 m sits above a standing adult's ankle
# joint (~0.07-0.10 m) so ankles count as well as toes, and well below a swinging foot;
# 0.3 m/s is GVHMR's 1 cm/frame contact threshold at 30 fps, expressed fps-independently.
DEFAULT_FOOT_HEIGHT_THRESHOLD_M = 0.12
DEFAULT_FOOT_SPEED_THRESHOLD_M_S = 0.3

METRIC_KEYS: tuple[str, ...] = (
    "pa_mpjpe_mm",
    "mpjpe_mm",
    "abs_mpjpe_mm",
    "w_mpjpe100_mm",
    "wa_mpjpe100_mm",
    "rte_mm",
    "rte_pct",
    "jitter_m_s3",
    "accel_error_m_s2",
    "foot_sliding_mm",
)
NUM_FRAMES_KEY = "num_frames"


class SimilarityTransform(NamedTuple):
    """``x -> scale * rotation @ x + translation``, batched over leading dims ``...``.

    Attributes:
        scale: ``(...)`` float64, unitless (1 for a rigid transform).
        rotation: ``(..., 3, 3)`` float64, proper rotation (det +1).
        translation: ``(..., 3)`` float64, in the target's units (metres here).
    """

    scale: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray


class RootTranslationError(NamedTuple):
    """Root translation error of one sequence, see :func:`rte`.

    Attributes:
        mm: mean per-frame root error after rigid alignment, millimetres.
        pct: ``mm`` as a percentage of the ground-truth root's travelled distance; NaN when
            the ground-truth root does not move.
    """

    mm: float
    pct: float


# ----------------------------------------------------------------------------- validation


def _as_real_array(name: str, value: object) -> np.ndarray:
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name} must be a real numeric array, got dtype {array.dtype}")
    return array.astype(np.float64, copy=False)


def _as_sequence(name: str, value: object) -> np.ndarray:
    array = _as_real_array(name, value)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (T, J, 3), got {array.shape}")
    if array.shape[1] == 0:
        raise ValueError(f"{name} has no joints (shape {array.shape})")
    return array


def _frame_validity(*sequences: np.ndarray) -> np.ndarray:
    """``(T,)`` bool: True where every coordinate of every joint of every sequence is finite."""
    valid = np.ones(sequences[0].shape[0], dtype=bool)
    for sequence in sequences:
        valid &= np.isfinite(sequence).all(axis=(1, 2))
    return valid


def _require_some_valid(valid: np.ndarray) -> None:
    if not valid.any():
        raise ValueError(
            "every frame contains a non-finite value (NaN/inf) in pred or gt; nothing to evaluate"
        )


def _check_pair(
    pred: object, gt: object, min_frames: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate ``pred``/``gt`` and return them as float64 with the ``(T,)`` valid-frame mask."""
    pred_array = _as_sequence("pred", pred)
    gt_array = _as_sequence("gt", gt)
    if pred_array.shape != gt_array.shape:
        raise ValueError(
            f"pred and gt must have the same shape, got {pred_array.shape} and {gt_array.shape}"
        )
    if pred_array.shape[0] < min_frames:
        raise ValueError(
            f"this metric needs at least {min_frames} frames, got {pred_array.shape[0]}"
        )
    valid = _frame_validity(pred_array, gt_array)
    _require_some_valid(valid)
    return pred_array, gt_array, valid


def _check_fps(fps: object) -> float:
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real):
        raise TypeError(f"fps must be a real number, got {type(fps).__name__}")
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be finite and positive, got {fps}")
    return float(fps)


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _check_index(name: str, index: object, num_joints: int) -> int:
    if isinstance(index, bool) or not isinstance(index, numbers.Integral):
        raise TypeError(f"{name} must be an int joint index, got {index!r}")
    if not 0 <= index < num_joints:
        raise ValueError(f"{name} {index} is out of range for {num_joints} joints")
    return int(index)


def _check_joint_set_size(joint_set: JointSet, num_joints: int) -> None:
    if joint_set.num_joints != num_joints:
        raise ValueError(
            f"joint set {joint_set.name!r} has {joint_set.num_joints} joints but the arrays "
            f"have {num_joints}"
        )


def _resolve_hip_pair(hips: JointSet | Sequence[int], num_joints: int) -> tuple[int, int]:
    if isinstance(hips, JointSet):
        _check_joint_set_size(hips, num_joints)
        pair: Sequence[int] = hips.hip_pair
    else:
        pair = hips
    if len(pair) != 2:
        raise ValueError(f"hip pair must hold exactly two joint indices, got {pair!r}")
    return (
        _check_index("left hip index", pair[0], num_joints),
        _check_index("right hip index", pair[1], num_joints),
    )


def _resolve_foot_joints(feet: JointSet | Sequence[int], num_joints: int) -> tuple[int, ...]:
    if isinstance(feet, JointSet):
        _check_joint_set_size(feet, num_joints)
        indices: Sequence[int] = feet.foot_joints
    else:
        indices = feet
    if len(indices) == 0:
        raise ValueError("foot joints must name at least one joint")
    return tuple(_check_index("foot joint index", i, num_joints) for i in indices)


def _nanmean(values: np.ndarray) -> float:
    """Mean of the finite entries; NaN (without a RuntimeWarning) when there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def _window_validity(valid: np.ndarray, width: int) -> np.ndarray:
    """``(T - width + 1,)`` bool: window ``i`` covers frames ``i .. i + width - 1``, all valid."""
    count = valid.shape[0] - width + 1
    windows = np.ones(count, dtype=bool)
    for offset in range(width):
        windows &= valid[offset : offset + count]
    return windows


def _zero_invalid(sequence: np.ndarray, valid: np.ndarray) -> np.ndarray:
    # Differencing NaN/inf frames would warn and spread; the windows that touch them are
    # masked afterwards, so any finite filler will do.
    return np.where(valid[:, None, None], sequence, 0.0)


def _mean_joint_distance_mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(..., J, 3)`` metres twice -> ``(...)`` mean over joints of the L2 distance, mm."""
    return np.linalg.norm(a - b, axis=-1).mean(axis=-1) * MM_PER_M


# ------------------------------------------------------------------------------ alignment


def apply_similarity(points: np.ndarray, transform: SimilarityTransform) -> np.ndarray:
    """Apply ``x -> s R x + t`` to every point.

    Args:
        points: ``(..., N, 3)`` points; the leading dims broadcast against the transform's.
        transform: a :class:`SimilarityTransform` with leading dims ``...`` (or none).

    Returns:
        ``(..., N, 3)`` float64 transformed points, in the translation's units.
    """
    scale, rotation, translation = transform
    scale = np.asarray(scale, dtype=np.float64)
    rotation = np.asarray(rotation, dtype=np.float64)
    translation = np.asarray(translation, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    rotated = points @ np.swapaxes(rotation, -1, -2)
    return scale[..., None, None] * rotated + translation[..., None, :]


def procrustes_align(
    source: np.ndarray,
    target: np.ndarray,
    scale: bool = True,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, SimilarityTransform]:
    """Least-squares similarity (or rigid) alignment of ``source`` onto ``target`` (Umeyama).

    Finds the scale ``s``, proper rotation ``R`` (det +1) and translation ``t`` minimising
    ``sum_i w_i |s R x_i + t - y_i|^2`` with ``x = source`` and ``y = target``. With normalised
    weights ``w`` (uniform by default), centroids ``mu_x, mu_y``, cross-covariance
    ``C = sum_i w_i (y_i - mu_y)(x_i - mu_x)^T = U diag(d) V^T`` and
    ``S = diag(1, 1, sign(det U det V))``: ``R = U S V^T``; ``s = trace(diag(d) S) / var_x``
    with ``var_x = sum_i w_i |x_i - mu_x|^2`` (``s = 1`` when ``scale`` is False, or when all
    source points coincide, in which case any scale gives the same result); and
    ``t = mu_y - s R mu_x``. ``S`` flips the weakest axis when the best orthogonal map would be
    a reflection, so a mirrored pose is never aligned away.

    Args:
        source: ``(..., N, 3)`` points to move (e.g. predicted joints), any units.
        target: ``(..., N, 3)`` points to match, same units and shape.
        scale: fit the scale (similarity) or keep ``s = 1`` (rigid).
        weights: optional ``(..., N)`` (or broadcastable) non-negative per-point weights,
            with a positive sum over ``N`` for every batch element.

    Returns:
        ``(aligned, (s, R, t))``: ``aligned (..., N, 3)`` float64 is ``s R source + t``, and the
        :class:`SimilarityTransform` has ``s (...)``, ``R (..., 3, 3)``, ``t (..., 3)``.

    Raises:
        ValueError: on mismatched or malformed shapes, no points, non-finite values, or bad
            weights. TypeError on non-numeric input.
    """
    source_array = _as_real_array("source", source)
    target_array = _as_real_array("target", target)
    if source_array.ndim < 2 or source_array.shape[-1] != 3:
        raise ValueError(f"source must have shape (..., N, 3), got {source_array.shape}")
    if source_array.shape != target_array.shape:
        raise ValueError(
            f"source and target must have the same shape, got {source_array.shape} and "
            f"{target_array.shape}"
        )
    num_points = source_array.shape[-2]
    if num_points == 0:
        raise ValueError("procrustes_align needs at least one point")
    if not (np.isfinite(source_array).all() and np.isfinite(target_array).all()):
        raise ValueError("source and target must be finite (no NaN/inf)")

    batch_shape = source_array.shape[:-2]
    if weights is None:
        point_weights = np.full(batch_shape + (num_points,), 1.0 / num_points)
    else:
        raw = _as_real_array("weights", weights)
        try:
            raw = np.broadcast_to(raw, batch_shape + (num_points,))
        except ValueError:
            raise ValueError(
                f"weights of shape {raw.shape} do not broadcast to {batch_shape + (num_points,)}"
            ) from None
        if not np.isfinite(raw).all() or (raw < 0).any():
            raise ValueError("weights must be finite and non-negative")
        total = raw.sum(axis=-1, keepdims=True)
        if (total <= 0).any():
            raise ValueError("weights must have a positive sum over the points")
        point_weights = raw / total

    source_mean = np.einsum("...n,...nc->...c", point_weights, source_array)
    target_mean = np.einsum("...n,...nc->...c", point_weights, target_array)
    source_centred = source_array - source_mean[..., None, :]
    target_centred = target_array - target_mean[..., None, :]
    cross_cov = np.einsum("...n,...ni,...nj->...ij", point_weights, target_centred, source_centred)
    u, singular, vh = np.linalg.svd(cross_cov)
    reflection = np.linalg.det(u) * np.linalg.det(vh) < 0
    axis_signs = np.ones(batch_shape + (3,))
    axis_signs[..., 2] = np.where(reflection, -1.0, 1.0)
    rotation = (u * axis_signs[..., None, :]) @ vh

    if scale:
        source_var = np.einsum("...n,...nc->...", point_weights, source_centred**2)
        degenerate = source_var <= 0
        fitted = (singular * axis_signs).sum(axis=-1) / np.where(degenerate, 1.0, source_var)
        scale_factor = np.where(degenerate, 1.0, fitted)
    else:
        scale_factor = np.ones(batch_shape)
    translation = target_mean - scale_factor[..., None] * np.einsum(
        "...ij,...j->...i", rotation, source_mean
    )
    transform = SimilarityTransform(np.asarray(scale_factor), rotation, translation)
    return apply_similarity(source_array, transform), transform


def pelvis(joints: np.ndarray, hip_pair: JointSet | Sequence[int]) -> np.ndarray:
    """Evaluation pelvis: the mean of the left and right hip.

    Args:
        joints: ``(..., J, 3)`` joint positions, any units and frame.
        hip_pair: a :class:`JointSet` (its ``hip_pair`` is used and its size checked against
            ``J``) or the two hip indices ``(left, right)``.

    Returns:
        ``(..., 3)`` float64 pelvis positions, in the joints' units and frame.
    """
    joints_array = _as_real_array("joints", joints)
    if joints_array.ndim < 2 or joints_array.shape[-1] != 3:
        raise ValueError(f"joints must have shape (..., J, 3), got {joints_array.shape}")
    left, right = _resolve_hip_pair(hip_pair, joints_array.shape[-2])
    return 0.5 * (joints_array[..., left, :] + joints_array[..., right, :])


# -------------------------------------------------------------------------- joint errors


def pa_mpjpe_per_frame(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Procrustes-aligned MPJPE of every frame.

    Per frame, ``pred`` is similarity-aligned (scale, proper rotation, translation;
    :func:`procrustes_align`) onto ``gt`` and the mean joint L2 distance is taken. The reference
    first centres both poses on their pelvis; the fitted translation absorbs any common shift,
    so the result is identical and no joint set is needed.

    Args:
        pred: ``(T, J, 3)`` predicted joints, metres, world frame.
        gt: ``(T, J, 3)`` ground-truth joints, metres, world frame.

    Returns:
        ``(T,)`` float64 millimetres, NaN on invalid frames.
    """
    pred_array, gt_array, valid = _check_pair(pred, gt)
    errors = np.full(pred_array.shape[0], np.nan)
    aligned, _ = procrustes_align(pred_array[valid], gt_array[valid], scale=True)
    errors[valid] = _mean_joint_distance_mm(aligned, gt_array[valid])
    return errors


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean of :func:`pa_mpjpe_per_frame` over valid frames, millimetres."""
    return _nanmean(pa_mpjpe_per_frame(pred, gt))


def mpjpe_per_frame(
    pred: np.ndarray, gt: np.ndarray, hip_pair: JointSet | Sequence[int]
) -> np.ndarray:
    """Pelvis-centred MPJPE of every frame, world orientation kept.

    Each pose is translated so its own pelvis (mean of the hips) is at the origin; no rotation
    or scale is fitted, so a wrong heading or body size counts fully. Mean joint L2 distance.

    Args:
        pred: ``(T, J, 3)`` predicted joints, metres, world frame.
        gt: ``(T, J, 3)`` ground-truth joints, metres, world frame.
        hip_pair: a :class:`JointSet` or the ``(left, right)`` hip indices.

    Returns:
        ``(T,)`` float64 millimetres, NaN on invalid frames.
    """
    pred_array, gt_array, valid = _check_pair(pred, gt)
    hips = _resolve_hip_pair(hip_pair, pred_array.shape[1])
    pred_valid, gt_valid = pred_array[valid], gt_array[valid]
    pred_centred = pred_valid - pelvis(pred_valid, hips)[:, None, :]
    gt_centred = gt_valid - pelvis(gt_valid, hips)[:, None, :]
    errors = np.full(pred_array.shape[0], np.nan)
    errors[valid] = _mean_joint_distance_mm(pred_centred, gt_centred)
    return errors


def mpjpe(pred: np.ndarray, gt: np.ndarray, hip_pair: JointSet | Sequence[int]) -> float:
    """Mean of :func:`mpjpe_per_frame` over valid frames, millimetres."""
    return _nanmean(mpjpe_per_frame(pred, gt, hip_pair))


def abs_mpjpe_per_frame(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Absolute MPJPE of every frame: no alignment at all (the reference's ``mpjpe_t``).

    The mean joint L2 distance between ``pred`` and ``gt`` as given, in the shared world
    frame: the absolute-position error this method exists to make small.

    Args:
        pred: ``(T, J, 3)`` predicted joints, metres, world frame.
        gt: ``(T, J, 3)`` ground-truth joints, metres, world frame.

    Returns:
        ``(T,)`` float64 millimetres, NaN on invalid frames.
    """
    pred_array, gt_array, valid = _check_pair(pred, gt)
    errors = np.full(pred_array.shape[0], np.nan)
    errors[valid] = _mean_joint_distance_mm(pred_array[valid], gt_array[valid])
    return errors


def abs_mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean of :func:`abs_mpjpe_per_frame` over valid frames, millimetres."""
    return _nanmean(abs_mpjpe_per_frame(pred, gt))


def _chunk_aligned_errors(
    pred: np.ndarray,
    gt: np.ndarray,
    valid: np.ndarray,
    chunk_size: int,
    align_frames: int | None,
) -> np.ndarray:
    num_frames = pred.shape[0]
    errors = np.full(num_frames, np.nan)
    for start in range(0, num_frames, chunk_size):
        frames = np.arange(start, min(start + chunk_size, num_frames))
        frames = frames[valid[frames]]
        if frames.size == 0:
            continue
        fit_frames = frames if align_frames is None else frames[:align_frames]
        _, transform = procrustes_align(
            pred[fit_frames].reshape(-1, 3), gt[fit_frames].reshape(-1, 3), scale=True
        )
        aligned = apply_similarity(pred[frames], transform)
        errors[frames] = _mean_joint_distance_mm(aligned, gt[frames])
    return errors


def w_mpjpe_per_frame(
    pred: np.ndarray,
    gt: np.ndarray,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    align_frames: int = DEFAULT_W_ALIGN_FRAMES,
) -> np.ndarray:
    """W-MPJPE (GVHMR's ``W-MPJPE100``) of every frame.

    The sequence is cut into consecutive chunks of ``chunk_size`` frames starting at frame 0;
    a final shorter chunk is kept and aligned on its own, as GVHMR does (a RICH 180-frame
    window gives chunks of 100 and 80). In each chunk one similarity transform (Umeyama, with
    scale) is fitted on all joints of its first ``align_frames`` valid frames and applied to
    every frame of the chunk; the error is then the mean joint L2 distance, no pelvis
    centring. It measures the drift of the world trajectory away from a start-anchored fit.

    Args:
        pred: ``(T, J, 3)`` predicted joints, metres, world frame.
        gt: ``(T, J, 3)`` ground-truth joints, metres, world frame.
        chunk_size: frames per chunk (100 for W-MPJPE100).
        align_frames: leading valid frames of each chunk used for the fit (2 in GVHMR).

    Returns:
        ``(T,)`` float64 millimetres, NaN on invalid frames. Its mean over valid frames weighs
        each chunk by its number of valid frames (as GVHMR's concatenation does).
    """
    chunk_size = _check_positive_int("chunk_size", chunk_size)
    align_frames = _check_positive_int("align_frames", align_frames)
    pred_array, gt_array, valid = _check_pair(pred, gt)
    return _chunk_aligned_errors(pred_array, gt_array, valid, chunk_size, align_frames)


def w_mpjpe(
    pred: np.ndarray,
    gt: np.ndarray,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    align_frames: int = DEFAULT_W_ALIGN_FRAMES,
) -> float:
    """Mean of :func:`w_mpjpe_per_frame` over valid frames, millimetres."""
    return _nanmean(w_mpjpe_per_frame(pred, gt, chunk_size, align_frames))


def wa_mpjpe_per_frame(
    pred: np.ndarray, gt: np.ndarray, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> np.ndarray:
    """WA-MPJPE (GVHMR's ``WA-MPJPE100``) of every frame.

    As :func:`w_mpjpe_per_frame`, but each chunk's similarity transform (with scale) is fitted
    on all joints of all its valid frames. Same chunking, a final short chunk kept.

    Args:
        pred: ``(T, J, 3)`` predicted joints, metres, world frame.
        gt: ``(T, J, 3)`` ground-truth joints, metres, world frame.
        chunk_size: frames per chunk (100 for WA-MPJPE100).

    Returns:
        ``(T,)`` float64 millimetres, NaN on invalid frames.
    """
    chunk_size = _check_positive_int("chunk_size", chunk_size)
    pred_array, gt_array, valid = _check_pair(pred, gt)
    return _chunk_aligned_errors(pred_array, gt_array, valid, chunk_size, None)


def wa_mpjpe(pred: np.ndarray, gt: np.ndarray, chunk_size: int = DEFAULT_CHUNK_SIZE) -> float:
    """Mean of :func:`wa_mpjpe_per_frame` over valid frames, millimetres."""
    return _nanmean(wa_mpjpe_per_frame(pred, gt, chunk_size))


# -------------------------------------------------------------------------- root trajectory


def rte_per_frame(
    pred: np.ndarray, gt: np.ndarray, hip_pair: JointSet | Sequence[int]
) -> np.ndarray:
    """Root translation error of every frame, after one rigid alignment of the trajectory.

    The root is the pelvis (mean of the hips). One rigid transform (rotation and translation,
    no scale; :func:`procrustes_align` with ``scale=False``) is fitted between the predicted
    and ground-truth root positions of all valid frames and applied to the predicted root;
    the per-frame error is the L2 distance to the ground-truth root.

    Args:
        pred: ``(T, J, 3)`` predicted joints, metres, world frame.
        gt: ``(T, J, 3)`` ground-truth joints, metres, world frame.
        hip_pair: a :class:`JointSet` or the ``(left, right)`` hip indices.

    Returns:
        ``(T,)`` float64 millimetres, NaN on invalid frames.
    """
    pred_array, gt_array, valid = _check_pair(pred, gt)
    errors, _ = _root_errors(pred_array, gt_array, valid, hip_pair)
    return errors


def _root_errors(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, hip_pair: JointSet | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """``(T,)`` per-frame root errors (mm, NaN on invalid frames) and the ``(V, 3)`` gt root
    positions of the ``V`` valid frames (metres)."""
    hips = _resolve_hip_pair(hip_pair, pred.shape[1])
    pred_root = pelvis(pred[valid], hips)
    gt_root = pelvis(gt[valid], hips)
    aligned_root, _ = procrustes_align(pred_root, gt_root, scale=False)
    errors = np.full(pred.shape[0], np.nan)
    errors[valid] = np.linalg.norm(aligned_root - gt_root, axis=-1) * MM_PER_M
    return errors, gt_root


def rte(
    pred: np.ndarray, gt: np.ndarray, hip_pair: JointSet | Sequence[int]
) -> RootTranslationError:
    """Root translation error of a sequence, in mm and in % of the distance travelled.

    ``mm`` is the mean of :func:`rte_per_frame` over valid frames: the Mocap-2-to-3 reference
    reports this (unnormalised). ``pct`` is ``100 * mm / D`` with ``D`` the ground-truth root's
    path length, the sum of its frame-to-frame displacements over consecutive valid frames
    (in mm): GVHMR's RTE (%). ``pct`` is NaN when ``D`` is 0.

    Args:
        pred: ``(T, J, 3)`` predicted joints, metres, world frame.
        gt: ``(T, J, 3)`` ground-truth joints, metres, world frame.
        hip_pair: a :class:`JointSet` or the ``(left, right)`` hip indices.

    Returns:
        :class:`RootTranslationError` ``(mm, pct)``.
    """
    pred_array, gt_array, valid = _check_pair(pred, gt)
    errors, gt_root = _root_errors(pred_array, gt_array, valid, hip_pair)
    travelled_mm = float(np.linalg.norm(np.diff(gt_root, axis=0), axis=-1).sum()) * MM_PER_M
    mean_mm = _nanmean(errors)
    pct = 100.0 * mean_mm / travelled_mm if travelled_mm > 0 else math.nan
    return RootTranslationError(mm=mean_mm, pct=pct)


# ---------------------------------------------------------------------------- smoothness


def _usable_frames(joints: np.ndarray, valid: np.ndarray | None, min_frames: int) -> np.ndarray:
    num_frames = joints.shape[0]
    if num_frames < min_frames:
        raise ValueError(f"this metric needs at least {min_frames} frames, got {num_frames}")
    frames_valid = _frame_validity(joints)
    if valid is not None:
        mask = np.asarray(valid)
        if mask.dtype != bool or mask.shape != (num_frames,):
            raise ValueError(
                f"valid must be a bool array of shape ({num_frames},), got {mask.dtype} "
                f"{mask.shape}"
            )
        frames_valid &= mask
    _require_some_valid(frames_valid)
    return frames_valid


def jitter_per_frame(joints: np.ndarray, fps: float, valid: np.ndarray | None = None) -> np.ndarray:
    """Jitter of a single joint sequence (prediction or ground truth) per difference window.

    Window ``i`` covers frames ``i .. i+3``; its value is the mean over joints of
    ``|x[i+3] - 3 x[i+2] + 3 x[i+1] - x[i]| * fps^3``, the norm of the third finite difference
    scaled to a time derivative. GVHMR divides this by 10 before reporting; this module does
    not, so values are plain m/s^3.

    Args:
        joints: ``(T, J, 3)`` joints, metres, world frame; ``T >= 4``.
        fps: frames per second of the sequence.
        valid: optional ``(T,)`` bool mask of frames to use (e.g. frames valid in both pred
            and gt); frames with non-finite joints are excluded in any case.

    Returns:
        ``(T - 3,)`` float64 m/s^3, NaN for windows touching an excluded frame.

    Raises:
        ValueError: ``T < 4``, a malformed mask, or no usable frame at all.
    """
    fps = _check_fps(fps)
    joints_array = _as_sequence("joints", joints)
    frames_valid = _usable_frames(joints_array, valid, min_frames=4)
    third = np.diff(_zero_invalid(joints_array, frames_valid), n=3, axis=0)
    per_window = np.linalg.norm(third, axis=-1).mean(axis=-1) * fps**3
    per_window[~_window_validity(frames_valid, 4)] = np.nan
    return per_window


def jitter(joints: np.ndarray, fps: float, valid: np.ndarray | None = None) -> float:
    """Mean of :func:`jitter_per_frame` over usable windows, m/s^3 (NaN when there are none)."""
    return _nanmean(jitter_per_frame(joints, fps, valid))


def accel_error_per_frame(pred: np.ndarray, gt: np.ndarray, fps: float) -> np.ndarray:
    """Acceleration error per difference window.

    Window ``i`` covers frames ``i .. i+2``; its value is the mean over joints of
    ``|a_pred - a_gt|`` with ``a = (x[i+2] - 2 x[i+1] + x[i]) * fps^2`` (WHAM/GVHMR), no
    alignment (a constant offset or velocity difference has no effect).

    Args:
        pred: ``(T, J, 3)`` predicted joints, metres, world frame; ``T >= 3``.
        gt: ``(T, J, 3)`` ground-truth joints, metres, world frame.
        fps: frames per second.

    Returns:
        ``(T - 2,)`` float64 m/s^2, NaN for windows touching an invalid frame.
    """
    fps = _check_fps(fps)
    pred_array, gt_array, valid = _check_pair(pred, gt, min_frames=3)
    pred_accel = np.diff(_zero_invalid(pred_array, valid), n=2, axis=0)
    gt_accel = np.diff(_zero_invalid(gt_array, valid), n=2, axis=0)
    per_window = np.linalg.norm(pred_accel - gt_accel, axis=-1).mean(axis=-1) * fps**2
    per_window[~_window_validity(valid, 3)] = np.nan
    return per_window


def accel_error(pred: np.ndarray, gt: np.ndarray, fps: float) -> float:
    """Mean of :func:`accel_error_per_frame` over usable windows, m/s^2 (NaN if none)."""
    return _nanmean(accel_error_per_frame(pred, gt, fps))


# --------------------------------------------------------------------------------- feet


def foot_contact(
    gt: np.ndarray,
    foot_joints: JointSet | Sequence[int],
    fps: float,
    height_threshold_m: float | None = DEFAULT_FOOT_HEIGHT_THRESHOLD_M,
    speed_threshold_m_s: float = DEFAULT_FOOT_SPEED_THRESHOLD_M_S,
) -> np.ndarray:
    """Ground-truth foot contact per frame step and foot joint.

    Step ``t`` is the move from frame ``t`` to ``t+1``. Foot joint ``f`` is in contact over
    step ``t`` when both frames are finite, its height (world y) is below
    ``height_threshold_m`` at both frames, and its speed ``|x[t+1] - x[t]| * fps`` is below
    ``speed_threshold_m_s``. ``height_threshold_m=None`` drops the height test, which gives
    GVHMR's speed-only contact.

    Args:
        gt: ``(T, J, 3)`` ground-truth joints, metres, world frame (y up, ground y = 0).
        foot_joints: a :class:`JointSet` (its ``foot_joints``) or explicit joint indices.
        fps: frames per second.
        height_threshold_m: contact height limit in metres, or None.
        speed_threshold_m_s: contact speed limit in metres per second.

    Returns:
        ``(T - 1, F)`` bool, ``F`` = number of foot joints, in their given order.
    """
    fps = _check_fps(fps)
    gt_array = _as_sequence("gt", gt)
    if gt_array.shape[0] < 2:
        raise ValueError(f"foot contact needs at least 2 frames, got {gt_array.shape[0]}")
    if height_threshold_m is not None and not math.isfinite(height_threshold_m):
        raise ValueError(f"height_threshold_m must be finite or None, got {height_threshold_m}")
    if not math.isfinite(speed_threshold_m_s) or speed_threshold_m_s <= 0:
        raise ValueError(
            f"speed_threshold_m_s must be finite and positive, got {speed_threshold_m_s}"
        )
    feet = gt_array[:, list(_resolve_foot_joints(foot_joints, gt_array.shape[1]))]
    finite = np.isfinite(feet).all(axis=-1)
    feet = np.where(finite[..., None], feet, 0.0)
    contact = finite[:-1] & finite[1:]
    speed = np.linalg.norm(np.diff(feet, axis=0), axis=-1) * fps
    contact &= speed < speed_threshold_m_s
    if height_threshold_m is not None:
        low = feet[..., UP_AXIS] < height_threshold_m
        contact &= low[:-1] & low[1:]
    return contact


def foot_sliding_per_frame(
    pred: np.ndarray,
    gt: np.ndarray,
    foot_joints: JointSet | Sequence[int],
    fps: float,
    height_threshold_m: float | None = DEFAULT_FOOT_HEIGHT_THRESHOLD_M,
    speed_threshold_m_s: float = DEFAULT_FOOT_SPEED_THRESHOLD_M_S,
) -> np.ndarray:
    """Predicted foot displacement per frame step where the ground-truth foot is in contact.

    For step ``t`` (frame ``t`` to ``t+1``) and foot joint ``f``: ``|pred[t+1, f] - pred[t, f]|``
    in millimetres when :func:`foot_contact` says the gt foot is in contact and both frames are
    valid, NaN otherwise. A foot planted in the ground truth should not move in the prediction.
    Displacement is per frame (as in GVHMR), so it depends on ``fps``.

    Args:
        pred: ``(T, J, 3)`` predicted joints, metres, world frame; ``T >= 2``.
        gt: ``(T, J, 3)`` ground-truth joints, metres, world frame (y up, ground y = 0).
        foot_joints: a :class:`JointSet` (its ``foot_joints``) or explicit joint indices.
        fps: frames per second (for the contact speed test).
        height_threshold_m: see :func:`foot_contact`.
        speed_threshold_m_s: see :func:`foot_contact`.

    Returns:
        ``(T - 1, F)`` float64 millimetres, NaN where not in contact.
    """
    pred_array, gt_array, valid = _check_pair(pred, gt, min_frames=2)
    feet = list(_resolve_foot_joints(foot_joints, pred_array.shape[1]))
    contact = foot_contact(gt_array, feet, fps, height_threshold_m, speed_threshold_m_s)
    contact &= _window_validity(valid, 2)[:, None]
    pred_feet = _zero_invalid(pred_array, valid)[:, feet]
    displacement = np.linalg.norm(np.diff(pred_feet, axis=0), axis=-1) * MM_PER_M
    return np.where(contact, displacement, np.nan)


def foot_sliding(
    pred: np.ndarray,
    gt: np.ndarray,
    foot_joints: JointSet | Sequence[int],
    fps: float,
    height_threshold_m: float | None = DEFAULT_FOOT_HEIGHT_THRESHOLD_M,
    speed_threshold_m_s: float = DEFAULT_FOOT_SPEED_THRESHOLD_M_S,
) -> float:
    """Foot sliding in mm per frame: the mean of :func:`foot_sliding_per_frame` over all
    (step, foot joint) pairs in contact, as GVHMR pools them; NaN when there is no contact."""
    return _nanmean(
        foot_sliding_per_frame(pred, gt, foot_joints, fps, height_threshold_m, speed_threshold_m_s)
    )


# ------------------------------------------------------------------------------- summary


def evaluate_sequence(
    pred: np.ndarray,
    gt: np.ndarray,
    joint_set: JointSet,
    fps: float,
    *,
    foot_height_threshold_m: float | None = DEFAULT_FOOT_HEIGHT_THRESHOLD_M,
    foot_speed_threshold_m_s: float = DEFAULT_FOOT_SPEED_THRESHOLD_M_S,
) -> dict[str, float]:
    """Every DESIGN-5 metric of one sequence.

    Args:
        pred: ``(T, J, 3)`` predicted joints, metres, world frame (y up); ``T >= 4``.
        gt: ``(T, J, 3)`` ground-truth joints, same layout.
        joint_set: the layout of both arrays (``J == len(joint_set)``); gives the hips and
            feet.
        fps: frames per second.
        foot_height_threshold_m, foot_speed_threshold_m_s: foot contact, see
            :func:`foot_contact`.

    Returns:
        ``{key: float}`` with the keys of :data:`METRIC_KEYS` (``pa_mpjpe_mm``, ``mpjpe_mm``,
        ``abs_mpjpe_mm``, ``w_mpjpe100_mm``, ``wa_mpjpe100_mm``, ``rte_mm``, ``rte_pct``,
        ``jitter_m_s3`` of the prediction, ``accel_error_m_s2``, ``foot_sliding_mm``) plus
        ``num_frames``, the number of valid frames (the weight :func:`aggregate` uses). A metric
        undefined on this sequence is NaN (see the module docstring).
    """
    if not isinstance(joint_set, JointSet):
        raise TypeError(f"joint_set must be a JointSet, got {type(joint_set).__name__}")
    fps = _check_fps(fps)
    pred_array, gt_array, valid = _check_pair(pred, gt, min_frames=4)
    _check_joint_set_size(joint_set, pred_array.shape[1])
    root_error = rte(pred_array, gt_array, joint_set)
    return {
        "pa_mpjpe_mm": pa_mpjpe(pred_array, gt_array),
        "mpjpe_mm": mpjpe(pred_array, gt_array, joint_set),
        "abs_mpjpe_mm": abs_mpjpe(pred_array, gt_array),
        "w_mpjpe100_mm": w_mpjpe(pred_array, gt_array, DEFAULT_CHUNK_SIZE, DEFAULT_W_ALIGN_FRAMES),
        "wa_mpjpe100_mm": wa_mpjpe(pred_array, gt_array, DEFAULT_CHUNK_SIZE),
        "rte_mm": root_error.mm,
        "rte_pct": root_error.pct,
        "jitter_m_s3": jitter(pred_array, fps, valid),
        "accel_error_m_s2": accel_error(pred_array, gt_array, fps),
        "foot_sliding_mm": foot_sliding(
            pred_array,
            gt_array,
            joint_set,
            fps,
            foot_height_threshold_m,
            foot_speed_threshold_m_s,
        ),
        NUM_FRAMES_KEY: float(valid.sum()),
    }


def aggregate(
    rows: Sequence[Mapping[str, float]], weights: Sequence[float] | None = None
) -> dict[str, float]:
    """Combine per-sequence metric rows into one overall row.

    Each metric is the weighted mean of the rows' values, skipping rows where that metric is
    NaN (e.g. ``rte_pct`` of a sequence that does not travel) and renormalising over the rest;
    a metric NaN in every row stays NaN. Default weights are each row's ``num_frames``, so the
    result is a frame-weighted mean over the whole test set; the Mocap-2-to-3 reference instead
    averages batch means, which weighs sequences differently. Pass ``weights`` (one per row)
    for another scheme, e.g. ones for a per-sequence mean.

    Args:
        rows: dicts from :func:`evaluate_sequence`, all with the same keys.
        weights: optional non-negative finite weights, one per row.

    Returns:
        ``{key: float}`` with the rows' metric keys, ``num_frames`` (the sum, when the rows
        carry it) and ``num_sequences``.
    """
    if len(rows) == 0:
        raise ValueError("aggregate needs at least one row")
    keys = list(rows[0].keys())
    for index, row in enumerate(rows):
        if set(row.keys()) != set(keys):
            raise ValueError(
                f"row {index} has keys {sorted(row.keys())}, expected {sorted(keys)} like row 0"
            )
    if weights is None:
        if NUM_FRAMES_KEY not in keys:
            raise ValueError(f"rows carry no {NUM_FRAMES_KEY!r}; pass weights explicitly")
        row_weights = np.array([row[NUM_FRAMES_KEY] for row in rows], dtype=np.float64)
    else:
        row_weights = _as_real_array("weights", weights)
        if row_weights.shape != (len(rows),):
            raise ValueError(
                f"need one weight per row ({len(rows)}), got shape {row_weights.shape}"
            )
    if not np.isfinite(row_weights).all() or (row_weights < 0).any():
        raise ValueError("weights must be finite and non-negative")

    result: dict[str, float] = {}
    for key in keys:
        if key == NUM_FRAMES_KEY:
            continue
        values = np.array([row[key] for row in rows], dtype=np.float64)
        usable = ~np.isnan(values) & (row_weights > 0)
        total = row_weights[usable].sum()
        result[key] = (
            float((values[usable] * row_weights[usable]).sum() / total) if total > 0 else math.nan
        )
    if NUM_FRAMES_KEY in keys:
        result[NUM_FRAMES_KEY] = float(sum(row[NUM_FRAMES_KEY] for row in rows))
    result["num_sequences"] = float(len(rows))
    return result
