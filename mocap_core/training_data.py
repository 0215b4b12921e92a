"""Training samples: scenes drawn around 3D motion windows, and 2D-track samples (DESIGN 2.5).

The contract is docs/TRAINING.md ("Scenes" and "One sample"). Everything here is pure numpy:
the caller (``data_catalog.training_dataset``) reads the windows from the stores and hands
them in with a ``numpy.random.Generator``, the only source of randomness, so a sample is a
pure function of its inputs and the generator's state.

**Scene** (:func:`make_scene_sample`), in the canonical frame of the input camera (DESIGN
2.1: metres, y-up, ground y = 0, origin on the ground below the input camera, which looks
along -Z):

1. input camera (:func:`draw_input_camera`): image size, horizontal FOV, height, pitch
   (positive looks down), roll, all drawn from :class:`SceneConfig`;
2. bone-length augmentation (:func:`augment_bones`), a random yaw about the vertical, and
   placement of the motion's mean root ground position at a horizontal distance
   ``d ~ U(subject_distance_m)`` from the origin, at a horizontal angle
   ``a ~ U(+-lateral_fraction * hfov / 2)`` from the optical axis (``a > 0`` to the image
   right): ground point ``(d sin a, 0, -d cos a)``;
3. stage 2 only (``num_views > 1``): a rig from :func:`mocap_core.rig.sample_rig_arrays`
   around that ground point plus a jitter uniform in a disc of radius ``area_jitter_m``;
4. projection with the pinhole model into every view; a frame is *bad* when its root is not
   valid, or a valid joint lies more than ``max_outside_px`` outside an image or less than
   ``MIN_DEPTH_M`` in front of a camera (behind it its pixels mean nothing). The longest run
   of good frames is kept; when it is shorter than ``min(min_frames, window, L0)`` the whole
   scene is drawn again, at most ``max_redraws`` times, and the attempt with the longest run
   is used;
5. a random crop of ``min(window, run)`` frames inside that run (so raw windows longer than
   ``window`` give the trimming room to keep full-length samples), the encodings
   (:mod:`mocap_core.representation`), camera embeddings and ground pointmaps.

**Feature mask.** Channel pair ``2j, 2j+1`` belongs to joint ``j`` (slot 0, the root, in both
encodings), the last pair to the scale. On a valid frame (``< length``) the root and scale
channels are always supervised (frames without a valid root are trimmed, 3D, or cut, 2D);
a joint's channels are supervised when that joint is valid in that frame. Padding is 0
everywhere. The global encoding of view 0 shares view 0's mask.

**Sample values on unsupervised entries**: padding frames are zeros in every array; an
invalid joint's local slot is 0 (on the root) and its global slot is the root's, as
:func:`mocap_core.representation.encode_local` / ``encode_global`` write them. ``joints`` of
invalid joints are meaningless (bone augmentation collapses them onto their parent).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mocap_core.cameras import (
    Camera,
    camera_from_height_pitch_roll,
    camera_k_embeddings,
    camera_rt_embeddings,
    intrinsics_from_fov,
)
from mocap_core.joint_sets import JointSet
from mocap_core.kinematics import scale_bones, topological_order
from mocap_core.normalize import ground
from mocap_core.pointmaps import ground_pointmaps
from mocap_core.representation import (
    FeatureStats,
    FeatureStatsAccumulator,
    encode_global,
    encode_local,
    feature_dim,
)
from mocap_core.rig import RigConfig, sample_rig_arrays
from mocap_core.scene import clean_frame_run, outside_image_distance, project_to_views, yaw_matrix

Range = tuple[float, float]

#: A joint closer than this to a camera's image plane (camera-frame z, metres), or behind it,
#: makes its frame bad: its pixels are meaningless or explode.
MIN_DEPTH_M = 0.1

#: Per-bone factors are ``1 + std * z`` with ``z ~ N(0, 1)`` clipped to this many standard
#: deviations either side, so no single bone gets an implausible length.
PER_BONE_TRUNCATION = 2.0

#: Percentile of the per-frame lowest foot joint taken as a motion's contact height (the
#: rule of :func:`mocap_core.normalize.ground`, which prepared the stores).
CONTACT_PERCENTILE = 5.0

#: Unknown image size of a 2D track: the square frame is this factor times the track's
#: largest extent (the same margin as the encoding's per-frame box).
TRACK_FRAME_MARGIN = 1.2

#: The keys of :meth:`TrainingSample.as_dict`, in the contract's order.
SAMPLE_KEYS: tuple[str, ...] = (
    "local",
    "global0",
    "feature_mask",
    "length",
    "rt",
    "k",
    "pointmap",
    "K",
    "R",
    "t",
    "sizes",
    "joints",
    "camera_known",
)


# ---------------------------------------------------------------------------------------------
# Configuration


def _default_image_sizes() -> list[tuple[int, int]]:
    return [(1920, 1080), (1280, 720), (1080, 1920)]


class SceneConfig(BaseModel):
    """Distribution of training scenes around the input camera (frozen, saved in checkpoints).

    Ranges are ``(min, max)``, drawn uniformly. Lengths in metres, angles in degrees, image
    sizes ``(width, height)`` in pixels.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    image_sizes: list[tuple[int, int]] = Field(
        default_factory=_default_image_sizes,
        description="input image sizes (width, height) to draw from",
    )
    image_size_weights: list[float] | None = Field(
        None, description="probability weights of image_sizes (normalised); None = equal"
    )
    hfov_deg: Range = Field((45.0, 75.0), description="input camera horizontal field of view")
    camera_height_m: Range = Field((0.8, 2.5), description="input camera height above ground")
    camera_pitch_deg: Range = Field(
        (0.0, 30.0), description="input camera pitch, positive = looking down"
    )
    camera_roll_deg: Range = Field((-4.0, 4.0), description="input camera roll")
    subject_distance_m: Range = Field(
        (2.5, 8.0), description="horizontal distance from the camera to the motion's mean root"
    )
    lateral_fraction: float = Field(
        0.6, ge=0.0, le=1.0, description="largest horizontal offset angle, fraction of half-FOV"
    )
    area_jitter_m: float = Field(
        0.5, ge=0.0, description="radius of the disc the rig centre is jittered in (stage 2)"
    )
    bone_scale_global: Range = Field(
        (0.85, 1.15), description="global bone-length factor shared by all bones"
    )
    bone_scale_per_bone_std: float = Field(
        0.05, ge=0.0, le=0.2, description="std of the per-bone factor around 1 (twins share)"
    )
    max_outside_px: float = Field(
        100.0, ge=0.0, description="frames with a valid joint farther outside an image are cut"
    )
    min_frames: int = Field(30, ge=1, description="shortest clean run accepted without redraw")
    max_redraws: int = Field(8, ge=0, description="scene redraws when the run is too short")
    pointmap_size: int = Field(224, ge=8, description="ground pointmap side, pixels")
    pointmap_max_range_m: float | None = Field(
        None,
        gt=0.0,
        description="ground hits farther from the camera are dropped (0); None keeps all, "
        "which near the horizon reach kilometres",
    )
    rig: RigConfig = Field(default_factory=RigConfig, description="virtual-view rig (stage 2)")

    @model_validator(mode="after")
    def _check(self) -> SceneConfig:
        if not self.image_sizes:
            raise ValueError("image_sizes: need at least one (width, height)")
        for width, height in self.image_sizes:
            if width <= 0 or height <= 0:
                raise ValueError(f"image_sizes: expected positive sizes, got {(width, height)}")
        if self.image_size_weights is not None:
            weights = self.image_size_weights
            if len(weights) != len(self.image_sizes):
                raise ValueError(
                    f"image_size_weights: {len(weights)} weights for "
                    f"{len(self.image_sizes)} image sizes"
                )
            if any(w < 0 for w in weights) or not sum(weights) > 0:
                raise ValueError(f"image_size_weights: must be >= 0 and not all 0, got {weights}")
        ranges = {
            "hfov_deg": self.hfov_deg,
            "camera_height_m": self.camera_height_m,
            "camera_pitch_deg": self.camera_pitch_deg,
            "camera_roll_deg": self.camera_roll_deg,
            "subject_distance_m": self.subject_distance_m,
            "bone_scale_global": self.bone_scale_global,
        }
        for name, (low, high) in ranges.items():
            if low > high:
                raise ValueError(f"{name}: min {low} is greater than max {high}")
        if not (0.0 < self.hfov_deg[0] and self.hfov_deg[1] < 180.0):
            raise ValueError(f"hfov_deg: expected values in (0, 180), got {self.hfov_deg}")
        if self.camera_height_m[0] <= 0:
            raise ValueError(
                f"camera_height_m: must be above the ground, got {self.camera_height_m}"
            )
        if not (-90.0 < self.camera_pitch_deg[0] and self.camera_pitch_deg[1] < 90.0):
            raise ValueError(
                f"camera_pitch_deg: expected values in (-90, 90), got {self.camera_pitch_deg}"
            )
        if not (-90.0 < self.camera_roll_deg[0] and self.camera_roll_deg[1] < 90.0):
            raise ValueError(
                f"camera_roll_deg: expected values in (-90, 90), got {self.camera_roll_deg}"
            )
        if self.subject_distance_m[0] <= 0:
            raise ValueError(f"subject_distance_m: must be positive, got {self.subject_distance_m}")
        if self.bone_scale_global[0] <= 0:
            raise ValueError(f"bone_scale_global: must be positive, got {self.bone_scale_global}")
        return self

    def image_size_probabilities(self) -> np.ndarray:
        """``(len(image_sizes),)`` float64 probabilities of the image sizes (sum 1)."""
        if self.image_size_weights is None:
            return np.full(len(self.image_sizes), 1.0 / len(self.image_sizes))
        weights = np.asarray(self.image_size_weights, dtype=np.float64)
        return weights / weights.sum()


