"""Multi-view triangulation: 2D pixel points seen by calibrated cameras -> 3D world points.

The sampling loop of DESIGN 2.5 triangulates every joint of every frame from all views at every
denoising step, so the fast path is a batched, closed-form linear DLT that accepts numpy arrays
or torch tensors (torch in -> torch out, same device and dtype, differentiable).

Conventions shared by every function here:

- ``points (V, ..., 2)``: pixel coordinates ``(u, v)`` of the same physical points in each of
  ``V`` views; ``...`` is any batch shape, e.g. ``(T, J)``.
- ``proj (V, 3, 4)``: projection matrices mapping homogeneous world points to homogeneous
  pixels, ``[u, v, 1] ~ proj[v] @ [X, Y, Z, 1]`` (``K @ [R | t]`` with OpenCV extrinsics;
  any overall scale or sign of a matrix is accepted). World units are whatever ``t`` is in
  (metres in this project).
- ``weights (V, ...)``: per view and point, in ``[0, 1]``; ``0`` means "not seen". Size-1 axes
  after the first broadcast. Pixel coordinates that are NaN or infinite also count as not seen.
- Results ``(..., 3)`` in the world frame and units of ``proj``.

Linear DLT and its weighting. View ``v`` contributes the two rows ``w (u P3 - P1)`` and
``w (v P3 - P2)`` to a linear system in the homogeneous point. Each view's rows are divided by
``f_v ||P3[:3]||`` where ``f_v = sqrt(fx fy)`` is recovered from ``proj`` (see
:func:`_prepare_rig`); a row's residual is then ``depth * pixel error / f``, roughly the
point's metric offset from the ray, so a view's influence does not depend on its focal length
or on the arbitrary scale of its matrix. The least-squares weight of a view is ``w**2``. On
noise-free data this scaling changes nothing; it only defines which compromise is taken when
the views disagree.

``method="normal"`` (default) fixes the homogeneous coordinate to 1 and solves the 3x3 normal
equations by cofactors. ``method="svd"`` is the textbook homogeneous null vector of the same
rows, batched; on consistent data both give the same point. Both work in conditioned
coordinates: image points are mapped to normalised coordinates ``(u - cx) / f`` (Hartley
normalisation with the principal point and focal length recovered from ``proj``) and the world
origin is moved to the mean camera centre. These are exact changes of variables that only
reduce rounding error.

Precision. The per-point arithmetic always runs in float64 (float32 only on Apple MPS, which
has no float64); float32 inputs get float32 results. The normal equations square the problem's
condition number, and pure float32 arithmetic measured 5.6e-4 m error on a wide two-view rig
where the float32 rounding of the pixels alone accounts for 1.9e-5 m. Measured on clean data
(benchmarks/bench_triangulation.py, 4 cameras 3-5 m away, 1M points): float64 max error
2.2e-15 m; float32 pixels 2.6e-7 m. The tests bound float64 at 1e-9 m on random 2-8 camera
rigs and float32 at 2e-5 m. A point whose rays are (nearly) collinear, e.g. on the baseline of
its only two views, has no unique solution (normal matrix with condition number beyond ~1e12)
and is reported like an insufficient point.

Speed (same benchmark, shared 2-core dev machine, best of 5, two runs): numpy float64 27-34M
points/s (72-80x aniposelib 0.8's JAX ``CameraGroup.triangulate``), torch CPU float64 13-17M
points/s, robust variant ~1.7M points/s on clean data.

Insufficient views. A point seen by fewer than two views (weight > 0 and finite pixel
coordinates) cannot be triangulated. ``on_insufficient="raise"`` (default) raises ``ValueError``
naming how many points and which; ``on_insufficient="nan"`` returns NaN there. With
``return_mask=True`` a :class:`Triangulation` ``(points3d, valid)`` is returned, ``valid (...)``
bool being True where a finite point was triangulated.

Torch. The same algorithm in torch ops; gradients flow to ``points``, ``proj`` and ``weights``.
Unseen views and masked points are zeroed before any arithmetic so that they cannot leak NaN
into gradients, but the returned NaNs for invalid points must themselves be masked out of any
loss. The checks cost one host-device synchronisation per call. ``method="svd"`` is a reference:
SVD gradients are unstable when singular values coincide, prefer ``"normal"`` under autograd.
"""

from __future__ import annotations

import sys
from typing import Any, Literal, NamedTuple

import numpy as np

Method = Literal["normal", "svd"]
OnInsufficient = Literal["raise", "nan"]
RobustLoss = Literal["cauchy", "huber"]

# Points per block in the numpy paths: the ~25 temporaries of one block (float64) then stay in
# a 2 MiB L2 cache, measured ~2.5x faster than whole-array operations on 1M points.
_NUMPY_BLOCK = 32768
# Blocks for the heavier SVD and robust numpy paths, bounded for memory rather than cache.
_NUMPY_HEAVY_BLOCK = 16384
# torch on CPU: whole-array ops on 1M points are memory bound; 128k-point blocks measured
# 2.5x faster (smaller blocks lose to per-op overhead). Other devices take one block.
_TORCH_CPU_BLOCK = 131072
# Indices of the 3x3 normal matrix (6 unique entries) and of the homogeneous column, in the
# order used by every solver below.
_SYSTEM_ENTRIES = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2), (0, 3), (1, 3), (2, 3))
# |det| of a row-normalised left 3x3 below this fraction of its row norms' product: singular.
_SINGULAR_RTOL = 1e-10
_MAX_LISTED = 5
# A normal matrix with det <= (1e-4 trace)^3, i.e. condition number beyond ~1e12, is degenerate
# (for the SVD: second-smallest singular value below 1e-8 of the largest).
_DEGENERATE_CUBE_ROOT = 1e-4


