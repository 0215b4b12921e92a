"""Recovery: 3D motion from one calibrated camera's 2D keypoints (DESIGN 2.6, method-notes 5.3).

The multi-view denoiser generates the motion as seen by ``V - 1`` virtual cameras around the
subject; at every sampling step all views are triangulated into one 3D motion, which is
reprojected into every view (the "consistency block"), so the views stay consistent and the
final answer is metric and absolute.

Pipeline for one clip (:func:`recover_clips` does many clips at once):

1. **Windows** (:func:`plan_windows`): the clip is cut into windows of ``config.window``
   frames that overlap by at least ``config.overlap`` frames; a clip shorter than a window is
   one padded window.
2. **Scene per window** (:func:`prepare_scene`): the camera is moved into its canonical frame
   (:func:`mocap_core.cameras.canonical_world_transform`: y-up, ground y = 0, origin below the
   camera, camera looking along -Z); the observed pixels are undistorted into *ideal* pixels
   (the pinhole image of the same camera, ``K`` unchanged), which is what the encodings and
   the triangulation assume; the activity-area centre is estimated from the window's 2D feet
   (:func:`ground_contact_position`) and a virtual rig is sampled around it
   (:func:`mocap_core.rig.sample_rig_arrays`) with its pointmaps and camera embeddings.
   The rig is drawn per window, not per clip, because training centres the rig on each
   window's own motion (docs/TRAINING.md); a subject who walks across a room keeps the virtual
   cameras around them.
3. **Sampling** (:func:`sample_windows`), for a batch of windows in one forward pass per step:
   predict ``x0`` of all views; denormalise and decode every view to pixels; replace view 0 by
   the observation; triangulate every joint and frame (confidence-weighted DLT, see
   "Weights"); reproject into every view; re-encode; put the observation back into view 0;
   take the sampler step (DDPM posterior or DDIM) with fresh world noise. The result is the
   last triangulation.
4. **Blending**: windows are mapped back to the user's world frame and cross-faded linearly
   in their overlaps (:func:`blend_weights`).

Conventions:

- Keypoints ``(T, J, 3)``: pixel ``u, v`` of the camera's (distorted) image and a detector
  confidence, in the *model's* joint order (``smpl22``, or ``coco17_pelvis`` with the pelvis
  already prepended, e.g. by :func:`mocap_core.joint_sets.add_pelvis_confidence`). A joint is
  missing where its confidence is ``<= config.min_confidence``, NaN, or its pixel is not
  finite or cannot be undistorted.
- Results: ``joints (T, J, 3)`` metres in the user's world frame of the camera (y-up, ground
  y = 0), in the model's joint order; ``valid (T, J)``.
- Weights: view 0's weight of a joint is its confidence clipped to ``[0, 1]`` (or 1 when
  ``config.weighted`` is False); the virtual views weigh 1; a least-squares weight is the
  square of these (:func:`mocap_core.triangulation.triangulate`). A missing observed joint
  weighs ``config.missing_view0_weight`` (0 by default: the model's own view-0 guess of an
  unseen joint is a fourth generated view, correlated with the three others, and the virtual
  views alone triangulate it). Its view-0 pixel is the model's view-0 prediction.
- View 0 in the consistency block: visible joints take the observed pixels; missing joints
  take the reprojection of the triangulation, and the view is encoded from these pixels. With
  every joint visible this is exactly the observed encoding, as in the reference; with missing
  joints it keeps the sample's view 0 a consistent, complete pose instead of pinning unseen
  joints on the root. The conditioning inputs (``obs_local``, ``obs_global``) are the
  observed encodings with missing joints masked, as in training.
- Missing root: the conditioning encodings need a root in every frame. It is filled from the
  hips' mid-point when both are seen, else from the mean of the visible joints, else
  interpolated in time; it is never used as an observation for the triangulation.
- Randomness: window ``i`` of a clip with key ``k`` draws its rig and its noise from
  :func:`window_seed` ``(config.seed, k, i)`` (sample ``s > 0`` of ``config.num_samples``:
  ``(config.seed, k, i, s)``), so a clip's result does not depend on the
  other clips or on how windows are batched (up to float rounding of batched matmuls).
- Memory: windows are processed ``config.batch_windows`` at a time and accumulated into
  per-clip output arrays, so memory is flat in the sequence length (measured with the tiny
  model: peak RSS 426 MiB for a 10,000-frame clip, 308 MiB for 300 frames, 261 MiB before
  recovery; the difference is one full batch of windows plus allocator high water).
- Speed: the pointmap tokens are computed once per batch, not once per step
  (:func:`_cached_pointmap_tokens`, ~25-35% faster). On a CPU shared with other jobs, one
  torch thread was 5-8x faster than two (the threads wait on each other); the caller sets
  ``torch.set_num_threads``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from mocap_core.cameras import (
    Camera,
    camera_k_embeddings,
    camera_rt_embeddings,
    canonical_world_transform,
    project_points,
    transform_camera,
)
from mocap_core.diffusion import DDIMScheduler, DDPMScheduler, world_noise
from mocap_core.joint_sets import JointSet, get_joint_set
from mocap_core.pointmaps import ground_pointmaps
from mocap_core.representation import (
    FeatureStats,
    decode_local,
    encode_global,
    encode_local,
    normalized_to_pixels,
    to_channels_first,
    to_channels_last,
)
from mocap_core.rig import RigConfig, activity_area, sample_rig_arrays
from mocap_core.triangulation import triangulate

__all__ = [
    "ClipInput",
    "anchor_to_ground",
    "RecoveredMotion",
    "RecoveryConfig",
    "RigBatch",
    "SampledWindows",
    "Scene",
    "blend_weights",
    "ground_contact_points",
    "ground_contact_position",
    "iter_recover_clips",
    "plan_windows",
    "post_process",
    "prepare_scene",
    "recover_clips",
    "recover_sequence",
    "sample_windows",
    "scene_observations",
    "validate_clip",
    "window_seed",
]

Sampler = Literal["ddim", "ddpm"]

# Distance (metres) in front of view 0 used as a stand-in 3D point when a window has no
# triangulated point at all (the sampler needs finite pixels to re-encode; such points are
# reported invalid).
_STAND_IN_DEPTH_M = 4.0


# ---------------------------------------------------------------------------------------------
# Configuration and records


class RecoveryConfig(BaseModel):
    """How to sample (frozen, serialisable).

    Attributes:
        window: frames per window, at most the model's ``max_frames``; use the window the
            model was trained on (the checkpoint's scene config).
        overlap: frames shared by neighbouring windows, ``0 .. window // 2``; None =
            ``window // 4``. Windows are spread evenly, so actual overlaps are at least this.
        sampler: ``"ddim"`` (fast path, any number of steps, "trailing" spacing so that it
            starts from pure noise) or ``"ddpm"`` (the reference's ancestral sampler; 100
            steps over a 100-step schedule is every train step).
        steps: sampling steps, ``1 .. num_train_timesteps``. Default 10 (DDIM), from
            benchmarks/bench_recovery.py on the 2-core dev CPU, 300-frame clip: the tiny model
            runs DDIM 10 / DDIM 25 / DDPM 100 at about 500 / 210 / 54 frames/s (one torch
            thread; up to 760 / 300 / 70 with two on a quiet machine), and the paper-size
            model DDIM 10 at about 16 frames/s: 10 steps keep real time (30 frames/s) within
            reach of the larger models too.
        eta: DDIM stochasticity in ``[0, 1]`` (0: deterministic given the start noise).
        num_train_timesteps: steps of the training schedule (cosine, 100 in the reference).
        batch_windows: windows per forward pass (across clips).
        seed: base seed of the rigs and noise.
        weighted: weigh view 0 by the detector confidence in the triangulation.
        min_confidence: joints with confidence ``<=`` this are missing.
        missing_view0_weight: triangulation weight of the model's own view-0 prediction for a
            missing observed joint, ``[0, 1]``.
        keep_view_pixels: return the final 2D views of every frame (debugging; memory grows
            with the clip).
        init: ``"noise"`` (the method: sampling starts from world noise) or
            ``"ground_contact"``: sampling starts part-way, at the diffusion step
            ``init_strength * (num_train_timesteps - 1)``, from the monocular ground-contact
            estimate (every joint at the depth where the planted foot's ray meets the ground,
            :func:`mocap_core.evaluation.ground_contact_baseline`) projected into all views and
            noised to that step — the model then refines a plausible guess instead of
            imagining the views from nothing (an SDEdit-style start; this project's addition,
            useful for models trained briefly). Steps above the start are skipped.
        init_strength: in ``(0, 1]``; 1 starts from (almost) pure noise.
        smooth_frames: width (frames) of a centred moving average applied to each joint's
            recovered trajectory, 0 or 1 = off (the reference applies none); it damps the
            frame-to-frame depth jitter of the triangulation.
        ground_anchor_frames: 0 = off (the reference). Otherwise the recovered joints are
            moved onto the observed camera rays (keeping their camera depth) and the body is
            scaled along those rays, per frame, so that its planted foot stands on the
            ground (each foot joint at its own planted height,
            :func:`mocap_core.evaluation.planted_foot_heights`); the per-frame scale is a
            running median and mean over this many frames (:func:`anchor_to_ground`). The
            model supplies the pose and which foot is planted, the known ground fixes the
            distance: a post-processing step of this project, not of the reference.
        num_samples: diffusion samples drawn per window, each with its own rig and noise
            (:func:`window_seed` with the sample index); their final triangulations are
            averaged (the sample mean, an estimate of the posterior mean, with less error
            than one sample) before any post-processing. Costs ``num_samples`` times the
            sampling; 1 = the reference's single sample.
        ground_anchor_tolerance_m: the anchor's planted joints: every seen foot joint whose
            height above its planted height is within this of the lowest one's (0: the
            lowest joint alone); their scales are averaged, so a flat planted foot (ankle and
            toe) or two planted feet pin the distance together.
        ankle_height_m: the anchor's planted height of the ankle joints, metres; None takes
            the joint set's (:data:`mocap_core.evaluation.PLANTED_FOOT_HEIGHT_M`: 0.115 m,
            the Bandai-Namco skeleton the release checkpoints learned). A property of the
            input's keypoint convention: the distance the anchor gives scales with the
            camera height less this (at 1.6 m, 3 cm too high puts the body 2 % too far).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    window: int = Field(..., ge=2)
    overlap: int | None = Field(None, ge=0)
    sampler: Sampler = "ddim"
    steps: int = Field(10, ge=1)
    eta: float = Field(0.0, ge=0.0, le=1.0)
    num_train_timesteps: int = Field(100, ge=1)
    batch_windows: int = Field(8, ge=1)
    seed: int = 42
    weighted: bool = True
    min_confidence: float = Field(0.0, ge=0.0)
    missing_view0_weight: float = Field(0.0, ge=0.0, le=1.0)
    keep_view_pixels: bool = False
    init: Literal["noise", "ground_contact"] = "noise"
    init_strength: float = Field(0.6, gt=0.0, le=1.0)
    smooth_frames: int = Field(0, ge=0)
    ground_anchor_frames: int = Field(0, ge=0)
    ground_anchor_tolerance_m: float = Field(0.0, ge=0.0)
    ankle_height_m: float | None = Field(None, gt=0.0, lt=1.0)
    num_samples: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> RecoveryConfig:
        if self.steps > self.num_train_timesteps:
            raise ValueError(
                f"steps ({self.steps}) exceeds num_train_timesteps ({self.num_train_timesteps})"
            )
        if self.overlap is not None and self.overlap > self.window // 2:
            raise ValueError(
                f"overlap ({self.overlap}) must be at most window // 2 = {self.window // 2}"
            )
        return self

    @property
    def resolved_overlap(self) -> int:
        """``overlap``, or ``window // 4`` when it is None."""
        return self.window // 4 if self.overlap is None else self.overlap