# ---------------------------------------------------------------------------------------------
# The sample


@dataclass(frozen=True)
class TrainingSample:
    """One training sample, unnormalised (the table of docs/TRAINING.md).

    ``V`` views (1 in stage 1), ``L`` = window frames, ``J`` joints, ``C = 2 (J + 1)``,
    ``P`` = pointmap side. Frames ``>= length`` are padding (zeros).

    Attributes:
        local: ``(V, L, C) float32`` local encoding per view (raw, not z-scored).
        global0: ``(L, C) float32`` view 0's global encoding (raw).
        feature_mask: ``(V, L, C) float32`` 1 where the channel is supervised.
        length: number of valid frames.
        rt: ``(V, 3) float32`` tilt, roll (radians), height (metres) per camera.
        k: ``(V, 4) float32`` padded-K embedding per camera.
        pointmap: ``(V, P, P, 3) float32`` ground pointmaps, world XYZ metres.
        K, R: ``(V, 3, 3) float32`` intrinsics (pixels) and world-to-camera rotations.
        t: ``(V, 3) float32`` world-to-camera translations, metres.
        sizes: ``(V, 2) int64`` image (width, height), pixels.
        joints: ``(L, J, 3) float32`` the placed 3D window, metres, canonical frame (zeros for
            a 2D-track sample).
        camera_known: False for 2D-track samples (camera and pointmap conditions are zeros).
    """

    local: np.ndarray
    global0: np.ndarray
    feature_mask: np.ndarray
    length: int
    rt: np.ndarray
    k: np.ndarray
    pointmap: np.ndarray
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    sizes: np.ndarray
    joints: np.ndarray
    camera_known: bool

    def as_dict(self) -> dict[str, np.ndarray]:
        """The numpy dict of the contract (``length`` 0-d int64, ``camera_known`` 0-d bool),
        ready for the default ``DataLoader`` collation."""
        # Writable arrays: camera matrices can be read-only views, which torch's collation
        # warns about (it cannot share their memory).
        out = {key: np.require(getattr(self, key), requirements="W") for key in SAMPLE_KEYS}
        out["length"] = np.asarray(self.length, dtype=np.int64)
        out["camera_known"] = np.asarray(self.camera_known, dtype=np.bool_)
        return out


