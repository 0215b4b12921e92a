"""The demo's example scene: two procedural walkers before one calibrated camera.

Pure (numpy in, numpy out, no files): :func:`make_example_scene` builds what ``make demo``
recovers and checks itself against (``data_catalog/example_data.py`` writes it to disk):

- **The camera** (:func:`example_camera`): 1920 x 1080, 70 degrees horizontal field of view
  (focal length about 1371 px), square pixels, principal point at the image centre, no
  distortion, 1.6 m above flat ground and pitched 12 degrees down, roll 0. Its world is the
  one of :func:`mocap_core.cameras.camera_from_height_pitch_roll`: metres, y-up, ground
  y = 0, origin on the ground below the camera, the camera looking along -z.
- **Two people** (:data:`TWO_WALKERS`): procedural walks (:func:`mocap_core.procedural.
  procedural_walk`) with different seeds, start points, headings, speeds, turn rates and body
  scales. Both start 3.6-4.7 m from the camera and walk away from it on curves that cross
  (one bends right, the other left); their pelvises stay 3-6 m from the camera and never
  come closer than about 0.8 m to each other. Their ``coco17`` joints (the Bandai-Namco
  mapping of :mod:`mocap_core.skeleton_mapping`) are the ground truth, in the camera's world.
- **Their 2D tracks** (:func:`simulate_detector`), as a 2D detector with a tracker would
  give them: the projection of each joint plus Gaussian pixel noise, a confidence in
  ``[0.55, 0.98]`` for each seen joint, and confidence 0 (pixels 0) for a joint that is
  outside the image, behind the camera, hidden behind the nearer person, or dropped at random
  (:data:`DETECTOR_DROP_RATE`). A person with fewer than ``min_visible_joints`` seen joints in
  a frame is not detected in that frame (no row). Track ids are the people's indices.

The generator is seeded (``seed``): equal arguments give identical scenes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mocap_core.cameras import Camera, camera_from_height_pitch_roll, intrinsics_from_fov
from mocap_core.joint_sets import COCO17, JointSet
from mocap_core.metrics import abs_mpjpe, pa_mpjpe
from mocap_core.procedural import procedural_walk
from mocap_core.skeleton_mapping import apply_mapping, get_skeleton_mapping

__all__ = [
    "CAMERA_HEIGHT_M",
    "CAMERA_HFOV_DEG",
    "CAMERA_PITCH_DEG",
    "DETECTOR_CONFIDENCE",
    "DETECTOR_DROP_RATE",
    "DETECTOR_NOISE_PX",
    "EXAMPLE_FPS",
    "EXAMPLE_JOINT_SET",
    "EXAMPLE_NUM_FRAMES",
    "IMAGE_SIZE",
    "TWO_WALKERS",
    "ExampleScene",
    "Walker",
    "example_camera",
    "example_errors",
    "in_view",
    "make_example_scene",
    "simulate_detector",
    "track_rows",
    "walker_joints",
]

#: The 2D joint set of the example's tracks (what a COCO detector gives).
EXAMPLE_JOINT_SET = "coco17"
#: 8 s at 30 fps.
EXAMPLE_NUM_FRAMES = 240
EXAMPLE_FPS = 30.0
#: Image width and height, pixels.
IMAGE_SIZE = (1920, 1080)
CAMERA_HFOV_DEG = 70.0
CAMERA_HEIGHT_M = 1.6
#: Positive tilts the camera down.
CAMERA_PITCH_DEG = 12.0
#: Detector model: pixel noise std (px), probability of a random miss per joint and frame,
#: and the range of the confidences of seen joints.
DETECTOR_NOISE_PX = 1.5
DETECTOR_DROP_RATE = 0.03
DETECTOR_CONFIDENCE = (0.55, 0.98)
#: A joint of the farther person is hidden when its pixel lies within this body radius
#: (metres, scaled to pixels at the nearer person's depth) of one of the nearer person's bones.
OCCLUSION_RADIUS_M = 0.12
#: A person is reported in a frame only with at least this many seen joints.
MIN_VISIBLE_JOINTS = 6
#: Joints closer than this to the camera's image plane (camera z, metres) are not seen.
_MIN_DEPTH_M = 0.1


@dataclass(frozen=True)
class Walker:
    """One procedural walker (arguments of :func:`mocap_core.procedural.procedural_walk`).

    Attributes:
        seed: the walker's variation seed (gait phase, cadence, step width, arm swing).
        start_xz: ``(x, z)`` metres, ground position at frame 0, the camera's world.
        heading_deg: heading at frame 0 (0 faces +z, towards the camera; 90 faces +x).
        speed_m_s: walking speed along the path, metres per second, in (0, 2].
        turn_deg_per_s: heading change per second (positive turns left).
        body_scale: uniform size of the skeleton (1 = a ~1.72 m adult), in [0.5, 1.5].
    """

    seed: int
    start_xz: tuple[float, float]
    heading_deg: float
    speed_m_s: float
    turn_deg_per_s: float
    body_scale: float


#: The example's two people: a taller, slower walker starting 4.7 m away on the left and
#: bending right, and a smaller, faster one starting 3.6 m away on the right and bending
#: left; their paths cross about 5 m from the camera.
TWO_WALKERS: tuple[Walker, Walker] = (
    Walker(
        seed=3,
        start_xz=(-2.5, -4.0),
        heading_deg=140.0,
        speed_m_s=0.8,
        turn_deg_per_s=-15.0,
        body_scale=1.04,
    ),
    Walker(
        seed=11,
        start_xz=(2.0, -3.0),
        heading_deg=160.0,
        speed_m_s=0.95,
        turn_deg_per_s=25.0,
        body_scale=0.93,
    ),
)


@dataclass(frozen=True)
class ExampleScene:
    """The example: a camera, the people's ground truth and their 2D tracks.

    Attributes:
        camera: the calibrated input camera (:func:`example_camera`).
        fps: frames per second.
        joint_set: ``"coco17"``, the layout of ``truth`` and ``keypoints``.
        walkers: the people, in track-id order.
        truth: ``(P, T, 17, 3) float64`` metres, the camera's world (y-up, ground y = 0).
        keypoints: ``(P, T, 17, 3) float32`` pixel ``u, v`` and confidence in [0, 1];
            confidence 0 and pixels 0 where a joint is not seen (and in whole frames where
            the person is not detected).
        detected: ``(P, T) bool``, whether the detector reports person ``p`` in frame ``t``.
        seed: the detector's seed.
    """

    camera: Camera
    fps: float
    joint_set: str
    walkers: tuple[Walker, ...]
    truth: np.ndarray
    keypoints: np.ndarray
    detected: np.ndarray
    seed: int

    @property
    def num_people(self) -> int:
        return int(self.truth.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.truth.shape[1])


def example_camera(
    width: int = IMAGE_SIZE[0],
    height: int = IMAGE_SIZE[1],
    hfov_deg: float = CAMERA_HFOV_DEG,
    height_m: float = CAMERA_HEIGHT_M,
    pitch_deg: float = CAMERA_PITCH_DEG,
) -> Camera:
    """The example's input camera: pinhole, no distortion, roll 0, yaw 0, above the world
    origin (module docstring). Defaults: 1920 x 1080, 70 degrees, 1.6 m high, 12 degrees down.
    """
    K = intrinsics_from_fov(width, height, hfov_deg)
    return camera_from_height_pitch_roll(height_m, pitch_deg, 0.0, K, width, height)


def walker_joints(walker: Walker, num_frames: int, fps: float) -> np.ndarray:
    """``(T, 17, 3) float64`` ``coco17`` joints of one walker, metres, world y-up, the toes
    of a planted foot on y = 0 (the ankles sit about 7 cm above it).

    Raises:
        ValueError: a bad frame count, frame rate or walker parameter (from
            :func:`mocap_core.procedural.procedural_walk`).
    """
    motion = procedural_walk(
        num_frames,
        fps=fps,
        speed_m_s=walker.speed_m_s,
        turn_deg_per_s=walker.turn_deg_per_s,
        seed=walker.seed,
        initial_heading_deg=walker.heading_deg,
        start_xz=walker.start_xz,
        body_scale=walker.body_scale,
    )
    mapping = get_skeleton_mapping("bandai_namco", EXAMPLE_JOINT_SET)
    joints, _ = apply_mapping(
        mapping, motion.joint_names, motion.positions, motion.global_rotations
    )
    return np.asarray(joints, dtype=np.float64)


def _check_people(people: np.ndarray, joint_set: JointSet) -> np.ndarray:
    people = np.asarray(people, dtype=np.float64)
    if people.ndim != 4 or people.shape[-1] != 3:
        raise ValueError(f"people: expected shape (P, T, J, 3), got {people.shape}")
    if people.shape[2] != joint_set.num_joints:
        raise ValueError(
            f"people: {people.shape[2]} joints, but joint set {joint_set.name!r} has "
            f"{joint_set.num_joints}"
        )
    if not np.isfinite(people).all():
        raise ValueError("people: joints must be finite")
    return people


def in_view(camera: Camera, people: np.ndarray, margin_px: float = 0.0) -> np.ndarray:
    """``(P, T, J) bool``: joint in front of the camera (depth >= 0.1 m) and projecting inside
    the image shrunk by ``margin_px`` on every side.

    Args:
        camera: the input camera.
        people: ``(P, T, J, 3)`` metres, the camera's world.
        margin_px: pixels kept free at the image border, >= 0.
    """
    if not isinstance(camera, Camera):
        raise TypeError(f"camera: expected a Camera, got {type(camera).__name__}")
    if not (math.isfinite(margin_px) and margin_px >= 0):
        raise ValueError(f"margin_px: expected a finite value >= 0, got {margin_px}")
    people = np.asarray(people, dtype=np.float64)
    if people.ndim != 4 or people.shape[-1] != 3:
        raise ValueError(f"people: expected shape (P, T, J, 3), got {people.shape}")
    pixels, depth = camera.project(people)
    u, v = pixels[..., 0], pixels[..., 1]
    return (
        (depth >= _MIN_DEPTH_M)
        & (u >= margin_px)
        & (u <= camera.width - margin_px)
        & (v >= margin_px)
        & (v <= camera.height - margin_px)
    )


def _segment_distance(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """``(T, J, E)`` 2D distance from ``points (T, J, 2)`` to segments ``starts/ends (T, E, 2)``."""
    seg = ends - starts  # (T, E, 2)
    length2 = np.maximum(np.sum(seg * seg, axis=-1), 1e-12)  # (T, E)
    rel = points[:, :, None, :] - starts[:, None, :, :]  # (T, J, E, 2)
    along = np.clip(np.sum(rel * seg[:, None], axis=-1) / length2[:, None], 0.0, 1.0)
    closest = starts[:, None] + along[..., None] * seg[:, None]
    return np.linalg.norm(points[:, :, None, :] - closest, axis=-1)


def _occluded(
    pixels: np.ndarray,
    depth: np.ndarray,
    visible: np.ndarray,
    edges: np.ndarray,
    focal_px: float,
    radius_m: float,
) -> np.ndarray:
    """``(P, T, J) bool``: joint hidden behind a nearer person's bones in that frame.

    A person is nearer in a frame when the mean depth of their visible joints is smaller;
    a bone hides what lies within ``radius_m`` of it, scaled to pixels at its own depth.
    """
    num_people = pixels.shape[0]
    hidden = np.zeros(visible.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        counts = visible.sum(-1)
        mean_depth = np.where(
            counts > 0, np.where(visible, depth, 0.0).sum(-1) / np.maximum(counts, 1), np.inf
        )  # (P, T)
    for far in range(num_people):
        for near in range(num_people):
            if far == near:
                continue
            in_front = mean_depth[near] < mean_depth[far]  # (T,)
            bone_seen = visible[near][:, edges[:, 0]] & visible[near][:, edges[:, 1]]  # (T, E)
            bone_depth = 0.5 * (depth[near][:, edges[:, 0]] + depth[near][:, edges[:, 1]])
            radius_px = radius_m * focal_px / np.maximum(bone_depth, _MIN_DEPTH_M)  # (T, E)
            distance = _segment_distance(
                pixels[far], pixels[near][:, edges[:, 0]], pixels[near][:, edges[:, 1]]
            )  # (T, J, E)
            covered = (distance <= radius_px[:, None, :]) & bone_seen[:, None, :]
            hidden[far] |= covered.any(-1) & in_front[:, None]
    return hidden


def simulate_detector(
    camera: Camera,
    people: np.ndarray,
    joint_set: JointSet,
    rng: np.random.Generator,
    *,
    noise_px: float = DETECTOR_NOISE_PX,
    drop_rate: float = DETECTOR_DROP_RATE,
    confidence: tuple[float, float] = DETECTOR_CONFIDENCE,
    occlusion_radius_m: float = OCCLUSION_RADIUS_M,
    min_visible_joints: int = MIN_VISIBLE_JOINTS,
) -> tuple[np.ndarray, np.ndarray]:
    """2D tracks of several people as a detector with a tracker would report them.

    The random draws, in this order and whatever the settings (so settings nest): pixel
    noise ``standard_normal((P, T, J, 2))``, misses ``random((P, T, J))``, confidences
    ``random((P, T, J))``.

    Args:
        camera: the input camera.
        people: ``(P, T, J, 3)`` metres, the camera's world, ``joint_set`` order, finite.
        joint_set: the layout (its bones occlude the people behind them).
        rng: the generator of the noise, the misses and the confidences.
        noise_px: std of the Gaussian noise per pixel coordinate, >= 0.
        drop_rate: probability in [0, 1) that a visible joint is missed.
        confidence: ``(low, high)`` range of the confidences of seen joints, in (0, 1].
        occlusion_radius_m: body radius of the nearer person's bones, metres, >= 0
            (0: no occlusion).
        min_visible_joints: seen joints a person needs in a frame to be reported, >= 1.

    Returns:
        ``keypoints (P, T, J, 3) float32``: pixel ``u, v`` (projection + noise) and
        confidence; ``u = v = conf = 0`` where a joint is not seen and in every frame where
        the person is not reported. ``detected (P, T) bool``: the person is reported.

    Raises:
        TypeError: ``camera`` or ``rng`` of the wrong type.
        ValueError: bad shapes or settings (the message names them).
    """
    if not isinstance(camera, Camera):
        raise TypeError(f"camera: expected a Camera, got {type(camera).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy Generator, got {type(rng).__name__}")
    people = _check_people(people, joint_set)
    if not (math.isfinite(noise_px) and noise_px >= 0):
        raise ValueError(f"noise_px: expected a finite value >= 0, got {noise_px}")
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate: expected a probability in [0, 1), got {drop_rate}")
    low, high = confidence
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"confidence: expected 0 < low <= high <= 1, got {confidence}")
    if not (math.isfinite(occlusion_radius_m) and occlusion_radius_m >= 0):
        raise ValueError(f"occlusion_radius_m: expected a value >= 0, got {occlusion_radius_m}")
    if not 1 <= min_visible_joints <= joint_set.num_joints:
        raise ValueError(
            f"min_visible_joints: expected 1..{joint_set.num_joints}, got {min_visible_joints}"
        )
    noise = rng.standard_normal(people.shape[:3] + (2,))
    misses = rng.random(people.shape[:3])
    confidences = low + (high - low) * rng.random(people.shape[:3])

    pixels, depth = camera.project(people)
    visible = in_view(camera, people)
    edges = np.asarray(joint_set.edges, dtype=np.int64)
    if occlusion_radius_m > 0 and people.shape[0] > 1:
        focal = float(camera.K[0, 0])
        visible &= ~_occluded(pixels, depth, visible, edges, focal, occlusion_radius_m)
    seen = visible & (misses >= drop_rate)
    detected = seen.sum(-1) >= min_visible_joints
    seen &= detected[..., None]
    uv = np.where(seen[..., None], pixels + noise_px * noise, 0.0)
    conf = np.where(seen, confidences, 0.0)
    keypoints = np.concatenate([uv, conf[..., None]], axis=-1).astype(np.float32)
    return keypoints, detected


def track_rows(
    keypoints: np.ndarray, detected: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of the 2D keypoints ``.npz`` (DESIGN 4.3): one per person and detected frame.

    Args:
        keypoints: ``(P, T, J, 3)`` pixels and confidence.
        detected: ``(P, T) bool``.

    Returns:
        ``keypoints (N, J, 3) float32``, ``track_id (N,) int64`` (the person's index) and
        ``frame (N,) int64``, ordered by track then frame; ``N = detected.sum()``.
    """
    keypoints = np.asarray(keypoints)
    detected = np.asarray(detected)
    if keypoints.ndim != 4 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints: expected shape (P, T, J, 3), got {keypoints.shape}")
    if detected.dtype != np.bool_ or detected.shape != keypoints.shape[:2]:
        raise ValueError(f"detected: expected a bool array of shape {keypoints.shape[:2]}")
    track, frame = np.nonzero(detected)  # row-major: by track, then frame
    return (
        keypoints[track, frame].astype(np.float32),
        track.astype(np.int64),
        frame.astype(np.int64),
    )


