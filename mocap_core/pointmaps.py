"""Ground pointmaps: per pixel, where the camera ray meets the ground plane (DESIGN 2.3).

A pointmap covers the camera's image padded symmetrically to an ``S x S`` square,
``S = max(W, H)`` (see :attr:`mocap_core.cameras.Camera.padded_K`), resampled to
``size x size``. Map pixel (row i, column j) samples the padded-image point

    ``(u', v') = ((j + 0.5) * S / size, (i + 0.5) * S / size)``

in continuous pixel coordinates (the padded image spans ``[0, S]^2``), i.e. the centre of the
map pixel's footprint. Subtracting the padding, ``u = u' - (S - W) / 2``,
``v = v' - (S - H) / 2``, gives original-image pixel coordinates; these are undistorted, and
the ray from the camera centre through them is intersected with the ground ``y = 0``. Pixels
in the padding are treated like any other pixel (their rays extend the image).

The value is the world XYZ of the hit (metres, y-up; its y is exactly 0), or 0 where there is
no hit: the ray is parallel to the ground, points away from it (above the horizon), meets it
behind the camera, or its pixel cannot be undistorted (outside the region where the
distortion model is invertible).
"""

from __future__ import annotations

import numpy as np

from mocap_core.cameras import Camera, undistort_points

# Views are processed this many at a time to bound the temporaries: the float64 ray
# directions of 16 views at 224^2 take 19 MB, and a handful of such arrays are alive at once.
_VIEWS_PER_CHUNK = 16


