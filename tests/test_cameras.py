"""Tests for mocap_core.cameras: projection, distortion, world-frame conventions, embeddings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from mocap_core.cameras import (
    Camera,
    camera_from_height_pitch_roll,
    camera_k_embedding,
    camera_k_embeddings,
    camera_rt_embedding,
    camera_rt_embeddings,
    canonical_world_transform,
    height_pitch_roll,
    intrinsics_from_fov,
    look_at,
    look_at_batch,
    project_points,
    stack_cameras,
    transform_camera,
    transform_points,
    undistort_points,
    unproject,
)

K_HD = intrinsics_from_fov(1920, 1080, 60.0)
FLIP_YZ = np.diag([1.0, -1.0, -1.0])


def rot_y(angle_rad: float) -> np.ndarray:
    return Rotation.from_rotvec([0.0, angle_rad, 0.0]).as_matrix()


def yawed_camera(cam: Camera, yaw_rad: float, ground_offset: np.ndarray) -> Camera:
    """The camera turned by yaw about +Y and moved on the ground."""
    return transform_camera(cam, rot_y(yaw_rad), np.array([ground_offset[0], 0, ground_offset[1]]))


# --------------------------------------------------------------------------- construction


def test_camera_validates_its_arrays() -> None:
    good = {"K": K_HD, "R": np.eye(3), "t": np.zeros(3), "width": 1920, "height": 1080}
    Camera(**good)
    with pytest.raises(ValueError, match="K: expected shape"):
        Camera(**{**good, "K": np.eye(2)})
    with pytest.raises(ValueError, match="t: contains non-finite"):
        Camera(**{**good, "t": np.array([0.0, np.nan, 0.0])})
    with pytest.raises(ValueError, match="R: not orthonormal"):
        Camera(**{**good, "R": 2 * np.eye(3)})
    with pytest.raises(ValueError, match="R: determinant"):
        Camera(**{**good, "R": np.diag([1.0, 1.0, -1.0])})
    with pytest.raises(ValueError, match="width"):
        Camera(**{**good, "width": 0})
    with pytest.raises(ValueError, match="height"):
        Camera(**{**good, "height": True})
    with pytest.raises(ValueError, match="focal lengths must be positive"):
        Camera(**{**good, "K": np.diag([-1.0, 1.0, 1.0])})
    with pytest.raises(ValueError, match="dist: expected shape"):
        Camera(**good, dist=np.zeros(4))


def test_camera_arrays_are_read_only_copies() -> None:
    K = K_HD.copy()
    cam = Camera(K=K, R=np.eye(3), t=np.zeros(3), width=1920, height=1080)
    K[0, 0] = 1.0
    assert cam.K[0, 0] == K_HD[0, 0]
    with pytest.raises(ValueError):
        cam.K[0, 0] = 5.0


def test_center_and_projection_matrix() -> None:
    R, t = look_at([1.0, 2.0, 3.0], [0.0, 0.5, -1.0])
    cam = Camera(K=K_HD, R=R, t=t, width=1920, height=1080)
    np.testing.assert_allclose(cam.center, [1.0, 2.0, 3.0], atol=1e-12)
    points = np.array([[0.0, 0.5, -1.0], [0.3, 1.0, -2.0]])
    homogeneous = np.hstack([points, np.ones((2, 1))]) @ cam.projection_matrix.T
    pixels, depth = cam.project(points)
    np.testing.assert_allclose(pixels, homogeneous[:, :2] / homogeneous[:, 2:], atol=1e-9)
    np.testing.assert_allclose(depth, homogeneous[:, 2], atol=1e-12)
    # The target is on the optical axis: it lands on the principal point.
    np.testing.assert_allclose(pixels[0], K_HD[:2, 2], atol=1e-9)


@pytest.mark.parametrize(
    ("width", "height", "shift"),
    [(1920, 1080, (0.0, 420.0)), (1080, 1920, (420.0, 0.0)), (640, 640, (0.0, 0.0))],
)
def test_padded_intrinsics(width: int, height: int, shift: tuple[float, float]) -> None:
    K = intrinsics_from_fov(width, height, 60.0)
    cam = Camera(K=K, R=np.eye(3), t=np.zeros(3), width=width, height=height)
    assert cam.padded_size == max(width, height)
    np.testing.assert_allclose(cam.padded_K[:2, 2], K[:2, 2] + np.array(shift))
    # The image centre moves to the centre of the padded square.
    np.testing.assert_allclose(cam.padded_K[:2, 2], [cam.padded_size / 2] * 2)


def test_intrinsics_from_fov_edge_ray() -> None:
    K = intrinsics_from_fov(1000, 500, 90.0)
    np.testing.assert_allclose(K, [[500, 0, 500], [0, 500, 250], [0, 0, 1]])
    with pytest.raises(ValueError, match="hfov_deg"):
        intrinsics_from_fov(1000, 500, 180.0)


# --------------------------------------------------------------------------- projection


def test_projection_hand_computed_with_distortion() -> None:
    K = np.array([[1000.0, 0.0, 500.0], [0.0, 800.0, 400.0], [0.0, 0.0, 1.0]])
    dist = np.array([0.1, 0.01, 0.002, -0.003, 0.001])
    # Camera at the world origin looking along +z (R = I): x = 0.5, y = -0.25.
    pixels, depth = project_points(np.array([[1.0, -0.5, 2.0]]), K, np.eye(3), np.zeros(3), dist)
    x, y = 0.5, -0.25
    r2 = x * x + y * y
    radial = 1 + 0.1 * r2 + 0.01 * r2**2 + 0.001 * r2**3
    x_d = x * radial + 2 * 0.002 * x * y + -0.003 * (r2 + 2 * x * x)
    y_d = y * radial + 0.002 * (r2 + 2 * y * y) + 2 * -0.003 * x * y
    np.testing.assert_allclose(pixels[0], [1000 * x_d + 500, 800 * y_d + 400], atol=1e-12)
    np.testing.assert_allclose(depth, [2.0])


lens = st.tuples(
    st.floats(-0.4, 0.4),  # k1
    st.floats(-0.15, 0.15),  # k2
    st.floats(-0.004, 0.004),  # p1
    st.floats(-0.004, 0.004),  # p2
    st.floats(-0.05, 0.05),  # k3
)


@settings(max_examples=150, deadline=None)
@given(
    dist=lens,
    focal=st.floats(400.0, 4000.0),
    points=st.lists(
        st.tuples(st.floats(-0.6, 0.6), st.floats(-0.45, 0.45)), min_size=1, max_size=20
    ),
)
def test_distort_undistort_round_trip(
    dist: tuple[float, ...], focal: float, points: list[tuple[float, float]]
) -> None:
    normalised = np.array(points)
    r_max = float(np.sqrt((normalised**2).sum(-1)).max())
    # Keep to lenses whose radial mapping is monotonic out to these points: the region where
    # the model is a lens at all (and where Newton is promised to converge).
    radii = np.linspace(0.0, r_max * 1.02, 64)
    k1, k2, _, _, k3 = dist
    assume(np.all(1 + 3 * k1 * radii**2 + 5 * k2 * radii**4 + 7 * k3 * radii**6 > 0.25))
    K = np.array([[focal, 0.0, 960.0], [0.0, focal * 1.01, 540.0], [0.0, 0.0, 1.0]])
    points_cam = np.concatenate([normalised, np.ones((len(points), 1))], axis=1) * 3.0
    pixels, _ = project_points(points_cam, K, np.eye(3), np.zeros(3), np.array(dist))
    recovered = undistort_points(pixels, K, np.array(dist))
    error_px = np.abs(recovered - normalised).max() * focal * 1.01
    assert error_px < 1e-9


def test_undistort_without_distortion_and_single_point() -> None:
    K = np.array([[1000.0, 0.0, 500.0], [0.0, 800.0, 400.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(undistort_points(np.array([1500.0, 0.0]), K), [1.0, -0.5])


def test_undistort_marks_points_without_preimage() -> None:
    # A strong barrel folds at r ~ 0.82: radii beyond its maximum are never produced.
    K = np.array([[1000.0, 0.0, 0.0], [0.0, 1000.0, 0.0], [0.0, 0.0, 1.0]])
    dist = np.array([-0.5, 0.0, 0.0, 0.0, 0.0])
    out = undistort_points(np.array([[300.0, 0.0], [900.0, 0.0]]), K, dist)
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()


def test_unproject_rays_and_depth_round_trip() -> None:
    dist = np.array([-0.2, 0.05, 0.001, 0.0005, 0.0])
    R, t = look_at([2.0, 1.6, 4.0], [0.0, 0.9, 0.0], roll_deg=4.0)
    cam = Camera(K=K_HD, R=R, t=t, width=1920, height=1080, dist=dist)
    points = np.random.default_rng(1).uniform([-1, 0, -1], [1, 2, 1], (50, 3))
    pixels, depth = cam.project(points)
    np.testing.assert_allclose(cam.unproject(pixels, depth), points, atol=1e-9)
    origins, directions = cam.unproject(pixels)
    np.testing.assert_allclose(origins, np.broadcast_to(cam.center, (50, 3)), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=-1), 1.0, atol=1e-12)
    to_points = points - cam.center
    to_points /= np.linalg.norm(to_points, axis=-1, keepdims=True)
    np.testing.assert_allclose(directions, to_points, atol=1e-9)


def test_torch_matches_numpy_and_keeps_dtype_device() -> None:
    dist = np.array([-0.1, 0.02, 0.001, -0.001, 0.0])
    R, t = look_at([1.0, 1.5, 3.0], [0.0, 1.0, 0.0])
    points = np.random.default_rng(2).uniform(-1, 1, (30, 3))
    pixels_np, depth_np = project_points(points, K_HD, R, t, dist)

    points_t = torch.tensor(points, dtype=torch.float64, requires_grad=True)
    pixels_t, depth_t = project_points(points_t, K_HD, R, t, dist)
    assert isinstance(pixels_t, torch.Tensor) and pixels_t.dtype == torch.float64
    np.testing.assert_allclose(pixels_t.detach().numpy(), pixels_np, atol=1e-9)
    np.testing.assert_allclose(depth_t.detach().numpy(), depth_np, atol=1e-12)
    pixels_t.sum().backward()
    assert points_t.grad is not None and torch.isfinite(points_t.grad).all()

    pixels_32, _ = project_points(torch.tensor(points, dtype=torch.float32), K_HD, R, t, dist)
    assert pixels_32.dtype == torch.float32 and pixels_32.device == points_t.device
    np.testing.assert_allclose(pixels_32.numpy(), pixels_np, atol=1e-2)

    back_t = undistort_points(torch.tensor(pixels_np), torch.tensor(K_HD), torch.tensor(dist))
    back_np = undistort_points(pixels_np, K_HD, dist)
    np.testing.assert_allclose(back_t.numpy(), back_np, atol=1e-12)
    rays_t = unproject(torch.tensor(pixels_np), K_HD, R, t, dist, torch.tensor(depth_np))
    np.testing.assert_allclose(rays_t.numpy(), points, atol=1e-9)


def test_batched_over_cameras_matches_loop() -> None:
    rng = np.random.default_rng(3)
    cams = []
    for view in range(5):
        R, t = look_at(
            [3 * math.sin(view), 1.0 + 0.2 * view, 3 * math.cos(view)], [0, 1, 0], roll_deg=view
        )
        K = intrinsics_from_fov(1280, 720, 50.0 + 5 * view)
        cams.append(Camera(K=K, R=R, t=t, width=1280, height=720, dist=rng.normal(0, 0.01, 5)))
    stacked = stack_cameras(cams)
    assert stacked["K"].shape == (5, 3, 3) and stacked["sizes"].tolist() == [[1280, 720]] * 5
    points = rng.uniform(-0.5, 0.5, (7, 3)) + [0, 1, 0]
    shared, shared_depth = project_points(
        points, stacked["K"], stacked["R"], stacked["t"], stacked["dist"]
    )
    per_view_points = np.broadcast_to(points, (5, 7, 3))
    per_view, _ = project_points(
        per_view_points, stacked["K"], stacked["R"], stacked["t"], stacked["dist"]
    )
    assert shared.shape == (5, 7, 2) and shared_depth.shape == (5, 7)
    for view, cam in enumerate(cams):
        expected, expected_depth = cam.project(points)
        np.testing.assert_allclose(shared[view], expected, atol=1e-9)
        np.testing.assert_allclose(per_view[view], expected, atol=1e-9)
        np.testing.assert_allclose(shared_depth[view], expected_depth, atol=1e-12)
    back = undistort_points(shared, stacked["K"], stacked["dist"])
    pixels_again, _ = project_points(
        np.concatenate([back, np.ones((5, 7, 1))], axis=-1),
        stacked["K"],
        np.eye(3),
        np.zeros(3),
        stacked["dist"],
    )
    np.testing.assert_allclose(pixels_again, shared, atol=1e-8)


def test_projection_shape_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="points_world"):
        project_points(np.zeros((4, 2)), K_HD, np.eye(3), np.zeros(3))
    with pytest.raises(ValueError, match="dist"):
        project_points(np.zeros((4, 3)), K_HD, np.eye(3), np.zeros(3), np.zeros(4))


# --------------------------------------------------------------------------- world frame


def test_level_camera_axes() -> None:
    cam = camera_from_height_pitch_roll(1.5, 0.0, 0.0, K_HD, 1920, 1080)
    np.testing.assert_allclose(cam.center, [0, 1.5, 0], atol=1e-12)
    np.testing.assert_allclose(cam.optical_axis, [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(cam.R, FLIP_YZ, atol=1e-12)  # image right = +X, down = -Y
    pixels, _ = cam.project(np.array([[1.0, 1.5, -5.0], [0.0, 0.5, -5.0]]))
    assert pixels[0, 0] > 960 and abs(pixels[0, 1] - 540) < 1e-9  # +X is to the right
    assert pixels[1, 1] > 540 and abs(pixels[1, 0] - 960) < 1e-9  # -Y is down


@pytest.mark.parametrize("pitch", [5.0, 20.0, 60.0])
def test_positive_pitch_looks_down(pitch: float) -> None:
    height = 1.5
    cam = camera_from_height_pitch_roll(height, pitch, 0.0, K_HD, 1920, 1080)
    np.testing.assert_allclose(
        cam.optical_axis, [0, -math.sin(math.radians(pitch)), -math.cos(math.radians(pitch))]
    )
    # A ground point straight ahead, closer than where the axis hits, is below the centre.
    axis_hit = height / math.tan(math.radians(pitch))
    pixels, depth = cam.project(np.array([[0.0, 0.0, -0.8 * axis_hit], [0.0, 0.0, -axis_hit]]))
    assert depth[0] > 0 and pixels[0, 1] > 540
    np.testing.assert_allclose(pixels[1], [960, 540], atol=1e-9)
    # The horizon (far point at camera height) is above the centre.
    horizon, _ = cam.project(np.array([[0.0, height, -1e4]]))
    assert horizon[0, 1] < 540
    up = camera_from_height_pitch_roll(height, -pitch, 0.0, K_HD, 1920, 1080)
    assert up.optical_axis[1] > 0


def test_positive_roll_turns_image_counter_clockwise() -> None:
    cam = camera_from_height_pitch_roll(1.5, 0.0, 10.0, K_HD, 1920, 1080)
    # A horizontal line at camera height: its right end appears higher (smaller v).
    pixels, _ = cam.project(np.array([[-1.0, 1.5, -5.0], [1.0, 1.5, -5.0]]))
    slope = (pixels[1, 1] - pixels[0, 1]) / (pixels[1, 0] - pixels[0, 0])
    np.testing.assert_allclose(slope, -math.tan(math.radians(10.0)), atol=1e-12)
    # The camera's x axis turned towards its y axis (clockwise seen from behind): it dips.
    assert cam.R[0, 1] < 0
    # World up appears pointing up-left.
    up_pixels, _ = cam.project(np.array([[0.0, 1.5, -5.0], [0.0, 2.5, -5.0]]))
    direction = up_pixels[1] - up_pixels[0]
    assert direction[1] < 0 and direction[0] < 0


def test_look_at_agrees_with_height_pitch_roll() -> None:
    cam = camera_from_height_pitch_roll(1.3, 17.0, -6.0, K_HD, 1920, 1080)
    target = [0.0, 1.3 - 4 * math.tan(math.radians(17.0)), -4.0]
    R, t = look_at([0.0, 1.3, 0.0], target, roll_deg=-6.0)
    np.testing.assert_allclose(R, cam.R, atol=1e-12)
    np.testing.assert_allclose(t, cam.t, atol=1e-12)
    R_batch, t_batch = look_at_batch(
        np.array([[0.0, 1.3, 0.0]] * 2), np.array([target] * 2), (0, 1, 0), -6.0
    )
    np.testing.assert_allclose(R_batch, np.stack([R, R]), atol=1e-15)
    with pytest.raises(ValueError, match="parallel"):
        look_at([0, 2, 0], [0, 0, 0])


@settings(max_examples=200, deadline=None)
@given(
    height=st.floats(0.1, 20.0),
    pitch=st.floats(-89.0, 89.0),
    roll=st.floats(-179.9, 179.9),
    yaw=st.floats(-math.pi, math.pi),
    offset=st.tuples(st.floats(-50, 50), st.floats(-50, 50)),
)
def test_height_pitch_roll_round_trip_any_yaw(
    height: float, pitch: float, roll: float, yaw: float, offset: tuple[float, float]
) -> None:
    cam = camera_from_height_pitch_roll(height, pitch, roll, K_HD, 1920, 1080)
    np.testing.assert_allclose(height_pitch_roll(cam), (height, pitch, roll), atol=1e-7)
    placed = yawed_camera(cam, yaw, np.array(offset))
    np.testing.assert_allclose(height_pitch_roll(placed), (height, pitch, roll), atol=1e-7)
    # The canonical frame undoes the yaw and the ground offset exactly.
    R_wc, t_wc = canonical_world_transform(placed)
    assert abs(t_wc[1]) == 0.0
    np.testing.assert_allclose(R_wc @ [0, 1, 0], [0, 1, 0], atol=1e-12)  # a pure yaw
    canonical = transform_camera(placed, R_wc, t_wc)
    np.testing.assert_allclose(canonical.R, cam.R, atol=1e-9)
    np.testing.assert_allclose(canonical.t, cam.t, atol=1e-7)


@pytest.mark.parametrize("pitch", [90.0, -90.0])
def test_vertical_cameras_canonicalise_with_roll_folded_into_yaw(pitch: float) -> None:
    cam = camera_from_height_pitch_roll(2.0, pitch, 30.0, K_HD, 1920, 1080)
    assert height_pitch_roll(cam)[2] == 0.0
    placed = yawed_camera(cam, 1.0, np.array([3.0, -2.0]))
    canonical = transform_camera(placed, *canonical_world_transform(placed))
    expected = camera_from_height_pitch_roll(2.0, pitch, 0.0, K_HD, 1920, 1080)
    np.testing.assert_allclose(canonical.R, expected.R, atol=1e-9)
    np.testing.assert_allclose(canonical.center, [0, 2, 0], atol=1e-9)


def test_transform_camera_and_points_are_consistent() -> None:
    R, t = look_at([2.0, 1.6, 4.0], [0.0, 0.9, 0.0], roll_deg=2.0)
    cam = Camera(K=K_HD, R=R, t=t, width=1920, height=1080, dist=[0.05, 0, 0, 0, 0])
    new_R = Rotation.from_rotvec([0.1, 0.7, -0.2]).as_matrix()
    new_t = np.array([1.0, -2.0, 0.5])
    points = np.random.default_rng(4).uniform(-1, 1, (20, 3))
    moved = transform_camera(cam, new_R, new_t)
    np.testing.assert_allclose(
        moved.project(transform_points(points, new_R, new_t))[0], cam.project(points)[0], atol=1e-9
    )
    np.testing.assert_allclose(moved.center, new_R @ cam.center + new_t, atol=1e-12)
    torch_points = transform_points(torch.tensor(points), new_R, new_t)
    np.testing.assert_allclose(torch_points.numpy(), points @ new_R.T + new_t, atol=1e-12)


# --------------------------------------------------------------------------- embeddings


@settings(max_examples=60, deadline=None)
@given(
    pitch=st.floats(-80.0, 80.0),
    roll=st.floats(-60.0, 60.0),
    yaw=st.floats(-math.pi, math.pi),
    height=st.floats(0.5, 5.0),
)
def test_rt_embedding_is_yxz_euler_and_yaw_free(
    pitch: float, roll: float, yaw: float, height: float
) -> None:
    cam = yawed_camera(
        camera_from_height_pitch_roll(height, pitch, roll, K_HD, 1920, 1080), yaw, np.zeros(2)
    )
    embedding = camera_rt_embedding(cam)
    euler = Rotation.from_matrix(cam.R.T @ FLIP_YZ).as_euler("YXZ")
    np.testing.assert_allclose(embedding[:2], euler[1:], atol=1e-9)
    np.testing.assert_allclose(
        embedding, [-math.radians(pitch), -math.radians(roll), height], atol=1e-9
    )


def test_embeddings_hand_computed_and_batched() -> None:
    K = np.array([[3500.0, 0.0, 2000.0], [0.0, 3400.0, 1500.0], [0.0, 0.0, 1.0]])
    landscape = camera_from_height_pitch_roll(1.4, 5.0, 1.0, K, 4112, 3008)
    np.testing.assert_allclose(
        camera_k_embedding(landscape), [1.0, 3400 / 3500, 2000 / 3500, (1500 + 552) / 3500]
    )
    portrait = camera_from_height_pitch_roll(1.4, 5.0, 1.0, K, 3008, 4112)
    np.testing.assert_allclose(camera_k_embedding(portrait, scale=1000.0), [3.5, 3.4, 2.552, 1.5])
    stacked = stack_cameras([landscape, portrait])
    np.testing.assert_allclose(
        camera_k_embeddings(stacked["K"], stacked["sizes"]),
        np.stack([camera_k_embedding(landscape), camera_k_embedding(portrait)]),
    )
    np.testing.assert_allclose(
        camera_rt_embeddings(stacked["R"], stacked["t"]),
        np.stack([camera_rt_embedding(landscape), camera_rt_embedding(portrait)]),
    )


# --------------------------------------------------------------------------- JSON


def test_json_round_trip_full_calibration() -> None:
    R, t = look_at([2.0, 1.6, 4.0], [0.0, 0.9, 0.0], roll_deg=2.0)
    cam = Camera(K=K_HD, R=R, t=t, width=1920, height=1080, dist=[0.1, -0.02, 0.001, 0, 0.003])
    again = Camera.from_dict(json.loads(json.dumps(cam.to_dict())))
    assert again.is_close(cam, atol=0.0)


def test_json_short_form_and_optional_dist() -> None:
    d = {"width": 1920, "height": 1080, "K": K_HD.tolist(), "height_m": 1.5}
    d |= {"pitch_deg": 12, "roll_deg": -2.0, "name": "gym cam 1"}
    cam = Camera.from_dict(d)
    assert cam.is_close(camera_from_height_pitch_roll(1.5, 12.0, -2.0, K_HD, 1920, 1080))
    assert not cam.has_distortion
    with_dist = Camera.from_dict({**d, "dist": [0.1, 0, 0, 0, 0]})
    np.testing.assert_array_equal(with_dist.dist, [0.1, 0, 0, 0, 0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"width": None}, "missing key 'width'"),
        ({"K": None}, "missing key 'K'"),
        ({"t": None}, "missing key 't'"),
        ({"K": [[1, 0, 0], [0, 1, 0]]}, r"K: expected shape \(3, 3\)"),
        ({"R": [[1, 0, 0], [0, 1, 0], [0, 0, "x"]]}, "R: expected numbers"),
        ({"R": np.diag([1, 1, 2]).tolist()}, "R: not orthonormal"),
        ({"height": 10.5}, "height: expected a positive integer"),
        ({"dist": [0.1, 0.2]}, r"dist: expected shape \(5,\)"),
        ({"R": None, "t": None}, "missing extrinsics"),
        ({"pitch_deg": 3.0}, "either 'R' and 't'"),
    ],
)
def test_bad_camera_dicts_name_the_problem(change: dict, message: str) -> None:
    d = {"width": 1920, "height": 1080, "K": K_HD.tolist(), "R": np.eye(3).tolist()}
    d["t"] = [0.0, 0.0, 0.0]
    for key, value in change.items():
        if value is None:
            d.pop(key)
        else:
            d[key] = value
    with pytest.raises(ValueError, match=message):
        Camera.from_dict(d)


def test_bad_short_form_dicts() -> None:
    d = {"width": 1920, "height": 1080, "K": K_HD.tolist(), "height_m": 1.5, "pitch_deg": 10.0}
    with pytest.raises(ValueError, match="missing key 'roll_deg'"):
        Camera.from_dict(d)
    with pytest.raises(ValueError, match="pitch_deg: expected a value in"):
        Camera.from_dict({**d, "roll_deg": 0.0, "pitch_deg": 120.0})
    with pytest.raises(ValueError, match="height_m: the camera must be above"):
        Camera.from_dict({**d, "roll_deg": 0.0, "height_m": -1.0})
    with pytest.raises(ValueError, match="roll_deg: expected a number"):
        Camera.from_dict({**d, "roll_deg": "level"})
    with pytest.raises(TypeError, match="mapping"):
        Camera.from_dict([1, 2, 3])  # type: ignore[arg-type]
