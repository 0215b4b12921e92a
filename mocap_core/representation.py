"""Per-view, per-frame motion features: global root, local pose and scale (DESIGN 2.2).

For ``J`` joints with joint 0 the root (pelvis), every view and frame is described by
``C = 2 (J + 1)`` channels, ``J + 1`` "slots" of an ``(x, y)`` pair each, interleaved::

    channel  0, 1            slot 0        global root: the root in padded, normalised image
                                           coordinates (2 u' / S - 1, 2 v' / S - 1)
    channel  2j, 2j+1        slot j        local pose of joint j = 1 .. J-1: 2 (p_j - p_0) / s
    channel  2J, 2J+1        slot J        scale: 2 s / S - 1, written twice (x and y slot)

``smpl22`` gives 46 channels, ``coco17_pelvis`` (18 joints) 38.

Conventions:

- **Pixels** are continuous ``(u, v)`` coordinates of the original, unpadded ``W x H`` image
  (the convention of :mod:`mocap_core.cameras`).
- **Padded image**: the image is padded symmetrically to an ``S x S`` square with
  ``S = max(W, H)``, so ``u' = u + (S - W) / 2`` and ``v' = v + (S - H) / 2``. For the usual
  landscape image this is the paper's ``W x W`` square with ``v' = v + (W - H) / 2``; a portrait
  image is padded left and right instead. This matches
  :attr:`mocap_core.cameras.Camera.padded_K`.
- **Box**: per frame, a square centred on the root with side ``s = 1.2 max(w, h)``, where
  ``w = 2 max_j |u_j - u_0|`` and ``h = 2 max_j |v_j - v_0|`` over the *visible* joints.
  Local coordinates therefore lie in ``[-1 / 1.2, 1 / 1.2]``.
- **Degenerate box**: ``s`` is floored at ``1e-6 S`` (all visible joints on the root, or no
  visible joint besides the root), so local coordinates stay finite; the scale slot is then
  ``~ -1``, "very far away".
- **Missing joints** (``visible`` false) neither widen the box nor carry information: their
  local slots are 0 ("on the root") and, in the global encoding, they sit on the root. Their
  pixel values are never read, so NaN there is harmless (also for gradients). The root itself
  is always used as given: a caller with a missing root fills it first (e.g. from the hips).
- **Decoding** is the exact inverse. The two scale channels are decoded separately, x with the
  x slot and y with the y slot (they are equal for an encoded sample, not for a prediction).

Every function takes numpy arrays or torch tensors (torch as soon as one array argument is a
tensor, on that tensor's device and floating dtype; float64 when no argument is floating) and
broadcasts the batch dimensions ``...`` of its arguments.

The model layout is channels-first, ``(batch, [views,] C, frames)``;
:func:`to_channels_first` and :func:`to_channels_last` convert. :class:`FeatureStats` holds
the per-channel z-score statistics saved with a checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

ArrayOrTensor = np.ndarray | torch.Tensor

# Box side = this factor times the larger of the root-centred extents w, h (DESIGN 2.2).
BOX_MARGIN = 1.2

# Floor of the box side as a fraction of the padded image side S: keeps a degenerate box (all
# visible joints on the root) finite while leaving every real pose (a body spans many pixels)
# untouched.
MIN_BOX_FRACTION = 1e-6

# Floor of a fitted standard deviation. Features are O(1) (padded-image coordinates and local
# coordinates in [-1, 1]); a channel that varies less than 1e-3 across the training data is
# effectively constant, and dividing by its tiny spread would blow numerical noise up into huge
# normalised values.
MIN_STD = 1e-3


# ---------------------------------------------------------------------------------------------
# numpy / torch dispatch


def _to_backend(*arrays: Any) -> tuple[list[Any], bool]:
    """Bring array arguments to one backend and one floating dtype; ``None`` passes through.

    torch when any argument is a tensor (dtype promoted among the floating tensors, float64
    when none is floating; device of the first tensor), numpy otherwise (promoted floating
    dtype, float64 when none is floating).
    """
    tensors = [a for a in arrays if isinstance(a, torch.Tensor)]
    if tensors:
        float_dtypes = [a.dtype for a in tensors if a.is_floating_point()]
        dtype = float_dtypes[0] if float_dtypes else torch.float64
        for other in float_dtypes[1:]:
            dtype = torch.promote_types(dtype, other)
        device = tensors[0].device
        return [
            None if a is None else torch.as_tensor(_writable(a), dtype=dtype, device=device)
            for a in arrays
        ], True
    as_np = [None if a is None else np.asarray(a) for a in arrays]
    for a in as_np:
        if a is not None and not (
            np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
        ):
            raise TypeError(f"expected a real numeric array, got dtype {a.dtype}")
    float_dtypes = [a.dtype for a in as_np if a is not None and np.issubdtype(a.dtype, np.floating)]
    dtype = np.result_type(*float_dtypes) if float_dtypes else np.dtype(np.float64)
    return [None if a is None else a.astype(dtype, copy=False) for a in as_np], False


def _writable(array: Any) -> Any:
    """torch warns when wrapping a read-only numpy array (camera arrays are), so copy those."""
    if isinstance(array, np.ndarray) and not array.flags.writeable:
        return array.copy()
    return array


def _xp(is_torch: bool) -> Any:
    return torch if is_torch else np


def _check_last_dims(name: str, array: Any, dims: tuple[int, ...]) -> None:
    shape = tuple(array.shape)
    if len(shape) < len(dims) or shape[len(shape) - len(dims) :] != dims:
        expected = "(..., " + ", ".join(str(d) for d in dims) + ")"
        raise ValueError(f"{name}: expected shape {expected}, got {shape}")


def _padding_geometry(image_size: Any, is_torch: bool, trailing: int) -> tuple[Any, Any]:
    """Padded side ``S`` and the padding offset of an image size ``[W, H]``.

    Args:
        image_size: ``(..., 2)`` ``[W, H]`` in pixels, already on the backend.
        trailing: number of axes to append before the coordinate axis so that the results
            broadcast against arrays shaped ``(..., *trailing axes, 2)``.

    Returns:
        ``S (..., *ones, 1)`` and ``offset (..., *ones, 2) = (S - [W, H]) / 2``, pixels.
    """
    _check_last_dims("image_size", image_size, (2,))
    xp = _xp(is_torch)
    if not bool(xp.all(image_size > 0)) or not bool(xp.all(xp.isfinite(image_size))):
        raise ValueError("image_size: widths and heights must be finite and > 0")
    size = image_size.reshape(tuple(image_size.shape[:-1]) + (1,) * trailing + (2,))
    side = xp.maximum(size[..., 0:1], size[..., 1:2])
    return side, (side - size) / 2


def _check_pixels(pixels: Any) -> int:
    _check_last_dims("pixels", pixels, (2,))
    if pixels.ndim < 3:
        raise ValueError(f"pixels: expected shape (..., T, J, 2), got {tuple(pixels.shape)}")
    num_joints = int(pixels.shape[-2])
    if num_joints < 2:
        raise ValueError(f"pixels: need a root and at least one more joint, got J = {num_joints}")
    return num_joints


def _check_visible(visible: Any, pixels: Any, is_torch: bool) -> Any:
    """``visible`` as a boolean array on the pixels' backend, broadcast to ``(..., T, J)``."""
    if visible is None:
        return None
    if is_torch:
        visible = torch.as_tensor(visible, device=pixels.device)
        if visible.dtype != torch.bool:
            raise TypeError(f"visible: expected a boolean mask, got dtype {visible.dtype}")
    else:
        visible = np.asarray(visible)
        if visible.dtype != np.bool_:
            raise TypeError(f"visible: expected a boolean mask, got dtype {visible.dtype}")
    try:
        np.broadcast_shapes(tuple(visible.shape), tuple(pixels.shape[:-1]))
    except ValueError:
        raise ValueError(
            f"visible: shape {tuple(visible.shape)} does not broadcast against pixels' "
            f"(..., T, J) = {tuple(pixels.shape[:-1])}"
        ) from None
    return visible


