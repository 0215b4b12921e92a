"""Evaluation protocol, simulated 2D input and the two baselines (DESIGN 5, issue "evaluate").

Everything here is pure numpy (no files, no Prefect); ``tasks/evaluate.py`` reads the store
and the checkpoint, runs the model and writes the report.

**Protocol** (:class:`EvalProtocol`, presets in :data:`PROTOCOLS`, chosen by name). Each
held-out 3D sequence (metres, y-up, ground y = 0) is placed before its own input camera, in
that camera's world frame (:func:`mocap_core.cameras.camera_from_height_pitch_roll`: y-up,
ground y = 0, origin on the ground below the camera, camera looking along -Z). For sequence
``sid`` the generator is ``default_rng(case_seed(protocol.seed, sid, "scene"))``: a pure
function of the protocol's seed and the sequence id, so any subset of the sequences and any
rerun draw the same scenes, whatever else is evaluated. Draws, in this order:

1. horizontal FOV ``~ U(hfov_deg)`` of a ``image_size`` (1920 x 1080) pinhole camera with
   square pixels, principal point at the centre, no distortion;
2. camera height ``~ U(camera_height_m)`` and roll ``~ U(camera_roll_deg)``;
3. the subject's distance ``d ~ U(subject_distance_m)``: the horizontal distance from the
   camera to the sequence's mean root ground position (3-6 m in ``"standard"``, the
   issue's target range), and its horizontal angle from the optical axis
   ``a ~ U(+-lateral_fraction * hfov / 2)`` (``a > 0`` to the image right): the mean root
   lands on the ground point ``(d sin a, 0, -d cos a)``;
4. the pitch aims the optical axis at a point ``~ U(aim_height_m)`` above that ground point,
   plus a jitter ``~ U(+-pitch_jitter_deg)`` (a camera operator frames the subject; a fixed
   pitch range would, at 3 m and with a 16:9 image, cut the feet or the head off for many
   height/pitch pairs). With the "standard" ranges the pitch spans about -2 to 30 degrees;
5. a yaw of the motion about the vertical through its mean root ``~ U(0, 360)`` degrees.

A draw is *good* on a frame when every valid joint projects inside the image (depth at least
``MIN_DEPTH_M``) and the root's horizontal distance stays within ``subject_distance_m``.
When some frame is not good the whole scene is drawn again (at most ``max_redraws`` times)
and the draw with the most good frames is kept; :class:`EvalScene` records the fraction of
good frames and the root distance range, which the report lists per sequence. With
``in_view_only`` (the ``"in-view"`` preset) only the longest run of good frames of the kept
draw is evaluated (a sequence without ``min_segment_frames`` of them is skipped, with the
reason). No bone-length augmentation: the evaluated bodies are the recorded ones.

**2D input** (:func:`simulate_detections`): the projection of the placed ground truth into
the input camera; optionally Gaussian pixel noise (std ``noise_px`` per coordinate) and
joints dropped at random with probability ``drop_rate`` (confidence 0, pixels NaN), as a 2D
detector would. Joints outside the image or behind the camera are never seen (confidence 0).
Seen joints have confidence 1. The generator is ``case_seed(protocol.seed, sid,
"detections")``, and the normals and uniforms are drawn whatever ``noise_px`` and
``drop_rate`` are, so settings nest: noise 10 px is exactly 5x the noise of 2 px, and the
joints dropped at rate 0.1 are a subset of those dropped at 0.3. For the ``coco17_pelvis``
model the detector sees the 17 COCO joints and the pelvis is added from the noisy hips
(:func:`mocap_core.joint_sets.add_pelvis_confidence`), as for real detections.

**Baselines**, run on the same 2D input:

- :func:`triangulation_upper_bound`: what the generated views could give at best. The same
  windows and the same virtual rigs the model lifts into (:func:`mocap_core.recovery.
  prepare_scene` with the window seeds of :func:`mocap_core.recovery.window_seed`, so the
  rig centre is estimated from the 2D feet exactly as in recovery), but the virtual views
  hold the exact projections of the ground truth; view 0 holds the (noisy) observation with
  the recovery's weights (confidence, 0 where missing; virtual views 1); triangulated
  (weighted DLT) and the windows blended as recovery blends them. With noise-free input it
  returns the ground truth to rounding.
- :func:`ground_contact_baseline`: a monocular heuristic. Per frame, the lowest visible foot
  is on the ground (:func:`mocap_core.recovery.ground_contact_points`: the foot keypoint
  whose ray meets the ground nearest the camera; its ray is cut at the height a planted foot
  keypoint has on this skeleton, :data:`FOOT_KEYPOINT_HEIGHT_M`, 0 = the ground itself), and
  the whole body is a flat figure facing the camera at that contact point's depth: every
  joint's pixel ray is cut at the camera-frame depth ``z`` of the contact point. Frames with
  no visible foot take the contact point interpolated linearly in time (held at the ends);
  joints not seen in a frame take their pixel interpolated in time (a joint never seen takes
  the mean pixel of the frame's seen joints). Exact on a flat figure facing the camera with
  a foot planted.

**Scoring** (:func:`score_case`): every metric of :mod:`mocap_core.metrics` on the joints
both sides share: the 22 SMPL joints for ``smpl22``, the 17 COCO joints for
``coco17_pelvis`` (the added pelvis is dropped), less the joints the ground truth lacks in
some frame (:func:`evaluated_joints`, e.g. a spine joint a source skeleton cannot give), for
every method alike.

**Feet on the ground** (:func:`feet_on_ground`): a sequence "touches the ground" when its
lowest valid foot keypoint is within :data:`CONTACT_TOLERANCE_M` (5 cm) of its planted
height (:data:`FOOT_KEYPOINT_HEIGHT_M`: 4 cm for SMPL's foot joints, 11.5 cm for COCO's
ankles) on at least half of its frames. The issue's target compares the model with the
heuristic on every such clip.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mocap_core import metrics
from mocap_core.cameras import (
    Camera,
    camera_from_height_pitch_roll,
    intrinsics_from_fov,
    project_points,
    transform_camera,
)
from mocap_core.joint_sets import JointSet, add_pelvis, add_pelvis_confidence, get_joint_set
from mocap_core.recovery import (
    RecoveryConfig,
    blend_weights,
    ground_contact_points,
    plan_windows,
    prepare_scene,
    window_seed,
)
from mocap_core.rig import RigConfig
from mocap_core.scene import outside_image_distance, yaw_matrix
from mocap_core.triangulation import triangulate

__all__ = [
    "ANKLE_JOINT_NAMES",
    "CONTACT_TOLERANCE_M",
    "FOOT_KEYPOINT_HEIGHT_M",
    "METHODS",
    "MIN_DEPTH_M",
    "PLANTED_FOOT_HEIGHT_M",
    "PROTOCOLS",
    "CaseScore",
    "EvalCase",
    "EvalProtocol",
    "EvalScene",
    "case_seed",
    "draw_eval_scene",
    "evaluated_joints",
    "evaluation_joint_set",
    "feet_on_ground",
    "get_protocol",
    "ground_contact_baseline",
    "make_eval_case",
    "model_layout",
    "planted_foot_heights",
    "protocol_json",
    "score_case",
    "simulate_detections",
    "to_evaluation_layout",
    "triangulation_upper_bound",
]

Range = tuple[float, float]

#: The evaluated methods, in report order.
METHODS: tuple[str, ...] = ("model", "upper_bound", "ground_contact")

#: A joint closer than this to the input camera's image plane (camera z, metres) is not seen.
MIN_DEPTH_M = 0.1

#: Height above the floor of a planted foot's lowest keypoint, per model joint set (metres):
#: the ground-contact heuristic cuts the foot's ray at this height. A property of the
#: skeleton, measured on the Bandai-Namco stores (median over clips of the 5th percentile of
#: the per-frame lowest foot joint): SMPL's foot (toe-base) joints 0.04 m, COCO's ankles
#: 0.115 m. Cutting at y = 0 instead would put a COCO subject ~0.3 m too far at 4-5 m.
FOOT_KEYPOINT_HEIGHT_M: dict[str, float] = {"smpl22": 0.04, "coco17_pelvis": 0.115}

#: Height above the floor of each planted foot joint, per model joint set and joint name
#: (metres; measured on the Bandai-Namco train splits as :data:`FOOT_KEYPOINT_HEIGHT_M`, per
#: joint): an ankle stands higher than the toe base of the same planted foot. Recovery's
#: ground anchor (:func:`mocap_core.recovery.anchor_to_ground`) pins every planted foot joint
#: at its own height; a joint set or joint not listed takes :data:`FOOT_KEYPOINT_HEIGHT_M`.
PLANTED_FOOT_HEIGHT_M: dict[str, dict[str, float]] = {
    "smpl22": {"left_ankle": 0.115, "right_ankle": 0.115, "left_foot": 0.04, "right_foot": 0.04},
    "coco17_pelvis": {"left_ankle": 0.115, "right_ankle": 0.115},
}

#: Names of the ankle joints in every joint set (their planted height depends on the
#: skeleton's convention; :func:`planted_foot_heights` can override it).
ANKLE_JOINT_NAMES = ("left_ankle", "right_ankle")

#: A frame's feet are on the ground when its lowest foot keypoint is at most this far above
#: the height a planted foot keypoint has (:data:`FOOT_KEYPOINT_HEIGHT_M`), metres.
CONTACT_TOLERANCE_M = 0.05

#: Fraction of frames with a foot on the ground for a sequence to "touch the ground".
CONTACT_MIN_FRACTION = 0.5


# ---------------------------------------------------------------------------------------------
# The protocol


class EvalProtocol(BaseModel):
    """A seeded distribution of evaluation scenes (frozen; its JSON goes into every report).

    Ranges are ``(min, max)`` drawn uniformly; metres and degrees. See the module docstring
    for the order of the draws.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = Field("custom", description="preset name, recorded in reports")
    seed: int = Field(20260101, description="fixed seed: equal seeds give equal scenes")
    image_size: tuple[int, int] = Field((1920, 1080), description="(width, height) pixels")
    hfov_deg: Range = Field((55.0, 75.0), description="horizontal field of view")
    camera_height_m: Range = Field((1.2, 2.2), description="camera height above the ground")
    camera_roll_deg: Range = Field((-3.0, 3.0), description="camera roll")
    subject_distance_m: Range = Field(
        (3.0, 6.0), description="horizontal camera-to-mean-root distance"
    )
    lateral_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="largest horizontal angle off axis, fraction of hfov/2"
    )
    aim_height_m: Range = Field(
        (0.7, 1.1), description="height above the subject's ground point the camera aims at"
    )
    pitch_jitter_deg: float = Field(3.0, ge=0.0, description="uniform jitter of the aim pitch")
    max_redraws: int = Field(32, ge=0, description="redraws when a frame leaves the view")
    in_view_only: bool = Field(
        False,
        description="evaluate only the longest run of good frames (every joint in view, the "
        "root within subject_distance_m), at least min_segment_frames long",
    )
    min_segment_frames: int = Field(30, ge=4, description="shortest run kept by in_view_only")

    @model_validator(mode="after")
    def _check(self) -> EvalProtocol:
        ranges = {
            "hfov_deg": self.hfov_deg,
            "camera_height_m": self.camera_height_m,
            "camera_roll_deg": self.camera_roll_deg,
            "subject_distance_m": self.subject_distance_m,
            "aim_height_m": self.aim_height_m,
        }
        for name, (low, high) in ranges.items():
            if low > high:
                raise ValueError(f"{name}: min {low} is greater than max {high}")
        if min(self.image_size) <= 0:
            raise ValueError(f"image_size: expected positive sizes, got {self.image_size}")
        if not (0.0 < self.hfov_deg[0] and self.hfov_deg[1] < 180.0):
            raise ValueError(f"hfov_deg: expected values in (0, 180), got {self.hfov_deg}")
        if self.camera_height_m[0] <= 0:
            raise ValueError(
                f"camera_height_m: must be above the ground, got {self.camera_height_m}"
            )
        if not (-90.0 < self.camera_roll_deg[0] and self.camera_roll_deg[1] < 90.0):
            raise ValueError(
                f"camera_roll_deg: expected values in (-90, 90), got {self.camera_roll_deg}"
            )
        if self.subject_distance_m[0] <= 0:
            raise ValueError(f"subject_distance_m: must be positive, got {self.subject_distance_m}")
        return self