class Triangulation(NamedTuple):
    """Triangulated points with the mask of those that could be triangulated.

    Attributes:
        points3d: ``(..., 3)`` world points, same type, device and dtype as the input points;
            NaN where ``valid`` is False.
        valid: ``(...)`` bool; True where at least two views saw the point and the solution
            is finite.
    """

    points3d: Any
    valid: Any


class _Rig(NamedTuple):
    """Per-view constants derived from ``proj`` (all arrays of one namespace and dtype).

    ``cx, cy, inv_f (V,)`` map pixels to normalised coordinates ``x = (u - cx) * inv_f``.
    ``f (V,)`` focal length in pixels. ``proj_cond (V, 3, 4)`` maps homogeneous points relative
    to ``centre (3,)`` to homogeneous normalised coordinates; its third row is the depth in world
    units. ``coef (V, 9, 4)``: entry ``k`` of ``_SYSTEM_ENTRIES`` of a view's 4x4 normal matrix
    is ``coef[v, k] @ [x**2 + y**2, x, y, 1]``, scaled by the view's squared weight.
    """

    cx: Any
    cy: Any
    inv_f: Any
    f: Any
    proj_cond: Any
    coef: Any
    centre: Any


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def triangulate(
    points: Any,
    proj: Any,
    weights: Any | None = None,
    *,
    method: Method = "normal",
    on_insufficient: OnInsufficient = "raise",
    return_mask: bool = False,
) -> Any:
    """Triangulate points seen in several calibrated views by weighted linear DLT.

    Args:
        points: ``(V, ..., 2)`` pixel coordinates, numpy array or torch tensor (float32 or
            float64 kept; numpy integers are computed in float64). NaN/inf = not seen.
        proj: ``(V, 3, 4)`` projection matrices, world -> homogeneous pixels (numpy or torch;
            converted to the points' type and device).
        weights: optional ``(V, ...)`` in ``[0, 1]``, 0 = not seen; size-1 axes after the first
            broadcast. The least-squares weight of a view is ``weights**2``.
        method: ``"normal"`` (closed-form 3x3 normal equations, fastest) or ``"svd"``
            (homogeneous null vector, reference).
        on_insufficient: ``"raise"`` a ValueError for points seen by fewer than two views
            (or with degenerate geometry), or return ``"nan"`` there.
        return_mask: return a :class:`Triangulation` ``(points3d, valid)`` instead of the array.

    Returns:
        ``(..., 3)`` world points (units of ``proj``'s translation, metres here), same type,
        device and dtype as ``points``; or a :class:`Triangulation` when ``return_mask``.

    Raises:
        ValueError: bad shapes, weights outside ``[0, 1]``, a projection matrix with a singular
            left 3x3, or (``on_insufficient="raise"``) points that cannot be triangulated.
        TypeError: non-numeric inputs, or torch ``proj``/``weights`` with numpy ``points``.
    """
    _check_choice("method", method, ("normal", "svd"))
    _check_choice("on_insufficient", on_insufficient, ("raise", "nan"))
    if _is_torch(points):
        return _triangulate_torch(
            points, proj, weights, on_insufficient, return_mask, method=method, robust=None
        )
    _reject_torch_with_numpy_points(proj, weights)
    pts, out_dtype, batch_shape = _numpy_points(points)
    rig, w = _numpy_rig_and_weights(pts, batch_shape, proj, weights)
    if method == "normal":
        out, n_seen, finite = _normal_numpy(pts, w, rig)
    else:
        out, n_seen, finite = _blockwise_numpy(
            pts, w, rig, lambda x, y, ws, r: _svd_block(x, y, ws, r)
        )
    return _finish_numpy(
        out, n_seen, finite, out_dtype, pts.shape[0], batch_shape, on_insufficient, return_mask
    )


