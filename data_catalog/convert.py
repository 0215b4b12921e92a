"""One source item to store-ready sequences: read, then normalise (DESIGN 4.1).

Normalisation: resample to the store's frame rate (positions linearly; rotations are not
stored), metres, y-up, ground at y = 0 from the feet, and a split at broken frames (NaN,
teleports, empty 2D frames) into clean runs of at least :data:`MIN_SEQUENCE_FRAMES` frames;
shorter runs are dropped.

Validity (DESIGN 4.1): a 3D joint is ``valid`` where the source skeleton gives it, measured
(a source joint) or derived (interpolated between joints, a marker on a joint such as the
face points of COCO-17); it is not valid where it cannot be derived (a non-finite value).
Invalid joints are stored as 0, so a derived joint must stay valid to be stored at all. The
measured/derived flags are kept per sequence in ``meta["measured"]`` (joint set -> one bool
per joint), so that evaluation can be restricted to measured joints. A 2D keypoint is valid
where its confidence is above 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from data_catalog.readers import get_reader
from data_catalog.sources import ItemBytes
from data_catalog.store import PreparedSequence
from data_catalog.types import Motion3D, ReaderError, Tracks2D
from mocap_core.joint_sets import get_joint_set
from mocap_core.normalize import (
    find_broken_frames,
    ground,
    resample_positions,
    resample_tracks,
    split_at_broken,
)

# Half a second at 30 fps: shorter clean runs carry too little motion to train on.
MIN_SEQUENCE_FRAMES = 15
# Height of each joint set's lowest foot joint above the floor on contact, metres: SMPL's
# "foot" joints are the balls of the feet, COCO's lowest joints are the ankles.
CONTACT_HEIGHT_M = {"smpl22": 0.04, "coco17": 0.07, "coco17_pelvis": 0.07}
# Normalisation settings folded into the item-cache key (change them, items re-convert).
NORMALISATION = {
    "min_sequence_frames": MIN_SEQUENCE_FRAMES,
    "contact_height_m": CONTACT_HEIGHT_M,
    "resample": "linear",
    # What ``valid`` means for 3D joints (see the module docstring); items cached under
    # another meaning are converted again.
    "valid_3d": "derivable",
}


def convert_item(
    item: ItemBytes,
    *,
    reader: str,
    options: Mapping[str, Any],
    joint_sets: Sequence[str],
    fps: float,
) -> list[PreparedSequence]:
    """Read one item and normalise it into sequences for a store.

    Args:
        item: the item's bytes and sidecars, as streamed from its source.
        reader: registered reader name (``data_catalog.readers.READERS``).
        options: the catalog's reader options.
        joint_sets: the store's joint sets.
        fps: the store's frame rate.

    Returns:
        The item's sequences (several when it is split at broken frames or holds several
        tracks); each passes :meth:`PreparedSequence.check`.

    Raises:
        ReaderError: the item cannot be read, or leaves no clean run long enough; the
            message names the item and is the quarantine reason.
    """
    if not item.ok:
        raise ReaderError(item.error or f"{item.key}: could not be read")
    spec = get_reader(reader)
    record = spec.read(item.data, item.sidecars, options, tuple(joint_sets), item.key)
    digest = item.digest()
    if isinstance(record, Motion3D):
        sequences = _motion_sequences(record, item.key, digest, tuple(joint_sets), fps)
    elif isinstance(record, Tracks2D):
        sequences = _track_sequences(record, item.key, digest, tuple(joint_sets), fps)
    else:  # a reader registered with the wrong return type is a programming error
        raise TypeError(f"reader {reader!r} returned {type(record).__name__}")
    if not sequences:
        raise ReaderError(
            f"{item.key}: no clean run of at least {MIN_SEQUENCE_FRAMES} frames at {fps:g} fps"
        )
    for sequence in sequences:
        sequence.check(joint_sets)
    return sequences


def _motion_sequences(
    motion: Motion3D, key: str, digest: str, joint_sets: tuple[str, ...], fps: float
) -> list[PreparedSequence]:
    missing = [js for js in joint_sets if js not in motion.joints]
    if missing:
        raise ReaderError(f"{key}: reader gave no {missing} joints")
    if motion.num_frames == 0:
        raise ReaderError(f"{key}: empty sequence (0 frames)")
    joints = {js: resample_positions(motion.joints[js], motion.fps, fps) for js in joint_sets}
    # One vertical offset for every joint set, found on the first set, so the sets agree.
    anchor = joint_sets[0]
    ground_set = get_joint_set(anchor)
    finite = np.isfinite(joints[anchor]).all(axis=(1, 2))
    if not finite.any():
        raise ReaderError(f"{key}: no finite frame")
    _, offset = ground(
        joints[anchor][finite],
        ground_set.foot_joints,
        foot_height=CONTACT_HEIGHT_M.get(anchor, 0.0),
    )
    broken = np.zeros(joints[anchor].shape[0], dtype=bool)
    valid: dict[str, np.ndarray] = {}
    measured: dict[str, list[bool]] = {}
    for js in joint_sets:
        joints[js] = joints[js] + np.array([0.0, offset, 0.0])
        flags = np.asarray(motion.measured[js], dtype=bool).reshape(-1)
        if flags.shape != (joints[js].shape[1],):
            raise ReaderError(
                f"{key}: {js} measured flags have shape {flags.shape}, expected "
                f"({joints[js].shape[1]},)"
            )
        measured[js] = [bool(f) for f in flags]
        broken |= find_broken_frames(joints[js], fps=fps, kind="3d")
        # Derived joints are valid too: only a joint the source cannot give is not.
        valid[js] = np.isfinite(joints[js]).all(axis=-1)
    labels = dict(motion.meta.get("labels") or {})
    subject = motion.meta.get("subject")
    meta = {k: v for k, v in motion.meta.items() if k not in ("labels", "subject")}
    meta["measured"] = measured
    sequences = []
    for part, run in enumerate(split_at_broken(joints[anchor], broken, MIN_SEQUENCE_FRAMES)):
        sequences.append(
            PreparedSequence(
                source_key=key,
                source_sha256=digest,
                joints={js: np.nan_to_num(joints[js][run]).astype(np.float32) for js in joint_sets},
                valid={js: valid[js][run].copy() for js in joint_sets},
                original_fps=float(motion.fps),
                part=part,
                subject=None if subject is None else str(subject),
                labels=labels,
                meta=meta,
            )
        )
    return sequences


def _track_sequences(
    tracks: Tracks2D, key: str, digest: str, joint_sets: tuple[str, ...], fps: float
) -> list[PreparedSequence]:
    if set(joint_sets) != {tracks.joint_set}:
        raise ReaderError(
            f"{key}: 2D tracks are {tracks.joint_set}; the store wants {list(joint_sets)}"
        )
    js = tracks.joint_set
    sequences = []
    for track_id, rows in tracks.tracks().items():
        keypoints, frames = resample_tracks(
            tracks.keypoints[rows], tracks.frame_index[rows], tracks.fps, fps
        )
        broken = find_broken_frames(keypoints, fps=fps, kind="2d")
        # A gap in the frame numbers (missed detections) also ends a run.
        gap = np.zeros(len(frames), dtype=bool)
        gap[1:] = np.diff(frames) != 1
        part = len([s for s in sequences if s.track_id == track_id])
        for run in _runs(broken, gap):
            sequences.append(
                PreparedSequence(
                    source_key=key,
                    source_sha256=digest,
                    joints={js: keypoints[run].astype(np.float32)},
                    valid={js: keypoints[run, :, 2] > 0},
                    original_fps=float(tracks.fps),
                    part=part,
                    track_id=int(track_id),
                    width=tracks.width,
                    height=tracks.height,
                    K=tracks.K,
                    meta={**tracks.meta, "first_frame": int(frames[run.start])},
                )
            )
            part += 1
    return sequences


def _runs(broken: np.ndarray, starts_new: np.ndarray) -> list[slice]:
    """Runs of good frames, also cut where ``starts_new``, of at least the minimum length."""
    runs, start = [], None
    for i in range(len(broken) + 1):
        end_here = i == len(broken) or broken[i] or (starts_new[i] and start is not None)
        if end_here and start is not None:
            if i - start >= MIN_SEQUENCE_FRAMES:
                runs.append(slice(start, i))
            start = None
        if i < len(broken) and not broken[i] and start is None:
            start = i
    return runs
