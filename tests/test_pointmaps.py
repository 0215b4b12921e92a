"""Tests for mocap_core.pointmaps: ground hits per pixel of the padded square image."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mocap_core.cameras import (
    Camera,
    camera_from_height_pitch_roll,
    intrinsics_from_fov,
    look_at,
    project_points,
    stack_cameras,
    transform_camera,
)
from mocap_core.pointmaps import ground_pointmap, ground_pointmaps


def padded_pixel_centres(cam: Camera, size: int) -> np.ndarray:
    """``(size, size, 2)`` original-image pixel coordinates each map pixel samples."""
    side = cam.padded_size
    grid = (np.arange(size) + 0.5) * side / size
    u = grid[None, :] - (side - cam.width) / 2
    v = grid[:, None] - (side - cam.height) / 2
    return np.stack(np.broadcast_arrays(u, v), axis=-1)


def test_straight_down_gives_a_regular_grid() -> None:
    height, focal, side, size = 2.0, 500.0, 1000, 100
    K = np.array([[focal, 0, side / 2], [0, focal, side / 2], [0, 0, 1.0]])
    cam = camera_from_height_pitch_roll(height, 90.0, 0.0, K, side, side)
    pointmap = ground_pointmap(cam, size=size)
    assert pointmap.shape == (size, size, 3) and pointmap.dtype == np.float32
    # Looking down with roll 0, image right is +X and image down is +Z (DESIGN 2.1 frame).
    offsets = ((np.arange(size) + 0.5) * side / size - side / 2) * height / focal
    np.testing.assert_allclose(pointmap[..., 0], np.broadcast_to(offsets, (size, size)), atol=1e-5)
    np.testing.assert_allclose(
        pointmap[..., 2], np.broadcast_to(offsets[:, None], (size, size)), atol=1e-5
    )
    np.testing.assert_array_equal(pointmap[..., 1], 0.0)
    spacing = height * (side / size) / focal
    np.testing.assert_allclose(np.diff(pointmap[..., 0], axis=1), spacing, atol=1e-5)
    np.testing.assert_allclose(np.diff(pointmap[..., 2], axis=0), spacing, atol=1e-5)


def test_level_camera_is_zero_above_the_horizon() -> None:
    K = intrinsics_from_fov(1920, 1080, 60.0)
    cam = camera_from_height_pitch_roll(1.5, 0.0, 0.0, K, 1920, 1080)
    pointmap = ground_pointmap(cam)
    hit = np.any(pointmap != 0, axis=-1)
    # Row i samples v = (i + 0.5) * 1920 / 224 - 420; the horizon is v = cy = 540, i = 111.5.
    assert not hit[:112].any()
    assert hit[112:].all()
    # The first row below the horizon is far away, the bottom row close.
    assert -pointmap[112, 112, 2] > 50.0 and -pointmap[223, 112, 2] < 5.0


def test_hits_lie_on_the_ground_and_project_back_to_their_pixel() -> None:
    K = intrinsics_from_fov(1280, 720, 70.0)
    dist = np.array([-0.08, 0.01, 0.0005, -0.0003, 0.0])
    R, t = look_at([1.0, 1.7, 3.0], [-0.5, 0.0, -2.0], roll_deg=3.0)
    cam = Camera(K=K, R=R, t=t, width=1280, height=720, dist=dist)
    size = 64
    pointmap = ground_pointmap(cam, size=size).astype(np.float64)
    hit = np.any(pointmap != 0, axis=-1)
    assert 0.3 < hit.mean() < 0.95  # a horizon crosses the map
    np.testing.assert_array_equal(pointmap[hit][:, 1], 0.0)
    pixels, depth = cam.project(pointmap[hit])
    assert np.all(depth > 0)
    # float32 storage of points a few metres away: ~1e-6 relative, well under 0.05 px.
    np.testing.assert_allclose(pixels, padded_pixel_centres(cam, size)[hit], atol=0.05)
    # Misses are rays that rise or run level: their direction has no downward component.
    missed = padded_pixel_centres(cam, size)[~hit]
    _, directions = cam.unproject(missed)
    assert np.all(directions[:, 1] >= -1e-9)


def test_yaw_rotates_the_map() -> None:
    K = intrinsics_from_fov(1920, 1080, 60.0)
    cam = camera_from_height_pitch_roll(1.6, 15.0, 2.0, K, 1920, 1080)
    yaw = Rotation.from_rotvec([0.0, 0.8, 0.0]).as_matrix()
    turned = transform_camera(cam, yaw, np.zeros(3))
    original, rotated = ground_pointmap(cam), ground_pointmap(turned)
    hit = np.any(original != 0, axis=-1)
    np.testing.assert_array_equal(np.any(rotated != 0, axis=-1), hit)
    np.testing.assert_allclose(rotated[hit], original[hit] @ yaw.T, atol=2e-4)
    assert np.abs(rotated[hit] - original[hit]).max() > 0.5


def test_batched_matches_single_and_max_range_drops_far_hits() -> None:
    cams = [
        camera_from_height_pitch_roll(
            1.5, 10.0, 0.0, intrinsics_from_fov(1920, 1080, 60), 1920, 1080
        ),
        Camera(
            K=intrinsics_from_fov(1080, 1920, 50),
            R=look_at([3.0, 2.0, 0.0], [0.0, 0.5, 0.0])[0],
            t=look_at([3.0, 2.0, 0.0], [0.0, 0.5, 0.0])[1],
            width=1080,
            height=1920,
            dist=[-0.05, 0.0, 0.0, 0.0, 0.0],
        ),
        camera_from_height_pitch_roll(1.0, -5.0, 4.0, intrinsics_from_fov(640, 480, 90), 640, 480),
    ]
    stacked = stack_cameras(cams)
    batched = ground_pointmaps(
        stacked["K"], stacked["R"], stacked["t"], stacked["dist"], stacked["sizes"], size=48
    )
    assert batched.shape == (3, 48, 48, 3)
    for view, cam in enumerate(cams):
        np.testing.assert_array_equal(batched[view], ground_pointmap(cam, size=48))

    full = ground_pointmap(cams[0], size=48)
    capped = ground_pointmap(cams[0], size=48, max_range_m=10.0)
    range_m = np.linalg.norm(full.astype(np.float64) - cams[0].center, axis=-1)
    full_hit = np.any(full != 0, axis=-1)
    kept = full_hit & (range_m <= 10.0)
    assert kept.any() and (full_hit & ~kept).any()
    np.testing.assert_array_equal(capped[kept], full[kept])
    np.testing.assert_array_equal(capped[~kept], 0.0)


def test_pixels_without_an_undistorted_ray_are_zero() -> None:
    # A strong barrel folds inside the padded square: those pixels have no ray at all.
    K = intrinsics_from_fov(1920, 1080, 100.0)
    cam = camera_from_height_pitch_roll(
        1.5, 80.0, 0.0, K, 1920, 1080, dist=np.array([-0.45, 0.0, 0.0, 0.0, 0.0])
    )
    pointmap = ground_pointmap(cam, size=32)
    hit = np.any(pointmap != 0, axis=-1)
    assert hit[16, 16] and not hit[0, 0] and not hit[31, 31]
    assert np.isfinite(pointmap).all()


def test_bad_inputs_raise() -> None:
    cam = camera_from_height_pitch_roll(1.5, 10.0, 0.0, intrinsics_from_fov(64, 48, 60), 64, 48)
    stacked = stack_cameras([cam])
    below = stacked["t"] + cam.R @ np.array([0.0, 2.0, 0.0])  # centre moved to y = -0.5
    with pytest.raises(ValueError, match="not above the ground"):
        ground_pointmaps(stacked["K"], stacked["R"], below, None, stacked["sizes"])
    with pytest.raises(ValueError, match="sizes"):
        ground_pointmaps(stacked["K"], stacked["R"], stacked["t"], None, np.array([64, 48]))
    with pytest.raises(ValueError, match="size"):
        ground_pointmap(cam, size=0)
    with pytest.raises(ValueError, match="max_range_m"):
        ground_pointmap(cam, max_range_m=-1.0)
    with pytest.raises(TypeError, match="Camera"):
        ground_pointmap(stacked)  # type: ignore[arg-type]
    assert math.isclose(
        float(project_points(np.zeros((1, 3)), cam.K, cam.R, cam.t)[1][0]),
        1.5 * math.sin(math.radians(10)),
    )
