"""Tests for mocap_core.rig: the virtual-view rig sampler and its config."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.spatial.transform import Rotation

from mocap_core.cameras import (
    Camera,
    camera_from_height_pitch_roll,
    height_pitch_roll,
    intrinsics_from_fov,
    transform_camera,
)
from mocap_core.rig import RigConfig, activity_area, sample_rig, sample_rig_arrays


def placed_camera(
    height: float, pitch: float, roll: float, size: tuple[int, int], yaw: float, offset: tuple
) -> Camera:
    """A camera of given height/pitch/roll, turned by yaw (radians) and moved on the ground."""
    width, image_height = size
    K = intrinsics_from_fov(width, image_height, 60.0)
    cam = camera_from_height_pitch_roll(height, pitch, roll, K, width, image_height)
    yaw_rotation = Rotation.from_rotvec([0.0, yaw, 0.0]).as_matrix()
    return transform_camera(cam, yaw_rotation, np.array([offset[0], 0.0, offset[1]]))


INPUT_CAMERAS = [
    placed_camera(1.34, 5.7, 0.0, (4112, 3008), 0.0, (0.0, 0.0)),  # RICH-like, nearly level
    placed_camera(2.5, 25.0, -3.0, (1920, 1080), 2.0, (4.0, -7.0)),
    placed_camera(1.6, 12.0, 2.0, (1080, 1920), -1.0, (-3.0, 1.0)),  # portrait
    placed_camera(1.2, 0.0, 0.0, (1280, 720), 0.5, (0.0, 0.0)),  # level: default distance
]


def horizontal_distance(a: np.ndarray, b: np.ndarray) -> float:
    return math.hypot(a[0] - b[0], a[2] - b[2])


@pytest.mark.parametrize("input_index", range(len(INPUT_CAMERAS)))
def test_rigs_see_the_area_from_around_it(input_index: int) -> None:
    input_cam = INPUT_CAMERAS[input_index]
    config = RigConfig()
    centre, radius = activity_area(input_cam, config)
    assert centre[1] == 0.0 and radius == config.area_radius_m
    rng = np.random.default_rng(input_index)
    spacing = 360.0 / config.num_views
    from_input = input_cam.center - centre
    input_azimuth = math.degrees(math.atan2(from_input[0], from_input[2]))
    for _ in range(100):
        rig = sample_rig(input_cam, config, rng)
        assert len(rig) == config.num_views and rig[0] is input_cam
        for k, cam in enumerate(rig):
            pixels, depth = cam.project(centre[None])
            assert depth[0] > 0
            assert 0 <= pixels[0, 0] <= cam.width and 0 <= pixels[0, 1] <= cam.height
            if k == 0:
                continue
            assert (cam.width, cam.height) == (input_cam.width, input_cam.height)
            assert not cam.has_distortion
            assert config.height_m[0] <= cam.center[1] <= config.height_m[1]
            distance = horizontal_distance(cam.center, centre)
            assert config.distance_m[0] - 1e-9 <= distance <= config.distance_m[1] + 1e-9
            # Down-ish: horizontal or below, and facing the area.
            axis = cam.optical_axis
            assert axis[1] <= 1e-12
            towards_centre = (centre - cam.center) * [1, 0, 1]
            assert axis @ towards_centre > 0
            _, pitch, roll = height_pitch_roll(cam)
            assert 0.0 <= pitch < 90.0
            assert config.roll_deg[0] - 1e-9 <= roll <= config.roll_deg[1] + 1e-9
            hfov = math.degrees(2 * math.atan(cam.width / 2 / cam.K[0, 0]))
            assert config.hfov_deg[0] - 1e-9 <= hfov <= config.hfov_deg[1] + 1e-9
            offset = cam.center - centre
            azimuth = math.degrees(math.atan2(offset[0], offset[2]))
            deviation = (azimuth - input_azimuth - k * spacing + 180.0) % 360.0 - 180.0
            assert abs(deviation) <= config.azimuth_jitter_deg + 1e-9


def test_activity_area_on_the_optical_axis() -> None:
    config = RigConfig()
    cam = placed_camera(2.0, 20.0, 5.0, (1920, 1080), 0.0, (0.0, 0.0))
    centre, _ = activity_area(cam, config)
    np.testing.assert_allclose(centre, [0.0, 0.0, -2.0 / math.tan(math.radians(20.0))], atol=1e-12)
    # Level: the point 4 m along the axis, dropped to the ground.
    level = placed_camera(1.5, 0.0, 0.0, (1920, 1080), 0.0, (0.0, 0.0))
    np.testing.assert_allclose(activity_area(level, config)[0], [0, 0, -4.0], atol=1e-12)
    # A hit beyond max_area_distance_m (1.5 / tan 2 deg = 43 m) falls back the same way.
    shallow = placed_camera(1.5, 2.0, 0.0, (1920, 1080), 0.0, (0.0, 0.0))
    expected = 4.0 * np.array([0.0, 0.0, -math.cos(math.radians(2.0))])
    np.testing.assert_allclose(activity_area(shallow, config)[0], expected, atol=1e-12)


def test_seeded_determinism() -> None:
    cam, config = INPUT_CAMERAS[1], RigConfig(num_views=6, azimuth_jitter_deg=10.0)
    first = sample_rig_arrays(cam, config, np.random.default_rng(7))
    second = sample_rig_arrays(cam, config, np.random.default_rng(7))
    other = sample_rig_arrays(cam, config, np.random.default_rng(8))
    assert first["R"].shape == (6, 3, 3) and first["sizes"].shape == (6, 2)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert not np.allclose(first["t"][1:], other["t"][1:])
    rig = sample_rig(cam, config, np.random.default_rng(7))
    np.testing.assert_array_equal(np.stack([c.R for c in rig]), first["R"])


def test_unreachable_aim_is_pulled_back_to_the_area() -> None:
    # Narrow views high up aiming at head height: the area centre would be out of frame.
    config = RigConfig(
        height_m=(3.0, 3.0),
        target_height_m=(1.5, 1.5),
        hfov_deg=(20.0, 20.0),
        distance_m=(2.5, 3.0),
    )
    cam = INPUT_CAMERAS[1]
    centre, _ = activity_area(cam, config)
    for seed in range(20):
        for virtual in sample_rig(cam, config, np.random.default_rng(seed))[1:]:
            pixels, depth = virtual.project(centre[None])
            assert depth[0] > 0
            assert 0.1 * virtual.width <= pixels[0, 0] <= 0.9 * virtual.width
            assert 0.1 * virtual.height <= pixels[0, 1] <= 0.9 * virtual.height


def test_input_focal_and_custom_image_size() -> None:
    cam = INPUT_CAMERAS[0]
    same = sample_rig(cam, RigConfig(hfov_deg=None), np.random.default_rng(0))
    for virtual in same[1:]:
        np.testing.assert_array_equal(virtual.K, cam.K)
    resized = sample_rig(
        cam, RigConfig(hfov_deg=None, image_size=(640, 480)), np.random.default_rng(0)
    )
    for virtual in resized[1:]:
        assert (virtual.width, virtual.height) == (640, 480)
        np.testing.assert_allclose(virtual.K[:2, 2], [320, 240])
        assert virtual.K[0, 0] == cam.K[0, 0]


def test_explicit_area_centre() -> None:
    cam, config = INPUT_CAMERAS[0], RigConfig()
    centre = np.array([1.0, 0.0, -5.0])
    rig = sample_rig(cam, config, np.random.default_rng(3), area_centre=centre)
    for virtual in rig[1:]:
        distance = horizontal_distance(virtual.center, centre)
        assert config.distance_m[0] <= distance <= config.distance_m[1]
    with pytest.raises(ValueError, match="on the ground"):
        sample_rig(cam, config, np.random.default_rng(3), area_centre=np.array([1.0, 0.9, -5.0]))
    with pytest.raises(TypeError, match="Generator"):
        sample_rig(cam, config, 3)  # type: ignore[arg-type]


def test_camera_below_ground_is_refused() -> None:
    cam = INPUT_CAMERAS[0]
    sunk = transform_camera(cam, np.eye(3), np.array([0.0, -5.0, 0.0]))
    with pytest.raises(ValueError, match="above the ground"):
        activity_area(sunk, RigConfig())


def test_config_round_trip_and_frozen() -> None:
    config = RigConfig(num_views=5, distance_m=(3.0, 4.0), hfov_deg=None, image_size=(800, 600))
    assert RigConfig.model_validate(config.model_dump()) == config
    via_json = RigConfig.model_validate(json.loads(json.dumps(config.model_dump(mode="json"))))
    assert via_json == config and via_json.image_size == (800, 600)
    with pytest.raises(ValidationError):
        config.num_views = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_views": 1}, "greater than or equal to 2"),
        ({"distance_m": (5.0, 3.0)}, "distance_m: min 5.0 is greater than max 3.0"),
        ({"height_m": (0.0, 2.0)}, "height_m: cameras must be above"),
        ({"hfov_deg": (10.0, 190.0)}, "hfov_deg: expected values in"),
        ({"azimuth_jitter_deg": 50.0}, "azimuth_jitter_deg: must be below"),
        ({"area_radius_m": 3.0}, "area_radius_m"),
        ({"look_jitter_m": 2.0}, "look_jitter_m"),
        ({"distance_m": (2.0, float("inf"))}, "finite"),
        ({"zoom": 2}, "Extra inputs"),
    ],
)
def test_config_validation(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RigConfig(**fields)


def test_sampling_is_fast() -> None:
    cam, config, rng = INPUT_CAMERAS[1], RigConfig(), np.random.default_rng(0)
    sample_rig(cam, config, rng)
    start = time.perf_counter()
    for _ in range(300):
        sample_rig(cam, config, rng)
    elapsed = time.perf_counter() - start
    # Measured ~3500 rigs/s on one core; the bound leaves room for a loaded shared machine.
    assert 300 / elapsed > 250