def _num_joints_from_features(features: Any) -> int:
    if features.ndim < 2:
        raise ValueError(f"features: expected shape (..., T, C), got {tuple(features.shape)}")
    channels = int(features.shape[-1])
    if channels % 2 or channels < 6:
        raise ValueError(f"features: C = {channels} channels is not 2 (J + 1) for J >= 2 joints")
    return channels // 2 - 1


# ---------------------------------------------------------------------------------------------
# Layout


def feature_dim(num_joints: int) -> int:
    """Channels ``C = 2 (J + 1)`` of the per-view vector for ``num_joints = J`` (root included).

    ``smpl22`` -> 46, ``coco17_pelvis`` (18 joints) -> 38.
    """
    if isinstance(num_joints, bool) or not isinstance(num_joints, int | np.integer):
        raise TypeError(f"num_joints: expected an int, got {type(num_joints).__name__}")
    if num_joints < 2:
        raise ValueError(f"num_joints: need a root and at least one more joint, got {num_joints}")
    return 2 * (int(num_joints) + 1)


def to_channels_first(features: ArrayOrTensor) -> ArrayOrTensor:
    """``(..., T, C)`` -> ``(..., C, T)``, the model layout ``(batch, [views,] C, frames)``.

    A view (no copy) of the input, numpy or torch.
    """
    if features.ndim < 2:
        raise ValueError(f"features: expected shape (..., T, C), got {tuple(features.shape)}")
    return features.swapaxes(-1, -2)