def triangulate_robust(
    points: Any,
    proj: Any,
    weights: Any | None = None,
    *,
    loss: RobustLoss = "cauchy",
    scale_px: float = 5.0,
    max_iter: int = 10,
    tol: float = 1e-7,
    on_insufficient: OnInsufficient = "raise",
    return_mask: bool = False,
) -> Any:
    """Triangulate with resistance to gross 2D outliers (e.g. one view off by 100 px).

    Per point: (1) candidates are the all-view DLT solution and, when at least three views see
    the point, each leave-one-view-out DLT solution (obtained by subtracting that view's term
    from the normal equations); the candidate with the lowest reprojection cost
    ``sum_v w_v**2 rho(e_v)`` is kept, ``e_v`` being the pixel error in view ``v`` and ``rho``
    the Cauchy loss whatever ``loss`` is (bounded, so one gross error cannot outvote small ones);
    candidates behind a camera that sees the point are rejected. (2) Iteratively reweighted least squares
    then refines it: each view's row weight becomes ``w_v sqrt(rho'(e_v) / e_v) f_v / depth_v``,
    which turns the algebraic DLT residual into a robustly weighted pixel residual.
    With two views no outlier can be identified and the result is the reprojection-weighted DLT.

    Args:
        points: ``(V, ..., 2)`` pixels, as in :func:`triangulate`.
        proj: ``(V, 3, 4)`` projection matrices, as in :func:`triangulate`.
        weights: optional ``(V, ...)`` in ``[0, 1]``, as in :func:`triangulate`.
        loss: ``"cauchy"`` (rho = c^2/2 log(1 + (e/c)^2); rejects gross outliers almost
            completely) or ``"huber"`` (convex; outliers keep a small, bounded pull).
        scale_px: the loss's scale ``c`` in pixels (about 2.4x the inlier noise sigma).
        max_iter: maximum IRLS iterations after the candidate selection (0 = selection only).
        tol: stop once no point moves more than this (world units) in one iteration.
        on_insufficient, return_mask: as in :func:`triangulate`.

    Returns:
        ``(..., 3)`` world points, or a :class:`Triangulation`; as in :func:`triangulate`.
        Under torch autograd the IRLS weights are treated as constants, so gradients are those
        of the final weighted DLT.
    """
    _check_choice("loss", loss, ("cauchy", "huber"))
    _check_choice("on_insufficient", on_insufficient, ("raise", "nan"))
    if not (isinstance(scale_px, int | float) and np.isfinite(scale_px) and scale_px > 0):
        raise ValueError(f"scale_px must be a positive number of pixels, got {scale_px!r}")
    if not (isinstance(max_iter, int) and max_iter >= 0):
        raise ValueError(f"max_iter must be a non-negative int, got {max_iter!r}")
    if not (isinstance(tol, int | float) and tol >= 0):
        raise ValueError(f"tol must be a non-negative number, got {tol!r}")
    robust = (loss, float(scale_px), max_iter, float(tol))
    if _is_torch(points):
        return _triangulate_torch(
            points, proj, weights, on_insufficient, return_mask, method="normal", robust=robust
        )
    _reject_torch_with_numpy_points(proj, weights)
    pts, out_dtype, batch_shape = _numpy_points(points)
    rig, w = _numpy_rig_and_weights(pts, batch_shape, proj, weights)
    out, n_seen, finite = _blockwise_numpy(
        pts, w, rig, lambda x, y, ws, r: _robust_block(x, y, ws, r, *robust)
    )
    return _finish_numpy(
        out, n_seen, finite, out_dtype, pts.shape[0], batch_shape, on_insufficient, return_mask
    )


def reprojection_error(points3d: Any, points: Any, proj: Any) -> Any:
    """Pixel distance between observed points and the projections of 3D points.

    Args:
        points3d: ``(..., 3)`` world points (units of ``proj``'s translation).
        points: ``(V, ..., 2)`` observed pixel coordinates.
        proj: ``(V, 3, 4)`` projection matrices, world -> homogeneous pixels.

    Returns:
        ``(V, ...)`` Euclidean reprojection error in pixels, numpy or torch following
        ``points3d``. A point behind a camera is projected through it like any other (its
        mirror image), and NaN inputs give NaN.
    """
    if _is_torch(points3d):
        torch = sys.modules["torch"]
        dtype = points3d.dtype if points3d.is_floating_point() else torch.float64
        X = points3d.to(dtype)
        obs = torch.as_tensor(points, device=X.device).to(dtype)
        P = torch.as_tensor(proj, device=X.device).to(dtype)
    else:
        _reject_torch_with_numpy_points(points, proj)
        X = np.asarray(points3d)
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
        X = X.astype(dtype, copy=False)
        obs = np.asarray(points, dtype=dtype)
        P = np.asarray(proj, dtype=dtype)
    if X.ndim < 1 or X.shape[-1] != 3:
        raise ValueError(f"points3d must have shape (..., 3), got {tuple(X.shape)}")
    if obs.ndim != X.ndim + 1 or tuple(obs.shape[1:]) != (*X.shape[:-1], 2):
        raise ValueError(
            "points must have shape (V, *points3d.shape[:-1], 2) = "
            f"(V, {', '.join(map(str, X.shape[:-1]))}, 2), got {tuple(obs.shape)}"
        )
    n_views = obs.shape[0]
    _check_proj_shape(tuple(P.shape), n_views)
    xp = _namespace(X)
    h = X.reshape(-1, 3) @ P[:, :, :3].swapaxes(-1, -2) + P[:, None, :, 3]
    diff = h[..., :2] / h[..., 2:] - obs.reshape(n_views, -1, 2)
    return xp.sqrt((diff * diff).sum(-1)).reshape(obs.shape[:-1])


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _is_torch(a: Any) -> bool:
    # torch is only consulted if the caller already imported it: numpy users pay no import.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(a, torch.Tensor)


def _namespace(a: Any) -> Any:
    return sys.modules["torch"] if _is_torch(a) else np


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _reject_torch_with_numpy_points(*others: Any) -> None:
    if any(_is_torch(o) for o in others):
        raise TypeError(
            "the first array argument is a numpy array but a later one is a torch tensor; "
            "pass points as a torch tensor to use the torch implementation"
        )


def _check_points_shape(shape: tuple[int, ...]) -> None:
    if len(shape) < 2 or shape[-1] != 2:
        raise ValueError(f"points must have shape (V, ..., 2) (pixel u, v), got {shape}")


def _check_proj_shape(shape: tuple[int, ...], n_views: int) -> None:
    if shape != (n_views, 3, 4):
        raise ValueError(
            f"proj must have shape (V, 3, 4) = ({n_views}, 3, 4) to match points, got {shape}"
        )


def _check_weights_shape(shape: tuple[int, ...], points_shape: tuple[int, ...]) -> None:
    expected = points_shape[:-1]
    ok = len(shape) == len(expected) and shape[0] == expected[0]
    ok = ok and all(s in (1, e) for s, e in zip(shape[1:], expected[1:], strict=True))
    if not ok:
        raise ValueError(
            f"weights must have shape (V, ...) = {expected} (size-1 axes after the first "
            f"broadcast), got {shape}"
        )