def make_example_scene(
    num_frames: int = EXAMPLE_NUM_FRAMES,
    fps: float = EXAMPLE_FPS,
    seed: int = 0,
    walkers: Sequence[Walker] = TWO_WALKERS,
    camera: Camera | None = None,
    noise_px: float = DETECTOR_NOISE_PX,
    drop_rate: float = DETECTOR_DROP_RATE,
) -> ExampleScene:
    """The example scene (module docstring): the walkers' ground truth and their 2D tracks.

    Args:
        num_frames: frames, >= 1 (default 240: 8 s at 30 fps).
        fps: frames per second.
        seed: seed of the detector's noise, misses and confidences.
        walkers: the people (default :data:`TWO_WALKERS`), at least one.
        camera: the input camera (default :func:`example_camera`).
        noise_px, drop_rate: see :func:`simulate_detector`.

    Returns:
        :class:`ExampleScene`.
    """
    walkers = tuple(walkers)
    if not walkers:
        raise ValueError("walkers: at least one walker is needed")
    if camera is None:
        camera = example_camera()
    truth = np.stack([walker_joints(w, num_frames, fps) for w in walkers])
    rng = np.random.default_rng(seed)
    keypoints, detected = simulate_detector(
        camera, truth, COCO17, rng, noise_px=noise_px, drop_rate=drop_rate
    )
    return ExampleScene(
        camera=camera,
        fps=float(fps),
        joint_set=EXAMPLE_JOINT_SET,
        walkers=walkers,
        truth=truth,
        keypoints=keypoints,
        detected=detected,
        seed=int(seed),
    )