#: Named protocols (``--cameras NAME``). ``standard`` is the issue's target setting.
PROTOCOLS: dict[str, EvalProtocol] = {
    # A person filmed at 3-6 m by a camera on a tripod or a shelf, framed by its operator.
    "standard": EvalProtocol(name="standard"),
    # The standard scenes, scored only where the subject is fully in view 3-6 m away: long
    # locomotion clips leave a fixed camera's view or range, and their other frames are
    # dropped (the longest run of good frames is kept).
    "in-view": EvalProtocol(name="in-view", in_view_only=True),
    # The same cameras with the subject farther away (smaller in the image, weaker depth cue).
    "far": EvalProtocol(name="far", subject_distance_m=(6.0, 10.0)),
    # A wall-mounted camera looking down (surveillance-like, pitch about 15-40 degrees).
    "high": EvalProtocol(
        name="high",
        camera_height_m=(2.5, 4.0),
        subject_distance_m=(3.5, 7.0),
        aim_height_m=(0.5, 1.0),
    ),
}


def get_protocol(name: str) -> EvalProtocol:
    """The preset called ``name``; a ``ValueError`` lists the known names."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}; known: {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


def case_seed(seed: int, sequence_id: str, stream: str) -> int:
    """63-bit seed of one sequence's draws of one kind (``"scene"``, ``"detections"``).

    A hash of ``(seed, sequence id, stream)``: independent of every other sequence, stable
    across runs, platforms and Python versions.
    """
    if not isinstance(sequence_id, str) or not isinstance(stream, str):
        raise TypeError("case_seed: sequence_id and stream must be strings")
    text = f"{int(seed)}\x00{sequence_id}\x00{stream}".encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


# ---------------------------------------------------------------------------------------------
# Joint layouts


def model_layout(
    joints: np.ndarray, valid: np.ndarray, store_joint_set: str
) -> tuple[np.ndarray, np.ndarray, str]:
    """A store's 3D joints in the model's layout: ``smpl22`` as is, ``coco17`` with the
    pelvis (mid-hip) prepended.

    Args:
        joints: ``(T, J, 3)`` metres, world, y-up, ground y = 0, ``store_joint_set`` order.
        valid: ``(T, J) bool``.
        store_joint_set: ``"smpl22"``, ``"coco17"`` or ``"coco17_pelvis"``.

    Returns:
        ``(joints (T, J', 3) float64 with NaN where not valid, valid (T, J') bool, model joint
        set name)``; the added pelvis is valid where both hips are.
    """
    joints = np.asarray(joints, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if joints.ndim != 3 or joints.shape[-1] != 3 or valid.shape != joints.shape[:2]:
        raise ValueError(
            f"joints (T, J, 3) and valid (T, J) expected, got {joints.shape} and {valid.shape}"
        )
    if store_joint_set == "coco17":
        if joints.shape[1] != 17:
            raise ValueError(f"coco17 joints must have 17 joints, got {joints.shape[1]}")
        pelvis_valid = valid[:, 11] & valid[:, 12]
        joints = add_pelvis(joints)
        valid = np.concatenate([pelvis_valid[:, None], valid], axis=1)
        name = "coco17_pelvis"
    elif store_joint_set in ("smpl22", "coco17_pelvis"):
        name = store_joint_set
    else:
        raise ValueError(f"joint set {store_joint_set!r} cannot be evaluated; use smpl22 or coco17")
    expected = get_joint_set(name).num_joints
    if joints.shape[1] != expected:
        raise ValueError(f"{name} joints must have {expected} joints, got {joints.shape[1]}")
    return np.where(valid[..., None], joints, np.nan), valid, name


def evaluation_joint_set(model_joint_set: str) -> JointSet:
    """The joints metrics are computed on: ``smpl22`` -> ``smpl22``; ``coco17_pelvis`` ->
    ``coco17`` (the 17 COCO joints; the added pelvis is no detector output)."""
    if model_joint_set == "smpl22":
        return get_joint_set("smpl22")
    if model_joint_set == "coco17_pelvis":
        return get_joint_set("coco17")
    raise ValueError(f"no evaluation layout for joint set {model_joint_set!r}")


def to_evaluation_layout(joints: np.ndarray, model_joint_set: str) -> np.ndarray:
    """``(..., J, C)`` in the model layout -> the evaluation layout (drops the COCO pelvis)."""
    evaluation_joint_set(model_joint_set)  # validates the name
    return joints[..., 1:, :] if model_joint_set == "coco17_pelvis" else joints


# ---------------------------------------------------------------------------------------------
# Scenes


@dataclass(frozen=True)
class EvalScene:
    """One sequence placed before its drawn input camera.

    Attributes:
        camera: the input camera; its world is y-up, ground y = 0, origin below the camera.
        joints: ``(T, J, 3) float64`` metres, that world, model layout; NaN where not valid.
        hfov_deg, height_m, pitch_deg, roll_deg: the camera's draw.
        distance_m: horizontal distance from the camera to the mean root ground position.
        lateral_deg: horizontal angle of that position off the optical axis (+ = right).
        yaw_deg: the motion's turn about the vertical.
        in_view_fraction: fraction of frames with every valid joint inside the image.
        good_fraction: fraction of frames in view with the root within the distance range
            (what the redraws maximise).
        root_distance_m: ``(min, max)`` horizontal root distance over the valid frames.
        attempt: which draw was kept (1 = the first).
        draws: draws made (1 = the first draw was good on every frame).
        frames: ``(start, stop)`` of the input frames kept in ``joints`` (all of them unless
            the protocol is ``in_view_only``).
    """

    camera: Camera
    joints: np.ndarray
    hfov_deg: float
    height_m: float
    pitch_deg: float
    roll_deg: float
    distance_m: float
    lateral_deg: float
    yaw_deg: float
    in_view_fraction: float
    good_fraction: float
    root_distance_m: tuple[float, float]
    attempt: int
    draws: int
    frames: tuple[int, int] = (0, -1)

    def summary(self) -> dict[str, float]:
        """The draw as a flat dict of floats (report columns)."""
        return {
            "hfov_deg": self.hfov_deg,
            "camera_height_m": self.height_m,
            "pitch_deg": self.pitch_deg,
            "roll_deg": self.roll_deg,
            "distance_m": self.distance_m,
            "lateral_deg": self.lateral_deg,
            "yaw_deg": self.yaw_deg,
            "in_view_fraction": self.in_view_fraction,
            "good_fraction": self.good_fraction,
            "root_distance_min_m": self.root_distance_m[0],
            "root_distance_max_m": self.root_distance_m[1],
        }


def _check_motion(joints: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    joints = np.asarray(joints)
    if not np.issubdtype(joints.dtype, np.floating):
        raise TypeError(f"joints: expected a floating array, got dtype {joints.dtype}")
    if joints.ndim != 3 or joints.shape[-1] != 3 or joints.shape[0] < 1:
        raise ValueError(f"joints: expected shape (T >= 1, J, 3), got {joints.shape}")
    valid = np.asarray(valid)
    if valid.dtype != np.bool_ or valid.shape != joints.shape[:2]:
        raise ValueError(f"valid: expected a bool array of shape {joints.shape[:2]}")
    if not valid[:, 0].any():
        raise ValueError("the root (joint 0) is not valid in any frame; nothing to place")
    if not np.all(np.isfinite(joints[valid])):
        raise ValueError("joints: non-finite values at valid joints")
    return joints.astype(np.float64), valid


def _frame_checks(
    camera: Camera, placed: np.ndarray, valid: np.ndarray, distance_range: Range
) -> tuple[np.ndarray, np.ndarray]:
    """``(in_view (T,), in_range (T,))`` bool: every valid joint inside the image and in
    front of the camera; the (valid) root's horizontal distance within ``distance_range``."""
    pixels, depth = camera.project(np.where(valid[..., None], placed, 0.0))
    sizes = np.array([[camera.width, camera.height]])
    outside = outside_image_distance(pixels[None], sizes)[0]
    with np.errstate(invalid="ignore"):
        bad_joint = ((outside > 0) | ~(depth >= MIN_DEPTH_M)) & valid
    root_distance = np.hypot(placed[:, 0, 0], placed[:, 0, 2])
    with np.errstate(invalid="ignore"):
        in_range = (root_distance >= distance_range[0] - 1e-9) & (
            root_distance <= distance_range[1] + 1e-9
        )
    return ~bad_joint.any(axis=1), in_range & valid[:, 0]