def to_channels_last(features: ArrayOrTensor) -> ArrayOrTensor:
    """``(..., C, T)`` -> ``(..., T, C)``, the inverse of :func:`to_channels_first`."""
    if features.ndim < 2:
        raise ValueError(f"features: expected shape (..., C, T), got {tuple(features.shape)}")
    return features.swapaxes(-1, -2)


# ---------------------------------------------------------------------------------------------
# Encoding and decoding


def _root_box(pixels: Any, side: Any, visible: Any, is_torch: bool) -> tuple[Any, Any]:
    """Root-relative offsets (zero for missing joints) and the per-frame box side.

    Returns ``relative (..., T, J, 2)`` pixels and ``box (..., T, 1, 1)`` pixels, floored at
    ``MIN_BOX_FRACTION * S``.
    """
    xp = _xp(is_torch)
    relative = pixels - pixels[..., :1, :]
    if visible is not None:
        # Masking before any further arithmetic keeps NaN pixels of missing joints out of both
        # the values and the gradients.
        relative = xp.where(visible[..., None], relative, xp.zeros_like(relative))
    extent = xp.amax(xp.abs(relative), axis=-2, keepdims=True)  # (..., T, 1, 2)
    box = BOX_MARGIN * 2 * xp.amax(extent, axis=-1, keepdims=True)  # (..., T, 1, 1)
    return relative, xp.maximum(box, MIN_BOX_FRACTION * side)


def _scale_slot(box: Any, side: Any, is_torch: bool) -> Any:
    """``2 s / S - 1`` written twice: ``(..., T, 1, 2)``."""
    scale = 2 * box / side - 1
    return _xp(is_torch).concatenate([scale, scale], axis=-1)


def _flatten_slots(slots: Any) -> Any:
    """``(..., T, J + 1, 2)`` -> ``(..., T, 2 (J + 1))`` with x, y interleaved per slot."""
    return slots.reshape(tuple(slots.shape[:-2]) + (2 * slots.shape[-2],))


def encode_local(
    pixels: ArrayOrTensor,
    image_size: ArrayOrTensor | tuple[float, float],
    visible: ArrayOrTensor | None = None,
) -> ArrayOrTensor:
    """Encode pixel keypoints into the per-view features (global root, local pose, scale).

    Args:
        pixels: ``(..., T, J, 2)`` continuous pixel coordinates ``(u, v)`` of the unpadded
            image, joint 0 the root.
        image_size: ``(..., 2)`` ``[W, H]`` in pixels; its batch dimensions broadcast against
            the pixels' ``...`` (e.g. ``(2,)`` for one camera, ``(V, 2)`` for
            ``pixels (V, T, J, 2)``).
        visible: ``(..., T, J)`` boolean, broadcastable; ``None`` means all visible. Missing
            joints do not widen the box and their local slots are 0; the root is always used.

    Returns:
        ``(..., T, C)`` features, ``C = 2 (J + 1)``, same backend as the inputs (float).
    """
    (pixels, image_size), is_torch = _to_backend(pixels, image_size)
    _check_pixels(pixels)
    side, offset = _padding_geometry(image_size, is_torch, trailing=2)
    visible = _check_visible(visible, pixels, is_torch)
    xp = _xp(is_torch)

    relative, box = _root_box(pixels, side, visible, is_torch)
    root = 2 * (pixels[..., :1, :] + offset) / side - 1  # (..., T, 1, 2)
    local = 2 * relative[..., 1:, :] / box  # (..., T, J - 1, 2)
    shape = np.broadcast_shapes(tuple(root.shape[:-2]), tuple(local.shape[:-2]))
    slots = xp.concatenate(
        [
            _broadcast_to(root, shape + (1, 2), is_torch),
            _broadcast_to(local, shape + tuple(local.shape[-2:]), is_torch),
            _broadcast_to(_scale_slot(box, side, is_torch), shape + (1, 2), is_torch),
        ],
        axis=-2,
    )
    return _flatten_slots(slots)