@dataclass(frozen=True)
class ClipInput:
    """One clip to recover.

    Attributes:
        camera: the calibrated camera, in the user's y-up world (ground y = 0).
        keypoints: ``(T, J, 3)`` pixels ``u, v`` (distorted image) and confidence, model joint
            order.
        key: stable identifier (e.g. the sequence id) that seeds the clip's randomness; None
            uses the clip's position in the list.
    """

    camera: Camera
    keypoints: np.ndarray
    key: str | None = None


@dataclass(frozen=True)
class RecoveredMotion:
    """Recovered motion of one clip.

    Attributes:
        joints: ``(T, J, 3) float64`` metres, the camera's world frame (y-up, ground y = 0),
            model joint order; NaN where not valid.
        valid: ``(T, J) bool``, True where at least one window triangulated the joint.
        num_windows: windows the clip was cut into.
        view_pixels: with ``config.keep_view_pixels``, ``(V, T, J, 2) float32``: the final
            2D views (decoded predictions, observed pixels in view 0 where seen) of the window
            with the largest blend weight at each frame. Virtual cameras differ between
            windows. None otherwise.
    """

    joints: np.ndarray
    valid: np.ndarray
    num_windows: int
    view_pixels: np.ndarray | None = None


@dataclass(frozen=True)
class Scene:
    """One window's canonical observation and virtual rig (numpy).

    Attributes:
        R_wc, t_wc: ``(3, 3)``, ``(3,)`` metres: user world -> canonical frame,
            ``x_c = R_wc @ x_w + t_wc``.
        pixels: ``(T, J, 2) float64`` ideal (undistorted) pixels of view 0, NaN where missing.
        confidence: ``(T, J) float64``, 0 where missing.
        area_centre: ``(3,)`` metres, canonical frame, on the ground: the rig's centre.
        K, R, t: ``(V, 3, 3)``, ``(V, 3, 3)``, ``(V, 3)`` pinhole rig in the canonical frame;
            view 0 is the input camera without distortion.
        sizes: ``(V, 2) int64`` image ``(width, height)``.
        rt: ``(V, 3) float32`` tilt, roll (rad), height (m) embeddings.
        k: ``(V, 4) float32`` padded-intrinsics embeddings.
        pointmap: ``(V, P, P, 3) float32`` ground pointmaps, metres, canonical frame.
    """

    R_wc: np.ndarray
    t_wc: np.ndarray
    pixels: np.ndarray
    confidence: np.ndarray
    area_centre: np.ndarray
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    sizes: np.ndarray
    rt: np.ndarray
    k: np.ndarray
    pointmap: np.ndarray

    def to_world(self, points: np.ndarray) -> np.ndarray:
        """``points (..., 3)`` canonical -> the user's world frame (metres)."""
        # R_wc.T @ (p - t_wc), written for row vectors.
        return (np.asarray(points) - self.t_wc) @ self.R_wc


@dataclass(frozen=True)
class RigBatch:
    """The rigs of ``N`` windows as tensors on one device.

    Attributes:
        K, R: ``(N, V, 3, 3)``; t: ``(N, V, 3)`` metres; sizes: ``(N, V, 2)`` pixels;
        rt: ``(N, V, 3)``; k: ``(N, V, 4)``; pointmap: ``(N, V, P, P, 3)`` metres.
    """

    K: torch.Tensor
    R: torch.Tensor
    t: torch.Tensor
    sizes: torch.Tensor
    rt: torch.Tensor
    k: torch.Tensor
    pointmap: torch.Tensor

    @classmethod
    def from_scenes(
        cls, scenes: Sequence[Scene], device: torch.device | str, dtype: torch.dtype
    ) -> RigBatch:
        """Stack scenes' rigs; geometry in float64 (float32 on MPS), embeddings in ``dtype``."""
        if not scenes:
            raise ValueError("from_scenes: need at least one scene")
        device = torch.device(device)
        geo = _geometry_dtype(device)

        def stack(name: str, out_dtype: torch.dtype) -> torch.Tensor:
            array = np.stack([getattr(s, name) for s in scenes])
            return torch.as_tensor(array).to(device=device, dtype=out_dtype)

        return cls(
            K=stack("K", geo),
            R=stack("R", geo),
            t=stack("t", geo),
            sizes=stack("sizes", geo),
            rt=stack("rt", dtype),
            k=stack("k", dtype),
            pointmap=stack("pointmap", dtype),
        )


