"""Virtual-view rigs sampled around the input camera's activity area (DESIGN 2.1).

The paper's code lifts into the fixed, calibrated rigs of its test scenes; this project
samples the V - 1 virtual cameras relative to the input camera instead, so that a new
calibrated camera needs no new rig. The default distribution mimics RICH (method-notes 2.2):
cameras 2.5-5.5 m from the activity area, 1-2 m high, looking at the area from azimuths
spread around it. The :class:`RigConfig` is part of a model's config and is saved with its
checkpoint (``config.model_dump()``).

Sampling, for virtual camera k = 1 .. V-1 (world frame of the input camera, y-up):

- azimuth about the area centre: the input camera's azimuth + ``k * 360 / V`` degrees +
  uniform jitter in ``+-azimuth_jitter_deg`` (azimuth a puts the camera at
  ``centre + d (sin a, 0, cos a)``), so the V views share the circle evenly;
- horizontal distance ``d`` ~ U(``distance_m``), centre height ~ U(``height_m``);
- look target: the area centre raised by ~U(``target_height_m``) (capped at the camera's own
  height so the camera never looks up) and shifted on the ground by ~U(+-``look_jitter_m``)
  in x and z; roll ~ U(``roll_deg``), same sign convention as
  :func:`mocap_core.cameras.camera_from_height_pitch_roll`;
- intrinsics: square pixels, horizontal FOV ~ U(``hfov_deg``) and the principal point at the
  image centre, or the input camera's focal lengths when ``hfov_deg`` is None; image size
  ``image_size`` or the input camera's; no distortion.

The area centre must stay visible: a camera whose view of it falls outside the central 80%
of its image has its look target pulled halfway back towards the centre, repeatedly, ending at
the centre itself (which then sits on the principal point). This uses no random draws, so a
rig depends only on the generator's state.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mocap_core.cameras import Camera, look_at_batch, project_points

Range = tuple[float, float]

# Fraction of the image kept free on every side when checking that the area centre is seen.
_VISIBILITY_MARGIN = 0.1
# Halvings of the aim offset before a camera looks straight at the area centre.
_AIM_RETRIES = 6


class RigConfig(BaseModel):
    """Distribution of virtual-view rigs around the input camera (frozen, serialisable).

    Ranges are ``(min, max)`` and sampled uniformly. Lengths in metres, angles in degrees.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    num_views: int = Field(4, ge=2, description="views including the input view 0")
    distance_m: Range = Field(
        (2.5, 5.5), description="horizontal distance of a virtual camera from the area centre"
    )
    height_m: Range = Field((1.0, 2.0), description="virtual camera centre height above ground")
    azimuth_jitter_deg: float = Field(
        20.0, ge=0.0, description="uniform jitter around the evenly spaced azimuths"
    )
    target_height_m: Range = Field(
        (0.8, 1.1), description="height above the area centre a virtual camera aims at"
    )
    look_jitter_m: float = Field(0.3, ge=0.0, description="ground-plane jitter of the aim point")
    roll_deg: Range = Field((-3.0, 3.0), description="roll of a virtual camera")
    hfov_deg: Range | None = Field(
        (45.0, 75.0), description="horizontal field of view; None = the input camera's focal"
    )
    image_size: tuple[int, int] | None = Field(
        None, description="(width, height) pixels of the virtual views; None = the input's"
    )
    area_radius_m: float = Field(1.5, gt=0.0, description="radius of the activity area")
    default_subject_distance_m: float = Field(
        4.0, gt=0.0, description="distance along the optical axis used when it misses the ground"
    )
    max_area_distance_m: float = Field(
        15.0, gt=0.0, description="farthest ground hit of the optical axis taken as the area"
    )

    @model_validator(mode="after")
    def _check_ranges(self) -> RigConfig:
        ranges = {
            "distance_m": self.distance_m,
            "height_m": self.height_m,
            "target_height_m": self.target_height_m,
            "roll_deg": self.roll_deg,
        }
        if self.hfov_deg is not None:
            ranges["hfov_deg"] = self.hfov_deg
        for name, (low, high) in ranges.items():
            if low > high:
                raise ValueError(f"{name}: min {low} is greater than max {high}")
        if self.distance_m[0] <= 0:
            raise ValueError(f"distance_m: must be positive, got {self.distance_m}")
        if self.height_m[0] <= 0:
            raise ValueError(f"height_m: cameras must be above the ground, got {self.height_m}")
        if self.target_height_m[0] < 0:
            raise ValueError(f"target_height_m: must be >= 0, got {self.target_height_m}")
        if not (-90.0 < self.roll_deg[0] and self.roll_deg[1] < 90.0):
            raise ValueError(f"roll_deg: expected values in (-90, 90), got {self.roll_deg}")
        if self.hfov_deg is not None and not (0.0 < self.hfov_deg[0] and self.hfov_deg[1] < 180.0):
            raise ValueError(f"hfov_deg: expected values in (0, 180), got {self.hfov_deg}")
        if self.image_size is not None and min(self.image_size) <= 0:
            raise ValueError(
                f"image_size: expected positive (width, height), got {self.image_size}"
            )
        # Beyond half the spacing, neighbouring views could swap places or coincide.
        if self.azimuth_jitter_deg >= 180.0 / self.num_views:
            raise ValueError(
                f"azimuth_jitter_deg: must be below 180 / num_views = {180.0 / self.num_views:g},"
                f" got {self.azimuth_jitter_deg}"
            )
        if self.area_radius_m >= self.distance_m[0]:
            raise ValueError(
                f"area_radius_m ({self.area_radius_m}) must be below the nearest camera "
                f"distance ({self.distance_m[0]})"
            )
        if self.look_jitter_m >= self.distance_m[0] / 2:
            raise ValueError(
                f"look_jitter_m ({self.look_jitter_m}) must be below half the nearest camera "
                f"distance ({self.distance_m[0] / 2})"
            )
        return self