def decode_local(
    features: ArrayOrTensor, image_size: ArrayOrTensor | tuple[float, float]
) -> ArrayOrTensor:
    """Inverse of :func:`encode_local`: features to pixel keypoints.

    Args:
        features: ``(..., T, C)``, ``C = 2 (J + 1)``, un-normalised (not z-scored).
        image_size: ``(..., 2)`` ``[W, H]`` in pixels, batch dimensions broadcast.

    Returns:
        ``pixels (..., T, J, 2)`` continuous coordinates of the unpadded image. Joint ``j >= 1``
        is ``p_0 + l_j s / 2`` with ``s`` read from the scale slot, x from its x channel and y
        from its y channel.
    """
    (features, image_size), is_torch = _to_backend(features, image_size)
    num_joints = _num_joints_from_features(features)
    side, offset = _padding_geometry(image_size, is_torch, trailing=2)
    slots = features.reshape(tuple(features.shape[:-1]) + (num_joints + 1, 2))
    root = (slots[..., :1, :] + 1) * side / 2  # padded pixels, (..., T, 1, 2)
    box = (slots[..., num_joints:, :] + 1) * side / 2  # (..., T, 1, 2)
    joints = root + slots[..., 1:num_joints, :] * box / 2
    return _xp(is_torch).concatenate([root, joints], axis=-2) - offset


def encode_global(
    pixels: ArrayOrTensor,
    image_size: ArrayOrTensor | tuple[float, float],
    visible: ArrayOrTensor | None = None,
) -> ArrayOrTensor:
    """Encode all joints in padded, normalised image coordinates plus the scale slot.

    The "global" encoding is only a conditioning input for the observed view V0 (DESIGN 2.2).

    Args:
        pixels: ``(..., T, J, 2)`` unpadded pixel coordinates, joint 0 the root.
        image_size: ``(..., 2)`` ``[W, H]`` in pixels, batch dimensions broadcast.
        visible: ``(..., T, J)`` boolean or ``None``. Missing joints are written at the root's
            position (as their local slots are 0 in :func:`encode_local`) and do not widen the
            box that sets the scale slot.

    Returns:
        ``(..., T, C)``, ``C = 2 J + 2``: slot j < J is ``2 p'_j / S - 1``, slot J is
        ``2 s / S - 1`` twice, with ``s`` the same box side as in :func:`encode_local`.
    """
    (pixels, image_size), is_torch = _to_backend(pixels, image_size)
    _check_pixels(pixels)
    side, offset = _padding_geometry(image_size, is_torch, trailing=2)
    visible = _check_visible(visible, pixels, is_torch)
    xp = _xp(is_torch)

    relative, box = _root_box(pixels, side, visible, is_torch)
    # Rebuilding the joints from the masked offsets puts missing joints on the root.
    joints = 2 * (pixels[..., :1, :] + relative + offset) / side - 1  # (..., T, J, 2)
    scale = _scale_slot(box, side, is_torch)
    shape = np.broadcast_shapes(tuple(joints.shape[:-2]), tuple(scale.shape[:-2]))
    slots = xp.concatenate(
        [
            _broadcast_to(joints, shape + tuple(joints.shape[-2:]), is_torch),
            _broadcast_to(scale, shape + (1, 2), is_torch),
        ],
        axis=-2,
    )
    return _flatten_slots(slots)


