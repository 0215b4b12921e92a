"""Tasks of bulk motion recovery (``flows/recover.py``; DESIGN 2.6, 4.2, 4.3).

:data:`recover_batch` (the Prefect task ``recover-batch``; :func:`run_batch` is the same work
as a plain function) takes a small picklable :class:`RecoverPlan` and a batch of clips
(:class:`ClipItem`: a ``ClipRef`` and its input fingerprint), and:

1. loads the clips, each source read once (:func:`data_catalog.recovery_inputs.load_clips`;
   videos through the ``video`` extra's detector when mediapipe is installed);
2. checks every clip and track (:func:`prepare_clip`): a camera, the joint set the
   checkpoint models, tracks long enough, frame numbers that increase;
3. recovers all tracks of all clips of the batch in one
   :func:`mocap_core.recovery.recover_clips` call, so that windows of different clips share
   forward passes; if that call raises, the clips are recovered one at a time, so that a
   clip that breaks recovery fails alone with the reason;
4. optionally fits SMPL (``smpl22`` checkpoints with a body model), writes BVH files
   (``ARCHIVE/bvh/<sequence_id>[_t<track>].bvh``), and draws a preview per sequence
   (``ARCHIVE/previews/<sequence_id>.png``, and ``.rrd`` for the rerun viewer);
5. writes one archive part (:func:`data_catalog.motion_archive.write_part`) and returns the
   small :class:`ArchivePart` and one :class:`ClipOutcome` per clip. The flow commits it.

Skipping finished clips happens in the flow, before submitting (fingerprints against
``MotionArchive.finished``); a task recovers every clip it is given.

**Model cache.** A task borrows a model from a per-process pool keyed by the checkpoint's
sha256 (:func:`borrowed_model`): the file is read once per process, and each thread that runs
a task at the same time gets its own model instance (recovery swaps a caching wrapper into
the model while it samples, so one instance must not serve two threads at once). On Dask,
each worker process keeps its own pool across tasks.

**Tracks.** Every track id of a clip is recovered independently in the clip camera's world
frame and becomes its own ``(sequence_id, track_id)`` row. A frame counts as *seen* when at
least one joint has a confidence above ``min_confidence``; only seen frames are written.
Gaps of up to :data:`MAX_GAP_FRAMES` unseen frames inside a track are filled with missing
keypoints (confidence 0) and in-painted by the sampler; a longer gap splits the track into
segments recovered separately. Segments with fewer than :data:`MIN_TRACK_FRAMES` seen frames
are left out (counted in the row's ``meta["frames_dropped"]``); a track left with none fails
("too short").

**Rows** (``data_catalog.motion_archive``): ``joints_world (T, J, 3)`` metres in the camera
file's world, y-up, in the archive's joint set (``coco17``: the model's pelvis is dropped);
NaN where recovery could not triangulate a joint. ``joints_conf (T, J)`` is the detector's
confidence of the joint in the input view, clipped to [0, 1]: how strongly the observation
pinned it (0 = not seen: recovered from the generated views alone, or NaN when not
recovered). ``seconds``: the clip's share (by frames) of the batch's loading and sampling
time plus its own fitting and export time.

**SMPL and BVH.** With a body model the SMPL fit runs over a track's recovered frames
(segments joined; in-painted gap frames included, so the fit is smooth across them) and the
rows take the fit at their frames; ``smpl_betas`` is the track's shape. BVH files hold the
same joined frames at the clip's frame rate (a gap longer than :data:`MAX_GAP_FRAMES` is
cut), from the SMPL fit when there is one, else from the joints on a fixed skeleton (joints
not recovered in a frame are interpolated in time). A fit or export that fails does not fail
the track: the reason goes to ``meta["smpl_error"]`` / ``meta["bvh_error"]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import posixpath
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from data_catalog.checkpoints import (
    CheckpointError,
    build_model,
    checkpoint_sha256,
    load_checkpoint,
)
from data_catalog.motion_archive import ArchivePart, SequenceResult, write_part
from data_catalog.recovery_inputs import ClipError, ClipInput, ClipRef, VideoReader, load_clips
from data_catalog.store import canonical_json
from mocap_core.cameras import Camera
from mocap_core.joint_sets import add_pelvis_confidence, drop_pelvis, get_joint_set
from mocap_core.recovery import ClipInput as ModelClip
from mocap_core.recovery import RecoveredMotion, RecoveryConfig, recover_clips
from mocap_core.representation import FeatureStats
from mocap_core.rig import RigConfig
from tasks.retry import IO_RETRIES

__all__ = [
    "BVH_DIR",
    "INPUT_JOINT_SETS",
    "MAX_GAP_FRAMES",
    "MIN_TRACK_FRAMES",
    "PREVIEWS_DIR",
    "BatchOutcome",
    "ClipItem",
    "ClipOutcome",
    "LoadedModel",
    "RecoverPlan",
    "borrowed_model",
    "bvh_name",
    "fill_nan_in_time",
    "output_name",
    "prepare_clip",
    "recover_batch",
    "recovery_params_hash",
    "run_batch",
    "split_segments",
    "unreadable_fingerprint",
]

#: Fewest seen frames a recovered segment may have. Shorter tracks are mostly detector
#: flicker (a person glimpsed for a quarter second); the encodings' velocities and the
#: windowed model have almost nothing to work with.
MIN_TRACK_FRAMES = 8
#: Longest run of unseen frames inside a track that is in-painted (1 s at 30 fps); a longer
#: gap splits the track into separately recovered segments.
MAX_GAP_FRAMES = 30
#: Where BVH files and previews go inside the archive folder.
BVH_DIR = "bvh"
PREVIEWS_DIR = "previews"
#: Input joint set of a clip -> the model joint set that recovers it (and back).
INPUT_JOINT_SETS: dict[str, str] = {"smpl22": "smpl22", "coco17": "coco17_pelvis"}
MODEL_TO_INPUT: dict[str, str] = {model: given for given, model in INPUT_JOINT_SETS.items()}

_PARAMS_TAG = "mocap2to3.recover_params/1"
# Tasks read and write files: a result must never come from Prefect's cache.
_TASK_OPTIONS: dict[str, Any] = {**IO_RETRIES, "cache_policy": NO_CACHE}

logger = logging.getLogger(__name__)


def _log() -> Any:
    """The Prefect run logger inside a task (its records reach the UI), else this module's."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logger