def draw_eval_scene(
    protocol: EvalProtocol,
    sequence_id: str,
    joints: np.ndarray,
    valid: np.ndarray,
) -> EvalScene:
    """Place one sequence before its protocol camera (module docstring, steps 1-5).

    Args:
        protocol: the scene distribution and its seed.
        sequence_id: the sequence's stable id; with ``protocol.seed`` the only randomness.
        joints: ``(T, J, 3)`` float, metres, world, y-up, ground y = 0, model layout (joint 0
            the root).
        valid: ``(T, J) bool``.

    Returns:
        :class:`EvalScene`, joints in the camera's world (NaN where not valid).
    """
    if not isinstance(protocol, EvalProtocol):
        raise TypeError(f"protocol: expected an EvalProtocol, got {type(protocol).__name__}")
    joints, valid = _check_motion(joints, valid)
    rng = np.random.default_rng(case_seed(protocol.seed, sequence_id, "scene"))
    width, height = protocol.image_size
    anchor = joints[valid[:, 0], 0].mean(axis=0) * np.array([1.0, 0.0, 1.0])
    centred = np.where(valid[..., None], joints, 0.0) - anchor

    best: EvalScene | None = None
    best_good = -1
    for attempt in range(1, protocol.max_redraws + 2):
        hfov = rng.uniform(*protocol.hfov_deg)
        camera_height = rng.uniform(*protocol.camera_height_m)
        roll = rng.uniform(*protocol.camera_roll_deg)
        distance = rng.uniform(*protocol.subject_distance_m)
        half_fov = math.radians(hfov) / 2.0
        lateral = rng.uniform(-1.0, 1.0) * protocol.lateral_fraction * half_fov
        aim_height = rng.uniform(*protocol.aim_height_m)
        pitch_jitter = rng.uniform(-protocol.pitch_jitter_deg, protocol.pitch_jitter_deg)
        yaw = rng.uniform(0.0, 2.0 * math.pi)

        # The operator aims at the subject: pitch from the height difference over distance.
        pitch = math.degrees(math.atan2(camera_height - aim_height, distance)) + pitch_jitter
        K = intrinsics_from_fov(width, height, hfov)
        camera = camera_from_height_pitch_roll(camera_height, pitch, roll, K, width, height)
        ground = np.array([distance * math.sin(lateral), 0.0, -distance * math.cos(lateral)])
        placed = centred @ yaw_matrix(yaw).T + ground
        placed = np.where(valid[..., None], placed, np.nan)
        in_view, in_range = _frame_checks(camera, placed, valid, protocol.subject_distance_m)
        good = in_view & in_range
        count = int(good.sum())
        if count > best_good:
            root = np.hypot(placed[valid[:, 0], 0, 0], placed[valid[:, 0], 0, 2])
            best_good = count
            best = EvalScene(
                camera=camera,
                joints=placed,
                hfov_deg=float(hfov),
                height_m=float(camera_height),
                pitch_deg=float(pitch),
                roll_deg=float(roll),
                distance_m=float(distance),
                lateral_deg=float(math.degrees(lateral)),
                yaw_deg=float(math.degrees(yaw)),
                in_view_fraction=float(in_view.mean()),
                good_fraction=count / len(good),
                root_distance_m=(float(root.min()), float(root.max())),
                attempt=attempt,
                draws=attempt,
            )
        if count == len(good):
            break
    assert best is not None
    best = replace(best, draws=attempt, frames=(0, len(joints)))
    if protocol.in_view_only:
        in_view, in_range = _frame_checks(
            best.camera, best.joints, valid, protocol.subject_distance_m
        )
        start, stop = _longest_run(in_view & in_range)
        if stop - start < protocol.min_segment_frames:
            raise ValueError(
                f"no {protocol.min_segment_frames} consecutive frames in view and "
                f"{protocol.subject_distance_m[0]:g}-{protocol.subject_distance_m[1]:g} m away "
                f"(longest run: {stop - start})"
            )
        best = replace(best, joints=best.joints[start:stop], frames=(start, stop))
    return best


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    """``(start, stop)`` of the longest run of True in a ``(T,)`` bool array ((0, 0) if none)."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    starts, stops = edges[0::2], edges[1::2]
    if len(starts) == 0:
        return 0, 0
    longest = int(np.argmax(stops - starts))
    return int(starts[longest]), int(stops[longest])


# ---------------------------------------------------------------------------------------------
# 2D input


def simulate_detections(
    camera: Camera,
    joints: np.ndarray,
    valid: np.ndarray,
    noise_px: float,
    drop_rate: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Detector-like 2D keypoints of a 3D motion seen by ``camera``.

    Draws ``standard_normal((T, J, 2))`` then ``random((T, J))`` from ``rng`` whatever the
    settings, so settings nest (module docstring). A joint is seen when it is valid, in front
    of the camera (depth >= :data:`MIN_DEPTH_M`), its exact projection lies inside the image,
    and its uniform draw is ``>= drop_rate``.

    Args:
        camera: the input camera.
        joints: ``(T, J, 3)`` metres, the camera's world (NaN allowed where not valid).
        valid: ``(T, J) bool``.
        noise_px: std of the Gaussian noise per pixel coordinate, >= 0.
        drop_rate: probability in ``[0, 1]`` that a seen joint is dropped.
        rng: the generator of the noise and the drops.

    Returns:
        ``(T, J, 3) float64``: pixel ``u, v`` (projection + noise; NaN where not seen) and
        confidence (1 seen, 0 not).
    """
    if not isinstance(camera, Camera):
        raise TypeError(f"camera: expected a Camera, got {type(camera).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy Generator, got {type(rng).__name__}")
    if not (math.isfinite(noise_px) and noise_px >= 0):
        raise ValueError(f"noise_px: expected a finite value >= 0, got {noise_px}")
    if not 0.0 <= drop_rate <= 1.0:
        raise ValueError(f"drop_rate: expected a probability in [0, 1], got {drop_rate}")
    joints = np.asarray(joints, dtype=np.float64)
    valid = np.asarray(valid)
    if joints.ndim != 3 or joints.shape[-1] != 3:
        raise ValueError(f"joints: expected shape (T, J, 3), got {joints.shape}")
    if valid.dtype != np.bool_ or valid.shape != joints.shape[:2]:
        raise ValueError(f"valid: expected a bool array of shape {joints.shape[:2]}")
    noise = rng.standard_normal(joints.shape[:2] + (2,))
    draws = rng.random(joints.shape[:2])
    valid = valid & np.isfinite(joints).all(-1)
    pixels, depth = camera.project(np.where(valid[..., None], joints, 0.0))
    sizes = np.array([[camera.width, camera.height]])
    inside = outside_image_distance(pixels[None], sizes)[0] == 0
    seen = valid & (depth >= MIN_DEPTH_M) & inside & (draws >= drop_rate)
    noisy = np.where(seen[..., None], pixels + noise_px * noise, np.nan)
    return np.concatenate([noisy, seen[..., None].astype(np.float64)], axis=-1)