def decode_global(
    features: ArrayOrTensor, image_size: ArrayOrTensor | tuple[float, float]
) -> ArrayOrTensor:
    """Inverse of :func:`encode_global`: ``(..., T, C)`` to ``pixels (..., T, J, 2)``.

    The scale slot is not needed to recover the joints and is ignored.
    """
    (features, image_size), is_torch = _to_backend(features, image_size)
    num_joints = _num_joints_from_features(features)
    side, offset = _padding_geometry(image_size, is_torch, trailing=2)
    slots = features.reshape(tuple(features.shape[:-1]) + (num_joints + 1, 2))
    return (slots[..., :num_joints, :] + 1) * side / 2 - offset


def _broadcast_to(array: Any, shape: tuple[int, ...], is_torch: bool) -> Any:
    if tuple(array.shape) == shape:
        return array
    return array.expand(shape) if is_torch else np.broadcast_to(array, shape)


# ---------------------------------------------------------------------------------------------
# Pixels and normalised camera coordinates


def pixels_to_normalized(pixels: ArrayOrTensor, K: ArrayOrTensor) -> ArrayOrTensor:
    """Pixels to normalised camera coordinates ``(X / Z, Y / Z)`` of a pinhole camera.

    ``y = (v - cy) / fy``, ``x = (u - cx - skew y) / fx`` (skew is ``K[0, 1]``, usually 0).
    Unpadded pixels with the unpadded ``K`` give the same result as padded pixels with the
    padded ``K``: padding shifts ``u`` and ``cx`` (``v`` and ``cy``) by the same amount. No lens
    distortion (see :func:`mocap_core.cameras.undistort_points` for that).

    Args:
        pixels: ``(..., 2)`` continuous pixel coordinates ``(u, v)``.
        K: ``(..., 3, 3)`` intrinsics in pixels. Batch dimensions broadcast the numpy way,
            aligned from the right: for ``pixels (V, T, J, 2)`` and per-view ``K (V, 3, 3)``
            pass ``K[:, None, None]``.

    Returns:
        ``(..., 2)`` normalised coordinates (dimensionless), same backend as the inputs.
    """
    (pixels, K), is_torch = _to_backend(pixels, K)
    _check_last_dims("pixels", pixels, (2,))
    _check_last_dims("K", K, (3, 3))
    y = (pixels[..., 1] - K[..., 1, 2]) / K[..., 1, 1]
    x = (pixels[..., 0] - K[..., 0, 2] - K[..., 0, 1] * y) / K[..., 0, 0]
    return _xp(is_torch).stack(_broadcast_pair(x, y, is_torch), axis=-1)


def normalized_to_pixels(normalized: ArrayOrTensor, K: ArrayOrTensor) -> ArrayOrTensor:
    """Inverse of :func:`pixels_to_normalized`: ``u = fx x + skew y + cx``, ``v = fy y + cy``.

    Args:
        normalized: ``(..., 2)`` normalised camera coordinates ``(X / Z, Y / Z)``.
        K: ``(..., 3, 3)`` intrinsics, batch dimensions broadcast as in
            :func:`pixels_to_normalized` (unpadded ``K`` gives unpadded pixels, padded gives
            padded).

    Returns:
        ``(..., 2)`` continuous pixel coordinates ``(u, v)``.
    """
    (normalized, K), is_torch = _to_backend(normalized, K)
    _check_last_dims("normalized", normalized, (2,))
    _check_last_dims("K", K, (3, 3))
    x, y = normalized[..., 0], normalized[..., 1]
    u = K[..., 0, 0] * x + K[..., 0, 1] * y + K[..., 0, 2]
    v = K[..., 1, 1] * y + K[..., 1, 2]
    return _xp(is_torch).stack(_broadcast_pair(u, v, is_torch), axis=-1)


def _broadcast_pair(a: Any, b: Any, is_torch: bool) -> list[Any]:
    shape = np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
    return [_broadcast_to(a, shape, is_torch), _broadcast_to(b, shape, is_torch)]


# ---------------------------------------------------------------------------------------------
# Z-score statistics