# ---------------------------------------------------------------------------------------------
# Drawing the input camera and augmenting the skeleton


def _check_rng(rng: Any) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy Generator, got {type(rng).__name__}")


def _check_config(config: Any) -> None:
    if not isinstance(config, SceneConfig):
        raise TypeError(f"config: expected a SceneConfig, got {type(config).__name__}")


def draw_input_camera(config: SceneConfig, rng: np.random.Generator) -> Camera:
    """Draw the input camera (view 0) in its canonical frame.

    Image size from ``config.image_sizes`` (with ``image_size_weights``), then horizontal
    FOV, height, pitch and roll uniformly from their ranges, in that order. Square pixels,
    principal point at the image centre, no distortion; built with
    :func:`mocap_core.cameras.camera_from_height_pitch_roll` (centre ``(0, height, 0)``,
    yaw 0: looking along -Z, pitched down by ``pitch``).
    """
    _check_config(config)
    _check_rng(rng)
    choice = int(rng.choice(len(config.image_sizes), p=config.image_size_probabilities()))
    width, height = config.image_sizes[choice]
    hfov = rng.uniform(*config.hfov_deg)
    camera_height = rng.uniform(*config.camera_height_m)
    pitch = rng.uniform(*config.camera_pitch_deg)
    roll = rng.uniform(*config.camera_roll_deg)
    K = intrinsics_from_fov(width, height, hfov)
    return camera_from_height_pitch_roll(camera_height, pitch, roll, K, width, height)