@dataclass(frozen=True)
class SampledWindows:
    """Output of :func:`sample_windows` (tensors on the model's device).

    Attributes:
        joints: ``(N, L, J, 3)`` metres, canonical frame of each window; NaN where invalid.
        valid: ``(N, L, J) bool``; False on padding frames and where triangulation never
            succeeded.
        view_pixels: ``(N, V, L, J, 2)`` the last step's 2D views (decoded predictions,
            observed pixels in view 0 where seen).
    """

    joints: torch.Tensor
    valid: torch.Tensor
    view_pixels: torch.Tensor


# ---------------------------------------------------------------------------------------------
# Windows, seeds, blending


def plan_windows(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Cut ``num_frames`` frames into windows ``[start, stop)``.

    A clip of at most ``window`` frames is one window ``(0, num_frames)`` (padded later).
    Longer clips get the fewest full windows whose neighbours overlap by at least ``overlap``
    frames, spread evenly from frame 0 to the end (rounded starts), so every window is full.

    Raises:
        ValueError: ``num_frames < 1``, ``window < 2`` or ``overlap`` outside
            ``0 .. window // 2``.
    """
    for name, value in (("num_frames", num_frames), ("window", window), ("overlap", overlap)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if num_frames < 1:
        raise ValueError(f"num_frames: expected >= 1, got {num_frames}")
    if window < 2:
        raise ValueError(f"window: expected >= 2, got {window}")
    if not 0 <= overlap <= window // 2:
        raise ValueError(f"overlap: expected 0 .. {window // 2}, got {overlap}")
    if num_frames <= window:
        return [(0, int(num_frames))]
    stride = window - overlap
    count = math.ceil((num_frames - window) / stride) + 1
    span = num_frames - window
    starts = [(2 * i * span + (count - 1)) // (2 * (count - 1)) for i in range(count)]
    return [(int(s), int(s) + int(window)) for s in starts]


def blend_weights(length: int, overlap_before: int, overlap_after: int) -> np.ndarray:
    """Linear cross-fade weights of one window's frames.

    ``w(f) = min(1, (f + 1) / (overlap_before + 1), (length - f) / (overlap_after + 1))``: in
    an overlap of ``n`` frames the ramps of the two windows are ``(n - i) / (n + 1)`` and
    ``(i + 1) / (n + 1)``, which sum to exactly 1.

    Returns:
        ``(length,) float64`` in ``(0, 1]``.
    """
    if length < 1 or overlap_before < 0 or overlap_after < 0:
        raise ValueError(
            f"blend_weights: need length >= 1 and overlaps >= 0, got {length}, "
            f"{overlap_before}, {overlap_after}"
        )
    frames = np.arange(length, dtype=np.float64)
    weights = np.ones(length)
    if overlap_before > 0:
        weights = np.minimum(weights, (frames + 1) / (overlap_before + 1))
    if overlap_after > 0:
        weights = np.minimum(weights, (length - frames) / (overlap_after + 1))
    return weights


def window_seed(seed: int, clip_key: str, window_index: int, sample: int = 0) -> int:
    """63-bit seed of one window's rig and noise, from ``(seed, clip key, window index)``
    and, for the further samples of ``RecoveryConfig.num_samples``, the sample index.

    A hash, so neighbouring seeds or keys give unrelated streams and the seed does not depend
    on the batch or on the other clips. Sample 0 is the single-sample seed.
    """
    text = f"{int(seed)}\x00{clip_key}\x00{int(window_index)}"
    if sample:
        text += f"\x00sample{int(sample)}"
    text = text.encode()
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


# ---------------------------------------------------------------------------------------------
# Ground contact (also the monocular evaluation baseline's idea)


def ground_contact_points(
    pixels: np.ndarray,
    visible: np.ndarray,
    camera: Camera,
    foot_joints: Sequence[int],
) -> np.ndarray:
    """Per frame, the ground point under the lowest visible foot keypoint.

    Each visible foot keypoint's ray is intersected with the ground y = 0; the foot whose hit
    is nearest the camera (horizontally) is taken as the one on the ground: a lifted foot lies
    above the ground along its ray, so its ray meets the ground farther away. This holds for
    any camera roll, unlike "largest v in the image".

    Args:
        pixels: ``(T, J, 2)`` pixels of ``camera``'s image (distortion is undone with the
            camera's coefficients).
        visible: ``(T, J) bool``.
        camera: the camera, in a y-up world with the ground at y = 0.
        foot_joints: indices of the foot/ankle joints (``JointSet.foot_joints``).

    Returns:
        ``(T, 3) float64`` metres, world frame, y = 0; NaN rows where no visible foot's ray
        meets the ground in front of the camera.
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    visible = np.asarray(visible)
    if pixels.ndim != 3 or pixels.shape[-1] != 2:
        raise ValueError(f"pixels: expected shape (T, J, 2), got {pixels.shape}")
    if visible.shape != pixels.shape[:2] or visible.dtype != np.bool_:
        raise ValueError(f"visible: expected a bool array {pixels.shape[:2]}, got {visible.shape}")
    feet = [int(j) for j in foot_joints]
    if not feet or min(feet) < 0 or max(feet) >= pixels.shape[1]:
        raise ValueError(f"foot_joints: expected indices in [0, {pixels.shape[1]}), got {feet}")
    num_frames = pixels.shape[0]
    if num_frames == 0:
        return np.zeros((0, 3))
    foot_pixels = np.where(visible[:, feet, None], pixels[:, feet], np.nan)
    origins, directions = camera.unproject(foot_pixels)  # (T, F, 3) each
    with np.errstate(invalid="ignore", divide="ignore"):
        along = -origins[..., 1] / directions[..., 1]
        hits = origins + along[..., None] * directions
        horizontal = along * np.hypot(directions[..., 0], directions[..., 2])
        usable = (directions[..., 1] < 0) & np.isfinite(horizontal) & (along > 0)
    horizontal = np.where(usable, horizontal, np.inf)
    nearest = np.argmin(horizontal, axis=1)
    frames = np.arange(num_frames)
    out = hits[frames, nearest]
    out[:, 1] = 0.0
    out[~usable[frames, nearest]] = np.nan
    return out


def ground_contact_position(
    pixels: np.ndarray,
    visible: np.ndarray,
    camera: Camera,
    foot_joints: Sequence[int],
) -> np.ndarray | None:
    """The subject's ground position over a clip: median of :func:`ground_contact_points`.

    The per-coordinate median over the frames that have a contact point ignores frames
    where both feet are off the ground (their hits lie too far) as long as they are a minority.

    Returns:
        ``(3,) float64`` metres, world frame, y = 0, or None when no frame has a contact point.
    """
    points = ground_contact_points(pixels, visible, camera, foot_joints)
    found = np.isfinite(points[:, 0])
    if not found.any():
        return None
    centre = np.median(points[found], axis=0)
    centre[1] = 0.0
    return centre


# ---------------------------------------------------------------------------------------------
# Scene set-up


def _check_keypoints(keypoints: Any, num_joints: int | None = None) -> np.ndarray:
    array = np.asarray(keypoints)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"keypoints: expected a numeric array, got dtype {array.dtype}")
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"keypoints: expected shape (T, J, 3), got {array.shape}")
    if array.shape[0] < 1:
        raise ValueError("keypoints: the clip has no frames")
    if num_joints is not None and array.shape[1] != num_joints:
        raise ValueError(
            f"keypoints: {array.shape[1]} joints, the model's joint set has {num_joints}"
        )
    if array.shape[1] < 2:
        raise ValueError(f"keypoints: need a root and at least one more joint, got {array.shape}")
    return array.astype(np.float64)