@dataclass(frozen=True)
class EvalCase:
    """One sequence's evaluation input.

    Attributes:
        sequence_id: the store's sequence id (also the recovery clip key).
        model_joint_set: ``"smpl22"`` or ``"coco17_pelvis"``.
        scene: the placed ground truth and its camera (model layout).
        valid: ``(T, J) bool`` ground-truth validity, model layout.
        keypoints: ``(T, J, 3)`` simulated detections (pixels, confidence), model layout.
        grounded: whether the feet touch the ground (:func:`feet_on_ground`).
    """

    sequence_id: str
    model_joint_set: str
    scene: EvalScene
    valid: np.ndarray
    keypoints: np.ndarray
    grounded: bool

    @property
    def camera(self) -> Camera:
        return self.scene.camera

    @property
    def gt(self) -> np.ndarray:
        """``(T, J, 3)`` placed ground truth, model layout, NaN where not valid."""
        return self.scene.joints


def planted_foot_heights(joint_set: JointSet, ankle_height_m: float | None = None) -> np.ndarray:
    """``(F,) float64`` metres: the planted height of each of ``joint_set.foot_joints``
    (:data:`PLANTED_FOOT_HEIGHT_M`, else :data:`FOOT_KEYPOINT_HEIGHT_M`, else 0), the ankle
    joints at ``ankle_height_m`` when it is given (another skeleton's convention)."""
    default = FOOT_KEYPOINT_HEIGHT_M.get(joint_set.name, 0.0)
    table = dict(PLANTED_FOOT_HEIGHT_M.get(joint_set.name, {}))
    if ankle_height_m is not None:
        table.update({name: ankle_height_m for name in ANKLE_JOINT_NAMES})
    names = (joint_set.joint_names[j] for j in joint_set.foot_joints)
    return np.array([table.get(name, default) for name in names], dtype=np.float64)