def _twin_groups(joint_set: JointSet) -> np.ndarray:
    """``(J,)`` int: a left/right pair shares the index of its left joint, others their own."""
    groups = np.arange(joint_set.num_joints)
    for left, right in joint_set.left_right_pairs:
        groups[right] = left
    return groups


def _check_motion(
    joints: np.ndarray, valid: np.ndarray | None, joint_set: JointSet
) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(joint_set, JointSet):
        raise TypeError(f"joint_set: expected a JointSet, got {type(joint_set).__name__}")
    joints = np.asarray(joints)
    if not np.issubdtype(joints.dtype, np.floating):
        raise TypeError(f"joints: expected a floating array, got dtype {joints.dtype}")
    num_joints = joint_set.num_joints
    if joints.ndim != 3 or joints.shape[1:] != (num_joints, 3):
        raise ValueError(
            f"joints: expected shape (T, {num_joints}, 3) for joint set {joint_set.name!r}, "
            f"got {joints.shape}"
        )
    if valid is None:
        valid = np.ones(joints.shape[:2], dtype=bool)
    else:
        valid = np.asarray(valid)
        if valid.dtype != np.bool_:
            raise TypeError(f"valid: expected a boolean array, got dtype {valid.dtype}")
        if valid.shape != joints.shape[:2]:
            raise ValueError(f"valid: expected shape {joints.shape[:2]}, got {valid.shape}")
    if not np.all(np.isfinite(joints[valid])):
        raise ValueError("joints: non-finite values at valid joints")
    return joints, valid


def _contact_height(joints: np.ndarray, valid: np.ndarray, feet: tuple[int, ...]) -> float | None:
    """Contact height of the valid foot joints (metres), or None when none is valid."""
    heights = np.where(valid[:, feet, None], joints[:, feet, :], np.nan)
    if not np.isfinite(heights[..., 1]).any():
        return None
    _, offset = ground(heights, tuple(range(len(feet))), percentile=CONTACT_PERCENTILE)
    return -offset