def prepare_scene(
    camera: Camera,
    keypoints: np.ndarray,
    rig_config: RigConfig,
    pointmap_size: int,
    rng: np.random.Generator,
    *,
    foot_joints: Sequence[int],
    min_confidence: float = 0.0,
    pointmap_max_range_m: float | None = None,
) -> Scene:
    """Canonical observation and a virtual rig for one window (or a whole short clip).

    Steps: the canonical transform of ``camera``; its pinhole twin in the canonical frame
    (same ``K``, no distortion) is view 0; observed pixels are undistorted into that pinhole
    image; the rig is centred on :func:`ground_contact_position` of these frames (the rig's
    :func:`mocap_core.rig.activity_area` when no foot is seen); pointmaps (no distortion in
    any view) and embeddings as in training.

    Args:
        camera: the user's calibrated camera (y-up world, ground y = 0, centre above it).
        keypoints: ``(T, J, 3)`` pixels ``u, v`` and confidence, model joint order.
        rig_config: the virtual-rig distribution the model was trained with.
        pointmap_size: pointmap side, pixels (the model config's ``pointmap_size``).
        rng: draws the rig.
        foot_joints: indices of the foot/ankle joints in the model joint order.
        min_confidence: joints with confidence ``<=`` this are missing.
        pointmap_max_range_m: drop ground hits farther than this from a camera, as the
            model's training did (``SceneConfig.pointmap_max_range_m``); None keeps all.

    Returns:
        :class:`Scene` (see its attributes).
    """
    if not isinstance(camera, Camera):
        raise TypeError(f"camera: expected a Camera, got {type(camera).__name__}")
    if not isinstance(rig_config, RigConfig):
        raise TypeError(f"rig_config: expected a RigConfig, got {type(rig_config).__name__}")
    keypoints = _check_keypoints(keypoints)
    if not camera.center[1] > 0:
        raise ValueError(f"camera: centre must be above the ground, got y = {camera.center[1]} m")

    R_wc, t_wc = canonical_world_transform(camera)
    moved = transform_camera(camera, R_wc, t_wc)
    pinhole = Camera(K=moved.K, R=moved.R, t=moved.t, width=moved.width, height=moved.height)

    raw_pixels = keypoints[..., :2]
    confidence = keypoints[..., 2]
    with np.errstate(invalid="ignore"):
        seen = np.isfinite(confidence) & (confidence > min_confidence)
    seen &= np.isfinite(raw_pixels).all(-1)
    # Unseen pixels may hold anything; keep them out of the Newton undistortion.
    safe = np.where(seen[..., None], raw_pixels, camera.K[[0, 1], [2, 2]])
    ideal = normalized_to_pixels(camera.undistort(safe), camera.K)
    seen &= np.isfinite(ideal).all(-1)
    pixels = np.where(seen[..., None], ideal, np.nan)
    confidence = np.where(seen, confidence, 0.0)

    centre = ground_contact_position(pixels, seen, pinhole, foot_joints)
    if centre is None:
        centre, _ = activity_area(pinhole, rig_config)
    rig = sample_rig_arrays(pinhole, rig_config, rng, area_centre=centre)
    pointmap = ground_pointmaps(
        rig["K"], rig["R"], rig["t"], None, rig["sizes"], pointmap_size, pointmap_max_range_m
    )
    return Scene(
        R_wc=R_wc,
        t_wc=t_wc,
        pixels=pixels,
        confidence=confidence,
        area_centre=np.asarray(centre, dtype=np.float64),
        K=rig["K"],
        R=rig["R"],
        t=rig["t"],
        sizes=rig["sizes"],
        rt=camera_rt_embeddings(rig["R"], rig["t"]).astype(np.float32),
        k=camera_k_embeddings(rig["K"], rig["sizes"]).astype(np.float32),
        pointmap=pointmap,
    )