def feet_on_ground(
    joints: np.ndarray,
    valid: np.ndarray,
    foot_joints: Sequence[int],
    height_m: float,
    min_fraction: float = CONTACT_MIN_FRACTION,
) -> bool:
    """Whether a motion's lowest valid foot joint is at most ``height_m`` above y = 0 on at
    least ``min_fraction`` of its frames.

    Args:
        joints: ``(T, J, 3)`` metres, y-up, ground y = 0.
        valid: ``(T, J) bool``.
        foot_joints: indices of the foot joints.
        height_m: contact height, metres (for the evaluation
            ``FOOT_KEYPOINT_HEIGHT_M[joint set] + CONTACT_TOLERANCE_M``).
        min_fraction: required fraction of frames, in ``(0, 1]``.
    """
    if not 0.0 < min_fraction <= 1.0:
        raise ValueError(f"min_fraction: expected a value in (0, 1], got {min_fraction}")
    feet = list(foot_joints)
    heights = np.where(valid[:, feet], np.asarray(joints, dtype=np.float64)[:, feet, 1], np.inf)
    lowest = heights.min(axis=1)
    return bool(np.mean(lowest <= height_m) >= min_fraction)


def make_eval_case(
    protocol: EvalProtocol,
    sequence_id: str,
    joints: np.ndarray,
    valid: np.ndarray,
    store_joint_set: str,
    noise_px: float = 0.0,
    drop_rate: float = 0.0,
) -> EvalCase:
    """Draw the scene and the 2D input of one store sequence.

    Args:
        protocol: the scene distribution.
        sequence_id: the store's sequence id.
        joints: ``(T, J, 3)`` metres, world, y-up, ground y = 0, ``store_joint_set`` order.
        valid: ``(T, J) bool``.
        store_joint_set: ``"smpl22"`` or ``"coco17"`` (``"coco17_pelvis"`` also accepted).
        noise_px, drop_rate: see :func:`simulate_detections`.

    Returns:
        :class:`EvalCase` in the model layout.
    """
    model_joints, model_valid, name = model_layout(joints, valid, store_joint_set)
    scene = draw_eval_scene(protocol, sequence_id, model_joints, model_valid)
    start, stop = scene.frames
    model_joints, model_valid = model_joints[start:stop], model_valid[start:stop]
    grounded = feet_on_ground(
        model_joints,
        model_valid,
        get_joint_set(name).foot_joints,
        FOOT_KEYPOINT_HEIGHT_M[name] + CONTACT_TOLERANCE_M,
    )
    rng = np.random.default_rng(case_seed(protocol.seed, sequence_id, "detections"))
    if name == "coco17_pelvis":
        # A detector gives the 17 COCO joints; the model's pelvis is made from its hips.
        coco = simulate_detections(
            scene.camera, scene.joints[:, 1:], model_valid[:, 1:], noise_px, drop_rate, rng
        )
        keypoints = add_pelvis_confidence(coco)
    else:
        keypoints = simulate_detections(
            scene.camera, scene.joints, model_valid, noise_px, drop_rate, rng
        )
    return EvalCase(sequence_id, name, scene, model_valid, keypoints, grounded)