def _numpy_points(points: Any) -> tuple[np.ndarray, Any, tuple[int, ...]]:
    pts = np.asarray(points)
    if pts.dtype.kind not in "iuf":
        raise TypeError(f"points must hold real numbers, got dtype {pts.dtype}")
    _check_points_shape(pts.shape)
    out_dtype = pts.dtype if pts.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    batch_shape = pts.shape[1:-1]
    pts = pts.astype(out_dtype, copy=False).reshape(pts.shape[0], -1, 2)
    return pts, out_dtype, batch_shape


def _numpy_rig_and_weights(
    pts: np.ndarray, batch_shape: tuple[int, ...], proj: Any, weights: Any | None
) -> tuple[_Rig, np.ndarray | None]:
    """float64 rig constants and ``(V, N)`` float64 weights (None when not given)."""
    n_views = pts.shape[0]
    proj64 = np.asarray(proj)
    if proj64.dtype.kind not in "iuf":
        raise TypeError(f"proj must hold real numbers, got dtype {proj64.dtype}")
    _check_proj_shape(proj64.shape, n_views)
    rig, bad_views = _prepare_rig(proj64.astype(np.float64))
    _raise_for_bad_views(bad_views)
    if weights is None:
        return rig, None
    w = np.asarray(weights)
    if w.dtype.kind not in "iufb":
        raise TypeError(f"weights must hold real numbers, got dtype {w.dtype}")
    _check_weights_shape(w.shape, (n_views, *batch_shape, 2))
    w = np.broadcast_to(w.astype(np.float64, copy=False), (n_views, *batch_shape))
    w = w.reshape(n_views, -1)
    _raise_for_bad_weights(bool(((w >= 0) & (w <= 1)).all()), w)
    return rig, w


def _raise_for_bad_views(bad_views: np.ndarray) -> None:
    if bad_views.any():
        raise ValueError(
            f"proj[{np.flatnonzero(bad_views).tolist()}] is not a finite projective camera: "
            "it has non-finite entries, or its left 3x3 block (K R) is singular"
        )


def _raise_for_bad_weights(ok: bool, w: Any) -> None:
    if not ok:
        raise ValueError(
            "weights must lie in [0, 1] (0 = not seen) and not be NaN; got values in "
            f"[{float(w.min())}, {float(w.max())}]"
        )


def _raise_for_invalid(valid: np.ndarray, n_seen: np.ndarray) -> None:
    invalid = ~valid
    count = int(invalid.sum())
    where = [tuple(int(i) for i in idx) for idx in np.argwhere(invalid)[:_MAX_LISTED]]
    too_few = int((invalid & (n_seen < 2)).sum())
    listed = ", ".join(str(w[0] if len(w) == 1 else w) for w in where) or "()"
    more = ", ..." if count > _MAX_LISTED else ""
    raise ValueError(
        f"{count} point(s) cannot be triangulated ({too_few} seen by fewer than two views with "
        f"weight > 0 and finite pixels, {count - too_few} with degenerate geometry), at batch "
        f"index {listed}{more}; pass on_insufficient='nan' (and return_mask=True) to get NaN "
        "there instead"
    )


# --------------------------------------------------------------------------------------------
# Camera conditioning (shared by numpy and torch)
# --------------------------------------------------------------------------------------------


def _cross(a: Any, b: Any) -> Any:
    xp = _namespace(a)
    return xp.stack(
        [
            a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1],
            a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
            a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0],
        ],
        axis=-1,
    )


def _prepare_rig(proj: Any) -> tuple[_Rig, Any]:
    """Conditioning constants of ``proj (V, 3, 4)`` (float64 numpy or torch) and a ``(V,)``
    bool flag of matrices that are not finite projective cameras.

    With the third row scaled to unit norm, ``M = P[:, :3] = s K R`` (``|s| = 1``), so
    ``det M = +-fx fy``, ``cx = M[0] . M[2]`` and ``cy = M[1] . M[2]`` (any skew). Those
    define the per-view normalisation; the scaled rows are exactly the DLT rows divided by
    ``f ||P3[:3]||``, so the constants only condition the arithmetic.
    """
    xp = _namespace(proj)
    p3_norm = xp.sqrt((proj[:, 2, :3] ** 2).sum(-1))
    m_raw = proj[:, :, :3]
    # cross products give det and the inverse without a (possibly raising) linalg call
    b_x_c = _cross(m_raw[:, 1], m_raw[:, 2])
    c_x_a = _cross(m_raw[:, 2], m_raw[:, 0])
    a_x_b = _cross(m_raw[:, 0], m_raw[:, 1])
    det_raw = (m_raw[:, 0] * b_x_c).sum(-1)
    row_norms = xp.sqrt((m_raw**2).sum(-1)).prod(-1)
    finite = xp.isfinite(proj).reshape(proj.shape[0], -1).all(-1)
    bad = ~finite | (xp.abs(det_raw) <= _SINGULAR_RTOL * row_norms) | (p3_norm == 0)
    det_safe = xp.where(bad, 1.0, det_raw)
    p3_safe = xp.where(bad, 1.0, p3_norm)

    # camera centres C = -M^-1 p4, M^-1 = [b x c, c x a, a x b] / det (as columns)
    p4 = proj[:, :, 3]
    centres = -(b_x_c * p4[:, :1] + c_x_a * p4[:, 1:2] + a_x_b * p4[:, 2:]) / det_safe[:, None]
    centre = xp.where(bad[:, None], 0.0, centres).sum(0) / xp.clip((~bad).sum(), 1, None)

    pn = proj / p3_safe[:, None, None]
    m = pn[:, :, :3]
    f = xp.sqrt(xp.abs(det_safe) / p3_safe**3)  # det of the row-normalised block
    cx = (m[:, 0] * m[:, 2]).sum(-1)
    cy = (m[:, 1] * m[:, 2]).sum(-1)
    t_centre = pn[:, :, 3] + (m * centre).sum(-1)
    row3 = xp.concatenate([m[:, 2], t_centre[:, 2:]], axis=-1)
    row1 = (xp.concatenate([m[:, 0], t_centre[:, :1]], axis=-1) - cx[:, None] * row3) / f[:, None]
    row2 = (xp.concatenate([m[:, 1], t_centre[:, 1:2]], axis=-1) - cy[:, None] * row3) / f[:, None]
    proj_cond = xp.stack([row1, row2, row3], axis=1)

    # Rows x' r3 - r1 and y' r3 - r2 give the 4x4 normal matrix
    # (x'^2 + y'^2) r3 r3^T - x' (r3 r1^T + r1 r3^T) - y' (r3 r2^T + r2 r3^T) + r1 r1^T + r2 r2^T.
    def outer_sym(a: Any, b: Any) -> Any:
        return a[:, :, None] * b[:, None, :] + b[:, :, None] * a[:, None, :]

    terms = (
        row3[:, :, None] * row3[:, None, :],
        -outer_sym(row3, row1),
        -outer_sym(row3, row2),
        row1[:, :, None] * row1[:, None, :] + row2[:, :, None] * row2[:, None, :],
    )
    coef = xp.stack(
        [xp.stack([t[:, i, j] for t in terms], axis=-1) for i, j in _SYSTEM_ENTRIES], axis=1
    )
    return _Rig(cx, cy, 1.0 / f, f, proj_cond, coef, centre), bad