def ground_pointmaps(
    K: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    dist: np.ndarray | None,
    sizes: np.ndarray,
    size: int = 224,
    max_range_m: float | None = None,
) -> np.ndarray:
    """Ground pointmaps of V cameras at once.

    Args:
        K: ``(V, 3, 3)`` intrinsics, pixels.
        R: ``(V, 3, 3)`` world-to-camera rotations.
        t: ``(V, 3)`` world-to-camera translations, metres.
        dist: ``(V, 5)`` OpenCV ``k1 k2 p1 p2 k3`` or None. Only views with a non-zero row
            pay for the iterative undistortion.
        sizes: ``(V, 2)`` image ``(width, height)``, pixels.
        size: map side, pixels (224 in the paper).
        max_range_m: if given, hits farther than this from the camera centre (straight-line
            distance, metres) are dropped (set to 0 like a miss), not clamped; None keeps every
            hit, however far (near-horizon pixels reach hundreds of metres).

    Returns:
        ``(V, size, size, 3) float32`` world XYZ, metres, y-up; zeros where there is no hit.

    Raises:
        ValueError: bad shapes, or a camera centre not above the ground (``y <= 0``).
    """
    K = np.asarray(K, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    sizes = np.asarray(sizes)
    if K.ndim != 3 or K.shape[1:] != (3, 3):
        raise ValueError(f"K: expected shape (V, 3, 3), got {K.shape}")
    num_views = K.shape[0]
    expected = {"R": (R, (num_views, 3, 3)), "t": (t, (num_views, 3))}
    expected["sizes"] = (sizes, (num_views, 2))
    if dist is not None:
        dist = np.asarray(dist, dtype=np.float64)
        expected["dist"] = (dist, (num_views, 5))
    for name, (array, shape) in expected.items():
        if array.shape != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {array.shape}")
    if not np.all(np.isfinite(K)) or np.any(K[:, 0, 0] <= 0) or np.any(K[:, 1, 1] <= 0):
        raise ValueError("K: expected finite intrinsics with positive focal lengths")
    if not np.issubdtype(sizes.dtype, np.number) or np.any(sizes <= 0):
        raise ValueError(f"sizes: expected positive (width, height) pairs, got {sizes.tolist()}")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size <= 0:
        raise ValueError(f"size: expected a positive integer, got {size!r}")
    if max_range_m is not None and not max_range_m > 0:
        raise ValueError(f"max_range_m: expected a positive distance or None, got {max_range_m}")

    heights = -np.einsum("vji,vj->vi", R, t)[:, 1]
    below = np.flatnonzero(~(heights > 0))
    if below.size:
        raise ValueError(
            f"cameras {below.tolist()}: centre not above the ground plane y = 0 "
            f"(heights {heights[below].tolist()} m)"
        )
    out = np.empty((num_views, size, size, 3), dtype=np.float32)
    for start in range(0, num_views, _VIEWS_PER_CHUNK):
        views = slice(start, min(start + _VIEWS_PER_CHUNK, num_views))
        out[views] = _pointmap_chunk(
            K[views],
            R[views],
            t[views],
            None if dist is None else dist[views],
            sizes[views].astype(np.float64),
            size,
            max_range_m,
        )
    return out


def _pointmap_chunk(
    K: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    dist: np.ndarray | None,
    sizes: np.ndarray,
    size: int,
    max_range_m: float | None,
) -> np.ndarray:
    """``(V, size, size, 3) float32`` for a chunk of views; arguments validated by the caller."""
    num_views = K.shape[0]
    side = sizes.max(axis=1)  # (V,)
    grid = (np.arange(size, dtype=np.float64) + 0.5) / size
    u = grid[None, :] * side[:, None] - ((side - sizes[:, 0]) / 2)[:, None]  # (V, size) columns
    v = grid[None, :] * side[:, None] - ((side - sizes[:, 1]) / 2)[:, None]  # (V, size) rows

    # World ray directions d = R.T @ (x, y, 1), one (V, size, size) array per component. For a
    # pinhole the map from pixels is affine, R.T @ inv(K) @ (u, v, 1), so it is built from
    # the row and column coordinates by broadcasting instead of per-pixel products.
    pixel_to_world = R.swapaxes(-1, -2) @ np.linalg.inv(K)
    directions = (
        pixel_to_world[:, :, 0, None, None] * u[:, None, None, :]
        + pixel_to_world[:, :, 1, None, None] * v[:, None, :, None]
        + pixel_to_world[:, :, 2, None, None]
    ).swapaxes(0, 1)  # (3, V, size, size)
    if dist is not None:
        distorted_views = np.flatnonzero(np.any(dist != 0.0, axis=1))
        if distorted_views.size:
            u_d, v_d = np.broadcast_arrays(u[distorted_views, None, :], v[distorted_views, :, None])
            pixels = np.stack([u_d, v_d], axis=-1).reshape(distorted_views.size, -1, 2)
            # NaN where the distortion has no preimage; such rays count as misses below.
            normalised = undistort_points(pixels, K[distorted_views], dist[distorted_views])
            x = normalised[..., 0].reshape(-1, size, size)
            y = normalised[..., 1].reshape(-1, size, size)
            R_d = R[distorted_views]
            for axis in range(3):
                directions[axis, distorted_views] = (
                    R_d[:, 0, axis, None, None] * x
                    + R_d[:, 1, axis, None, None] * y
                    + R_d[:, 2, axis, None, None]
                )

    # The ray C + s * d meets y = 0 at s = -C_y / d_y; with d's camera z equal to 1, s is the
    # camera-frame depth, so s > 0 means in front of the camera.
    centres = -np.einsum("vji,vj->vi", R, t)  # (V, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = -centres[:, 1, None, None] / directions[1]
        hit = np.isfinite(depth) & (depth > 0)
        if max_range_m is not None:
            ray_length = depth * np.sqrt((directions**2).sum(axis=0))
            hit &= ray_length <= max_range_m
    out = np.zeros((num_views, size, size, 3), dtype=np.float32)
    # y stays exactly 0: the hit is on the plane by construction.
    for axis in (0, 2):
        out[..., axis] = np.where(hit, centres[:, axis, None, None] + depth * directions[axis], 0.0)
    return out


def ground_pointmap(cam: Camera, size: int = 224, max_range_m: float | None = None) -> np.ndarray:
    """``(size, size, 3) float32`` ground pointmap of one camera; see :func:`ground_pointmaps`."""
    if not isinstance(cam, Camera):
        raise TypeError(f"cam: expected a Camera, got {type(cam).__name__}")
    return ground_pointmaps(
        cam.K[None],
        cam.R[None],
        cam.t[None],
        cam.dist[None] if cam.has_distortion else None,
        np.array([[cam.width, cam.height]]),
        size=size,
        max_range_m=max_range_m,
    )[0]