# ---------------------------------------------------------------------------------------------
# Baseline 1: triangulation of ground-truth virtual views (upper bound)


def _seen(keypoints: np.ndarray, min_confidence: float) -> np.ndarray:
    conf = keypoints[..., 2]
    with np.errstate(invalid="ignore"):
        seen = np.isfinite(conf) & (conf > min_confidence)
    return seen & np.isfinite(keypoints[..., :2]).all(-1)


def _check_keypoints(keypoints: np.ndarray, num_joints: int | None = None) -> np.ndarray:
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 3 or keypoints.shape[-1] != 3 or keypoints.shape[0] < 1:
        raise ValueError(f"keypoints: expected shape (T >= 1, J, 3), got {keypoints.shape}")
    if num_joints is not None and keypoints.shape[1] != num_joints:
        raise ValueError(f"keypoints: expected {num_joints} joints, got {keypoints.shape[1]}")
    return keypoints


def triangulation_upper_bound(
    camera: Camera,
    keypoints: np.ndarray,
    joints_gt: np.ndarray,
    joint_set: JointSet,
    config: RecoveryConfig,
    rig_config: RigConfig,
    key: str,
    pointmap_size: int,
    pointmap_max_range_m: float | None = None,
) -> np.ndarray:
    """Triangulate the observation with exact ground-truth virtual views (module docstring).

    Args:
        camera: the input camera (user world, y-up, ground y = 0).
        keypoints: ``(T, J, 3)`` observed pixels and confidence, model layout.
        joints_gt: ``(T, J, 3)`` ground truth, metres, the camera's world (NaN = unknown:
            that joint is then missing from the virtual views).
        joint_set: the model's joint set (its feet place the rig, as in recovery).
        config: the recovery config of the model run (window, overlap, seed, weighting,
            ``min_confidence``): the same windows and rig seeds.
        rig_config: the checkpoint's rig distribution (``SceneConfig.rig``).
        key: the clip key given to recovery (the sequence id).
        pointmap_size, pointmap_max_range_m: as in recovery (the rig does not depend on them;
            :func:`mocap_core.recovery.prepare_scene` renders pointmaps the baseline ignores).

    Returns:
        ``(T, J, 3) float64`` metres, the camera's world; NaN where fewer than two views saw
        the joint.
    """
    if not isinstance(config, RecoveryConfig):
        raise TypeError(f"config: expected a RecoveryConfig, got {type(config).__name__}")
    keypoints = _check_keypoints(keypoints, joint_set.num_joints)
    joints_gt = np.asarray(joints_gt, dtype=np.float64)
    if joints_gt.shape != keypoints.shape:
        raise ValueError(f"joints_gt: expected shape {keypoints.shape}, got {joints_gt.shape}")
    num_frames, num_joints, _ = keypoints.shape
    plan = plan_windows(num_frames, config.window, config.resolved_overlap)
    total = np.zeros((num_frames, num_joints, 3))
    weight = np.zeros((num_frames, num_joints))
    for index, (start, stop) in enumerate(plan):
        scene = prepare_scene(
            camera,
            keypoints[start:stop],
            rig_config,
            pointmap_size,
            np.random.default_rng(window_seed(config.seed, key, index)),
            foot_joints=joint_set.foot_joints,
            min_confidence=config.min_confidence,
            pointmap_max_range_m=pointmap_max_range_m,
        )
        length = stop - start
        gt_canonical = joints_gt[start:stop] @ scene.R_wc.T + scene.t_wc
        virtual, depth = project_points(
            gt_canonical.reshape(1, -1, 3), scene.K[1:], scene.R[1:], scene.t[1:]
        )
        with np.errstate(invalid="ignore"):
            virtual = np.where((depth > 0)[..., None], virtual, np.nan)
        views = np.concatenate(
            [scene.pixels[None], virtual.reshape(-1, length, num_joints, 2)], axis=0
        )
        seen0 = scene.confidence > 0
        weight0 = np.clip(scene.confidence, 0.0, 1.0) if config.weighted else seen0 * 1.0
        weights = np.concatenate(
            [weight0[None], np.ones((views.shape[0] - 1, length, num_joints))], axis=0
        )
        proj = scene.K @ np.concatenate([scene.R, scene.t[..., None]], axis=-1)
        result = triangulate(views, proj, weights, on_insufficient="nan", return_mask=True)
        world = scene.to_world(np.where(result.valid[..., None], result.points3d, 0.0))
        before = plan[index - 1][1] - start if index > 0 else 0
        after = stop - plan[index + 1][0] if index + 1 < len(plan) else 0
        ramp = blend_weights(length, max(before, 0), max(after, 0))
        window_weight = np.where(result.valid, ramp[:, None], 0.0)
        total[start:stop] += world * window_weight[..., None]
        weight[start:stop] += window_weight
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / weight[..., None]
    out[weight <= 0] = np.nan
    return out