# --------------------------------------------------------------------------------------------
# Solvers on flattened blocks (shared by numpy and torch)
# --------------------------------------------------------------------------------------------


def _normalised(pts: Any, rig: _Rig) -> tuple[Any, Any]:
    """``pts (V, n, 2)`` pixels -> normalised coordinates ``x, y (V, n)``."""
    x = (pts[..., 0] - rig.cx[:, None]) * rig.inv_f[:, None]
    y = (pts[..., 1] - rig.cy[:, None]) * rig.inv_f[:, None]
    return x, y


def _per_view_systems(x: Any, y: Any, w2: Any, rig: _Rig) -> Any:
    """Per-view normal-equation entries ``(V, 9, n)`` for squared weights ``w2 (V, n)``."""
    xp = _namespace(x)
    feats = xp.stack([(x * x + y * y) * w2, x * w2, y * w2, w2], axis=1)
    # einsum, not matmul: OpenBLAS is ~6x slower than numpy's einsum loop at inner size 4
    return xp.einsum("vkf,vfn->vkn", rig.coef, feats)


def _system(x: Any, y: Any, w2: Any, rig: _Rig) -> Any:
    """Summed normal-equation entries ``(9, n)``; one GEMM over (view, feature)."""
    xp = _namespace(x)
    n_views, n = x.shape
    feats = xp.stack([(x * x + y * y) * w2, x * w2, y * w2, w2], axis=1)
    coef_flat = rig.coef.permute(1, 0, 2) if xp is not np else rig.coef.transpose(1, 0, 2)
    return coef_flat.reshape(9, 4 * n_views) @ feats.reshape(4 * n_views, n)


def _solve_system(g: Any, usable: Any) -> Any:
    """Solve ``M y = -g[6:9]`` (``M`` from ``g[:6]``) by cofactors -> ``(n, 3)`` relative to
    the rig centre; NaN where ``usable`` is False or ``M`` is degenerate. The arithmetic of
    those rows runs on a stand-in determinant of 1 so that no inf/NaN reaches a gradient."""
    xp = _namespace(g)
    m00, m01, m02, m11, m12, m22, g0, g1, g2 = g
    c00 = m11 * m22 - m12 * m12
    c01 = m02 * m12 - m01 * m22
    c02 = m01 * m12 - m02 * m11
    c11 = m00 * m22 - m02 * m02
    c12 = m01 * m02 - m00 * m12
    c22 = m00 * m11 - m01 * m01
    det = m00 * c00 + m01 * c01 + m02 * c02
    threshold = ((m00 + m11 + m22) * _DEGENERATE_CUBE_ROOT) ** 3
    solvable = usable & (det > threshold)
    scale = -1.0 / xp.where(solvable, det, 1.0)
    solution = xp.stack(
        [
            (c00 * g0 + c01 * g1 + c02 * g2) * scale,
            (c01 * g0 + c11 * g1 + c12 * g2) * scale,
            (c02 * g0 + c12 * g1 + c22 * g2) * scale,
        ],
        axis=-1,
    )
    return xp.where(solvable[:, None], solution, float("nan"))