def augment_bones(
    joints: np.ndarray,
    joint_set: JointSet,
    rng: np.random.Generator,
    config: SceneConfig,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Scale every bone of a motion by random factors (bone-length augmentation).

    Bone ``parent(j) -> j`` along ``joint_set.parents`` (a spanning tree; for
    ``coco17_pelvis`` rooted at the added pelvis) is scaled by ``g * f_j`` with
    ``g ~ U(bone_scale_global)`` shared by all bones and ``f_j = 1 + std * z``, ``z ~ N(0, 1)``
    clipped to ``+-PER_BONE_TRUNCATION``; a left joint and its right twin share ``f``, so the
    body stays symmetric. Bone directions and the root's horizontal trajectory are kept
    (:func:`mocap_core.kinematics.scale_bones`); then the motion is shifted vertically so that
    its contact height (the ``CONTACT_PERCENTILE`` percentile of the per-frame lowest valid
    foot joint, ``joint_set.foot_joints``) is what it was: a shorter leg lowers the pelvis,
    the feet stay on the floor. Without any valid foot joint the vertical shift is skipped.

    An invalid joint is first collapsed onto its (already collapsed) parent, so a bone through
    it is scaled as one bone from the nearest valid ancestor; its own output position is that
    of its parent and means nothing.

    Args:
        joints: ``(T, J, 3)`` float, metres, world, y-up, ground y = 0.
        joint_set: the layout of the joint axis.
        rng: draws ``g`` then ``J`` normals (one per joint, twins use the left one's).
        config: ``bone_scale_global`` and ``bone_scale_per_bone_std``.
        valid: ``(T, J) bool`` or None (all valid).

    Returns:
        ``(T, J, 3)`` of the input's floating dtype, metres.
    """
    _check_config(config)
    _check_rng(rng)
    joints, valid = _check_motion(joints, valid, joint_set)
    parents = np.asarray(joint_set.parents)
    work = joints.astype(np.float64)
    if not valid.all():
        # Topological order: a parent is collapsed before its children read it.
        for joint in topological_order(parents).tolist():
            parent = parents[joint]
            if parent >= 0:
                work[:, joint] = np.where(valid[:, joint, None], work[:, joint], work[:, parent])

    global_factor = rng.uniform(*config.bone_scale_global)
    normals = np.clip(
        rng.standard_normal(joint_set.num_joints), -PER_BONE_TRUNCATION, PER_BONE_TRUNCATION
    )
    factors = global_factor * (
        1.0 + config.bone_scale_per_bone_std * normals[_twin_groups(joint_set)]
    )
    scaled = scale_bones(parents, work, factors)

    feet = tuple(joint_set.foot_joints)
    before = _contact_height(work, valid, feet)
    after = _contact_height(scaled, valid, feet)
    if before is not None and after is not None:
        scaled[..., 1] += before - after
    return scaled.astype(joints.dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# Scenes


@dataclass(frozen=True)
class _Scene:
    """One drawn scene over the whole raw window: the rig, the placed motion, its pixels."""

    K: np.ndarray  # (V, 3, 3)
    R: np.ndarray  # (V, 3, 3)
    t: np.ndarray  # (V, 3)
    sizes: np.ndarray  # (V, 2) int64
    joints: np.ndarray  # (L0, J, 3) placed, canonical frame
    pixels: np.ndarray  # (V, L0, J, 2)
    run: slice  # longest run of good frames


def _place(
    joints: np.ndarray, root_valid: np.ndarray, valid: np.ndarray, centre_xz: np.ndarray, yaw: float
) -> np.ndarray:
    """Turn about the vertical through the mean valid root ground position, move it to
    ``centre_xz``. (``mocap_core.scene.place_motion`` averages every frame's root, including
    frames whose root is not valid; here only valid roots count.)"""
    if root_valid.any():
        anchor = joints[root_valid, 0].mean(axis=0)
    elif valid.any():
        anchor = joints[valid].mean(axis=0)
    else:
        anchor = np.zeros(3)
    anchor = anchor * np.array([1.0, 0.0, 1.0])
    offset = np.array([centre_xz[0], 0.0, centre_xz[1]])
    return (joints - anchor) @ yaw_matrix(yaw).T + offset


def _draw_scene(
    joints: np.ndarray,
    valid: np.ndarray,
    joint_set: JointSet,
    num_views: int,
    config: SceneConfig,
    rng: np.random.Generator,
) -> _Scene:
    camera = draw_input_camera(config, rng)
    scaled = augment_bones(joints, joint_set, rng, config, valid)
    yaw = rng.uniform(0.0, 2.0 * math.pi)
    distance = rng.uniform(*config.subject_distance_m)
    half_fov = math.atan(camera.width / 2.0 / camera.K[0, 0])
    angle = rng.uniform(-1.0, 1.0) * config.lateral_fraction * half_fov
    centre_xz = np.array([distance * math.sin(angle), -distance * math.cos(angle)])
    placed = _place(scaled, valid[:, 0], valid, centre_xz, yaw)

    if num_views > 1:
        radius = config.area_jitter_m * math.sqrt(rng.uniform())
        direction = rng.uniform(0.0, 2.0 * math.pi)
        area = np.array(
            [
                centre_xz[0] + radius * math.cos(direction),
                0.0,
                centre_xz[1] + radius * math.sin(direction),
            ]
        )
        rig = sample_rig_arrays(camera, config.rig, rng, area_centre=area)
        K, R, t, sizes = rig["K"], rig["R"], rig["t"], rig["sizes"]
    else:
        K, R, t = camera.K[None], camera.R[None], camera.t[None]
        sizes = np.array([[camera.width, camera.height]], dtype=np.int64)

    # The drawn cameras have no distortion: the pinhole model is the real one.
    pixels, depth = project_to_views(placed, K, R, t)
    outside = outside_image_distance(pixels, sizes)
    bad_joint = ((outside > config.max_outside_px) | (depth < MIN_DEPTH_M)) & valid[None]
    bad_frame = bad_joint.any(axis=(0, 2)) | ~valid[:, 0]
    return _Scene(K, R, t, sizes, placed, pixels, clean_frame_run(bad_frame))


def _slot_mask(visible: np.ndarray) -> np.ndarray:
    """``visible (..., n, J) bool`` -> ``(..., n, C) float32``: root and scale slots 1, joint
    slots where visible, each slot's x and y channel alike."""
    ones = np.ones(visible.shape[:-1] + (1,), dtype=bool)
    slots = np.concatenate([ones, visible[..., 1:], ones], axis=-1)
    return np.repeat(slots, 2, axis=-1).astype(np.float32)


def _float32(array: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 copy (camera matrices are read-only, some Fortran-ordered)."""
    return np.array(array, dtype=np.float32, order="C")


def _pad_frames(array: np.ndarray, window: int, axis: int) -> np.ndarray:
    """Zero-pad ``array`` along ``axis`` to ``window`` frames, as float32."""
    missing = window - array.shape[axis]
    if missing == 0:
        return array.astype(np.float32, copy=False)
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, missing)
    return np.pad(array.astype(np.float32, copy=False), widths)


def _check_window(window: int) -> int:
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ValueError(f"window: expected a positive integer, got {window!r}")
    return int(window)


def make_scene_sample(
    joints: np.ndarray,
    valid: np.ndarray,
    joint_set: JointSet,
    window: int,
    num_views: int,
    config: SceneConfig,
    rng: np.random.Generator,
) -> TrainingSample:
    """Draw a scene around a 3D motion and encode it (steps in the module docstring).

    Args:
        joints: ``(L0, J, 3)`` float, metres, world, y-up, ground y = 0, joint 0 the root;
            the raw window read from a store (``L0`` may exceed ``window``: the crop is
            chosen inside the longest clean run).
        valid: ``(L0, J) bool``, False where a joint is not known.
        joint_set: the layout of the joint axis (``smpl22`` or ``coco17_pelvis``).
        window: frames per sample ``L``; shorter results are zero-padded.
        num_views: 1 (stage 1: the input camera only, no rig is drawn) or
            ``config.rig.num_views`` (stage 2).
        config: the scene distribution.
        rng: the only randomness; equal states give equal samples.

    Returns:
        A :class:`TrainingSample` with ``camera_known`` True and ``length`` the frames kept
        (``min(window, longest clean run)`` of the best attempt; 0 when every attempt failed).
    """
    _check_config(config)
    _check_rng(rng)
    joints, valid = _check_motion(joints, valid, joint_set)
    window = _check_window(window)
    if num_views not in (1, config.rig.num_views):
        raise ValueError(
            f"num_views: expected 1 (stage 1) or the rig's {config.rig.num_views} views "
            f"(stage 2), got {num_views}"
        )
    num_frames = joints.shape[0]
    if num_frames == 0:
        raise ValueError("joints: the window has no frames")
    joints = joints.astype(np.float64)
    required = min(config.min_frames, window, num_frames)

    best: _Scene | None = None
    for _ in range(config.max_redraws + 1):
        scene = _draw_scene(joints, valid, joint_set, num_views, config, rng)
        run_length = scene.run.stop - scene.run.start
        if best is None or run_length > best.run.stop - best.run.start:
            best = scene
        if run_length >= required:
            break
    assert best is not None
    run_length = best.run.stop - best.run.start
    length = min(window, run_length)
    first = best.run.start + int(rng.integers(0, run_length - length + 1))
    frames = slice(first, first + length)

    num_joints = joint_set.num_joints
    channels = feature_dim(num_joints)
    sizes = best.sizes.astype(np.int64)
    if length > 0:
        pixels = best.pixels[:, frames]
        visible = valid[frames]
        local = encode_local(pixels, sizes.astype(np.float64), visible[None])
        global0 = encode_global(pixels[0], sizes[0].astype(np.float64), visible)
        mask = np.repeat(_slot_mask(visible)[None], len(sizes), axis=0)
    else:
        local = np.zeros((len(sizes), 0, channels))
        global0 = np.zeros((0, channels))
        mask = np.zeros((len(sizes), 0, channels))
    return TrainingSample(
        local=_pad_frames(local, window, axis=1),
        global0=_pad_frames(global0, window, axis=0),
        feature_mask=_pad_frames(mask, window, axis=1),
        length=int(length),
        rt=_float32(camera_rt_embeddings(best.R, best.t)),
        k=_float32(camera_k_embeddings(best.K, sizes)),
        pointmap=ground_pointmaps(
            best.K,
            best.R,
            best.t,
            None,
            sizes,
            size=config.pointmap_size,
            max_range_m=config.pointmap_max_range_m,
        ),
        K=_float32(best.K),
        R=_float32(best.R),
        t=_float32(best.t),
        sizes=sizes,
        joints=_pad_frames(best.joints[frames], window, axis=0),
        camera_known=True,
    )


# ---------------------------------------------------------------------------------------------
# 2D tracks


def track_placeholder_camera(width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(K (3, 3), R (3, 3), t (3,))`` float64 stand-ins for the unknown camera of a 2D track.

    ``K`` has a focal length of ``max(width, height)`` pixels (about 53 degrees across the
    long side) and the principal point at the image centre; ``R`` is the identity and ``t``
    zero. Nothing geometric may be read from them: ``camera_known`` is False and the camera
    and pointmap conditions of such a sample are zeros.
    """
    focal = float(max(width, height))
    K = np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
    return K, np.eye(3), np.zeros(3)


def make_track_sample(
    keypoints: np.ndarray,
    width: int | None,
    height: int | None,
    window: int,
    rng: np.random.Generator,
    *,
    pointmap_size: int = 224,
) -> TrainingSample:
    """A stage-1 sample from a 2D track whose camera is unknown (``camera_known`` False).

    Frames whose root (joint 0) has confidence 0 cannot be encoded; the crop is a random
    ``min(window, run)`` frames inside the longest run of frames with a visible root (the
    same rule as a scene's trimming). Joints with confidence > 0 are visible and supervised.

    Image size: ``(width, height)`` of the sequence when both are known. Otherwise a square
    frame of side ``ceil(TRACK_FRAME_MARGIN * extent)`` pixels (``extent``: the larger side
    of the bounding box of the crop's visible keypoints over all its frames) centred on that
    box; the keypoints are shifted into it, so the track's movement within the crop is kept.

    Args:
        keypoints: ``(L0, J, 3)`` float pixel ``u, v`` and confidence, joint 0 the root
            (``coco17_pelvis``: the pelvis prepended, confidence the smaller of the hips').
        width, height: image size in pixels, or None when unknown.
        window: frames per sample; shorter crops are zero-padded.
        rng: draws the crop offset.
        pointmap_size: side of the (all-zero) pointmap, pixels.

    Returns:
        ``V = 1``; ``rt``, ``k`` and ``pointmap`` zeros; ``K, R, t`` from
        :func:`track_placeholder_camera`; ``joints`` zeros ``(window, J, 3)``.
    """
    _check_rng(rng)
    window = _check_window(window)
    keypoints = np.asarray(keypoints)
    if not np.issubdtype(keypoints.dtype, np.floating):
        raise TypeError(f"keypoints: expected a floating array, got dtype {keypoints.dtype}")
    if keypoints.ndim != 3 or keypoints.shape[-1] != 3 or keypoints.shape[1] < 2:
        raise ValueError(f"keypoints: expected shape (L0, J >= 2, 3), got {keypoints.shape}")
    if (width is None) != (height is None):
        raise ValueError(f"width, height: give both or neither, got {width}, {height}")
    if width is not None and (int(width) <= 0 or int(height) <= 0):  # type: ignore[arg-type]
        raise ValueError(f"width, height: expected positive sizes, got {width}, {height}")
    num_frames, num_joints, _ = keypoints.shape
    pixels = keypoints[..., :2].astype(np.float64)
    visible = (keypoints[..., 2] > 0) & np.isfinite(pixels).all(axis=-1)

    run = clean_frame_run(~visible[:, 0])
    run_length = run.stop - run.start
    length = min(window, run_length)
    first = run.start + int(rng.integers(0, run_length - length + 1))
    pixels, visible = pixels[first : first + length], visible[first : first + length]
    # Pixels of missing joints are never read by the encoders; putting them on the root keeps
    # NaN or junk out of every intermediate.
    pixels = np.where(visible[..., None], pixels, pixels[:, :1])

    if width is not None:
        size = np.array([int(width), int(height)], dtype=np.int64)  # type: ignore[arg-type]
    else:
        seen = pixels[visible] if length > 0 else np.zeros((0, 2))
        if seen.shape[0] == 0:
            side = 1
        else:
            low, high = seen.min(axis=0), seen.max(axis=0)
            side = max(1, math.ceil(TRACK_FRAME_MARGIN * float((high - low).max())))
            pixels = pixels - (low + high) / 2.0 + side / 2.0
        size = np.array([side, side], dtype=np.int64)

    channels = feature_dim(num_joints)
    if length > 0:
        local = encode_local(pixels[None], size.astype(np.float64), visible[None])
        global0 = encode_global(pixels, size.astype(np.float64), visible)
        mask = _slot_mask(visible)[None]
    else:
        local = np.zeros((1, 0, channels))
        global0 = np.zeros((0, channels))
        mask = np.zeros((1, 0, channels))
    K, R, t = track_placeholder_camera(int(size[0]), int(size[1]))
    return TrainingSample(
        local=_pad_frames(local, window, axis=1),
        global0=_pad_frames(global0, window, axis=0),
        feature_mask=_pad_frames(mask, window, axis=1),
        length=int(length),
        rt=np.zeros((1, 3), np.float32),
        k=np.zeros((1, 4), np.float32),
        pointmap=np.zeros((1, pointmap_size, pointmap_size, 3), np.float32),
        K=_float32(K[None]),
        R=_float32(R[None]),
        t=_float32(t[None]),
        sizes=size[None],
        joints=np.zeros((window, num_joints, 3), np.float32),
        camera_known=False,
    )


# ---------------------------------------------------------------------------------------------
# Normalisation statistics


def _as_numpy(name: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if value is None:
        raise ValueError(f"sample: missing {name!r}")
    return np.asarray(value)


def _sample_arrays(sample: TrainingSample | Mapping[str, Any]) -> tuple[np.ndarray, ...]:
    if isinstance(sample, TrainingSample):
        return sample.local, sample.global0, sample.feature_mask
    if isinstance(sample, Mapping):
        return tuple(
            _as_numpy(key, sample.get(key)) for key in ("local", "global0", "feature_mask")
        )
    raise TypeError(f"sample: expected a TrainingSample or a dict, got {type(sample).__name__}")


def fit_feature_stats(
    samples: Iterable[TrainingSample | Mapping[str, Any]],
) -> tuple[FeatureStats, FeatureStats]:
    """Fit the z-score statistics of the local and the global encodings (docs/TRAINING.md).

    Each channel is fitted over its supervised entries only: ``feature_mask`` is the weight
    per (view, frame, channel) for ``local``, and view 0's mask for ``global0``; padding and
    invalid joints (mask 0) never count. A channel never supervised gets mean 0, std 1.

    Args:
        samples: :class:`TrainingSample` objects, or dicts with ``local (..., V, L, C)``,
            ``global0 (..., L, C)`` and ``feature_mask (..., V, L, C)`` (numpy or torch;
            collated batches work too).

    Returns:
        ``(local, global_)`` :class:`~mocap_core.representation.FeatureStats`, ``(C,)`` each;
        std floored at ``representation.MIN_STD``.

    Raises:
        ValueError: no sample, channel counts that disagree, or no supervised entry at all.
    """
    local_acc: list[FeatureStatsAccumulator] | None = None
    global_acc: list[FeatureStatsAccumulator] | None = None
    channels = None
    for sample in samples:
        local, global0, mask = _sample_arrays(sample)
        if local.shape != mask.shape or local.ndim < 3:
            raise ValueError(
                f"sample: local {local.shape} and feature_mask {mask.shape} must be equal "
                "(..., V, L, C)"
            )
        if global0.shape != local.shape[:-3] + local.shape[-2:]:
            raise ValueError(f"sample: global0 {global0.shape} does not match local {local.shape}")
        if channels is None:
            channels = local.shape[-1]
            local_acc = [FeatureStatsAccumulator() for _ in range(channels)]
            global_acc = [FeatureStatsAccumulator() for _ in range(channels)]
        elif local.shape[-1] != channels:
            raise ValueError(f"sample: {local.shape[-1]} channels, earlier samples had {channels}")
        assert local_acc is not None and global_acc is not None
        mask0 = mask[..., 0, :, :]
        for channel in range(channels):
            local_acc[channel].update(local[..., channel, None], mask[..., channel])
            global_acc[channel].update(global0[..., channel, None], mask0[..., channel])
    if local_acc is None or global_acc is None:
        raise ValueError("fit_feature_stats: no samples")
    if all(acc.total_weight == 0 for acc in local_acc):
        raise ValueError("fit_feature_stats: no supervised entry in any sample")
    return _finalize(local_acc), _finalize(global_acc)


def _finalize(accumulators: list[FeatureStatsAccumulator]) -> FeatureStats:
    mean, std = np.zeros(len(accumulators)), np.ones(len(accumulators))
    for channel, acc in enumerate(accumulators):
        if acc.total_weight > 0:
            stats = acc.finalize()
            mean[channel], std[channel] = stats.mean[0], stats.std[0]
    return FeatureStats(mean=mean, std=std)