def scene_observations(
    scenes: Sequence[Scene], num_frames: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack scenes' observations, padded to ``num_frames``.

    Returns:
        ``obs_pixels (N, L, J, 2) float64`` ideal pixels (NaN where missing or padding),
        ``obs_conf (N, L, J) float64`` (0 where missing or padding), ``lengths (N,) int64``.
    """
    if not scenes:
        raise ValueError("scene_observations: need at least one scene")
    lengths = np.array([s.pixels.shape[0] for s in scenes], dtype=np.int64)
    if lengths.max() > num_frames:
        raise ValueError(f"a scene has {lengths.max()} frames, more than num_frames={num_frames}")
    num_joints = scenes[0].pixels.shape[1]
    pixels = np.full((len(scenes), num_frames, num_joints, 2), np.nan)
    conf = np.zeros((len(scenes), num_frames, num_joints))
    for i, scene in enumerate(scenes):
        if scene.pixels.shape[1] != num_joints:
            raise ValueError("scene_observations: scenes have different numbers of joints")
        pixels[i, : lengths[i]] = scene.pixels
        conf[i, : lengths[i]] = scene.confidence
    return pixels, conf, lengths


# ---------------------------------------------------------------------------------------------
# The sampling loop


def _geometry_dtype(device: torch.device) -> torch.dtype:
    # Apple MPS has no float64; everywhere else the geometry runs in float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _as_float64_numpy(name: str, array: Any) -> np.ndarray:
    """A float64 numpy copy of a numpy array or tensor (the observation prep runs on the host)."""
    if isinstance(array, torch.Tensor):
        return array.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name}: expected a real numeric array, got dtype {array.dtype}")
    return array.astype(np.float64)


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(iter(model.parameters()), None)
    if parameter is None:
        return torch.device("cpu"), torch.float32
    return parameter.device, parameter.dtype


def _fill_root(pixels: np.ndarray, visible: np.ndarray, hip_pair: tuple[int, int]) -> np.ndarray:
    """Root pixels for the conditioning encodings where the root is missing (module docs).

    Args:
        pixels: ``(N, L, J, 2)``; visible: ``(N, L, J)``; valid frames only matter.

    Returns:
        ``(N, L, J, 2)`` copy with a finite root in every frame.
    """
    out = np.where(visible[..., None], pixels, 0.0)
    left, right = hip_pair
    hips = visible[..., left] & visible[..., right]
    count = visible.sum(-1)
    mean = out.sum(-2) / np.maximum(count, 1)[..., None]
    known = visible[..., 0] | hips | (count > 0)
    root = np.where(
        visible[..., 0, None],
        out[..., 0, :],
        np.where(hips[..., None], (out[..., left, :] + out[..., right, :]) / 2, mean),
    )
    frames = np.arange(pixels.shape[1])
    for n in range(pixels.shape[0]):
        if known[n].all():
            continue
        if not known[n].any():
            # Nothing seen in the whole window: the encoding is uninformative either way.
            root[n] = 0.0
            continue
        for axis in range(2):
            root[n, :, axis] = np.interp(frames, frames[known[n]], root[n, known[n], axis])
    out[..., 0, :] = root
    return out


@contextmanager
def _cached_pointmap_tokens(model: nn.Module) -> Iterator[None]:
    """Encode each pointmap tensor once per sampling loop instead of once per step.

    The pointmaps do not change between steps, and in eval mode the encoder is a pure
    function, so its tokens are reused (measured ~30% of a tiny-model forward pass). The
    model's ``pointmap_encoder`` is swapped for a caching wrapper while the loop runs and put
    back afterwards.
    """
    encoder = getattr(model, "pointmap_encoder", None)
    if not isinstance(encoder, nn.Module) or model.training:
        yield
        return
    model.pointmap_encoder = _PointmapTokenCache(encoder)
    try:
        yield
    finally:
        model.pointmap_encoder = encoder


class _PointmapTokenCache(nn.Module):
    """Returns the inner encoder's tokens, recomputed only when the input tensor changes."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self._key: tuple[Any, ...] | None = None
        self._tokens: torch.Tensor | None = None

    def forward(self, pointmap: torch.Tensor) -> torch.Tensor:
        # The model flattens the same (N, V, ...) tensor every step: same storage, shape and
        # version counter. Any in-place change bumps the version and invalidates the cache.
        key = (
            pointmap.data_ptr(),
            tuple(pointmap.shape),
            tuple(pointmap.stride()),
            pointmap.dtype,
            pointmap.device,
            pointmap._version,
        )
        if key != self._key or self._tokens is None:
            self._tokens = self.inner(pointmap)
            self._key = key
        return self._tokens


def _make_scheduler(config: RecoveryConfig) -> DDPMScheduler | DDIMScheduler:
    # "trailing" starts at the last train step (pure noise) for any number of steps; with
    # steps == num_train_timesteps it is every train step, the reference's DDPM loop.
    if config.sampler == "ddpm":
        scheduler: DDPMScheduler | DDIMScheduler = DDPMScheduler(
            config.num_train_timesteps, timestep_spacing="trailing"
        )
    else:
        scheduler = DDIMScheduler(
            config.num_train_timesteps, eta=config.eta, timestep_spacing="trailing"
        )
    scheduler.set_timesteps(config.steps)
    return scheduler


def _noise(
    R: torch.Tensor,
    num_frames: int,
    num_joints: int,
    generators: torch.Generator | Sequence[torch.Generator],
    dtype: torch.dtype,
) -> torch.Tensor:
    """World noise ``(N, V, C, L)``: one draw for the batch, or one per window's generator."""
    R = R.to(dtype)
    if isinstance(generators, torch.Generator):
        return world_noise(R, num_frames, num_joints, generator=generators, dtype=dtype)
    return torch.cat(
        [
            world_noise(R[i : i + 1], num_frames, num_joints, generator=g, dtype=dtype)
            for i, g in enumerate(generators)
        ]
    )


def _project(points: torch.Tensor, rig: RigBatch) -> torch.Tensor:
    """``points (N, L, J, 3)`` -> pinhole pixels ``(N, V, L, J, 2)`` in every view."""
    n, num_frames, num_joints, _ = points.shape
    pixels, _ = project_points(
        points.reshape(n, 1, num_frames * num_joints, 3), rig.K, rig.R, rig.t
    )
    return pixels.reshape(n, -1, num_frames, num_joints, 2)


def _triangulate_windows(
    view_pixels: torch.Tensor, weights: torch.Tensor, proj: torch.Tensor, lengths: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window (each has its own rig): ``(N, V, L, J, 2)`` -> points ``(N, L, J, 3)`` (NaN
    where it failed or on padding) and ``valid (N, L, J)``."""
    n, _, num_frames, num_joints, _ = view_pixels.shape
    points = view_pixels.new_full((n, num_frames, num_joints, 3), float("nan"))
    valid = torch.zeros((n, num_frames, num_joints), dtype=torch.bool, device=view_pixels.device)
    for i, length in enumerate(lengths):
        result = triangulate(
            view_pixels[i, :, :length],
            proj[i],
            weights[i, :, :length],
            on_insufficient="nan",
            return_mask=True,
        )
        points[i, :length] = result.points3d
        valid[i, :length] = result.valid
    return points, valid


def _fill_invalid(
    points: torch.Tensor, valid: torch.Tensor, lengths: torch.Tensor, stand_in: torch.Tensor
) -> torch.Tensor:
    """Finite stand-ins where ``valid`` is False, so every view can be re-encoded.

    An invalid joint takes the mean of its frame's valid joints, else of its window's, else
    ``stand_in (N, 3)``; padding frames repeat the last valid frame.
    """
    n, num_frames = points.shape[:2]
    zeros = torch.zeros_like(points)
    kept = torch.where(valid[..., None], points, zeros)
    frame_count = valid.sum(-1, keepdim=True)  # (N, L, 1)
    frame_mean = kept.sum(-2) / frame_count.clamp(min=1)
    window_count = valid.sum((1, 2))[:, None]  # (N, 1)
    window_mean = kept.sum((1, 2)) / window_count.clamp(min=1)
    window_fill = torch.where(window_count > 0, window_mean, stand_in)  # (N, 3)
    frame_fill = torch.where(frame_count > 0, frame_mean, window_fill[:, None])  # (N, L, 3)
    filled = torch.where(valid[..., None], points, frame_fill[:, :, None])
    last = (lengths - 1).clamp(min=0)[:, None]
    index = torch.minimum(torch.arange(num_frames, device=points.device)[None], last)
    return filled[torch.arange(n, device=points.device)[:, None], index]


def _ground_contact_guess(
    pixels: np.ndarray,
    visible: np.ndarray,
    rig: RigBatch,
    joint_set: JointSet,
    lengths: Sequence[int],
) -> np.ndarray:
    """``(N, L, J, 3)`` the ground-contact estimate of every window in its canonical frame
    (NaN where it has none), from view 0's ideal pixels ``(N, L, J, 2)``."""
    from mocap_core.evaluation import FOOT_KEYPOINT_HEIGHT_M, ground_contact_baseline

    n, num_frames, num_joints, _ = pixels.shape
    guess = np.full((n, num_frames, num_joints, 3), np.nan)
    K, R, t = (a[:, 0].to("cpu", torch.float64).numpy() for a in (rig.K, rig.R, rig.t))
    sizes = rig.sizes[:, 0].cpu().numpy()
    for i in range(n):
        camera = Camera(K[i], R[i], t[i], int(sizes[i, 0]), int(sizes[i, 1]))
        frames = slice(0, lengths[i])
        keypoints = np.concatenate(
            [pixels[i, frames], visible[i, frames, :, None].astype(np.float64)], axis=-1
        )
        guess[i, frames] = ground_contact_baseline(
            camera,
            keypoints,
            joint_set,
            foot_height_m=FOOT_KEYPOINT_HEIGHT_M.get(joint_set.name, 0.0),
        )
    return guess


@torch.no_grad()
def sample_windows(
    model: nn.Module,
    stats_local: FeatureStats,
    stats_global: FeatureStats,
    obs_pixels: np.ndarray | torch.Tensor,
    obs_conf: np.ndarray | torch.Tensor,
    lengths: np.ndarray | torch.Tensor | Sequence[int],
    rig: RigBatch,
    config: RecoveryConfig,
    generators: torch.Generator | Sequence[torch.Generator] | None = None,
) -> SampledWindows:
    """Run the sampling loop with the triangulation consistency block on ``N`` windows.

    Args:
        model: a multi-view denoiser with :class:`mocap_core.models.MultiViewDenoiser`'s
            forward signature and a ``config`` (ModelConfig: ``joint_set``, ``max_frames``).
            Run in eval mode (its mode is restored afterwards).
        stats_local, stats_global: the checkpoint's z-score statistics of the local and the
            global encodings.
        obs_pixels: ``(N, L, J, 2)`` ideal (undistorted, pinhole) pixels of view 0; NaN or
            anything where missing or on padding frames.
        obs_conf: ``(N, L, J)`` confidences, ``<= 0`` = missing (apply any threshold before).
        lengths: ``(N,)`` valid frames per window, ``1 .. L``; later frames are padding.
        rig: the windows' rigs (canonical frames), on the model's device.
        config: sampler, steps, weighting.
        generators: one torch generator for the batch, or one per window (results then do
            not depend on the batch); on the model's device. None: seeded with ``config.seed``.

    Returns:
        :class:`SampledWindows` ``joints (N, L, J, 3)`` metres in each window's canonical
        frame (the last triangulation; a joint whose triangulation fails keeps the previous
        step's estimate), ``valid (N, L, J)``, ``view_pixels (N, V, L, J, 2)``.
    """
    if not isinstance(config, RecoveryConfig):
        raise TypeError(f"config: expected a RecoveryConfig, got {type(config).__name__}")
    model_config = getattr(model, "config", None)
    if model_config is None or not hasattr(model_config, "joint_set"):
        raise TypeError("model: expected a denoiser with a ModelConfig as .config")
    device, model_dtype = _model_device_dtype(model)
    geo = _geometry_dtype(device)

    obs = _as_float64_numpy("obs_pixels", obs_pixels)
    conf = _as_float64_numpy("obs_conf", obs_conf)
    if obs.ndim != 4 or obs.shape[-1] != 2:
        raise ValueError(f"obs_pixels: expected shape (N, L, J, 2), got {obs.shape}")
    n, num_frames, num_joints, _ = obs.shape
    if conf.shape != (n, num_frames, num_joints):
        raise ValueError(
            f"obs_conf: expected shape {(n, num_frames, num_joints)}, got {conf.shape}"
        )
    joint_set = get_joint_set(model_config.joint_set)
    if num_joints != joint_set.num_joints:
        raise ValueError(
            f"obs_pixels: {num_joints} joints, the model's joint set {joint_set.name!r} has "
            f"{joint_set.num_joints}"
        )
    if num_frames > model_config.max_frames:
        raise ValueError(f"{num_frames} frames exceed the model's max_frames")
    length_list = [int(v) for v in np.asarray(torch.as_tensor(lengths).cpu()).reshape(-1)]
    if len(length_list) != n or min(length_list) < 1 or max(length_list) > num_frames:
        raise ValueError(f"lengths: expected {n} values in 1 .. {num_frames}, got {length_list}")
    num_views = int(rig.K.shape[1])
    for name, tensor, shape in (
        ("K", rig.K, (n, num_views, 3, 3)),
        ("R", rig.R, (n, num_views, 3, 3)),
        ("t", rig.t, (n, num_views, 3)),
        ("sizes", rig.sizes, (n, num_views, 2)),
        ("rt", rig.rt, (n, num_views, 3)),
        ("k", rig.k, (n, num_views, 4)),
    ):
        if tuple(tensor.shape) != shape:
            raise ValueError(f"rig.{name}: expected shape {shape}, got {tuple(tensor.shape)}")
    if rig.pointmap.ndim != 5 or tuple(rig.pointmap.shape[:2]) != (n, num_views):
        raise ValueError(f"rig.pointmap: expected (N={n}, V={num_views}, P, P, 3)")
    if isinstance(generators, Sequence) and len(generators) != n:
        raise ValueError(f"generators: expected one per window ({n}), got {len(generators)}")
    if generators is None:
        generators = torch.Generator(device).manual_seed(config.seed)

    # Observation (numpy, small): visibility, root fill, conditioning encodings.
    frame_valid_np = np.arange(num_frames)[None] < np.asarray(length_list)[:, None]
    with np.errstate(invalid="ignore"):
        visible_np = (conf > 0) & np.isfinite(obs).all(-1) & frame_valid_np[..., None]
    obs_clean = np.where(visible_np[..., None], obs, 0.0)
    root_filled = _fill_root(obs_clean, visible_np, joint_set.hip_pair)
    size0 = rig.sizes[:, 0].to("cpu", torch.float64).numpy()  # (N, 2)
    encode_visible = visible_np.copy()
    encode_visible[..., 0] = True
    obs_local = stats_local.normalize(encode_local(root_filled, size0, encode_visible))
    obs_global = stats_global.normalize(encode_global(root_filled, size0, encode_visible))

    def model_input(features: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(to_channels_first(features)).to(device, model_dtype).contiguous()

    obs_local_t, obs_global_t = model_input(obs_local), model_input(obs_global)
    visible = torch.as_tensor(visible_np, device=device)
    observed = torch.as_tensor(obs_clean, device=device, dtype=geo)
    if config.weighted:
        weight0 = torch.as_tensor(np.clip(conf, 0.0, 1.0), device=device, dtype=geo)
    else:
        weight0 = torch.ones((n, num_frames, num_joints), device=device, dtype=geo)
    weight0 = torch.where(visible, weight0, torch.full_like(weight0, config.missing_view0_weight))
    weights = torch.ones((n, num_views, num_frames, num_joints), device=device, dtype=geo)
    weights[:, 0] = weight0

    lengths_t = torch.as_tensor(length_list, device=device, dtype=torch.long)
    sizes = rig.sizes.to(geo)
    proj = rig.K @ torch.cat([rig.R, rig.t[..., None]], dim=-1)  # (N, V, 3, 4)
    stand_in = (-rig.R[:, 0].transpose(-1, -2) @ rig.t[:, 0, :, None])[..., 0] + (
        _STAND_IN_DEPTH_M * rig.R[:, 0, 2]
    )
    rt, k, pointmap = (a.to(device, model_dtype) for a in (rig.rt, rig.k, rig.pointmap))

    scheduler = _make_scheduler(config)
    x = _noise(rig.R, num_frames, num_joints, generators, model_dtype)
    start_timestep, x0_init = None, None
    if config.init == "ground_contact":
        guess = _ground_contact_guess(obs_clean, visible_np, rig, joint_set, length_list)
        guess_t = torch.as_tensor(guess, device=device, dtype=geo)
        guessed = torch.isfinite(guess_t).all(-1)
        guess_t = _fill_invalid(torch.nan_to_num(guess_t), guessed, lengths_t, stand_in)
        start_pixels = _project(guess_t, rig)
        start_pixels[:, 0] = torch.where(visible[..., None], observed, start_pixels[:, 0])
        start_features = stats_local.normalize(encode_local(start_pixels, sizes))
        x0_init = to_channels_first(start_features).to(model_dtype).contiguous()
        start_timestep = round(config.init_strength * (config.num_train_timesteps - 1))
    points = valid = view_pixels = None
    was_training = model.training
    model.eval()
    try:
        with _cached_pointmap_tokens(model):
            for timestep in scheduler.timesteps.tolist():
                if start_timestep is not None:
                    if timestep > start_timestep:
                        continue  # the ground-contact start skips the noisiest steps
                    x = scheduler.add_noise(x0_init, x, timestep)
                    start_timestep = None
                x0 = model(
                    x,
                    torch.full((n,), timestep, device=device, dtype=torch.long),
                    lengths=lengths_t,
                    rt=rt,
                    k=k,
                    pointmap=pointmap,
                    obs_global=obs_global_t,
                    obs_local=obs_local_t,
                )
                features = to_channels_last(stats_local.denormalize(x0.to(geo), channel_axis=-2))
                view_pixels = decode_local(features, sizes)  # (N, V, L, J, 2)
                view_pixels[:, 0] = torch.where(visible[..., None], observed, view_pixels[:, 0])
                new_points, new_valid = _triangulate_windows(
                    view_pixels, weights, proj, length_list
                )
                if points is not None and valid is not None:
                    # A failed triangulation keeps the previous step's estimate.
                    keep = ~new_valid & valid
                    new_points = torch.where(keep[..., None], points, new_points)
                    new_valid = new_valid | keep
                points, valid = new_points, new_valid

                reprojected = _project(_fill_invalid(points, valid, lengths_t, stand_in), rig)
                reprojected[:, 0] = torch.where(visible[..., None], observed, reprojected[:, 0])
                consistent = stats_local.normalize(encode_local(reprojected, sizes))
                x0_consistent = to_channels_first(consistent).to(model_dtype).contiguous()

                previous = scheduler.previous_timestep(timestep)
                needs_noise = previous >= 0 and (config.sampler == "ddpm" or config.eta > 0)
                noise = (
                    _noise(rig.R, num_frames, num_joints, generators, model_dtype)
                    if needs_noise
                    else None
                )
                x = scheduler.step(x0_consistent, timestep, x, noise=noise).prev_sample
    finally:
        model.train(was_training)
    assert points is not None and valid is not None and view_pixels is not None
    return SampledWindows(joints=points, valid=valid, view_pixels=view_pixels)


# ---------------------------------------------------------------------------------------------
# Clips: windows, batching, blending


def validate_clip(clip: ClipInput, num_joints: int) -> None:
    """Raise a ValueError/TypeError naming the problem if ``clip`` cannot be recovered.

    Checks: a :class:`~mocap_core.cameras.Camera` above the ground, keypoints ``(T, J, 3)``
    numeric with ``J == num_joints`` and ``T >= 1``. A flow can call it per clip to set bad
    clips aside before batching.
    """
    if not isinstance(clip, ClipInput):
        raise TypeError(f"expected a ClipInput, got {type(clip).__name__}")
    if not isinstance(clip.camera, Camera):
        raise TypeError(f"camera: expected a Camera, got {type(clip.camera).__name__}")
    if not clip.camera.center[1] > 0:
        raise ValueError(
            f"camera: centre must be above the ground (y > 0), got y = {clip.camera.center[1]} m"
        )
    _check_keypoints(clip.keypoints, num_joints)


def post_process(
    joints: np.ndarray,
    valid: np.ndarray,
    clip: ClipInput,
    config: RecoveryConfig,
    joint_set: JointSet,
) -> np.ndarray:
    """The steps this project adds after the method's sampling loop, as ``config`` sets
    them: the ground anchor (:func:`anchor_to_ground`, when ``ground_anchor_frames >= 1``),
    then temporal smoothing (:func:`smooth_trajectories`, when ``smooth_frames > 1``).

    Args:
        joints: ``(T, J, 3)`` metres, the clip camera's world, the method's final
            triangulation (NaN where not valid).
        valid: ``(T, J) bool``.
        clip: the clip (its camera and observed keypoints).
        config: the recovery settings.
        joint_set: the model's joint set (foot joints and their planted heights).

    Returns:
        ``(T, J, 3) float64`` metres; NaN where not valid.
    """
    joints = np.asarray(joints, dtype=np.float64)
    if config.ground_anchor_frames >= 1:
        from mocap_core.evaluation import planted_foot_heights

        joints = anchor_to_ground(
            joints,
            valid,
            camera=clip.camera,
            keypoints=np.asarray(clip.keypoints, dtype=np.float64),
            foot_joints=joint_set.foot_joints,
            foot_height_m=planted_foot_heights(joint_set, config.ankle_height_m),
            width=config.ground_anchor_frames,
            min_confidence=config.min_confidence,
            contact_tolerance_m=config.ground_anchor_tolerance_m,
        )
    if config.smooth_frames > 1:
        joints = smooth_trajectories(joints, valid, config.smooth_frames)
    return joints


@dataclass
class _ClipAccumulator:
    """Weighted sums of one clip's windows (world frame)."""

    total: np.ndarray  # (T, J, 3)
    weight: np.ndarray  # (T, J)
    remaining: int
    num_windows: int
    best_weight: np.ndarray | None  # (T,) blend weight of the window that owns view_pixels
    view_pixels: np.ndarray | None  # (V, T, J, 2)

    @classmethod
    def empty(
        cls,
        num_frames: int,
        num_joints: int,
        num_windows: int,
        num_views: int | None,
        num_samples: int = 1,
    ) -> _ClipAccumulator:
        """Zero sums awaiting ``num_windows * num_samples`` windows; ``num_views`` given =
        also keep the views' pixels (of the first sample that covers a frame best)."""
        keep = num_views is not None
        return cls(
            total=np.zeros((num_frames, num_joints, 3)),
            weight=np.zeros((num_frames, num_joints)),
            remaining=num_windows * num_samples,
            num_windows=num_windows,
            best_weight=np.zeros(num_frames) if keep else None,
            view_pixels=(
                np.full((num_views, num_frames, num_joints, 2), np.nan, np.float32)
                if num_views is not None
                else None
            ),
        )

    def result(
        self, clip: ClipInput, config: RecoveryConfig, joint_set: JointSet
    ) -> RecoveredMotion:
        valid = self.weight > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            joints = self.total / self.weight[..., None]
        joints[~valid] = np.nan
        joints = post_process(joints, valid, clip, config, joint_set)
        return RecoveredMotion(joints, valid, self.num_windows, self.view_pixels)


def _follow_seen_joints(
    joints: np.ndarray, moved: np.ndarray, seen: np.ndarray, valid: np.ndarray
) -> np.ndarray:
    """Move each unseen joint by the mean move of its frame's seen joints.

    ``joints`` and ``moved`` ``(T, J, 3)``: before and after the seen joints went onto their
    rays. Without this an unseen joint (beyond the image edge, say) would stay where the
    model put it while the rest of the body moves, tearing the pose apart. Frames with no
    seen joint take the move interpolated in time from the frames that have one.
    """
    count = seen.sum(axis=1)  # (T,)
    if not count.any():
        return moved
    shift = (
        np.where(seen[..., None], moved - joints, 0.0).sum(axis=1) / np.maximum(count, 1)[:, None]
    )
    frames = np.arange(len(joints))
    has = count > 0
    shift = np.stack([np.interp(frames, frames[has], shift[has, k]) for k in range(3)], axis=1)
    follows = valid & ~seen
    return np.where(follows[..., None], joints + shift[:, None, :], moved)


def anchor_to_ground(
    joints: np.ndarray,
    valid: np.ndarray,
    camera: Camera,
    keypoints: np.ndarray,
    foot_joints: Sequence[int],
    foot_height_m: float | Sequence[float],
    width: int,
    min_confidence: float = 0.0,
    contact_tolerance_m: float = 0.0,
) -> np.ndarray:
    """Put a recovered motion on the observed rays and its planted foot on the ground.

    Each joint the camera sees is moved along the camera's depth axis onto its observed ray
    (its camera depth kept); each joint it does not see moves with them, by the mean move of
    its frame's seen joints (interpolated in time over frames where nothing is seen), so the
    model's pose stays whole. Then each frame is scaled about the camera centre by ``s_t``,
    which keeps every observed pixel where it is. A seen foot joint ``f`` at height ``y_f``
    with planted height ``h_f`` would stand on the ground with the scale
    ``(c_y - h_f) / (c_y - y_f)`` (``c_y`` the camera's height); the frame's planted joints
    are those whose height above their planted height, ``y_f - h_f``, is within
    ``contact_tolerance_m`` of the lowest one's, and ``s_t`` is the mean of their scales.
    ``s_t`` is then a running median, then mean, over ``width`` frames, so frames with both
    feet off the ground (jumps) borrow the scale of their neighbours. Only seen foot joints
    count (an unseen one is the model's guess); frames where the camera sees no foot take
    the scale of the nearest frames that have one (interpolated).

    Args:
        joints: ``(T, J, 3)`` metres, world (y-up, ground y = 0); NaN where not valid.
        valid: ``(T, J) bool``.
        camera: the observing camera, centre above the ground.
        keypoints: ``(T, J, 3)`` observed pixels (distorted image) and confidence.
        foot_joints: indices of the joints that touch the ground.
        foot_height_m: height of a planted foot joint above the ground, metres: one for all,
            or one per joint of ``foot_joints``.
        width: frames of the running median and mean, >= 1.
        min_confidence: keypoints with confidence ``<=`` this are not seen.
        contact_tolerance_m: >= 0; 0 takes the lowest joint alone.

    Returns:
        ``(T, J, 3) float64`` metres, world; NaN where not valid.
    """
    joints = np.asarray(joints, dtype=np.float64)
    feet = list(foot_joints)
    heights = np.broadcast_to(np.asarray(foot_height_m, dtype=np.float64), (len(feet),))
    if not contact_tolerance_m >= 0:
        raise ValueError(f"contact_tolerance_m: expected a value >= 0, got {contact_tolerance_m}")
    seen = (keypoints[..., 2] > min_confidence) & valid
    _, depth = camera.project(np.nan_to_num(joints))
    on_ray = camera.unproject(np.asarray(keypoints[..., :2], dtype=np.float64), depth=depth)
    moved = _follow_seen_joints(joints, np.where(seen[..., None], on_ray, joints), seen, valid)
    centre = np.asarray(camera.center, dtype=np.float64)
    foot_y = moved[:, feet, 1]  # (T, F)
    below_camera = centre[1] - foot_y
    usable = seen[:, feet] & np.isfinite(foot_y) & (below_camera > 0.05)
    if not usable.any():
        return np.where(valid[..., None], moved, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        joint_scale = (centre[1] - heights) / below_camera  # (T, F)
    above_planted = np.where(usable, foot_y - heights, np.inf)
    lowest = above_planted.min(axis=1, keepdims=True)
    planted = usable & (above_planted <= lowest + contact_tolerance_m)
    count = planted.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(planted, joint_scale, 0.0).sum(axis=1) / count
    has_scale = count > 0
    # A scale far from 1 means a broken frame, not a better distance.
    scale = np.clip(scale, 0.5, 2.0)
    frames = np.arange(len(scale))
    scale = np.interp(frames, frames[has_scale], scale[has_scale])
    half = max(int(width), 1) // 2
    padded = np.pad(scale, half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    scale = np.median(windows, axis=-1)
    scale = np.convolve(np.pad(scale, half, mode="edge"), np.ones(2 * half + 1), "valid") / (
        2 * half + 1
    )
    anchored = centre + scale[:, None, None] * (moved - centre)
    return np.where(valid[..., None], anchored, np.nan)


def smooth_trajectories(joints: np.ndarray, valid: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average of each joint's trajectory over ``width`` frames.

    Args:
        joints: ``(T, J, 3)`` metres; NaN where not valid.
        valid: ``(T, J) bool``.
        width: window in frames (shrinks at the ends and around invalid frames, which are
            left out of every average and stay NaN).

    Returns:
        ``(T, J, 3)`` float64.
    """
    half = width // 2
    weights = valid.astype(np.float64)
    values = np.where(valid[..., None], joints, 0.0)
    # Cumulative sums give every window's sum in O(T).
    cum_v = np.concatenate([np.zeros((1,) + values.shape[1:]), np.cumsum(values, axis=0)])
    cum_w = np.concatenate([np.zeros((1,) + weights.shape[1:]), np.cumsum(weights, axis=0)])
    frames = np.arange(len(joints))
    lo = np.clip(frames - half, 0, len(joints))
    hi = np.clip(frames + half + 1, 0, len(joints))
    total = cum_v[hi] - cum_v[lo]
    count = cum_w[hi] - cum_w[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        smoothed = total / count[..., None]
    return np.where(valid[..., None], smoothed, np.nan)


def iter_recover_clips(
    model: nn.Module,
    stats_local: FeatureStats,
    stats_global: FeatureStats,
    clips: Sequence[ClipInput],
    config: RecoveryConfig,
    rig_config: RigConfig | None = None,
    pointmap_max_range_m: float | None = None,
) -> Iterator[tuple[int, RecoveredMotion]]:
    """Recover clips, yielding ``(clip index, motion)`` as soon as each clip is finished.

    Windows of all clips are batched together, ``config.batch_windows`` per forward pass;
    scenes are built per batch and results accumulated into per-clip arrays, so memory holds
    one batch of windows plus the clips' outputs. Clips finish (and are yielded) in order.

    Args:
        model, stats_local, stats_global: as in :func:`sample_windows` (the model's device is
            used).
        clips: the clips; every clip is validated first (:func:`validate_clip`) and a bad one
            raises ValueError naming its index before any work starts.
        config: sampling and windowing.
        rig_config: the rig distribution of the model's training (``SceneConfig.rig`` of the
            checkpoint); None = ``RigConfig()``.
        pointmap_max_range_m: the training's ``SceneConfig.pointmap_max_range_m``.

    Yields:
        ``(index, RecoveredMotion)`` with joints in the clip camera's world frame.
    """
    if not isinstance(config, RecoveryConfig):
        raise TypeError(f"config: expected a RecoveryConfig, got {type(config).__name__}")
    rig_config = RigConfig() if rig_config is None else rig_config
    model_config = getattr(model, "config", None)
    if model_config is None or not hasattr(model_config, "joint_set"):
        raise TypeError("model: expected a denoiser with a ModelConfig as .config")
    joint_set = get_joint_set(model_config.joint_set)
    if config.window > model_config.max_frames:
        raise ValueError(
            f"config.window ({config.window}) exceeds the model's max_frames "
            f"({model_config.max_frames})"
        )
    for index, clip in enumerate(clips):
        try:
            validate_clip(clip, joint_set.num_joints)
        except (TypeError, ValueError) as error:
            raise type(error)(f"clip {index}: {error}") from None
    device, model_dtype = _model_device_dtype(model)
    overlap = config.resolved_overlap
    num_views = rig_config.num_views

    plans = [plan_windows(len(clip.keypoints), config.window, overlap) for clip in clips]
    # Samples of a window are neighbours in the task list, so a clip's windows stay together.
    tasks = [
        (clip_index, window_index, sample)
        for clip_index, plan in enumerate(plans)
        for window_index in range(len(plan))
        for sample in range(config.num_samples)
    ]
    accumulators: dict[int, _ClipAccumulator] = {}
    next_to_yield = 0

    for batch_start in range(0, len(tasks), config.batch_windows):
        batch = tasks[batch_start : batch_start + config.batch_windows]
        scenes, seeds = [], []
        for clip_index, window_index, sample in batch:
            clip = clips[clip_index]
            start, stop = plans[clip_index][window_index]
            key = str(clip_index) if clip.key is None else clip.key
            seed = window_seed(config.seed, key, window_index, sample)
            scenes.append(
                prepare_scene(
                    clip.camera,
                    np.asarray(clip.keypoints)[start:stop],
                    rig_config,
                    model_config.pointmap_size,
                    np.random.default_rng(seed),
                    foot_joints=joint_set.foot_joints,
                    min_confidence=config.min_confidence,
                    pointmap_max_range_m=pointmap_max_range_m,
                )
            )
            seeds.append(seed)
        num_frames = max(stop - start for start, stop in (plans[c][w] for c, w, _ in batch))
        obs_pixels, obs_conf, lengths = scene_observations(scenes, num_frames)
        rig = RigBatch.from_scenes(scenes, device, model_dtype)
        generators = [torch.Generator(device).manual_seed(s) for s in seeds]
        sampled = sample_windows(
            model,
            stats_local,
            stats_global,
            obs_pixels,
            obs_conf,
            lengths,
            rig,
            config,
            generators,
        )
        joints = sampled.joints.to("cpu", torch.float64).numpy()
        valid = sampled.valid.cpu().numpy()
        view_pixels = (
            sampled.view_pixels.to("cpu", torch.float32).numpy()
            if config.keep_view_pixels
            else None
        )

        for row, (clip_index, window_index, _) in enumerate(batch):
            plan = plans[clip_index]
            if clip_index not in accumulators:
                accumulators[clip_index] = _ClipAccumulator.empty(
                    len(clips[clip_index].keypoints),
                    joint_set.num_joints,
                    len(plan),
                    num_views if config.keep_view_pixels else None,
                    config.num_samples,
                )
            acc = accumulators[clip_index]
            start, stop = plan[window_index]
            length = stop - start
            before = plan[window_index - 1][1] - start if window_index > 0 else 0
            after = stop - plan[window_index + 1][0] if window_index + 1 < len(plan) else 0
            ramp = blend_weights(length, max(before, 0), max(after, 0))
            window_valid = valid[row, :length]
            world = scenes[row].to_world(joints[row, :length])
            weight = np.where(window_valid, ramp[:, None], 0.0)
            acc.total[start:stop] += (
                np.where(window_valid[..., None], world, 0.0) * weight[..., None]
            )
            acc.weight[start:stop] += weight
            if view_pixels is not None and acc.view_pixels is not None:
                assert acc.best_weight is not None
                owns = ramp > acc.best_weight[start:stop]
                frames = np.arange(start, stop)[owns]
                acc.view_pixels[:, frames] = view_pixels[row][:, :length][:, owns]
                acc.best_weight[frames] = ramp[owns]
            acc.remaining -= 1

        while next_to_yield < len(clips) and accumulators.get(next_to_yield) is not None:
            acc = accumulators[next_to_yield]
            if acc.remaining > 0:
                break
            yield (
                next_to_yield,
                acc.result(clips[next_to_yield], config, joint_set),
            )
            del accumulators[next_to_yield]
            next_to_yield += 1


def recover_clips(
    model: nn.Module,
    stats_local: FeatureStats,
    stats_global: FeatureStats,
    clips: Sequence[ClipInput],
    config: RecoveryConfig,
    rig_config: RigConfig | None = None,
    pointmap_max_range_m: float | None = None,
) -> list[RecoveredMotion]:
    """All clips' motions, in order; see :func:`iter_recover_clips`."""
    results: list[RecoveredMotion | None] = [None] * len(clips)
    for index, motion in iter_recover_clips(
        model, stats_local, stats_global, clips, config, rig_config, pointmap_max_range_m
    ):
        results[index] = motion
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def recover_sequence(
    model: nn.Module,
    stats_local: FeatureStats,
    stats_global: FeatureStats,
    camera: Camera,
    keypoints: np.ndarray,
    config: RecoveryConfig,
    rig_config: RigConfig | None = None,
    pointmap_max_range_m: float | None = None,
    key: str | None = None,
) -> RecoveredMotion:
    """One clip: ``keypoints (T, J, 3)`` pixels + confidence of ``camera`` -> its motion.

    ``joints (T, J, 3)`` metres in the camera's world frame; see :func:`iter_recover_clips`.
    """
    clip = ClipInput(camera, keypoints, key)
    return recover_clips(
        model, stats_local, stats_global, [clip], config, rig_config, pointmap_max_range_m
    )[0]