# --------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class RecoverPlan:
    """One recovery run, resolved by the flow: everything a task needs, small and picklable.

    Attributes:
        archive: absolute path of the archive folder.
        checkpoint: absolute path of the stage-2 checkpoint; ``checkpoint_sha256`` its hash.
        model_joint_set: the checkpoint's joint set (``smpl22`` or ``coco17_pelvis``).
        input_joint_set: the clips' joint set it recovers (``smpl22`` or ``coco17``), which
            is also the archive's.
        recovery: :class:`RecoveryConfig` as plain JSON data (Prefect walks task arguments;
            :attr:`config` gives the model).
        params_hash: :func:`recovery_params_hash` of the run.
        camera_default: the run's ``--camera`` JSON, or None.
        default_fps: frame rate of clips whose file carries none (JSON inputs).
        body_model: absolute path of the SMPL body-model folder or file, or None.
        bvh: write BVH files.
        previews: draw PNG previews; ``rrd``: also write rerun ``.rrd`` recordings.
        torch_threads: ``torch.set_num_threads`` in each task; None leaves torch's setting.
        min_frames, max_gap_frames: see :data:`MIN_TRACK_FRAMES`, :data:`MAX_GAP_FRAMES`.
    """

    archive: str
    checkpoint: str
    checkpoint_sha256: str
    model_joint_set: str
    input_joint_set: str
    recovery: dict[str, Any]
    params_hash: str
    camera_default: dict[str, Any] | None = None
    default_fps: float = 30.0
    body_model: str | None = None
    bvh: bool = False
    previews: bool = True
    rrd: bool = False
    torch_threads: int | None = 1
    min_frames: int = MIN_TRACK_FRAMES
    max_gap_frames: int = MAX_GAP_FRAMES

    @property
    def config(self) -> RecoveryConfig:
        """The sampling configuration."""
        return RecoveryConfig.model_validate(self.recovery)

    @property
    def archive_joint_set(self) -> str:
        """The archive's joint set (the inputs')."""
        return self.input_joint_set


@dataclass(frozen=True)
class ClipItem:
    """A clip to recover: where it is, and its input fingerprint (``clip_fingerprints``)."""

    ref: ClipRef
    fingerprint: str


@dataclass(frozen=True)
class ClipOutcome:
    """What became of one clip of a batch.

    Attributes:
        clip_id: the clip (``sequence_id``).
        status: ``"ok"`` when at least one track was recovered, else ``"failed"``.
        error: the reason of a failed clip (the first failed track's for a clip whose tracks
            all failed); None when ok.
        tracks_ok, tracks_failed: rows written with each status.
        frames: frames rows written.
        seconds: time spent on the clip (see module docstring).
    """

    clip_id: str
    status: str
    error: str | None
    tracks_ok: int
    tracks_failed: int
    frames: int
    seconds: float


@dataclass(frozen=True)
class BatchOutcome:
    """A task's result: the part to commit and the clips' outcomes."""

    part: ArchivePart
    clips: tuple[ClipOutcome, ...]
    seconds: float

    @property
    def frames(self) -> int:
        """Frames rows the batch wrote (ok tracks)."""
        return sum(c.frames for c in self.clips)