def _svd_block(x: Any, y: Any, w: Any, rig: _Rig) -> Any:
    """Homogeneous DLT by SVD on the conditioned rows -> ``(n, 3)`` relative to the centre."""
    xp = _namespace(x)
    r1, r2, r3 = rig.proj_cond[:, 0], rig.proj_cond[:, 1], rig.proj_cond[:, 2]
    rows_x = xp.einsum("vn,vk->nvk", w * x, r3) - xp.einsum("vn,vk->nvk", w, r1)
    rows_y = xp.einsum("vn,vk->nvk", w * y, r3) - xp.einsum("vn,vk->nvk", w, r2)
    a = xp.concatenate([rows_x, rows_y], axis=1)
    if a.shape[1] < 4:  # one view: pad so the reduced SVD still returns all 4 right vectors
        a = xp.concatenate([a, xp.zeros_like(a[:, :2])], axis=1)
    _, sv, vh = xp.linalg.svd(a, full_matrices=False)
    h = vh[:, -1]
    h3 = h[:, 3:]
    # a second (near-)zero singular value: the null space is not a single point
    solvable = ((w > 0).sum(0) >= 2) & (sv[:, -2] > _DEGENERATE_CUBE_ROOT**2 * sv[:, 0])
    solvable = solvable[:, None] & (h3 != 0)
    return xp.where(solvable, h[:, :3] / xp.where(solvable, h3, 1.0), float("nan"))


def _project_normalised(y_rel: Any, rig: _Rig) -> tuple[Any, Any, Any]:
    """Points ``(n, 3)`` relative to the centre -> normalised ``x, y`` and depth, ``(V, n)``."""
    xp = _namespace(y_rel)
    # matmul rather than einsum: numpy's einsum does not use BLAS here (20x slower)
    h = y_rel @ rig.proj_cond[:, :, :3].swapaxes(-1, -2) + rig.proj_cond[:, None, :, 3]
    depth = h[..., 2]
    depth_safe = xp.where(depth == 0, 1.0, depth)
    return h[..., 0] / depth_safe, h[..., 1] / depth_safe, depth


def _robust_block(
    x: Any,
    y: Any,
    w: Any,
    rig: _Rig,
    loss: RobustLoss,
    scale_px: float,
    max_iter: int,
    tol: float,
) -> Any:
    """Leave-one-view-out selection then IRLS, on one block -> ``(n, 3)`` relative to centre.

    ``x, y (V, n)`` normalised coordinates and ``w (V, n)`` weights, zero where unseen."""
    xp = _namespace(x)
    n_views, n = x.shape
    seen = w > 0
    n_seen = seen.sum(0)
    w2 = w * w
    per_view = _per_view_systems(x, y, w2, rig)
    total = per_view.sum(0)
    candidates = [_solve_system(total, n_seen >= 2)]
    allowed = [n_seen >= 2]
    if n_views >= 3:
        seen_count = seen * 1
        for k in range(n_views):
            remaining = n_seen - seen_count[k]
            candidates.append(_solve_system(total - per_view[k], remaining >= 2))
            allowed.append(remaining >= 2)
    # Selection and IRLS weights are constants for autograd: computed from detached copies.
    x_c, y_c, w2_c = _detach(x), _detach(y), _detach(w2)
    rig_c = _Rig(*(_detach(a) for a in rig))
    costs = []
    for cand, ok in zip(candidates, allowed, strict=True):
        err, depth = _pixel_error_and_depth(_detach(cand), x_c, y_c, rig_c)
        behind = (seen & (depth <= 0)).any(0)
        # scored with the bounded Cauchy cost whatever ``loss``: one gross outlier must not
        # outweigh small errors spread over the other views
        cost = (w2_c * _rho(err, "cauchy", scale_px)).sum(0)
        costs.append(xp.where(ok & ~behind, cost, float("inf")))
    best = xp.argmin(xp.stack(costs, axis=0), axis=0)
    stacked = xp.stack(candidates, axis=0)
    arange = xp.arange(n) if xp is np else xp.arange(n, device=x.device)
    current = stacked[best, arange]

    usable = n_seen >= 2
    for _ in range(max_iter):
        err, depth = _pixel_error_and_depth(_detach(current), x_c, y_c, rig_c)
        abs_depth = xp.clip(xp.abs(depth), 1e-12, None)
        factor = xp.sqrt(_irls_weight(err, loss, scale_px)) * rig_c.f[:, None] / abs_depth
        # only ratios between views matter: normalise each point's largest weight to 1
        factor = factor / xp.clip(xp.amax(_detach(w) * factor, axis=0), 1e-30, None)
        # points without a solution have NaN errors: zero weights keep their arithmetic finite
        row_w = w * xp.where(xp.isfinite(factor), factor, 0.0)
        # the IRLS weights are constants; gradients flow through x, y (and the rig)
        updated = _solve_system(_system(x, y, row_w * row_w, rig), usable)
        step = xp.abs(_detach(updated) - _detach(current))
        step = xp.where(usable[:, None], step, 0.0)
        current = updated
        if n == 0 or float(step.max()) <= tol:
            break
    return current


def _pixel_error_and_depth(y_rel: Any, x: Any, y: Any, rig: _Rig) -> tuple[Any, Any]:
    xp = _namespace(y_rel)
    xh, yh, depth = _project_normalised(y_rel, rig)
    err = xp.sqrt((xh - x) ** 2 + (yh - y) ** 2) * rig.f[:, None]
    return err, depth


def _rho(err: Any, loss: RobustLoss, c: float) -> Any:
    xp = _namespace(err)
    if loss == "cauchy":
        return 0.5 * c * c * xp.log1p((err / c) ** 2)
    return xp.where(err <= c, 0.5 * err * err, c * (err - 0.5 * c))


def _irls_weight(err: Any, loss: RobustLoss, c: float) -> Any:
    """``rho'(e) / e``: the least-squares weight that reproduces the robust loss's gradient."""
    xp = _namespace(err)
    if loss == "cauchy":
        return 1.0 / (1.0 + (err / c) ** 2)
    return c / xp.clip(err, c, None)