def _as_float64_numpy(name: str, array: Any) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name}: expected a real numeric array, got dtype {array.dtype}")
    return array.astype(np.float64, copy=False)


@dataclass(frozen=True)
class FeatureStats:
    """Per-channel z-score statistics of the features, saved with a checkpoint.

    Attributes:
        mean: ``(C,)`` float64 channel means.
        std: ``(C,)`` float64 channel standard deviations (population), floored at
            ``MIN_STD`` when fitted.
    """

    mean: np.ndarray
    std: np.ndarray
    _device_cache: dict[tuple[Any, Any], tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Own copies: the arrays are frozen below and must not freeze the caller's.
        mean = _as_float64_numpy("mean", self.mean).copy()
        std = _as_float64_numpy("std", self.std).copy()
        if mean.ndim != 1 or mean.shape != std.shape:
            raise ValueError(
                f"FeatureStats: mean and std must both be (C,), got {mean.shape} and {std.shape}"
            )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            raise ValueError("FeatureStats: mean and std must be finite")
        if np.any(std <= 0):
            raise ValueError("FeatureStats: std must be > 0 in every channel")
        mean.setflags(write=False)
        std.setflags(write=False)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def num_channels(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def fit(
        cls, features: ArrayOrTensor, weights: ArrayOrTensor | None = None, min_std: float = MIN_STD
    ) -> FeatureStats:
        """Fit the statistics of ``features (..., C)`` in one go.

        ``weights (...)`` non-negative, e.g. a valid-frame mask; ``None`` weighs all equally.
        For data that does not fit in memory use :class:`FeatureStatsAccumulator`.
        """
        accumulator = FeatureStatsAccumulator()
        accumulator.update(features, weights)
        return accumulator.finalize(min_std)

    def _moments_like(self, x: Any, channel_axis: int) -> tuple[Any, Any]:
        """Mean and std shaped to broadcast against ``x`` along ``channel_axis``."""
        if x.ndim == 0:
            raise ValueError("x: expected at least one (channel) dimension")
        axis = channel_axis % x.ndim if -x.ndim <= channel_axis < x.ndim else None
        if axis is None:
            raise ValueError(f"channel_axis {channel_axis} is out of range for {x.ndim}-d input")
        if x.shape[axis] != self.num_channels:
            raise ValueError(
                f"x: axis {channel_axis} has {x.shape[axis]} channels, the statistics "
                f"{self.num_channels}"
            )
        shape = (self.num_channels,) + (1,) * (x.ndim - axis - 1)
        if isinstance(x, torch.Tensor):
            key = (x.dtype, x.device)
            if key not in self._device_cache:
                self._device_cache[key] = (
                    # Copies: the stored arrays are read-only, which torch cannot wrap.
                    torch.tensor(self.mean.copy(), dtype=x.dtype, device=x.device),
                    torch.tensor(self.std.copy(), dtype=x.dtype, device=x.device),
                )
            mean, std = self._device_cache[key]
            return mean.reshape(shape), std.reshape(shape)
        return self.mean.astype(x.dtype).reshape(shape), self.std.astype(x.dtype).reshape(shape)

    def normalize(self, x: ArrayOrTensor, channel_axis: int = -1) -> ArrayOrTensor:
        """``(x - mean) / std`` along ``channel_axis`` (-1 for ``(..., T, C)``, -2 for the
        model layout ``(..., C, T)``). numpy or torch; keeps a floating dtype, integers become
        float64."""
        x = _as_float_input(x)
        mean, std = self._moments_like(x, channel_axis)
        return (x - mean) / std

    def denormalize(self, x: ArrayOrTensor, channel_axis: int = -1) -> ArrayOrTensor:
        """``x * std + mean``, the inverse of :meth:`normalize`."""
        x = _as_float_input(x)
        mean, std = self._moments_like(x, channel_axis)
        return x * std + mean

    def to_dict(self) -> dict[str, list[float]]:
        """Plain lists ``{"mean": [...], "std": [...]}`` for a checkpoint or JSON."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureStats:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on missing keys or bad values."""
        missing = {"mean", "std"} - set(data)
        if missing:
            raise ValueError(f"FeatureStats.from_dict: missing keys {sorted(missing)}")
        return cls(mean=np.asarray(data["mean"], float), std=np.asarray(data["std"], float))


def _as_float_input(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.to(torch.float64)
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.floating):
        return x
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float64)
    raise TypeError(f"x: expected a real numeric array, got dtype {x.dtype}")


class FeatureStatsAccumulator:
    """Streaming, weighted per-channel mean and variance (Chan et al.'s pairwise update).

    Feed batches with :meth:`update`, combine workers' accumulators with :meth:`merge`, then
    :meth:`finalize`. Sums are float64 and batches are merged by their centred moments, so long
    streams do not lose precision to the ``E[x^2] - E[x]^2`` cancellation.
    """

    def __init__(self) -> None:
        self.total_weight = 0.0
        self._mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None  # sum of weight * (x - mean)^2

    def update(
        self, features: ArrayOrTensor, weights: ArrayOrTensor | None = None
    ) -> FeatureStatsAccumulator:
        """Add ``features (..., C)`` with optional non-negative ``weights (...)``.

        Rows with weight 0 are ignored entirely (they may hold NaN, e.g. padding). Returns
        ``self`` for chaining.
        """
        x = _as_float64_numpy("features", features)
        if x.ndim == 0:
            raise ValueError("features: expected shape (..., C)")
        x = x.reshape(-1, x.shape[-1])
        if weights is None:
            w = np.ones(x.shape[0])
        else:
            w = _as_float64_numpy("weights", weights)
            if w.shape != tuple(np.shape(features))[:-1]:
                raise ValueError(
                    f"weights: expected shape {tuple(np.shape(features))[:-1]}, got {w.shape}"
                )
            w = w.reshape(-1)
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError("weights: must be finite and >= 0")
        if self._mean is not None and x.shape[1] != self._mean.shape[0]:
            raise ValueError(
                f"features: {x.shape[1]} channels, earlier batches had {self._mean.shape[0]}"
            )
        used = w > 0
        x, w = x[used], w[used]
        if not np.all(np.isfinite(x)):
            raise ValueError("features: non-finite values in rows with weight > 0")
        batch_weight = float(w.sum())
        if batch_weight == 0.0:
            if self._mean is None:
                self._mean = np.zeros(x.shape[1])
                self._m2 = np.zeros(x.shape[1])
            return self
        batch_mean = (w[:, None] * x).sum(axis=0) / batch_weight
        batch_m2 = (w[:, None] * (x - batch_mean) ** 2).sum(axis=0)
        self._combine(batch_weight, batch_mean, batch_m2)
        return self

    def merge(self, other: FeatureStatsAccumulator) -> FeatureStatsAccumulator:
        """Fold another accumulator (e.g. another worker's) into this one; returns ``self``."""
        if other._mean is None or other.total_weight == 0.0:
            return self
        if self._mean is not None and self._mean.shape != other._mean.shape:
            raise ValueError(
                f"merge: {other._mean.shape[0]} channels against {self._mean.shape[0]}"
            )
        assert other._m2 is not None
        self._combine(other.total_weight, other._mean, other._m2)
        return self

    def _combine(self, weight: float, mean: np.ndarray, m2: np.ndarray) -> None:
        if self._mean is None or self._m2 is None or self.total_weight == 0.0:
            self.total_weight, self._mean, self._m2 = weight, mean.copy(), m2.copy()
            return
        total = self.total_weight + weight
        delta = mean - self._mean
        self._mean = self._mean + delta * (weight / total)
        self._m2 = self._m2 + m2 + delta**2 * (self.total_weight * weight / total)
        self.total_weight = total

    def finalize(self, min_std: float = MIN_STD) -> FeatureStats:
        """The fitted :class:`FeatureStats`, population std floored at ``min_std`` (> 0)."""
        if not (math.isfinite(min_std) and min_std > 0):
            raise ValueError(f"min_std: must be finite and > 0, got {min_std}")
        if self._mean is None or self._m2 is None or self.total_weight == 0.0:
            raise ValueError("FeatureStatsAccumulator: no data with weight > 0 was added")
        std = np.sqrt(np.maximum(self._m2 / self.total_weight, 0.0))
        return FeatureStats(mean=self._mean.copy(), std=np.maximum(std, min_std))