# ---------------------------------------------------------------------------------------------
# Baseline 2: monocular ground-contact heuristic


def _interpolate_in_time(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``values (T, D)`` with ``known (T,)``: unknown rows linearly interpolated over the
    frame index, held constant beyond the first and last known rows. Needs a known row."""
    frames = np.arange(values.shape[0])
    out = values.copy()
    for axis in range(values.shape[1]):
        out[:, axis] = np.interp(frames, frames[known], values[known, axis])
    return out


def ground_contact_baseline(
    camera: Camera,
    keypoints: np.ndarray,
    joint_set: JointSet,
    min_confidence: float = 0.0,
    foot_height_m: float = 0.0,
) -> np.ndarray:
    """The monocular ground-contact heuristic (module docstring).

    Args:
        camera: the input camera (y-up world, ground y = 0).
        keypoints: ``(T, J, 3)`` pixels ``u, v`` of ``camera``'s image and confidence,
            ``joint_set`` order; a joint is seen where its confidence is ``> min_confidence``
            and its pixel is finite.
        joint_set: gives the foot joints.
        min_confidence: confidence threshold.
        foot_height_m: height of a planted foot keypoint above the ground, metres: its ray
            is cut at ``y = foot_height_m`` (0: on the ground itself). A property of the
            skeleton, e.g. :data:`FOOT_KEYPOINT_HEIGHT_M`, never of the sequence.

    Returns:
        ``(T, J, 3) float64`` metres, the camera's world: every joint on its pixel ray at the
        camera-frame depth of the frame's contact point. All NaN when no frame shows a foot
        whose ray meets that plane in front of the camera.
    """
    if not isinstance(camera, Camera):
        raise TypeError(f"camera: expected a Camera, got {type(camera).__name__}")
    if not (math.isfinite(foot_height_m) and 0.0 <= foot_height_m < camera.center[1]):
        raise ValueError(
            f"foot_height_m: expected a value in [0, camera height {camera.center[1]:.3f}), "
            f"got {foot_height_m}"
        )
    keypoints = _check_keypoints(keypoints, joint_set.num_joints)
    seen = _seen(keypoints, min_confidence)
    pixels = np.where(seen[..., None], keypoints[..., :2], np.nan)
    # The plane y = foot_height_m is the ground of the world lowered by that height.
    lift = np.array([0.0, foot_height_m, 0.0])
    lowered = transform_camera(camera, np.eye(3), -lift)
    contact = ground_contact_points(pixels, seen, lowered, joint_set.foot_joints) + lift
    found = np.isfinite(contact).all(axis=1)
    if not found.any():
        return np.full(keypoints.shape, np.nan)
    contact = _interpolate_in_time(contact, found)
    depth = (contact @ camera.R.T + camera.t)[:, 2]  # (T,) camera-frame z of the contact

    # Unseen joints: their pixel interpolated in time, else the frame's mean seen pixel (a
    # frame with a contact point has a seen foot, so some frame has a seen joint).
    any_seen = seen.any(axis=1)
    sums = np.where(seen[..., None], pixels, 0.0).sum(axis=1)
    frame_mean = _interpolate_in_time(sums / np.maximum(seen.sum(axis=1), 1)[:, None], any_seen)
    filled = pixels.copy()
    for joint in range(pixels.shape[1]):
        if seen[:, joint].any():
            filled[:, joint] = _interpolate_in_time(pixels[:, joint], seen[:, joint])
        else:
            filled[:, joint] = frame_mean
    depths = np.broadcast_to(depth[:, None], filled.shape[:2])
    return np.asarray(camera.unproject(filled, depth=depths), dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Scoring


@dataclass(frozen=True)
class CaseScore:
    """Metrics of every method on one sequence, and what the plots need.

    Attributes:
        sequence_id: the sequence.
        grounded: whether its feet touch the ground.
        num_joints: joints scored (:func:`evaluated_joints`).
        scene: :meth:`EvalScene.summary` of its draw.
        metrics: method -> :func:`mocap_core.metrics.evaluate_sequence` dict (NaN metrics
            and ``num_frames`` 0 when no frame could be evaluated).
        abs_error_mm: method -> ``(T,) float64`` per-frame Abs-MPJPE, mm (NaN = invalid).
        gt_root: ``(T, 3) float64`` ground-truth pelvis (mean of the hips), metres.
        roots: method -> ``(T, 3) float64`` predicted pelvis, metres.
    """

    sequence_id: str
    grounded: bool
    num_joints: int
    scene: dict[str, float]
    metrics: dict[str, dict[str, float]]
    abs_error_mm: dict[str, np.ndarray] = field(repr=False)
    gt_root: np.ndarray = field(repr=False)
    roots: dict[str, np.ndarray] = field(repr=False)


def _empty_metrics() -> dict[str, float]:
    out = {key: math.nan for key in metrics.METRIC_KEYS}
    out[metrics.NUM_FRAMES_KEY] = 0.0
    return out


def evaluated_joints(eval_set: JointSet, valid: np.ndarray) -> tuple[JointSet, np.ndarray]:
    """The joints of ``eval_set`` a sequence is scored on: those valid in every frame.

    A joint the source skeleton cannot give (e.g. a spine joint a procedural skeleton lacks)
    is left out of every method's metrics rather than making every frame invalid.

    Args:
        eval_set: the evaluation joint set.
        valid: ``(T, J) bool`` ground-truth validity in ``eval_set`` order.

    Returns:
        ``(subset, indices)``: a :class:`JointSet` of the kept joints (hips and feet remapped;
        no tree: every joint its own root) and ``(J',) int64`` indices into ``eval_set``;
        ``eval_set`` itself when every joint is kept.

    Raises:
        ValueError: a hip, or every foot joint, is never valid throughout.
    """
    keep = np.asarray(valid, dtype=bool).all(axis=0)
    indices = np.flatnonzero(keep)
    if keep.all():
        return eval_set, indices
    if not keep[list(eval_set.hip_pair)].all():
        raise ValueError(f"{eval_set.name}: a hip joint is not valid in every frame")
    position = {int(j): i for i, j in enumerate(indices)}
    feet = tuple(position[f] for f in eval_set.foot_joints if f in position)
    if not feet:
        raise ValueError(f"{eval_set.name}: no foot joint is valid in every frame")
    subset = JointSet(
        name=f"{eval_set.name}[{len(indices)} joints]",
        joint_names=tuple(eval_set.joint_names[j] for j in indices),
        parents=(-1,) * len(indices),
        hip_pair=(position[eval_set.hip_pair[0]], position[eval_set.hip_pair[1]]),
        foot_joints=feet,
    )
    return subset, indices


def score_case(case: EvalCase, predictions: Mapping[str, np.ndarray], fps: float) -> CaseScore:
    """Score every method's prediction of one case.

    Metrics are computed on the evaluation joints (:func:`evaluation_joint_set`) that the
    ground truth has in every frame (:func:`evaluated_joints`); a prediction's non-finite
    joints make its frame invalid for that method (:mod:`mocap_core.metrics`).

    Args:
        case: the case (ground truth in the model layout).
        predictions: method name -> ``(T, J, 3)`` metres, the camera's world, model layout
            (NaN where not valid).
        fps: the sequence's frame rate.

    Returns:
        :class:`CaseScore`; a method with no usable frame (or a sequence shorter than the
        4 frames the metrics need) gets NaN metrics and ``num_frames`` 0.
    """
    full_set = evaluation_joint_set(case.model_joint_set)
    valid = to_evaluation_layout(case.valid[..., None], case.model_joint_set)[..., 0]
    eval_set, joints = evaluated_joints(full_set, valid)
    gt = to_evaluation_layout(case.gt, case.model_joint_set)[:, joints]
    num_frames = gt.shape[0]
    gt_root = metrics.pelvis(gt, eval_set)
    scores: dict[str, dict[str, float]] = {}
    abs_errors: dict[str, np.ndarray] = {}
    roots: dict[str, np.ndarray] = {}
    for method, prediction in predictions.items():
        prediction = np.asarray(prediction, dtype=np.float64)
        if prediction.shape != case.gt.shape:
            raise ValueError(
                f"{method}: prediction of shape {prediction.shape}, expected {case.gt.shape}"
            )
        pred = to_evaluation_layout(prediction, case.model_joint_set)[:, joints]
        roots[method] = metrics.pelvis(pred, eval_set)
        usable = np.isfinite(pred).all(axis=(1, 2))
        if num_frames < 4 or not usable.any():
            scores[method] = _empty_metrics()
            abs_errors[method] = np.full(num_frames, np.nan)
            continue
        scores[method] = metrics.evaluate_sequence(pred, gt, eval_set, fps)
        abs_errors[method] = metrics.abs_mpjpe_per_frame(pred, gt)
    return CaseScore(
        sequence_id=case.sequence_id,
        grounded=case.grounded,
        num_joints=len(joints),
        scene=case.scene.summary(),
        metrics=scores,
        abs_error_mm=abs_errors,
        gt_root=gt_root,
        roots=roots,
    )


def protocol_json(protocol: EvalProtocol) -> dict[str, Any]:
    """The protocol as a JSON-able dict (what reports record)."""
    return protocol.model_dump(mode="json")