def _detach(a: Any) -> Any:
    return a.detach() if _is_torch(a) else a


# --------------------------------------------------------------------------------------------
# numpy drivers
# --------------------------------------------------------------------------------------------


def _normal_numpy(
    pts: np.ndarray, w: np.ndarray | None, rig: _Rig
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Fast blocked DLT -> ``(N, 3)`` world points, ``n_seen (N,)`` (None: all views) and
    ``finite (N,)``.

    NaN pixels are not screened up front (it would cost a full pass); a point whose result
    is not finite is recomputed from its finite, weighted views only."""
    out = _normal_numpy_blocks(pts, w, rig)
    n_seen = None if w is None else (w > 0).sum(0)
    finite = _finite_rows(out)
    if not finite.all():
        idx = np.flatnonzero(~finite)
        sub_pts, sub_w = _sanitise_numpy(pts[:, idx], None if w is None else w[:, idx])
        out[idx] = _normal_numpy_blocks(sub_pts, sub_w, rig)
        finite[idx] = _finite_rows(out[idx])
        if n_seen is None:
            n_seen = np.full(pts.shape[1], pts.shape[0])
        n_seen[idx] = (sub_w > 0).sum(0)
    return out, n_seen, finite


def _normal_numpy_blocks(pts: np.ndarray, w: np.ndarray | None, rig: _Rig) -> np.ndarray:
    n_views, n_points, _ = pts.shape
    dtype = np.float64  # float32 pixels too: see "Precision" in the module docstring
    n_feats = 3 if w is None else 4
    coef_flat = np.ascontiguousarray(
        rig.coef[:, :, :n_feats].transpose(1, 0, 2).reshape(9, n_views * n_feats)
    )
    # unweighted: the constant feature is folded into one added column
    constant = rig.coef[:, :, 3].sum(0)[:, None] if w is None else None
    cx, cy, inv_f = rig.cx.tolist(), rig.cy.tolist(), rig.inv_f.tolist()
    out = np.empty((n_points, 3), dtype)
    buffer = np.empty((n_views, n_feats, _NUMPY_BLOCK), dtype)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for start in range(0, n_points, _NUMPY_BLOCK):
            stop = min(start + _NUMPY_BLOCK, n_points)
            n = stop - start
            feats = buffer if n == _NUMPY_BLOCK else np.empty((n_views, n_feats, n), dtype)
            for v in range(n_views):
                q, x, y = feats[v, 0], feats[v, 1], feats[v, 2]
                np.subtract(pts[v, start:stop, 0], cx[v], out=x, dtype=dtype)
                x *= inv_f[v]
                np.subtract(pts[v, start:stop, 1], cy[v], out=y, dtype=dtype)
                y *= inv_f[v]
                np.multiply(x, x, out=q)
                q += y * y
                if w is not None:
                    w2 = feats[v, 3]
                    np.multiply(w[v, start:stop], w[v, start:stop], out=w2, dtype=dtype)
                    q *= w2
                    x *= w2
                    y *= w2
            # einsum, not matmul: a threaded BLAS GEMM this small stalls on a busy machine.
            g = np.einsum("ij,jn->in", coef_flat, feats.reshape(n_views * n_feats, n))
            if constant is not None:
                g += constant
            _solve_system_into(g, out[start:stop])
        out += rig.centre
    return out


def _solve_system_into(g: np.ndarray, out: np.ndarray) -> None:
    """numpy-only :func:`_solve_system` writing into ``out (n, 3)``; a singular system gives
    inf/NaN, which the caller treats as not triangulated."""
    m00, m01, m02, m11, m12, m22, g0, g1, g2 = g
    c00 = m11 * m22
    c00 -= m12 * m12
    c01 = m02 * m12
    c01 -= m01 * m22
    c02 = m01 * m12
    c02 -= m02 * m11
    c11 = m00 * m22
    c11 -= m02 * m02
    c12 = m01 * m02
    c12 -= m00 * m12
    c22 = m00 * m11
    c22 -= m01 * m01
    det = m00 * c00
    det += m01 * c01
    det += m02 * c02
    # M is positive semi-definite: a determinant this small relative to trace^3 means rays
    # (nearly) collinear; flag as not triangulated rather than return a meaningless point
    trace = m00 + m11
    trace += m22
    trace *= _DEGENERATE_CUBE_ROOT
    threshold = trace * trace
    threshold *= trace
    scale = np.divide(-1.0, det)
    np.copyto(scale, np.nan, where=det <= threshold)
    for col, (a, b, c) in enumerate(((c00, c01, c02), (c01, c11, c12), (c02, c12, c22))):
        acc = a * g0
        acc += b * g1
        acc += c * g2
        np.multiply(acc, scale, out=out[:, col])


def _finite_rows(out: np.ndarray) -> np.ndarray:
    """``(N,)`` True where a row of ``out (N, 3)`` is finite; much faster than
    ``isfinite(out).all(-1)``, whose reduction over a length-3 axis dominates at 1M points."""
    total = out[:, 0] + out[:, 1]
    total += out[:, 2]
    return np.isfinite(total)


def _sanitise_numpy(pts: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Zero the pixels and weights of views that do not see a point (weight 0 or NaN/inf)."""
    seen = np.isfinite(pts).all(-1)
    if w is not None:
        seen &= w > 0
    w_clean = np.where(seen, 1.0 if w is None else w, 0.0).astype(np.float64)
    return np.where(seen[..., None], pts, 0.0).astype(np.float64), w_clean


def _blockwise_numpy(
    pts: np.ndarray, w: np.ndarray | None, rig: _Rig, solve_block: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run a generic block solver (SVD or robust) over sanitised blocks of points."""
    n_points = pts.shape[1]
    out = np.empty((n_points, 3), np.float64)
    n_seen = np.empty(n_points, np.int64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for start in range(0, n_points, _NUMPY_HEAVY_BLOCK):
            stop = min(start + _NUMPY_HEAVY_BLOCK, n_points)
            sub_pts, sub_w = _sanitise_numpy(
                pts[:, start:stop], None if w is None else w[:, start:stop]
            )
            x, y = _normalised(sub_pts, rig)
            out[start:stop] = solve_block(x, y, sub_w, rig)
            n_seen[start:stop] = (sub_w > 0).sum(0)
        out += rig.centre
    return out, n_seen, _finite_rows(out)


def _finish_numpy(
    out: np.ndarray,
    n_seen: np.ndarray | None,
    finite: np.ndarray,
    out_dtype: Any,
    n_views: int,
    batch_shape: tuple[int, ...],
    on_insufficient: OnInsufficient,
    return_mask: bool,
) -> Any:
    valid = finite
    if n_seen is not None:
        valid &= n_seen >= 2
    elif n_views < 2:  # no weights and no NaN pixels: every view sees every point
        valid[:] = False
    all_valid = bool(valid.all())
    if not all_valid:
        out[~valid] = np.nan
    valid = valid.reshape(batch_shape)
    if on_insufficient == "raise" and not all_valid:
        if n_seen is None:
            n_seen = np.full(out.shape[0], n_views)
        _raise_for_invalid(valid, n_seen.reshape(batch_shape))
    out = out.reshape(*batch_shape, 3).astype(out_dtype, copy=False)
    return Triangulation(out, valid) if return_mask else out


# --------------------------------------------------------------------------------------------
# torch driver
# --------------------------------------------------------------------------------------------


def _triangulate_torch(
    points: Any,
    proj: Any,
    weights: Any | None,
    on_insufficient: OnInsufficient,
    return_mask: bool,
    *,
    method: Method,
    robust: tuple[RobustLoss, float, int, float] | None,
) -> Any:
    torch = sys.modules["torch"]
    if not points.is_floating_point():
        raise TypeError(f"torch points must be a floating tensor, got {points.dtype}")
    _check_points_shape(tuple(points.shape))
    n_views = points.shape[0]
    batch_shape = tuple(points.shape[1:-1])
    device = points.device
    # float64 arithmetic for every input dtype (see "Precision"); MPS has no float64
    compute = torch.float32 if device.type == "mps" else torch.float64

    proj_t = torch.as_tensor(proj, device=device)
    if proj_t.is_complex() or proj_t.dtype == torch.bool:
        raise TypeError(f"proj must hold real numbers, got {proj_t.dtype}")
    _check_proj_shape(tuple(proj_t.shape), n_views)
    rig, bad_views = _prepare_rig(proj_t.to(compute))

    pts = points.to(compute).reshape(n_views, -1, 2)
    finite = torch.isfinite(pts[..., 0] + pts[..., 1])  # cheaper than isfinite(...).all(-1)
    if weights is None:
        w = finite.to(compute)
        weights_ok = torch.ones((), dtype=torch.bool, device=device)
    else:
        w_in = torch.as_tensor(weights, device=device)
        if w_in.is_complex():
            raise TypeError(f"weights must hold real numbers, got {w_in.dtype}")
        _check_weights_shape(tuple(w_in.shape), tuple(points.shape))
        w_in = w_in.to(compute).expand(*points.shape[:-1]).reshape(n_views, -1)
        weights_ok = ((w_in >= 0) & (w_in <= 1)).all()
        w = torch.where(finite & (w_in > 0), w_in, 0.0)
    seen = w > 0
    pts = torch.where(seen[..., None], pts, 0.0)
    n_seen = seen.sum(0)
    usable = n_seen >= 2

    def solve_block(pts_block: Any, w_block: Any, usable_block: Any) -> Any:
        x, y = _normalised(pts_block, rig)
        if robust is not None:
            return _robust_block(x, y, w_block, rig, *robust)
        if method == "svd":
            return _svd_block(x, y, w_block, rig)
        return _solve_system(_system(x, y, w_block * w_block, rig), usable_block)

    if device.type == "cpu" and pts.shape[1] > _TORCH_CPU_BLOCK:
        blocks = zip(
            pts.split(_TORCH_CPU_BLOCK, dim=1),
            w.split(_TORCH_CPU_BLOCK, dim=1),
            usable.split(_TORCH_CPU_BLOCK),
            strict=True,
        )
        rel = torch.cat([solve_block(*block) for block in blocks])
    else:
        rel = solve_block(pts, w, usable)
    out = rel + rig.centre  # the solvers already return NaN rows where they fail
    valid = usable & torch.isfinite(out[:, 0] + out[:, 1] + out[:, 2])

    # one host-device synchronisation for every check
    flags = torch.cat([bad_views, weights_ok[None] == 0, (~valid).any()[None]]).tolist()
    _raise_for_bad_views(np.asarray(flags[:n_views], bool))
    if flags[n_views]:
        _raise_for_bad_weights(False, w_in)
    valid = valid.reshape(batch_shape)
    if on_insufficient == "raise" and flags[n_views + 1]:
        _raise_for_invalid(valid.cpu().numpy(), n_seen.reshape(batch_shape).cpu().numpy())
    out = out.reshape(*batch_shape, 3).to(points.dtype)
    return Triangulation(out, valid) if return_mask else out