def activity_area(cam: Camera, config: RigConfig) -> tuple[np.ndarray, float]:
    """Where the input camera looks: ``(centre (3,) metres on the ground, radius metres)``.

    The centre is the ground hit of the optical axis when it meets the ground no farther than
    ``config.max_area_distance_m`` horizontally from the camera; otherwise (level or upward
    axis, or a far hit) the point ``config.default_subject_distance_m`` along the axis,
    dropped vertically to the ground. The radius is ``config.area_radius_m``.

    Raises:
        ValueError: the camera centre is not above the ground.
    """
    centre = cam.center
    if not centre[1] > 0:
        raise ValueError(f"input camera: centre must be above the ground, got y = {centre[1]} m")
    axis = cam.optical_axis
    if axis[1] < 0:
        hit = centre + (-centre[1] / axis[1]) * axis
        if math.hypot(hit[0] - centre[0], hit[2] - centre[2]) <= config.max_area_distance_m:
            hit[1] = 0.0
            return hit, config.area_radius_m
    fallback = centre + config.default_subject_distance_m * axis
    fallback[1] = 0.0
    return fallback, config.area_radius_m


def sample_rig_arrays(
    input_camera: Camera,
    config: RigConfig,
    rng: np.random.Generator,
    area_centre: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Sample one rig as stacked arrays (the fast path for training data).

    Args:
        input_camera: view 0, in its y-up world (ground y = 0), centre above the ground.
        config: the rig distribution.
        rng: the only source of randomness; equal states give equal rigs.
        area_centre: ``(3,)`` metres on the ground (y = 0) to place the rig around; default
            :func:`activity_area` of the input camera.

    Returns:
        ``K (V, 3, 3)``, ``R (V, 3, 3)``, ``t (V, 3)``, ``dist (V, 5)`` float64 and
        ``sizes (V, 2)`` int64 ``(width, height)``; index 0 is the input camera as given.
    """
    if not isinstance(input_camera, Camera):
        raise TypeError(f"input_camera: expected a Camera, got {type(input_camera).__name__}")
    if not isinstance(config, RigConfig):
        raise TypeError(f"config: expected a RigConfig, got {type(config).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy Generator, got {type(rng).__name__}")
    if area_centre is None:
        centre, _ = activity_area(input_camera, config)
    else:
        centre = np.asarray(area_centre, dtype=np.float64)
        if centre.shape != (3,) or not np.all(np.isfinite(centre)):
            raise ValueError(f"area_centre: expected 3 finite numbers, got {area_centre!r}")
        if abs(centre[1]) > 1e-6:
            raise ValueError(f"area_centre: must lie on the ground (y = 0), got y = {centre[1]}")
        centre = centre * np.array([1.0, 0.0, 1.0])

    num_virtual = config.num_views - 1
    width, height = config.image_size or (input_camera.width, input_camera.height)

    # A fixed order of draws keeps rigs reproducible from the generator state.
    spacing = 2 * math.pi / config.num_views
    jitter = math.radians(config.azimuth_jitter_deg)
    azimuth_noise = rng.uniform(-jitter, jitter, num_virtual)
    distances = rng.uniform(*config.distance_m, num_virtual)
    heights = rng.uniform(*config.height_m, num_virtual)
    target_heights = rng.uniform(*config.target_height_m, num_virtual)
    look_offsets = rng.uniform(-config.look_jitter_m, config.look_jitter_m, (num_virtual, 2))
    rolls_deg = rng.uniform(*config.roll_deg, num_virtual)
    hfovs = rng.uniform(*config.hfov_deg, num_virtual) if config.hfov_deg is not None else None

    from_centre = input_camera.center - centre
    if math.hypot(from_centre[0], from_centre[2]) > 1e-9:
        input_azimuth = math.atan2(from_centre[0], from_centre[2])
    else:  # camera right above the centre: use the side it faces away from
        input_azimuth = math.atan2(-input_camera.R[2, 0], -input_camera.R[2, 2])
    azimuths = input_azimuth + spacing * np.arange(1, config.num_views) + azimuth_noise
    eyes = np.stack(
        [
            centre[0] + distances * np.sin(azimuths),
            heights,
            centre[2] + distances * np.cos(azimuths),
        ],
        axis=-1,
    )
    aim_offsets = np.stack(
        [look_offsets[:, 0], np.minimum(target_heights, heights), look_offsets[:, 1]], axis=-1
    )

    if hfovs is None:
        K = np.repeat(input_camera.K[None], num_virtual, axis=0)
        if (width, height) != (input_camera.width, input_camera.height):
            K[:, 0, 2], K[:, 1, 2] = width / 2, height / 2
    else:
        # Same formula as intrinsics_from_fov, for all views at once.
        focals = (width / 2) / np.tan(np.radians(hfovs) / 2)
        K = np.zeros((num_virtual, 3, 3))
        K[:, 0, 0], K[:, 1, 1] = focals, focals
        K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = width / 2, height / 2, 1.0

    up = np.array([0.0, 1.0, 0.0])
    pull = np.ones(num_virtual)
    for attempt in range(_AIM_RETRIES + 1):
        R, t = look_at_batch(eyes, centre + pull[:, None] * aim_offsets, up, rolls_deg)
        if attempt == _AIM_RETRIES:
            break
        pixels, depth = project_points(centre[None], K, R, t)
        u, v = pixels[:, 0, 0], pixels[:, 0, 1]
        seen = (
            (depth[:, 0] > 0)
            & (u >= _VISIBILITY_MARGIN * width)
            & (u <= (1 - _VISIBILITY_MARGIN) * width)
            & (v >= _VISIBILITY_MARGIN * height)
            & (v <= (1 - _VISIBILITY_MARGIN) * height)
        )
        if seen.all():
            break
        pull = np.where(seen, pull, 0.0 if attempt == _AIM_RETRIES - 1 else pull / 2)

    return {
        "K": np.concatenate([input_camera.K[None], K]),
        "R": np.concatenate([input_camera.R[None], R]),
        "t": np.concatenate([input_camera.t[None], t]),
        "dist": np.concatenate([input_camera.dist[None], np.zeros((num_virtual, 5))]),
        "sizes": np.array(
            [[input_camera.width, input_camera.height]] + [[width, height]] * num_virtual,
            dtype=np.int64,
        ),
    }


def sample_rig(
    input_camera: Camera,
    config: RigConfig,
    rng: np.random.Generator,
    area_centre: np.ndarray | None = None,
) -> list[Camera]:
    """Sample a rig of ``config.num_views`` cameras; index 0 is ``input_camera`` itself.

    See :func:`sample_rig_arrays` for the arguments and the module docstring for the
    distribution. Every virtual camera is above the ground, looks horizontally or down at
    the area and sees the area centre inside its image.
    """
    arrays = sample_rig_arrays(input_camera, config, rng, area_centre)
    virtual = [
        Camera(
            K=arrays["K"][i],
            R=arrays["R"][i],
            t=arrays["t"][i],
            width=int(arrays["sizes"][i, 0]),
            height=int(arrays["sizes"][i, 1]),
            dist=arrays["dist"][i],
        )
        for i in range(1, config.num_views)
    ]
    return [input_camera, *virtual]