def example_errors(pred: np.ndarray, truth: np.ndarray) -> dict[str, float | int]:
    """Abs-MPJPE (no alignment) and PA-MPJPE (per-frame similarity alignment) of a track.

    Args:
        pred: ``(T, J, 3)`` recovered joints, metres, the camera's world; NaN where not
            recovered.
        truth: ``(T, J, 3)`` ground truth at the same frames, same layout and frame.

    Returns:
        ``abs_mpjpe_mm`` and ``pa_mpjpe_mm`` (millimetres, means over the frames where every
        joint of both is finite; NaN when there is none) and ``frames_scored`` (that count).
    """
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if pred.ndim != 3 or pred.shape[-1] != 3 or pred.shape != truth.shape:
        raise ValueError(
            f"pred and truth: expected equal shapes (T, J, 3), got {pred.shape} and {truth.shape}"
        )
    finite = np.isfinite(pred).all(axis=(1, 2)) & np.isfinite(truth).all(axis=(1, 2))
    if not finite.any():
        return {"abs_mpjpe_mm": math.nan, "pa_mpjpe_mm": math.nan, "frames_scored": 0}
    return {
        "abs_mpjpe_mm": abs_mpjpe(pred[finite], truth[finite]),
        "pa_mpjpe_mm": pa_mpjpe(pred[finite], truth[finite]),
        "frames_scored": int(finite.sum()),
    }