def recovery_params_hash(
    config: RecoveryConfig,
    *,
    body_model: bool,
    default_fps: float,
    bvh: bool,
    min_frames: int = MIN_TRACK_FRAMES,
    max_gap_frames: int = MAX_GAP_FRAMES,
) -> str:
    """sha256 of everything besides the input and the checkpoint that decides a clip's rows.

    Sampler, steps, seed, DDIM eta, window, overlap (resolved), triangulation weighting,
    the start (noise, or the ground-contact guess and its strength), smoothing and the ground
    anchor (with its ankle height), body model on/off, the default frame rate of JSON inputs, BVH on/off, and the track
    rules. Batch sizes (clips per task, windows per forward pass) and previews are left out:
    they change float rounding or side files, not the motion.
    """
    values = {
        "format": _PARAMS_TAG,
        "sampler": config.sampler,
        "steps": config.steps,
        "seed": config.seed,
        "eta": config.eta,
        "num_train_timesteps": config.num_train_timesteps,
        "window": config.window,
        "overlap": config.resolved_overlap,
        "weighted": config.weighted,
        "min_confidence": config.min_confidence,
        "missing_view0_weight": config.missing_view0_weight,
        "init": config.init,
        "init_strength": config.init_strength if config.init != "noise" else None,
        "smooth_frames": config.smooth_frames if config.smooth_frames > 1 else 0,
        "ground_anchor_frames": config.ground_anchor_frames,
        "num_samples": config.num_samples,
        "ground_anchor_tolerance_m": (
            config.ground_anchor_tolerance_m if config.ground_anchor_frames > 0 else 0.0
        ),
        "body_model": bool(body_model),
        "default_fps": float(default_fps),
        "bvh": bool(bvh),
        "min_frames": int(min_frames),
        "max_gap_frames": int(max_gap_frames),
    }
    if config.ankle_height_m is not None and config.ground_anchor_frames > 0:
        # Only when set, so that the hashes of archives written before the option stay.
        values["ankle_height_m"] = config.ankle_height_m
    return hashlib.sha256(canonical_json(values)).hexdigest()


def unreadable_fingerprint(reason: str) -> str:
    """The ``input_sha256`` recorded for a clip whose bytes could not be read.

    A hash of the reason: a re-run that meets the same problem finds the row finished and
    skips the clip; a different problem (or a readable file) is tried again.
    """
    return "unreadable-" + hashlib.sha256(reason.encode()).hexdigest()


# --------------------------------------------------------------------------------------
# Pure helpers


