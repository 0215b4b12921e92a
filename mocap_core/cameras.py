"""Pinhole cameras with OpenCV distortion, the y-up world frame and camera embeddings.

Conventions (DESIGN 2.1):

- **World**: metres, +Y up (gravity aligned), ground plane ``y = 0``.
- **Camera**: OpenCV axes (x right, y down, z forward). Extrinsics map world to camera,
  ``x_cam = R @ x_world + t``; the camera centre in the world is ``-R.T @ t``.
- **Pixels** are continuous coordinates: the image spans ``[0, W] x [0, H]`` and the centre of
  pixel (row i, column j) is ``(j + 0.5, i + 0.5)``. :func:`intrinsics_from_fov` therefore puts
  the principal point at ``(W / 2, H / 2)``. (OpenCV calibrations put pixel centres on
  integers; the half-pixel difference is far below calibration accuracy and is not corrected.)
- **Distortion**: OpenCV's five-coefficient model ``(k1, k2, p1, p2, k3)`` applied to the
  normalised coordinates ``(x, y) = (X / Z, Y / Z)``; zeros mean a plain pinhole.
- **Padded image** (DESIGN 2.2): the image padded symmetrically to an ``S x S`` square with
  ``S = max(W, H)``, so ``cx += (S - W) / 2`` and ``cy += (S - H) / 2``. For the usual landscape
  image this is the paper's ``cy += (W - H) / 2``; a portrait image is padded left and right.

Height / pitch / roll (the camera file's short form, DESIGN 4.3), see
:func:`camera_from_height_pitch_roll`:

- pitch 0, roll 0: optical axis horizontal along world -Z, image right = world +X, image
  down = world -Y;
- ``pitch_deg > 0`` tilts the camera down towards the ground;
- ``roll_deg > 0`` turns the camera clockwise about its optical axis as seen from behind it;
  the image content then turns counter-clockwise: world-horizontal lines rise to the right.

The projection functions work on numpy arrays and on torch tensors alike (the backend is
torch as soon as one argument is a tensor) and broadcast over any leading dimensions, so a
stack of V cameras projects in one call.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

ArrayOrTensor = np.ndarray | torch.Tensor

# OpenCV camera axes (x right, y down, z forward) versus a y-up "level" camera frame
# (x right, y up, z backward): the two differ by a half turn about x.
_FLIP_YZ = np.diag([1.0, -1.0, -1.0])

# Rotation matrices closer to orthonormal than this are accepted as rotations; looser ones
# are almost certainly a transposed or scaled matrix, i.e. a bug upstream.
_ROTATION_TOLERANCE = 1e-6

# Below this horizontal extent of the optical axis (a unit vector) the camera is taken to
# look straight down or up, where yaw and roll are one and the same rotation.
_VERTICAL_AXIS_EPS = 1e-9


# ---------------------------------------------------------------------------------------------
# numpy / torch dispatch


def _to_backend(
    *arrays: Any,
) -> tuple[list[Any], bool]:
    """Bring arrays to one backend and one floating dtype.

    torch when any argument is a tensor: tensors set the dtype (float tensors promoted among
    themselves) and the device; numpy arrays and lists follow them. numpy otherwise: the
    promoted dtype of the floating inputs, float64 when none is floating. ``None`` passes.
    """
    tensors = [a for a in arrays if isinstance(a, torch.Tensor)]
    if tensors:
        float_dtypes = [a.dtype for a in tensors if a.is_floating_point()]
        dtype = float_dtypes[0] if float_dtypes else torch.float64
        for other in float_dtypes[1:]:
            dtype = torch.promote_types(dtype, other)
        device = tensors[0].device
        converted = [
            None if a is None else torch.as_tensor(_writable(a), dtype=dtype, device=device)
            for a in arrays
        ]
        return converted, True
    as_np = [None if a is None else np.asarray(a) for a in arrays]
    float_dtypes = [a.dtype for a in as_np if a is not None and np.issubdtype(a.dtype, np.floating)]
    dtype = np.result_type(*float_dtypes) if float_dtypes else np.dtype(np.float64)
    return [None if a is None else a.astype(dtype, copy=False) for a in as_np], False


def _writable(array: Any) -> Any:
    """Camera arrays are read-only; torch warns on wrapping those, so copy them first."""
    if isinstance(array, np.ndarray) and not array.flags.writeable:
        return array.copy()
    return array


def _stack(parts: Sequence[Any], is_torch: bool) -> Any:
    """Stack along a new last axis with the right backend."""
    return torch.stack(list(parts), dim=-1) if is_torch else np.stack(parts, axis=-1)


def _check_last_dims(name: str, array: Any, dims: tuple[int, ...]) -> None:
    shape = tuple(array.shape)
    if len(shape) < len(dims) or shape[len(shape) - len(dims) :] != dims:
        expected = "(..., " + ", ".join(str(d) for d in dims) + ")"
        raise ValueError(f"{name}: expected shape {expected}, got {shape}")


def _finfo_eps(array: Any, is_torch: bool) -> float:
    return float(torch.finfo(array.dtype).eps if is_torch else np.finfo(array.dtype).eps)


# ---------------------------------------------------------------------------------------------
# Distortion model


def _distort_normalised(x: Any, y: Any, dist: Any | None) -> tuple[Any, Any]:
    """OpenCV distortion of normalised coordinates; ``dist (..., 5)`` broadcast over points."""
    if dist is None:
        return x, y
    k1, k2, p1, p2, k3 = (dist[..., i, None] for i in range(5))
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xy = x * y
    x_d = x * radial + 2 * p1 * xy + p2 * (r2 + 2 * x * x)
    y_d = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * xy
    return x_d, y_d


def _distortion_with_jacobian(
    x: Any, y: Any, coefficients: tuple[Any, ...]
) -> tuple[Any, Any, Any, Any, Any, Any]:
    """Distorted ``(x_d, y_d)``, the radial factor and the Jacobian ``(j_xx, j_xy, j_yy)``."""
    k1, k2, p1, p2, k3 = coefficients
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    d_radial = k1 + r2 * (2 * k2 + 3 * k3 * r2)  # d radial / d r2
    xy = x * y
    x_d = x * radial + 2 * p1 * xy + p2 * (r2 + 2 * x * x)
    y_d = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * xy
    j_xx = radial + 2 * d_radial * x * x + 2 * p1 * y + 6 * p2 * x
    j_yy = radial + 2 * d_radial * y * y + 6 * p1 * y + 2 * p2 * x
    j_xy = 2 * d_radial * xy + 2 * p1 * x + 2 * p2 * y  # the Jacobian is symmetric
    return x_d, y_d, radial, j_xx, j_xy, j_yy


def _undistort_normalised(
    x_d: Any,
    y_d: Any,
    dist: Any,
    is_torch: bool,
    max_iterations: int = 20,
) -> tuple[Any, Any, Any]:
    """Invert the OpenCV distortion by Newton's method with the analytic 2x2 Jacobian.

    Returns ``(x, y, converged)``. Newton converges quadratically from the distorted point on
    lenses whose distortion is monotonic over the image; points outside that region (beyond
    the fold of a strong barrel, or far outside the calibrated field) have no physical
    preimage and come back with ``converged`` False, as do roots on the far side of the
    fold or mirrored through the centre (radial factor <= 0).
    """
    coefficients = tuple(dist[..., i, None] for i in range(5))
    x, y = x_d, y_d
    if (x_d.numel() if is_torch else x_d.size) == 0:
        return x, y, (x_d == x_d)
    # Aim a few ulps above rounding noise; 64 eps is 1.4e-14 in float64, i.e. 5e-11 px at
    # f = 3500 px, comfortably below the 1e-9 px the project promises.
    tolerance = 64.0 * _finfo_eps(x_d, is_torch)
    where = torch.where if is_torch else np.where
    # Diverging points (no preimage) overflow on purpose; numpy must not warn about it.
    context = contextlib.nullcontext() if is_torch else np.errstate(all="ignore")
    with context:
        for _ in range(max_iterations):
            x_now, y_now, _, j_xx, j_xy, j_yy = _distortion_with_jacobian(x, y, coefficients)
            res_x, res_y = x_now - x_d, y_now - y_d
            worst = abs(res_x) + abs(res_y)
            # NaN marks a point that diverged for good; it must not keep the others iterating.
            if float(where(worst != worst, 0.0, worst).max()) <= tolerance:
                break
            det = j_xx * j_yy - j_xy * j_xy
            x = x - (j_yy * res_x - j_xy * res_y) / det
            y = y - (j_xx * res_y - j_xy * res_x) / det
        x_now, y_now, radial, j_xx, j_xy, j_yy = _distortion_with_jacobian(x, y, coefficients)
        residual = abs(x_now - x_d) + abs(y_now - y_d)
        # A root is the physical preimage only on the lens side of the fold: radial factor
        # positive (else the point is mirrored through the centre) and the mapping still
        # orientation-preserving there (positive Jacobian determinant). Converged points sit
        # near the tolerance; 1e6 x that still means < 1e-4 px.
        converged = (
            (residual <= max(tolerance * 1e6, 1e-12))
            & (radial > 0)
            & (j_xx * j_yy - j_xy * j_xy > 0)
        )
    return x, y, converged


# ---------------------------------------------------------------------------------------------
# Projection and back-projection (numpy and torch)


def project_points(
    points_world: ArrayOrTensor,
    K: ArrayOrTensor,
    R: ArrayOrTensor,
    t: ArrayOrTensor,
    dist: ArrayOrTensor | None = None,
) -> tuple[ArrayOrTensor, ArrayOrTensor]:
    """Project world points into one or many cameras.

    Args:
        points_world: ``(..., N, 3)`` metres, world frame.
        K: ``(..., 3, 3)`` intrinsics in pixels (skew honoured, last row ``0 0 1``).
        R: ``(..., 3, 3)`` world-to-camera rotation.
        t: ``(..., 3)`` world-to-camera translation, metres.
        dist: ``(..., 5)`` OpenCV ``k1 k2 p1 p2 k3`` or ``None`` for none.

    Leading dimensions broadcast, e.g. ``points (N, 3)`` against ``K (V, 3, 3)`` gives
    ``(V, N, ...)``. numpy in, numpy out; any torch tensor in, torch out (dtype and device of
    the tensors, differentiable).

    Returns:
        ``pixels (..., N, 2)`` continuous pixel coordinates ``(u, v)`` and ``depth (..., N)``,
        the camera-frame z in metres. Pixels of points with ``depth <= 0`` (behind the camera)
        are meaningless; mask them with ``depth > 0``.
    """
    (points_world, K, R, t, dist), is_torch = _to_backend(points_world, K, R, t, dist)
    _check_last_dims("points_world", points_world, (3,))
    _check_last_dims("K", K, (3, 3))
    _check_last_dims("R", R, (3, 3))
    _check_last_dims("t", t, (3,))
    if dist is not None:
        _check_last_dims("dist", dist, (5,))
    if points_world.ndim < 2:
        raise ValueError(
            f"points_world: expected shape (..., N, 3), got {tuple(points_world.shape)}"
        )
    points_cam = points_world @ R.swapaxes(-1, -2) + t[..., None, :]
    depth = points_cam[..., 2]
    x = points_cam[..., 0] / depth
    y = points_cam[..., 1] / depth
    x, y = _distort_normalised(x, y, dist)
    u = K[..., 0, 0, None] * x + K[..., 0, 1, None] * y + K[..., 0, 2, None]
    v = K[..., 1, 1, None] * y + K[..., 1, 2, None]
    return _stack((u, v), is_torch), depth


def _pixels_to_distorted_normalised(pixels: Any, K: Any) -> tuple[Any, Any]:
    y_d = (pixels[..., 1] - K[..., 1, 2, None]) / K[..., 1, 1, None]
    x_d = (pixels[..., 0] - K[..., 0, 2, None] - K[..., 0, 1, None] * y_d) / K[..., 0, 0, None]
    return x_d, y_d


def undistort_points(
    pixels: ArrayOrTensor,
    K: ArrayOrTensor,
    dist: ArrayOrTensor | None = None,
    max_iterations: int = 20,
) -> ArrayOrTensor:
    """Pixels to undistorted normalised camera coordinates ``(X / Z, Y / Z)``.

    Args:
        pixels: ``(..., N, 2)`` (or a single ``(2,)``) continuous pixel coordinates ``(u, v)``.
        K: ``(..., 3, 3)`` intrinsics, leading dimensions broadcast against pixels' ``...``.
        dist: ``(..., 5)`` OpenCV ``k1 k2 p1 p2 k3`` or ``None``.
        max_iterations: Newton iterations at most (it stops earlier once every point has
            converged; typical lenses take 3 to 6).

    Returns:
        ``(..., N, 2)`` normalised coordinates, same backend as the inputs. The inversion
        reaches ~1e-11 px in float64 on lenses that are monotonic over the image. Points where
        the distortion model has no preimage (beyond the fold of a strong barrel, far outside
        the calibrated field) are NaN.
    """
    (pixels, K, dist), is_torch = _to_backend(pixels, K, dist)
    _check_last_dims("pixels", pixels, (2,))
    _check_last_dims("K", K, (3, 3))
    single = pixels.ndim == 1
    if single:
        pixels = pixels[None, :]
    x_d, y_d = _pixels_to_distorted_normalised(pixels, K)
    if dist is None:
        out = _stack((x_d, y_d), is_torch)
    else:
        _check_last_dims("dist", dist, (5,))
        x, y, converged = _undistort_normalised(x_d, y_d, dist, is_torch, max_iterations)
        out = _stack((x, y), is_torch)
        nan = torch.nan if is_torch else np.nan
        out = (torch.where if is_torch else np.where)(converged[..., None], out, nan)
    return out[0] if single else out


def unproject(
    pixels: ArrayOrTensor,
    K: ArrayOrTensor,
    R: ArrayOrTensor,
    t: ArrayOrTensor,
    dist: ArrayOrTensor | None = None,
    depth: ArrayOrTensor | None = None,
) -> tuple[ArrayOrTensor, ArrayOrTensor] | ArrayOrTensor:
    """Back-project pixels to world rays, or to world points at a given camera depth.

    Args:
        pixels: ``(..., N, 2)`` continuous pixel coordinates.
        K, R, t, dist: as in :func:`project_points`, leading dimensions broadcasting.
        depth: ``(..., N)`` camera-frame z in metres, or ``None`` for rays.

    Returns:
        With ``depth``: world points ``(..., N, 3)`` metres. Without: ``(origins, directions)``,
        both ``(..., N, 3)`` world frame; origins are the camera centre, directions unit
        vectors. Pixels whose distortion cannot be inverted give NaN.
    """
    (pixels, K, R, t, dist, depth), is_torch = _to_backend(pixels, K, R, t, dist, depth)
    _check_last_dims("R", R, (3, 3))
    _check_last_dims("t", t, (3,))
    normalised = undistort_points(pixels, K, dist)
    ones = torch.ones_like(normalised[..., 0]) if is_torch else np.ones_like(normalised[..., 0])
    rays_cam = _stack((normalised[..., 0], normalised[..., 1], ones), is_torch)
    if depth is not None:
        points_cam = rays_cam * depth[..., None]
        # Row vectors: R.T @ (p - t) is (p - t) @ R.
        return (points_cam - t[..., None, :]) @ R
    directions = rays_cam @ R
    norm = (directions[..., 0] ** 2 + directions[..., 1] ** 2 + directions[..., 2] ** 2) ** 0.5
    directions = directions / norm[..., None]
    centre = (-t[..., None, :]) @ R
    if is_torch:
        origins = centre.expand(directions.shape).clone()
    else:
        origins = np.broadcast_to(centre, directions.shape).copy()
    return origins, directions


# ---------------------------------------------------------------------------------------------
# Elementary rotations (numpy, radians)


def _rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------------------------------------
# Camera


def _as_matrix(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: expected numbers of shape {shape}, got {value!r}") from error
    if array.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: contains non-finite values")
    array.setflags(write=False)
    return array


def _as_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer | float | np.floating):
        raise ValueError(f"{name}: expected a positive integer number of pixels, got {value!r}")
    if not float(value).is_integer() or value <= 0:
        raise ValueError(f"{name}: expected a positive integer number of pixels, got {value!r}")
    return int(value)


def _check_rotation(name: str, rotation: np.ndarray) -> None:
    error = np.abs(rotation @ rotation.T - np.eye(3)).max()
    if error > _ROTATION_TOLERANCE:
        raise ValueError(f"{name}: not orthonormal (max |R R^T - I| = {error:.3g})")
    if np.linalg.det(rotation) <= 0:
        raise ValueError(f"{name}: determinant is negative (a reflection, not a rotation)")


@dataclass(frozen=True, eq=False)
class Camera:
    """A calibrated pinhole camera with OpenCV distortion, in a y-up world.

    Attributes:
        K: ``(3, 3) float64`` intrinsics, pixels; last row ``0 0 1``, ``fx, fy > 0``.
        R: ``(3, 3) float64`` world-to-camera rotation (det +1).
        t: ``(3,) float64`` world-to-camera translation, metres.
        width, height: image size, pixels.
        dist: ``(5,) float64`` OpenCV ``k1 k2 p1 p2 k3``; zeros for none.

    Arrays are copied and made read-only on construction. Equality is identity; compare
    cameras with :meth:`is_close`.
    """

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int
    height: int
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))

    def __post_init__(self) -> None:
        K = _as_matrix("K", self.K, (3, 3))
        if not np.allclose(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0.0:
            raise ValueError(f"K: expected an upper-triangular matrix with last row 0 0 1, got {K}")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"K: focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}")
        R = _as_matrix("R", self.R, (3, 3))
        _check_rotation("R", R)
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "t", _as_matrix("t", self.t, (3,)))
        object.__setattr__(self, "dist", _as_matrix("dist", self.dist, (5,)))
        object.__setattr__(self, "width", _as_size("width", self.width))
        object.__setattr__(self, "height", _as_size("height", self.height))

    # -- geometry ------------------------------------------------------------------------
    @property
    def center(self) -> np.ndarray:
        """``(3,)`` camera centre in the world, metres: ``-R.T @ t``."""
        return -self.R.T @ self.t

    @property
    def optical_axis(self) -> np.ndarray:
        """``(3,)`` unit viewing direction (camera +z) in the world frame."""
        return self.R[2].copy()

    @property
    def projection_matrix(self) -> np.ndarray:
        """``(3, 4)`` ``K [R | t]`` (ignores distortion)."""
        return self.K @ np.hstack([self.R, self.t[:, None]])

    @property
    def has_distortion(self) -> bool:
        """Whether any distortion coefficient is non-zero."""
        return bool(np.any(self.dist != 0.0))

    @property
    def padded_size(self) -> int:
        """Side ``S = max(width, height)`` of the square padded image, pixels."""
        return max(self.width, self.height)

    @property
    def padded_K(self) -> np.ndarray:
        """``(3, 3)`` intrinsics of the image padded symmetrically to ``S x S``.

        ``cx += (S - width) / 2``, ``cy += (S - height) / 2``: for a landscape image the
        paper's ``cy += (W - H) / 2``; a portrait image is padded left and right instead.
        """
        K = self.K.copy()
        K[0, 2] += (self.padded_size - self.width) / 2
        K[1, 2] += (self.padded_size - self.height) / 2
        return K

    def project(self, points_world: ArrayOrTensor) -> tuple[ArrayOrTensor, ArrayOrTensor]:
        """``points_world (..., N, 3)`` metres -> ``(pixels (..., N, 2), depth (..., N))``."""
        return project_points(points_world, self.K, self.R, self.t, self._dist_or_none())

    def undistort(self, pixels: ArrayOrTensor) -> ArrayOrTensor:
        """``pixels (..., N, 2)`` -> undistorted normalised coordinates ``(..., N, 2)``."""
        return undistort_points(pixels, self.K, self._dist_or_none())

    def unproject(
        self, pixels: ArrayOrTensor, depth: ArrayOrTensor | None = None
    ) -> tuple[ArrayOrTensor, ArrayOrTensor] | ArrayOrTensor:
        """World rays ``(origins, directions)`` or points at camera depth; see :func:`unproject`."""
        return unproject(pixels, self.K, self.R, self.t, self._dist_or_none(), depth)

    def _dist_or_none(self) -> np.ndarray | None:
        return self.dist if self.has_distortion else None

    def is_close(self, other: Camera, atol: float = 1e-9) -> bool:
        """Same size and all parameters within ``atol``."""
        return (
            self.width == other.width
            and self.height == other.height
            and all(
                np.allclose(a, b, rtol=0.0, atol=atol)
                for a, b in (
                    (self.K, other.K),
                    (self.R, other.R),
                    (self.t, other.t),
                    (self.dist, other.dist),
                )
            )
        )

    # -- JSON (DESIGN 4.3) -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``width``, ``height``, ``K``, ``R``, ``t``, ``dist`` (lists)."""
        return {
            "width": self.width,
            "height": self.height,
            "K": self.K.tolist(),
            "R": self.R.tolist(),
            "t": self.t.tolist(),
            "dist": self.dist.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Camera:
        """Camera from the camera JSON of DESIGN 4.3.

        Required: ``width``, ``height``, ``K`` (3x3), and either ``R`` (3x3) + ``t`` (3)
        world-to-camera for a y-up world with the ground at y = 0, or ``height_m``,
        ``pitch_deg``, ``roll_deg`` (see :func:`camera_from_height_pitch_roll`). Optional
        ``dist`` (5). Other keys (names, notes) are ignored.

        Raises:
            TypeError: ``d`` is not a mapping.
            ValueError: a key is missing, both forms are given, or a value is malformed; the
                message names the key.
        """
        if not isinstance(d, Mapping):
            raise TypeError(f"camera: expected a JSON object (mapping), got {type(d).__name__}")
        for key in ("width", "height", "K"):
            if key not in d:
                raise ValueError(f"camera: missing key {key!r}")
        extrinsic_keys = ("R", "t")
        short_keys = ("height_m", "pitch_deg", "roll_deg")
        has_extrinsics = any(k in d for k in extrinsic_keys)
        has_short = any(k in d for k in short_keys)
        if has_extrinsics and has_short:
            raise ValueError(
                "camera: give either 'R' and 't' or 'height_m', 'pitch_deg' and 'roll_deg', "
                "not both"
            )
        if not has_extrinsics and not has_short:
            raise ValueError(
                "camera: missing extrinsics: need 'R' and 't', or 'height_m', 'pitch_deg' "
                "and 'roll_deg'"
            )
        dist = _as_matrix("dist", d["dist"], (5,)) if d.get("dist") is not None else None
        K = _as_matrix("K", d["K"], (3, 3))
        width = _as_size("width", d["width"])
        height = _as_size("height", d["height"])
        if has_extrinsics:
            for key in extrinsic_keys:
                if key not in d:
                    raise ValueError(f"camera: missing key {key!r}")
            return cls(
                K=K,
                R=_as_matrix("R", d["R"], (3, 3)),
                t=_as_matrix("t", d["t"], (3,)),
                width=width,
                height=height,
                dist=np.zeros(5) if dist is None else dist,
            )
        values = {}
        for key in short_keys:
            if key not in d:
                raise ValueError(f"camera: missing key {key!r}")
            value = d[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key}: expected a number, got {value!r}")
            values[key] = float(value)
        return camera_from_height_pitch_roll(
            values["height_m"],
            values["pitch_deg"],
            values["roll_deg"],
            K,
            width,
            height,
            dist,
        )


# ---------------------------------------------------------------------------------------------
# World frame from height, pitch and roll


def camera_from_height_pitch_roll(
    height_m: float,
    pitch_deg: float,
    roll_deg: float,
    K: np.ndarray,
    width: int,
    height: int,
    dist: np.ndarray | None = None,
) -> Camera:
    """A camera above the world origin given its height, pitch and roll (yaw 0).

    World frame (the paper's, DESIGN 2.1): metres, +Y up, ground y = 0, origin on the ground
    directly below the camera, so the camera centre is ``(0, height_m, 0)``.

    Conventions:

    - pitch 0, roll 0: optical axis horizontal along world -Z; image right = world +X,
      image down = world -Y.
    - ``pitch_deg > 0`` tilts the camera down: the optical axis is
      ``(0, -sin(pitch), -cos(pitch))``; the horizon moves up in the image. Range [-90, 90];
      90 looks straight down (image down is then world +Z).
    - ``roll_deg > 0`` turns the camera clockwise about its optical axis as seen from behind
      it (camera x turns towards camera y). The image content turns counter-clockwise by
      the same angle: world-horizontal lines rise to the right and world up points up-left.

    The camera-to-world rotation is ``Rx(-pitch) @ diag(1, -1, -1) @ Rz(roll)``
    (``Rx``, ``Rz`` right-handed rotations about world x and camera z).

    Args:
        height_m: camera centre height above the ground, metres, > 0.
        pitch_deg, roll_deg: degrees, as above.
        K: ``(3, 3)`` intrinsics, pixels. width, height: image size, pixels.
        dist: ``(5,)`` OpenCV distortion or None.
    """
    for name, value in (("height_m", height_m), ("pitch_deg", pitch_deg), ("roll_deg", roll_deg)):
        if not math.isfinite(value):
            raise ValueError(f"{name}: must be finite, got {value}")
    if height_m <= 0:
        raise ValueError(f"height_m: the camera must be above the ground (> 0), got {height_m}")
    if not -90.0 <= pitch_deg <= 90.0:
        raise ValueError(f"pitch_deg: expected a value in [-90, 90], got {pitch_deg}")
    pitch, roll = math.radians(pitch_deg), math.radians(roll_deg)
    cam_to_world = _rot_x(-pitch) @ _FLIP_YZ @ _rot_z(roll)
    R = cam_to_world.T
    t = -R @ np.array([0.0, height_m, 0.0])
    return Camera(
        K=K, R=R, t=t, width=width, height=height, dist=np.zeros(5) if dist is None else dist
    )


def height_pitch_roll(cam: Camera) -> tuple[float, float, float]:
    """``(height_m, pitch_deg, roll_deg)`` of any camera, ignoring its yaw and ground position.

    The exact inverse of :func:`camera_from_height_pitch_roll`: pitch in [-90, 90], roll in
    (-180, 180]. At pitch +-90 (looking straight down or up) roll and yaw are the same
    rotation; roll is reported as 0 and the rotation is left to the yaw (which
    :func:`canonical_world_transform` removes consistently).
    """
    height_m = float(cam.center[1])
    axis_y = float(np.clip(cam.R[2, 1], -1.0, 1.0))
    pitch = -math.asin(axis_y)
    if math.hypot(cam.R[2, 0], cam.R[2, 2]) < _VERTICAL_AXIS_EPS:
        return height_m, math.degrees(pitch), 0.0
    # The world-up components of the camera's x and y axes are (-sin r cos p, -cos r cos p).
    roll = math.atan2(-cam.R[0, 1], -cam.R[1, 1])
    return height_m, math.degrees(pitch), math.degrees(roll)


def _camera_yaw(R: np.ndarray) -> float:
    """Yaw (radians) ``a`` with camera-to-world ``Ry(a) @ Rx(-p) @ flip @ Rz(r)``."""
    axis = R[2]
    if math.hypot(axis[0], axis[2]) >= _VERTICAL_AXIS_EPS:
        # Ry(a) maps -Z to (-sin a, 0, -cos a), the horizontal heading of the optical axis.
        return math.atan2(-axis[0], -axis[2])
    # Vertical axis: take the heading of image-up with roll 0 (see height_pitch_roll).
    image_up = -R[1]
    if axis[1] < 0:  # looking down: image up is the heading
        return math.atan2(-image_up[0], -image_up[2])
    return math.atan2(image_up[0], image_up[2])  # looking up: image up is behind


def canonical_world_transform(cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """The rigid map from the camera's y-up world to its canonical frame ("Eay").

    Canonical frame (method-notes 2.1): same up axis and ground plane, origin on the ground
    below the camera, yaw such that the camera looks along -Z (image right = +X when roll is
    0). The map is a pure yaw plus a ground-plane translation: ``x_canonical = R_wc @ x_world
    + t_wc`` (``wc`` = world to canonical).

    Returns:
        ``R_wc (3, 3)`` rotation about +Y, ``t_wc (3,)`` metres with ``t_wc[1] == 0``.
        ``transform_camera(cam, R_wc, t_wc)`` equals
        ``camera_from_height_pitch_roll(*height_pitch_roll(cam), ...)``.
    """
    R_wc = _rot_y(-_camera_yaw(cam.R))
    ground_below = cam.center * np.array([1.0, 0.0, 1.0])
    t_wc = -R_wc @ ground_below
    t_wc[1] = 0.0
    return R_wc, t_wc


def transform_camera(cam: Camera, R: np.ndarray, t: np.ndarray) -> Camera:
    """The same physical camera in a new world frame ``x_new = R @ x_world + t``.

    Args:
        R: ``(3, 3)`` rotation, t: ``(3,)`` metres. Intrinsics and distortion are unchanged.
    """
    R = _as_matrix("R", R, (3, 3))
    _check_rotation("R", R)
    t = _as_matrix("t", t, (3,))
    R_new = cam.R @ R.T
    t_new = cam.t - R_new @ t
    return Camera(K=cam.K, R=R_new, t=t_new, width=cam.width, height=cam.height, dist=cam.dist)


def transform_points(points: ArrayOrTensor, R: ArrayOrTensor, t: ArrayOrTensor) -> ArrayOrTensor:
    """``points (..., 3)`` -> ``R @ p + t`` for each point; numpy or torch, same frame units."""
    (points, R, t), _ = _to_backend(points, R, t)
    _check_last_dims("points", points, (3,))
    _check_last_dims("R", R, (3, 3))
    _check_last_dims("t", t, (3,))
    return points @ R.swapaxes(-1, -2) + t


# ---------------------------------------------------------------------------------------------
# look-at and intrinsics


def look_at_batch(
    eyes: np.ndarray,
    targets: np.ndarray,
    up: Sequence[float] | np.ndarray = (0.0, 1.0, 0.0),
    roll_deg: np.ndarray | float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Batched :func:`look_at`: ``eyes, targets (M, 3)`` metres, ``roll_deg`` scalar or ``(M,)``
    -> world-to-camera ``R (M, 3, 3)``, ``t (M, 3)``.

    Rows of R are the camera axes in the world: z towards the target, x = z x up (image
    right), y = z x x (image down), then turned by roll about z.
    """
    eyes = np.asarray(eyes, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    up = np.asarray(up, dtype=np.float64)
    if eyes.ndim != 2 or eyes.shape[1] != 3 or targets.shape != eyes.shape:
        raise ValueError(
            f"eyes, targets: expected equal shapes (M, 3), got {eyes.shape} and {targets.shape}"
        )
    if up.shape != (3,):
        raise ValueError(f"up: expected shape (3,), got {up.shape}")
    roll_rad = np.broadcast_to(np.radians(np.asarray(roll_deg, dtype=np.float64)), eyes.shape[:1])
    forward = targets - eyes
    forward_norm = np.linalg.norm(forward, axis=-1, keepdims=True)
    if np.any(forward_norm < 1e-12):
        raise ValueError("look_at: eye and target coincide")
    forward = forward / forward_norm
    right = np.cross(forward, up)
    right_norm = np.linalg.norm(right, axis=-1, keepdims=True)
    if np.any(right_norm < 1e-9):
        raise ValueError("look_at: viewing direction is parallel to 'up'; roll is undefined")
    right = right / right_norm
    down = np.cross(forward, right)
    # Positive roll turns the camera clockwise seen from behind: x turns towards y.
    cos_r, sin_r = np.cos(roll_rad)[:, None], np.sin(roll_rad)[:, None]
    x_axis = cos_r * right + sin_r * down
    y_axis = -sin_r * right + cos_r * down
    R = np.stack([x_axis, y_axis, forward], axis=-2)
    return R, -np.einsum("mij,mj->mi", R, eyes)


def look_at(
    eye: Sequence[float] | np.ndarray,
    target: Sequence[float] | np.ndarray,
    up: Sequence[float] | np.ndarray = (0.0, 1.0, 0.0),
    roll_deg: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera ``(R (3, 3), t (3,))`` of a camera at ``eye`` looking at ``target``.

    OpenCV axes: z towards the target, x to the image right (perpendicular to ``up``), y
    down. ``roll_deg > 0`` turns the camera clockwise about its optical axis seen from
    behind (same convention as :func:`camera_from_height_pitch_roll`, with which it agrees
    for ``up = +Y``). eye, target: ``(3,)`` metres, world.
    """
    eye_a = _as_matrix("eye", eye, (3,))
    target_a = _as_matrix("target", target, (3,))
    up_a = _as_matrix("up", up, (3,))
    R, t = look_at_batch(eye_a[None], target_a[None], up_a, roll_deg)
    return R[0], t[0]


def intrinsics_from_fov(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """``K (3, 3)`` with square pixels, horizontal field of view ``hfov_deg`` and the principal
    point at the image centre ``(width / 2, height / 2)`` (continuous pixel coordinates)."""
    width, height = _as_size("width", width), _as_size("height", height)
    if not 0.0 < hfov_deg < 180.0:
        raise ValueError(f"hfov_deg: expected a value in (0, 180), got {hfov_deg}")
    focal = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    return np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------------------------------------
# Stacks of cameras and embeddings (method-notes 2.3)


def stack_cameras(cams: Sequence[Camera]) -> dict[str, np.ndarray]:
    """Stack V cameras for batched calls.

    Returns:
        ``K (V, 3, 3)``, ``R (V, 3, 3)``, ``t (V, 3)``, ``dist (V, 5)`` float64 and
        ``sizes (V, 2)`` int64 as ``(width, height)`` pixels.
    """
    if len(cams) == 0:
        raise ValueError("stack_cameras: need at least one camera")
    for index, cam in enumerate(cams):
        if not isinstance(cam, Camera):
            raise TypeError(f"stack_cameras: item {index} is {type(cam).__name__}, not Camera")
    return {
        "K": np.stack([c.K for c in cams]),
        "R": np.stack([c.R for c in cams]),
        "t": np.stack([c.t for c in cams]),
        "dist": np.stack([c.dist for c in cams]),
        "sizes": np.array([[c.width, c.height] for c in cams], dtype=np.int64),
    }


def camera_rt_embeddings(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``[tilt, roll, height]`` per camera: ``R (..., 3, 3)``, ``t (..., 3)`` -> ``(..., 3)``.

    tilt and roll (radians) are the X and Z angles of the intrinsic 'YXZ' Euler decomposition
    ``Ry(yaw) @ Rx(tilt) @ Rz(roll)`` of the camera-to-world rotation written with y-up camera
    axes (x right, y up, z backward; ``R.T @ diag(1, -1, -1)``), so that a level camera is
    the identity and the angles are continuous around it. For ``|pitch| < 90`` they are
    ``tilt = -pitch`` and ``roll = -roll`` of :func:`height_pitch_roll`, in radians, for any
    yaw. (The paper's code decomposes the OpenCV-axes matrix, which puts roll 0 at the
    +-pi wrap; here the embedding is smooth.) height: camera centre y, metres.
    """
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    _check_last_dims("R", R, (3, 3))
    _check_last_dims("t", t, (3,))
    # With M = R.T @ diag(1,-1,-1) = Ry Rx Rz: M[1] = (cos b sin c, cos b cos c, -sin b).
    tilt = np.arcsin(np.clip(R[..., 2, 1], -1.0, 1.0))
    roll = np.arctan2(R[..., 0, 1], -R[..., 1, 1])
    height = -np.einsum("...ji,...j->...i", R, t)[..., 1]
    return np.stack([tilt, roll, height], axis=-1)


def camera_k_embeddings(K: np.ndarray, sizes: np.ndarray, scale: float = 3500.0) -> np.ndarray:
    """``[fx, fy, cx', cy'] / scale`` per camera with the padded principal point.

    Args:
        K: ``(..., 3, 3)`` pixels; sizes: ``(..., 2)`` ``(width, height)`` pixels.
        scale: the fixed divisor, pixels (the paper's 3500).

    Returns:
        ``(..., 4)`` float64; ``cx' = cx + (S - W) / 2``, ``cy' = cy + (S - H) / 2``,
        ``S = max(W, H)``.
    """
    K = np.asarray(K, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.float64)
    _check_last_dims("K", K, (3, 3))
    _check_last_dims("sizes", sizes, (2,))
    if not scale > 0:
        raise ValueError(f"scale: must be positive, got {scale}")
    side = sizes.max(axis=-1)
    return (
        np.stack(
            [
                K[..., 0, 0],
                K[..., 1, 1],
                K[..., 0, 2] + (side - sizes[..., 0]) / 2,
                K[..., 1, 2] + (side - sizes[..., 1]) / 2,
            ],
            axis=-1,
        )
        / scale
    )


def camera_rt_embedding(cam: Camera) -> np.ndarray:
    """``(3,)`` ``[tilt, roll, height]`` of one camera; see :func:`camera_rt_embeddings`."""
    return camera_rt_embeddings(cam.R, cam.t)


def camera_k_embedding(cam: Camera, scale: float = 3500.0) -> np.ndarray:
    """``(4,)`` ``[fx, fy, cx', cy'] / scale``; see :func:`camera_k_embeddings`."""
    return camera_k_embeddings(cam.K, np.array([cam.width, cam.height]), scale)