def split_segments(frames: np.ndarray, max_gap_frames: int) -> list[tuple[int, int]]:
    """Cut a track's rows where more than ``max_gap_frames`` frames are missing.

    Args:
        frames: ``(N,) int`` frame numbers of the seen rows, strictly increasing.
        max_gap_frames: longest run of missing frames kept inside a segment.

    Returns:
        Row ranges ``[start, stop)`` covering ``0..N`` in order. E.g. frames
        ``[0, 1, 2, 10, 11]`` with ``max_gap_frames=6`` -> ``[(0, 3), (3, 5)]`` (7 missing
        frames between 2 and 10); with 7 -> ``[(0, 5)]``.
    """
    frames = np.asarray(frames)
    if frames.ndim != 1 or len(frames) == 0:
        raise ValueError(f"frames: expected a non-empty (N,) array, got shape {frames.shape}")
    if max_gap_frames < 0:
        raise ValueError(f"max_gap_frames must be >= 0, got {max_gap_frames}")
    missing = np.diff(frames) - 1
    cuts = np.flatnonzero(missing > max_gap_frames) + 1
    bounds = [0, *cuts.tolist(), len(frames)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def fill_nan_in_time(joints: np.ndarray) -> np.ndarray:
    """Fill NaN joints by linear interpolation in time (held constant beyond the ends).

    Args:
        joints: ``(T, J, 3)`` metres; NaN where a joint was not recovered.

    Returns:
        ``(T, J, 3) float64`` without NaN.

    Raises:
        ValueError: a joint is NaN in every frame (named by index).
    """
    joints = np.asarray(joints, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[-1] != 3:
        raise ValueError(f"joints: expected (T, J, 3), got {joints.shape}")
    out = joints.copy()
    finite = np.isfinite(joints).all(-1)
    frames = np.arange(len(joints))
    for joint in range(joints.shape[1]):
        seen = finite[:, joint]
        if not seen.any():
            raise ValueError(f"joint {joint} was not recovered in any frame")
        if seen.all():
            continue
        for axis in range(3):
            out[:, joint, axis] = np.interp(frames, frames[seen], joints[seen, joint, axis])
    return out


def output_name(sequence_id: str) -> str:
    """A relative file path (``/`` separators) for a sequence id, safe under the archive.

    Empty, ``.`` and ``..`` components are dropped, so no id escapes the folder.
    """
    parts = [p for p in sequence_id.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if not parts:
        raise ValueError(f"sequence id {sequence_id!r} gives no file name")
    return posixpath.join(*parts)


def bvh_name(sequence_id: str, track_id: int, several_tracks: bool) -> str:
    """Archive-relative BVH path: ``bvh/<sequence_id>.bvh``, or ``..._t<track>.bvh`` for a
    clip with several tracks."""
    suffix = f"_t{track_id}" if several_tracks else ""
    return f"{BVH_DIR}/{output_name(sequence_id)}{suffix}.bvh"


# --------------------------------------------------------------------------------------
# Model pool


@dataclass
class LoadedModel:
    """A stage-2 model ready for recovery, with what recovery needs beside it."""

    model: torch.nn.Module
    stats_local: FeatureStats
    stats_global: FeatureStats
    rig: RigConfig
    pointmap_max_range_m: float | None


_POOL_LOCK = threading.Lock()
_LOAD_LOCK = threading.Lock()
_PAYLOADS: dict[str, dict[str, Any]] = {}
_IDLE: dict[str, list[LoadedModel]] = {}
# A run uses one checkpoint; keep a second so that alternating runs do not reload.
_MAX_CHECKPOINTS = 2


def _payload(path: str, sha256: str) -> dict[str, Any]:
    with _LOAD_LOCK:
        payload = _PAYLOADS.get(sha256)
        if payload is not None:
            return payload
        actual = checkpoint_sha256(path)
        if actual != sha256:
            raise CheckpointError(
                f"checkpoint {path} changed since the run started (sha256 {actual[:12]}, "
                f"expected {sha256[:12]}); start the run again"
            )
        payload = load_checkpoint(path)
        while len(_PAYLOADS) >= _MAX_CHECKPOINTS:
            oldest = next(iter(_PAYLOADS))
            del _PAYLOADS[oldest]
            with _POOL_LOCK:
                _IDLE.pop(oldest, None)
        _PAYLOADS[sha256] = payload
        return payload


@contextlib.contextmanager
def borrowed_model(path: str, sha256: str) -> Iterator[LoadedModel]:
    """Lend this thread a model of the checkpoint ``sha256`` (at ``path``) for the block.

    The checkpoint file is read (and its hash checked) once per process; model instances are
    built from it on demand, one per thread using it at the same time, and kept for reuse.

    Raises:
        CheckpointError: the file's hash is no longer ``sha256``, or it is not a checkpoint.
    """
    with _POOL_LOCK:
        idle = _IDLE.get(sha256)
        loaded = idle.pop() if idle else None
    if loaded is None:
        model, stats, scene = build_model(_payload(path, sha256))
        loaded = LoadedModel(
            model=model,
            stats_local=stats["local"],
            stats_global=stats["global"],
            rig=scene.rig,
            pointmap_max_range_m=scene.pointmap_max_range_m,
        )
    try:
        yield loaded
    finally:
        with _POOL_LOCK:
            if sha256 in _PAYLOADS:
                _IDLE.setdefault(sha256, []).append(loaded)


# --------------------------------------------------------------------------------------
# Clips and tracks


@dataclass
class PreparedTrack:
    """One track of a clip, checked and cut into segments.

    Attributes:
        track_id: the track id.
        frames: ``(N,) int64`` seen frame numbers, strictly increasing.
        keypoints: ``(N, J, 3) float64`` input keypoints of those frames (input joint set).
        segments: row ranges ``[start, stop)`` to recover (each >= ``min_frames`` rows).
        dropped: seen frames left out (segments too short).
    """

    track_id: int
    frames: np.ndarray
    keypoints: np.ndarray
    segments: list[tuple[int, int]]
    dropped: int

    @property
    def kept_rows(self) -> np.ndarray:
        """``(M,)`` row indices of the segments, in order."""
        return np.concatenate([np.arange(a, b) for a, b in self.segments])


@dataclass
class PreparedClip:
    """A loaded clip ready for recovery: its camera, recoverable tracks and failed tracks."""

    clip: ClipInput
    camera: Camera
    tracks: list[PreparedTrack]
    failed_tracks: list[tuple[int, str]] = field(default_factory=list)
    num_tracks: int = 0


def prepare_clip(
    clip: ClipInput,
    model_joint_set: str,
    *,
    min_frames: int = MIN_TRACK_FRAMES,
    max_gap_frames: int = MAX_GAP_FRAMES,
    min_confidence: float = 0.0,
) -> PreparedClip:
    """Check a loaded clip and cut its tracks into segments (module docstring: "Tracks").

    Args:
        clip: a clip from :func:`data_catalog.recovery_inputs.load_clips`.
        model_joint_set: the checkpoint's joint set.
        min_frames, max_gap_frames: the track rules.
        min_confidence: a joint is seen when its confidence is above this.

    Returns:
        The clip with at least one recoverable track; tracks that cannot be recovered are
        listed in ``failed_tracks`` with the reason.

    Raises:
        ClipError: no camera, a camera below the ground, keypoints in a joint set the
            checkpoint does not model, or no track that can be recovered (the reason of the
            first track's failure).
    """

    def fail(reason: str) -> ClipError:
        return ClipError(clip.clip_id, reason, clip.source)

    camera = clip.require_camera()
    tracks2d = clip.tracks
    expected = MODEL_TO_INPUT.get(model_joint_set)
    if tracks2d.joint_set != expected:
        raise fail(
            f"keypoints are in joint set {tracks2d.joint_set!r} but the checkpoint models "
            f"{model_joint_set!r}, which recovers {expected!r} inputs; use a "
            f"{tracks2d.joint_set} checkpoint"
        )
    height = float(camera.center[1])
    if not height > 0:
        raise fail(f"camera: centre must be above the ground (y > 0), got y = {height:.3f} m")

    prepared: list[PreparedTrack] = []
    failed: list[tuple[int, str]] = []
    track_rows = tracks2d.tracks()
    for track_id, rows in track_rows.items():
        keypoints = np.asarray(tracks2d.keypoints[rows], dtype=np.float64)
        frames = np.asarray(tracks2d.frame_index[rows], dtype=np.int64)
        if np.any(np.diff(frames) == 0):
            failed.append((track_id, "track has repeated frame numbers"))
            continue
        seen = (keypoints[..., 2] > min_confidence).any(axis=1)
        keypoints, frames = keypoints[seen], frames[seen]
        if len(frames) < min_frames:
            failed.append(
                (
                    track_id,
                    f"too short: {len(frames)} frame(s) with keypoints, at least "
                    f"{min_frames} needed",
                )
            )
            continue
        segments = [
            (a, b) for a, b in split_segments(frames, max_gap_frames) if b - a >= min_frames
        ]
        if not segments:
            failed.append(
                (
                    track_id,
                    f"too short: no run of {min_frames} frames without a gap longer than "
                    f"{max_gap_frames} frames",
                )
            )
            continue
        kept = sum(b - a for a, b in segments)
        prepared.append(PreparedTrack(track_id, frames, keypoints, segments, len(frames) - kept))
    if not prepared:
        first = failed[0][1] if failed else "no track"
        several = f" (all {len(failed)} tracks failed)" if len(failed) > 1 else ""
        raise fail(first + several)
    return PreparedClip(clip, camera, prepared, failed, num_tracks=len(track_rows))


def _segment_keypoints(
    track: PreparedTrack, segment: tuple[int, int], model_joint_set: str
) -> np.ndarray:
    """``(S, Jm, 3)`` dense keypoints of a segment in the model's order, unseen frames 0."""
    a, b = segment
    frames = track.frames[a:b]
    dense = np.zeros((frames[-1] - frames[0] + 1, *track.keypoints.shape[1:]))
    dense[frames - frames[0]] = track.keypoints[a:b]
    if model_joint_set == "coco17_pelvis":
        dense = add_pelvis_confidence(dense)
    return dense


# --------------------------------------------------------------------------------------
# Files beside the archive


def _write_file(root: Path, name: str, data: bytes) -> Path:
    """Write ``root/name`` atomically (temporary file in the folder, then rename), 0644."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _preview_png(
    tracks: Mapping[int, np.ndarray],
    times: Mapping[int, np.ndarray],
    joint_set: str,
    camera: Camera,
    title: str,
) -> bytes:
    from mocap_core.previews import motion_preview_figure

    figure = motion_preview_figure(
        tracks, get_joint_set(joint_set), camera, times_s=times, title=title
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def rerun_available() -> bool:
    """Whether the ``viz`` extra (``rerun-sdk``) is installed."""
    return importlib.util.find_spec("rerun") is not None


def _write_rrd(
    path: Path,
    tracks: Mapping[int, np.ndarray],
    frames: Mapping[int, np.ndarray],
    fps: float,
    joint_set: str,
    camera: Camera,
    recording_name: str,
) -> None:
    """A rerun recording of the clip: the camera (pinhole, world pose) and each track's
    skeleton per frame on a ``frame`` timeline (and ``time`` in seconds), world y-up."""
    import rerun as rr

    edges = get_joint_set(joint_set).edges
    recording = rr.RecordingStream("mocap2to3", recording_id=recording_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    recording.save(str(tmp))
    recording.log("world", rr.ViewCoordinates.RIGHT_HAND_Y_UP, static=True)
    recording.log(
        "world/camera",
        rr.Transform3D(translation=camera.center, mat3x3=camera.R.T),
        static=True,
    )
    recording.log(
        "world/camera/image",
        rr.Pinhole(
            image_from_camera=camera.K,
            resolution=[camera.width, camera.height],
            camera_xyz=rr.ViewCoordinates.RDF,
        ),
        static=True,
    )
    for track_id, joints in tracks.items():
        for row, frame in enumerate(frames[track_id]):
            recording.set_time("frame", sequence=int(frame))
            recording.set_time("time", duration=float(frame) / fps)
            pose = np.asarray(joints[row], dtype=np.float32)
            ok = [(a, b) for a, b in edges if np.isfinite(pose[[a, b]]).all()]
            recording.log(
                f"world/track_{track_id}",
                rr.LineStrips3D([pose[[a, b]] for a, b in ok]),
                rr.Points3D(pose[np.isfinite(pose).all(-1)], radii=0.02),
            )
    recording.flush()
    recording.disconnect()
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------
# The batch


def _failed_row(
    plan: RecoverPlan,
    item: ClipItem,
    reason: str,
    clip: ClipInput | None = None,
    track_id: int = -1,
    seconds: float | None = None,
) -> SequenceResult:
    return SequenceResult.failed(
        sequence_id=item.ref.clip_id,
        error=reason,
        source_path=clip.source if clip else item.ref.location,
        input_sha256=clip.input_sha256 if clip else item.fingerprint,
        checkpoint_sha256=plan.checkpoint_sha256,
        params_hash=plan.params_hash,
        joint_set=plan.archive_joint_set,
        track_id=track_id,
        fps=clip.fps if clip else None,
        camera=clip.camera if clip else None,
        source_sha256=clip.source_sha256 if clip else None,
        seconds=seconds,
        meta={"kind": item.ref.kind},
    )


def _video_reader(refs: Sequence[ClipRef]) -> VideoReader | None:
    """The video extra's detector when a batch holds videos and mediapipe is installed.

    Without mediapipe, None: ``load_clips`` then fails video clips with the install hint.
    """
    if not any(ref.kind == "video" for ref in refs):
        return None
    if importlib.util.find_spec("mediapipe") is None:
        return None
    from data_catalog.readers.video import video_reader

    read = video_reader()

    def guarded(data: bytes, name: str):
        try:
            return read(data, name)
        except ImportError as error:  # a broken install: a clip failure, not a task crash
            raise ValueError(f"{error} (pip install 'mocap2to3[video]')") from error

    return guarded


def _recover_all(
    plan: RecoverPlan,
    prepared: Sequence[PreparedClip],
    loaded: LoadedModel,
) -> tuple[dict[int, list[list[RecoveredMotion]]], dict[int, str]]:
    """Recover every segment of every track: ``(clip index -> per track -> per segment
    motions, clip index -> reason for clips whose recovery raised)``."""
    config = plan.config
    inputs: list[ModelClip] = []
    owners: list[tuple[int, int, int]] = []  # (clip, track, segment) per input
    for c, prep in enumerate(prepared):
        for t, track in enumerate(prep.tracks):
            for s, segment in enumerate(track.segments):
                key = f"{prep.clip.clip_id}#{track.track_id}#{int(track.frames[segment[0]])}"
                keypoints = _segment_keypoints(track, segment, plan.model_joint_set)
                inputs.append(ModelClip(prep.camera, keypoints, key))
                owners.append((c, t, s))

    def run(subset: Sequence[ModelClip]) -> list[RecoveredMotion]:
        return recover_clips(
            loaded.model,
            loaded.stats_local,
            loaded.stats_global,
            subset,
            config,
            loaded.rig,
            loaded.pointmap_max_range_m,
        )

    motions: dict[int, list[list[RecoveredMotion]]] = {
        c: [[] for _ in prep.tracks] for c, prep in enumerate(prepared)
    }
    errors: dict[int, str] = {}
    try:
        results = run(inputs)
    except Exception as error:  # noqa: BLE001 - isolate the clip that breaks recovery
        _log().warning("batch recovery raised (%s); recovering its clips one at a time", error)
        results = []
        for c in range(len(prepared)):
            mine = [i for i, owner in enumerate(owners) if owner[0] == c]
            try:
                results_c = run([inputs[i] for i in mine])
            except Exception as clip_error:  # noqa: BLE001
                _log().exception("recovery of clip %s failed", prepared[c].clip.clip_id)
                errors[c] = f"recovery failed: {type(clip_error).__name__}: {clip_error}"
                continue
            for i, motion in zip(mine, results_c, strict=True):
                c_, t, _ = owners[i]
                motions[c_][t].append(motion)
        return motions, errors
    for (c, t, _), motion in zip(owners, results, strict=True):
        motions[c][t].append(motion)
    return motions, errors


@dataclass
class _TrackRows:
    result: SequenceResult
    joints: np.ndarray | None  # (N, J, 3) archive order, rows written (ok only)
    frames: np.ndarray | None


def _track_rows(
    plan: RecoverPlan,
    item: ClipItem,
    prep: PreparedClip,
    track: PreparedTrack,
    motions: Sequence[RecoveredMotion],
    body_model: Any,
) -> _TrackRows:
    """The ok row (or a failed row) of one recovered track; SMPL fit and BVH export."""
    clip = prep.clip
    rows_joints, dense_parts, row_index = [], [], []
    offset = 0
    for (a, b), motion in zip(track.segments, motions, strict=True):
        dense = np.asarray(motion.joints, dtype=np.float64)
        if plan.model_joint_set == "coco17_pelvis":
            dense = drop_pelvis(dense)
        local = track.frames[a:b] - track.frames[a]
        rows_joints.append(dense[local])
        row_index.append(offset + local)
        dense_parts.append(dense)
        offset += len(dense)
    joints = np.concatenate(rows_joints)
    if not np.isfinite(joints).any():
        return _TrackRows(
            _failed_row(plan, item, "recovery triangulated no joint", clip, track.track_id),
            None,
            None,
        )
    kept = track.kept_rows
    frames = track.frames[kept]
    keypoints = track.keypoints[kept]
    meta: dict[str, Any] = {
        "kind": clip.kind,
        "camera_scope": clip.camera_scope,
        "segments": [
            [int(track.frames[a]), int(track.frames[b - 1]) + 1] for a, b in track.segments
        ],
        "frames_dropped": int(track.dropped),
        "num_windows": int(sum(m.num_windows for m in motions)),
    }
    detector = clip.tracks.meta.get("detector")
    if detector:
        meta["detector"] = str(detector)
    dense_all = np.concatenate(dense_parts)
    rows = np.concatenate(row_index)
    smpl: dict[str, np.ndarray | None] = {
        "smpl_transl": None,
        "smpl_global_orient": None,
        "smpl_body_pose": None,
        "smpl_betas": None,
    }
    fit = None
    if body_model is not None:
        from mocap_core.smpl_fit import fit_smpl

        try:
            fit = fit_smpl(body_model, dense_all)
        except ValueError as error:
            meta["smpl_error"] = str(error)
        else:
            smpl = {
                "smpl_transl": fit.transl[rows],
                "smpl_global_orient": fit.global_orient[rows],
                "smpl_body_pose": fit.body_pose[rows],
                "smpl_betas": fit.betas,
            }
            meta["smpl_mean_error_mm"] = round(1000.0 * fit.mean_error_m, 3)
    if plan.bvh:
        from data_catalog.export_bvh import bvh_from_joints, bvh_from_smpl, write_bvh

        name = bvh_name(clip.clip_id, track.track_id, prep.num_tracks > 1)
        try:
            text = (
                bvh_from_smpl(fit, body_model, clip.fps)
                if fit is not None
                else bvh_from_joints(fill_nan_in_time(dense_all), clip.fps)
            )
        except ValueError as error:
            meta["bvh_error"] = str(error)
        else:
            write_bvh(Path(plan.archive) / name, text)
            meta["bvh"] = name
    tracks2d = None
    tracks2d_set = None
    if clip.kind == "video":
        # Video inputs' 2D tracks exist nowhere else: keep them beside the motion.
        tracks2d, tracks2d_set = keypoints.astype(np.float32), clip.tracks.joint_set
    result = SequenceResult(
        sequence_id=clip.clip_id,
        track_id=int(track.track_id),
        source_path=clip.source,
        input_sha256=clip.input_sha256,
        checkpoint_sha256=plan.checkpoint_sha256,
        params_hash=plan.params_hash,
        joint_set=plan.archive_joint_set,
        fps=clip.fps,
        camera=clip.camera,
        joints=joints.astype(np.float32),
        conf=np.clip(np.nan_to_num(keypoints[..., 2]), 0.0, 1.0).astype(np.float32),
        frames=frames,
        tracks2d=tracks2d,
        tracks2d_joint_set=tracks2d_set,
        source_sha256=clip.source_sha256,
        meta=meta,
        **smpl,
    )
    return _TrackRows(result, joints, frames)


def _draw_previews(plan: RecoverPlan, prep: PreparedClip, rows: Sequence[_TrackRows]) -> None:
    ok = [r for r in rows if r.joints is not None and r.frames is not None]
    if not ok:
        return
    clip = prep.clip
    tracks = {r.result.track_id: r.joints for r in ok}
    frames = {r.result.track_id: r.frames for r in ok}
    times = {tid: f / clip.fps for tid, f in frames.items()}
    root = Path(plan.archive)
    name = f"{PREVIEWS_DIR}/{output_name(clip.clip_id)}"
    try:
        png = _preview_png(tracks, times, plan.archive_joint_set, prep.camera, clip.clip_id)
        _write_file(root, name + ".png", png)
        if plan.rrd:
            _write_rrd(
                root / (name + ".rrd"),
                tracks,
                frames,
                clip.fps,
                plan.archive_joint_set,
                prep.camera,
                clip.clip_id,
            )
    except Exception:  # noqa: BLE001 - a preview never fails a clip
        _log().exception("preview of %s failed", clip.clip_id)


def run_batch(plan: RecoverPlan, items: Sequence[ClipItem]) -> BatchOutcome:
    """Recover a batch of clips into one archive part (module docstring); the plain
    function behind :data:`recover_batch`.

    Args:
        plan: the run.
        items: the clips, with their fingerprints.

    Returns:
        The part (not yet committed) and one outcome per clip, in order.

    Raises:
        CheckpointError: the checkpoint cannot be loaded or changed during the run.
        OSError: the archive cannot be written (retried by the task).
    """
    start = time.perf_counter()
    if plan.torch_threads:
        torch.set_num_threads(int(plan.torch_threads))
    refs = [item.ref for item in items]
    loaded_clips = load_clips(
        refs,
        plan.camera_default,
        default_fps=plan.default_fps,
        video_reader=_video_reader(refs),
    )
    min_confidence = plan.config.min_confidence
    failed_rows: dict[int, list[SequenceResult]] = {}
    prepared: list[PreparedClip] = []
    owners: list[int] = []  # item index of each prepared clip
    for index, (item, clip) in enumerate(zip(items, loaded_clips, strict=True)):
        if isinstance(clip, ClipError):
            failed_rows[index] = [_failed_row(plan, item, clip.reason)]
            continue
        try:
            prep = prepare_clip(
                clip,
                plan.model_joint_set,
                min_frames=plan.min_frames,
                max_gap_frames=plan.max_gap_frames,
                min_confidence=min_confidence,
            )
        except ClipError as error:
            failed_rows[index] = [_failed_row(plan, item, error.reason, clip)]
            continue
        prepared.append(prep)
        owners.append(index)
        failed_rows[index] = [
            _failed_row(plan, item, reason, clip, track_id)
            for track_id, reason in prep.failed_tracks
        ]

    motions: dict[int, list[list[RecoveredMotion]]] = {}
    errors: dict[int, str] = {}
    if prepared:
        with borrowed_model(plan.checkpoint, plan.checkpoint_sha256) as loaded:
            motions, errors = _recover_all(plan, prepared, loaded)
    shared_seconds = time.perf_counter() - start
    body_model = None
    if plan.body_model and prepared:
        from data_catalog.readers.amass import load_body_model

        body_model = load_body_model(plan.body_model)[0].module

    frames_of = {
        owners[c]: sum(int(t.frames[-1] - t.frames[0] + 1) for t in prep.tracks)
        for c, prep in enumerate(prepared)
    }
    total_frames = max(1, sum(frames_of.values()))
    results: list[SequenceResult] = []
    outcomes: list[ClipOutcome] = []
    prepared_at = dict(zip(owners, range(len(prepared)), strict=True))
    for index, item in enumerate(items):
        clip_start = time.perf_counter()
        share = shared_seconds * frames_of.get(index, 0) / total_frames
        rows: list[_TrackRows] = []
        c = prepared_at.get(index)
        clip_failed = list(failed_rows.get(index, []))
        if c is not None:
            prep = prepared[c]
            if c in errors:
                clip_failed = [_failed_row(plan, item, errors[c], prep.clip)]
            else:
                for t, track in enumerate(prep.tracks):
                    rows.append(_track_rows(plan, item, prep, track, motions[c][t], body_model))
                if plan.previews:
                    _draw_previews(plan, prep, rows)
        seconds = share + (time.perf_counter() - clip_start)
        clip_results = [r.result for r in rows] + clip_failed
        if not clip_results:  # cannot happen: a clip has a failure or tracks
            clip_results = [_failed_row(plan, item, "no track recovered")]
        for result in clip_results:
            result.seconds = seconds
        results.extend(clip_results)
        ok = [r for r in clip_results if r.status == "ok"]
        bad = [r for r in clip_results if r.status != "ok"]
        outcomes.append(
            ClipOutcome(
                clip_id=item.ref.clip_id,
                status="ok" if ok else "failed",
                error=None if ok else bad[0].error,
                tracks_ok=len(ok),
                tracks_failed=len(bad),
                frames=sum(r.num_frames for r in ok),
                seconds=seconds,
            )
        )
    part = write_part(plan.archive, results)
    return BatchOutcome(part, tuple(outcomes), time.perf_counter() - start)


@task(name="recover-batch", task_run_name="recover-{label}", **_TASK_OPTIONS)
def recover_batch(plan: RecoverPlan, items: list[ClipItem], label: str = "batch") -> BatchOutcome:
    """:func:`run_batch` as a Prefect task (retried on I/O errors only); ``label`` names
    the task run (e.g. ``3-of-12``)."""
    return run_batch(plan, items)
