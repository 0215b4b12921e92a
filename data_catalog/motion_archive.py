"""The Parquet motion archive: the output of bulk motion recovery (DESIGN 4.2).

The written contract is ``docs/ARCHIVE_FORMAT.md``; in short, an archive folder holds::

    sequences.parquet           one row per (sequence_id, track_id): status, hashes, metadata
    frames/part-<hex>.parquet   one row per (sequence_id, track_id, frame): world joints, SMPL
    tracks2d/part-<hex>-<joint set>.parquet   optional 2D tracks kept beside the motion
    .writer.lock                the single writer's lock (flock)

``sequences.parquet`` is the archive's index: a frames row counts only when the sequence row
of its ``sequence_id`` names its file in ``frames_file``. Every file is written under a
temporary name and renamed into place, and the index is replaced only after the part files
it references are complete, so a crash at any moment leaves a valid archive; rows of parts
that were never committed (or of sequences recovered again since) are *orphans*, ignored by
readers and removed by :meth:`ArchiveWriter.compact`.

Writing is split in two so that the heavy part can run on Dask workers:

- :func:`write_part` writes the frames (and 2D tracks) of a batch of :class:`SequenceResult`
  into new part files and returns a small, picklable :class:`ArchivePart` (the batch's
  index rows). Part names are unique, so any number of workers may write parts at once.
- :meth:`ArchiveWriter.commit` adds parts to the index (read-modify-write of the small
  table, temporary file + ``os.replace``). Only one :class:`ArchiveWriter` may be open on an
  archive at a time (an exclusive ``flock`` on ``.writer.lock``, released by the OS when the
  process dies, so a killed run never leaves a stale lock). :meth:`ArchiveWriter.write_batch`
  does both for a local run.

Committing a ``sequence_id`` replaces every row the index held for it (all its tracks): all
tracks of one sequence must be written in the same :func:`write_part` call.

Reading: :func:`open_archive` -> :class:`MotionArchive` (``.sequences``, ``.frames()``,
``.joints()``, ``.result()``, ``.finished()``, ``.to_pandas()``). Comparing two runs:
:func:`load_canonical` / :func:`archive_digest` (sorted rows, run-dependent columns dropped).

Local filesystems only (the lock is a POSIX ``flock``; Dask workers need the archive folder
on a shared filesystem).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import math
import os
import socket
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data_catalog.store import canonical_json, write_dataset_file
from mocap_core.joint_sets import JOINT_SETS

#: Format name in the schema metadata of every file of an archive.
FORMAT_NAME = "mocap2to3.motion_archive"
#: Version of the layout this package writes, and the newest it reads.
FORMAT_VERSION = 1

SEQUENCES_FILE = "sequences.parquet"
FRAMES_DIR = "frames"
TRACKS2D_DIR = "tracks2d"
LOCK_FILE = ".writer.lock"
#: Prefix of files being written (``write_dataset_file``'s temporary names); never read.
TEMP_PREFIX = ".tmp-"

#: Per-frame SMPL columns and their widths (axis-angle radians, translation metres).
SMPL_FRAME_COLUMNS: dict[str, int] = {
    "smpl_transl": 3,
    "smpl_global_orient": 3,
    "smpl_body_pose": 69,
}
SMPL_BETAS_DIM = 10

Status = Literal["ok", "failed"]
STATUSES: tuple[str, ...] = ("ok", "failed")

#: ``track_id`` of the single row of a clip that failed before its tracks were known.
CLIP_TRACK_ID = -1

#: Index columns that differ between two runs over the same inputs (file names are random,
#: timings vary); :func:`load_canonical` drops them.
RUN_DEPENDENT_COLUMNS: tuple[str, ...] = ("frames_file", "tracks2d_file", "seconds")

#: Rows per Parquet row group: small enough that reading one sequence skips most of a part.
ROW_GROUP_ROWS = 16384

_INT32 = np.iinfo(np.int32)

#: ``(sequence_id, input_sha256, checkpoint_sha256, params_hash)``: what makes work finished.
ResumeKey = tuple[str, str, str, str]


class ArchiveFormatError(ValueError):
    """A folder is not a motion archive, or is of a version this package cannot read."""


class ArchiveLocked(RuntimeError):
    """Another :class:`ArchiveWriter` holds the archive."""


# --------------------------------------------------------------------------------------
# Schemas


def _fixed_list(width: int) -> pa.DataType:
    return pa.list_(pa.float32(), width)


def frames_schema(joint_set: str) -> pa.Schema:
    """Arrow schema (with metadata) of the ``frames/*.parquet`` files for ``joint_set``."""
    num_joints = _joint_count(joint_set)
    fields = [
        pa.field("sequence_id", pa.string(), nullable=False),
        pa.field("track_id", pa.int32(), nullable=False),
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("time_s", pa.float64(), nullable=False),
        pa.field("joints_world", _fixed_list(num_joints * 3), nullable=False),
        pa.field("joints_conf", _fixed_list(num_joints), nullable=False),
    ]
    fields += [pa.field(name, _fixed_list(width)) for name, width in SMPL_FRAME_COLUMNS.items()]
    return pa.schema(fields, metadata=_metadata("frames", joint_set, "m"))


def sequences_schema(joint_set: str) -> pa.Schema:
    """Arrow schema (with metadata) of ``sequences.parquet`` for ``joint_set``."""
    fields = [
        pa.field("sequence_id", pa.string(), nullable=False),
        pa.field("track_id", pa.int32(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("source_path", pa.string()),
        pa.field("source_sha256", pa.string()),
        pa.field("input_sha256", pa.string(), nullable=False),
        pa.field("checkpoint_sha256", pa.string(), nullable=False),
        pa.field("params_hash", pa.string(), nullable=False),
        pa.field("n_frames", pa.int32(), nullable=False),
        pa.field("fps", pa.float64()),
        pa.field("joint_set", pa.string(), nullable=False),
        pa.field("camera", pa.string()),
        pa.field("has_smpl", pa.bool_(), nullable=False),
        pa.field("smpl_betas", _fixed_list(SMPL_BETAS_DIM)),
        pa.field("frames_file", pa.string()),
        pa.field("tracks2d_file", pa.string()),
        pa.field("tracks2d_joint_set", pa.string()),
        pa.field("seconds", pa.float64()),
        pa.field("meta", pa.string(), nullable=False),
    ]
    return pa.schema(fields, metadata=_metadata("sequences", joint_set, "m"))


def tracks2d_schema(joint_set: str) -> pa.Schema:
    """Arrow schema of ``tracks2d/*.parquet`` files holding 2D keypoints in ``joint_set``."""
    num_joints = _joint_count(joint_set)
    fields = [
        pa.field("sequence_id", pa.string(), nullable=False),
        pa.field("track_id", pa.int32(), nullable=False),
        pa.field("frame", pa.int32(), nullable=False),
        pa.field("keypoints", _fixed_list(num_joints * 3), nullable=False),
    ]
    return pa.schema(fields, metadata=_metadata("tracks2d", joint_set, "px"))


def _joint_count(joint_set: str) -> int:
    if joint_set not in JOINT_SETS:
        raise ValueError(f"unknown joint set {joint_set!r}; known: {sorted(JOINT_SETS)}")
    return JOINT_SETS[joint_set].num_joints


def _metadata(table: str, joint_set: str, units: str) -> dict[bytes, bytes]:
    return {
        b"format": FORMAT_NAME.encode(),
        b"format_version": str(FORMAT_VERSION).encode(),
        b"table": table.encode(),
        b"joint_set": joint_set.encode(),
        b"joint_names": json.dumps(list(JOINT_SETS[joint_set].joint_names)).encode(),
        b"up_axis": b"y",
        b"units": units.encode(),
    }


def _check_metadata(schema: pa.Schema, where: str, table: str) -> dict[str, str]:
    """Decoded schema metadata after checking format, version and table kind."""
    raw = schema.metadata or {}
    meta = {k.decode(): v.decode() for k, v in raw.items()}
    name = meta.get("format")
    if name != FORMAT_NAME:
        raise ArchiveFormatError(
            f"{where}: not a motion archive file (format {name!r}, expected {FORMAT_NAME!r})"
        )
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise ArchiveFormatError(
            f"{where}: bad format_version {meta.get('format_version')!r}"
        ) from None
    if version < 1:
        raise ArchiveFormatError(f"{where}: bad format_version {version}")
    if version > FORMAT_VERSION:
        raise ArchiveFormatError(
            f"{where}: archive format_version {version} is newer than this package reads "
            f"({FORMAT_VERSION}); upgrade mocap2to3"
        )
    if meta.get("table") != table:
        raise ArchiveFormatError(f"{where}: holds table {meta.get('table')!r}, expected {table!r}")
    if meta.get("joint_set") not in JOINT_SETS:
        raise ArchiveFormatError(f"{where}: unknown joint set {meta.get('joint_set')!r}")
    return meta


# --------------------------------------------------------------------------------------
# Results


@dataclass(kw_only=True)
class SequenceResult:
    """The recovery of one track of one clip, or the failure of a clip (or of one track).

    Attributes:
        sequence_id: the clip's id (``ClipRef.clip_id``); the same for all its tracks.
        track_id: the person/track id within the clip; :data:`CLIP_TRACK_ID` (-1) for the row
            of a clip that failed before its tracks were known.
        source_path: where the clip was read (file, folder, or ``archive!/member``).
        input_sha256: hash of the clip's input (keypoints bytes + camera JSON).
        checkpoint_sha256: hash of the model checkpoint used.
        params_hash: hash of the recovery parameters (sampler, steps, seed, window, ...).
        joint_set: joint set of ``joints`` (the archive's).
        fps: frame rate of the clip, frames per second (None for a clip that failed before it
            was read).
        camera: the camera JSON the clip was recovered with (DESIGN 4.3), or None.
        status: ``"ok"`` or ``"failed"``.
        error: why it failed (None when ok).
        joints: ``(T, J, 3) float32`` metres, the camera file's world frame, y-up; NaN where a
            joint could not be recovered. Required when ok, None when failed.
        conf: ``(T, J) float32`` per-joint confidence of the recovery (finite).
        frames: ``(T,) int`` frame numbers within the clip, strictly increasing, >= 0.
        smpl_transl: ``(T, 3) float32`` SMPL root translation, metres, or None.
        smpl_global_orient: ``(T, 3) float32`` SMPL global orientation, axis-angle radians.
        smpl_body_pose: ``(T, 69) float32`` SMPL body pose, axis-angle radians (23 joints).
        smpl_betas: ``(10,) float32`` SMPL shape of the sequence, or None.
        tracks2d: ``(T, J2, 3) float32`` the 2D keypoints the motion was recovered from, pixel
            u, v and confidence, row-aligned with ``frames``; or None.
        tracks2d_joint_set: joint set of ``tracks2d`` (required with it).
        source_sha256: sha256 of the clip's keypoints bytes alone, or None.
        seconds: wall time spent on the clip, or None (run-dependent; not compared).
        meta: small JSON-able extras (detector name, video size, ...); must not hold
            run-dependent values, since it is compared between runs.
    """

    sequence_id: str
    track_id: int
    source_path: str
    input_sha256: str
    checkpoint_sha256: str
    params_hash: str
    joint_set: str
    fps: float | None
    camera: Mapping[str, Any] | None = None
    status: Status = "ok"
    error: str | None = None
    joints: np.ndarray | None = None
    conf: np.ndarray | None = None
    frames: np.ndarray | None = None
    smpl_transl: np.ndarray | None = None
    smpl_global_orient: np.ndarray | None = None
    smpl_body_pose: np.ndarray | None = None
    smpl_betas: np.ndarray | None = None
    tracks2d: np.ndarray | None = None
    tracks2d_joint_set: str | None = None
    source_sha256: str | None = None
    seconds: float | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def failed(
        cls,
        *,
        sequence_id: str,
        error: str,
        source_path: str,
        input_sha256: str,
        checkpoint_sha256: str,
        params_hash: str,
        joint_set: str,
        track_id: int = CLIP_TRACK_ID,
        fps: float | None = None,
        camera: Mapping[str, Any] | None = None,
        source_sha256: str | None = None,
        seconds: float | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> SequenceResult:
        """A failed row: no frames, ``status="failed"`` and the reason in ``error``."""
        return cls(
            sequence_id=sequence_id,
            track_id=track_id,
            source_path=source_path,
            input_sha256=input_sha256,
            checkpoint_sha256=checkpoint_sha256,
            params_hash=params_hash,
            joint_set=joint_set,
            fps=fps,
            camera=camera,
            status="failed",
            error=error,
            source_sha256=source_sha256,
            seconds=seconds,
            meta=dict(meta or {}),
        )

    @property
    def num_frames(self) -> int:
        """T, the number of frames (0 for a failed row)."""
        return 0 if self.joints is None else int(np.shape(self.joints)[0])

    @property
    def has_smpl(self) -> bool:
        """Whether the per-frame SMPL parameters are present."""
        return self.smpl_body_pose is not None

    def check(self, joint_set: str) -> None:
        """Raise ValueError (naming the sequence) unless the result fits an archive of ``joint_set``."""
        where = f"sequence {self.sequence_id!r} track {self.track_id}"
        if not isinstance(self.sequence_id, str) or not self.sequence_id:
            raise ValueError(f"sequence_id must be a non-empty string, got {self.sequence_id!r}")
        if isinstance(self.track_id, bool) or not isinstance(self.track_id, int | np.integer):
            raise ValueError(f"{where}: track_id must be an integer, got {self.track_id!r}")
        if not _INT32.min <= int(self.track_id) <= _INT32.max:
            raise ValueError(f"{where}: track_id {self.track_id} does not fit int32")
        for name in ("input_sha256", "checkpoint_sha256", "params_hash"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{where}: {name} must be a string")
        if self.joint_set != joint_set:
            raise ValueError(
                f"{where}: joint set {self.joint_set!r} differs from the archive's {joint_set!r}"
            )
        if self.status not in STATUSES:
            raise ValueError(f"{where}: status must be one of {STATUSES}, got {self.status!r}")
        _json_text(self.camera, f"{where}: camera")
        _json_text(dict(self.meta), f"{where}: meta")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"{where}: fps must be a positive number, got {self.fps!r}")
        arrays = (
            "joints",
            "conf",
            "frames",
            *SMPL_FRAME_COLUMNS,
            "smpl_betas",
            "tracks2d",
        )
        if self.status == "failed":
            if not isinstance(self.error, str) or not self.error:
                raise ValueError(f"{where}: a failed result needs the reason in 'error'")
            present = [name for name in arrays if getattr(self, name) is not None]
            if present:
                raise ValueError(f"{where}: a failed result has no arrays, got {present}")
            return
        if self.error is not None:
            raise ValueError(f"{where}: an ok result has no error, got {self.error!r}")
        if self.fps is None:
            raise ValueError(f"{where}: an ok result needs fps")
        num_joints = _joint_count(joint_set)
        if self.joints is None or self.conf is None or self.frames is None:
            raise ValueError(f"{where}: an ok result needs joints, conf and frames")
        joints = np.asarray(self.joints)
        if joints.ndim != 3 or joints.shape[1:] != (num_joints, 3) or joints.shape[0] == 0:
            raise ValueError(
                f"{where}: joints must have shape (T, {num_joints}, 3) with T >= 1, "
                f"got {joints.shape}"
            )
        frames_count = joints.shape[0]
        if np.isinf(joints).any():
            raise ValueError(f"{where}: joints contain infinite values")
        _check_array(self.conf, (frames_count, num_joints), "conf", where)
        frames = np.asarray(self.frames)
        if frames.shape != (frames_count,) or frames.dtype.kind not in "iu":
            raise ValueError(
                f"{where}: frames must be ({frames_count},) integers, got {frames.dtype} "
                f"{frames.shape}"
            )
        if frames[0] < 0 or frames[-1] > _INT32.max or np.any(np.diff(frames) <= 0):
            raise ValueError(f"{where}: frames must be >= 0, fit int32 and strictly increase")
        smpl = [getattr(self, name) is not None for name in SMPL_FRAME_COLUMNS]
        if any(smpl) and not all(smpl):
            raise ValueError(f"{where}: give all of {list(SMPL_FRAME_COLUMNS)} or none")
        if all(smpl):
            for name, width in SMPL_FRAME_COLUMNS.items():
                _check_array(getattr(self, name), (frames_count, width), name, where)
        if self.smpl_betas is not None:
            if not all(smpl):
                raise ValueError(f"{where}: smpl_betas without the per-frame SMPL parameters")
            _check_array(self.smpl_betas, (SMPL_BETAS_DIM,), "smpl_betas", where)
        if self.tracks2d is not None:
            if self.tracks2d_joint_set not in JOINT_SETS:
                raise ValueError(
                    f"{where}: tracks2d_joint_set must be a registered joint set, got "
                    f"{self.tracks2d_joint_set!r}"
                )
            width = JOINT_SETS[self.tracks2d_joint_set].num_joints
            _check_array(self.tracks2d, (frames_count, width, 3), "tracks2d", where)
        elif self.tracks2d_joint_set is not None:
            raise ValueError(f"{where}: tracks2d_joint_set given without tracks2d")


def _check_array(value: Any, shape: tuple[int, ...], name: str, where: str) -> None:
    array = np.asarray(value)
    if array.shape != shape:
        raise ValueError(f"{where}: {name} must have shape {shape}, got {array.shape}")
    if array.dtype.kind not in "fiu" or not np.isfinite(array).all():
        raise ValueError(f"{where}: {name} must hold finite numbers")


def _json_text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    try:
        return canonical_json(value).decode()
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where} is not JSON-serialisable: {error}") from error


# --------------------------------------------------------------------------------------
# Writing parts


@dataclass(frozen=True)
class ArchivePart:
    """What :func:`write_part` wrote: small and picklable, to be committed by the writer.

    Attributes:
        frames_file: archive-relative path of the new frames file, or None (no ok results).
        tracks2d_files: archive-relative paths of the new 2D-track files.
        rows: the batch's index rows (``sequences.parquet`` columns -> values).
    """

    frames_file: str | None
    tracks2d_files: tuple[str, ...]
    rows: tuple[dict[str, Any], ...]

    @property
    def sequence_ids(self) -> list[str]:
        """The sequence ids of the part, sorted, without repeats."""
        return sorted({row["sequence_id"] for row in self.rows})

    @property
    def files(self) -> tuple[str, ...]:
        """Every file the part wrote (archive-relative)."""
        return ((self.frames_file,) if self.frames_file else ()) + self.tracks2d_files


def write_part(archive: str | os.PathLike[str], results: Sequence[SequenceResult]) -> ArchivePart:
    """Write a batch of results into new part files of an existing archive.

    Safe to call from many processes at once (each part has a unique name) and needs no
    lock; nothing is visible to readers until :meth:`ArchiveWriter.commit` adds the
    returned part to the index.

    Args:
        archive: the archive folder (created by an :class:`ArchiveWriter`).
        results: the batch; ok results go into one frames file (and their 2D tracks into one
            file per 2D joint set), failed results only into the returned rows. All tracks
            of a sequence must be in the same batch; a (sequence_id, track_id) pair at most
            once.

    Returns:
        The part to commit.

    Raises:
        ArchiveFormatError: ``archive`` is not a motion archive this package reads.
        ValueError: a result does not fit the archive (names the sequence and the problem).
    """
    root = Path(archive)
    joint_set = read_archive_metadata(root)["joint_set"]
    seen: set[tuple[str, int]] = set()
    for result in results:
        result.check(joint_set)
        key = (result.sequence_id, int(result.track_id))
        if key in seen:
            raise ValueError(f"sequence {key[0]!r} track {key[1]} appears twice in the batch")
        seen.add(key)
    ordered = sorted(results, key=lambda r: (r.sequence_id, int(r.track_id)))
    ok = [r for r in ordered if r.status == "ok"]
    token = uuid.uuid4().hex
    frames_file = None
    if ok:
        frames_file = f"{FRAMES_DIR}/part-{token}.parquet"
        _write_table(root, frames_file, _frames_table(ok, joint_set))
    tracks_files: dict[str, str] = {}
    for tracks_set in sorted({r.tracks2d_joint_set for r in ok if r.tracks2d is not None}):
        name = f"{TRACKS2D_DIR}/part-{token}-{tracks_set}.parquet"
        with_tracks = [r for r in ok if r.tracks2d_joint_set == tracks_set]
        _write_table(root, name, _tracks2d_table(with_tracks, tracks_set))
        tracks_files[tracks_set] = name
    rows = tuple(
        _sequence_row(
            r,
            frames_file if r.status == "ok" else None,
            tracks_files.get(r.tracks2d_joint_set) if r.tracks2d is not None else None,
        )
        for r in ordered
    )
    return ArchivePart(frames_file, tuple(tracks_files.values()), rows)


def _fixed_list_array(blocks: Sequence[np.ndarray | None], lengths: Sequence[int], width: int):
    """One fixed-size-list column from per-result ``(T_i, width)`` blocks (None -> nulls)."""
    values = [
        np.zeros((n, width), np.float32)
        if b is None
        else np.asarray(b, np.float32).reshape(n, width)
        for b, n in zip(blocks, lengths, strict=True)
    ]
    flat = np.concatenate(values).reshape(-1) if values else np.zeros(0, np.float32)
    mask = np.concatenate([np.full(n, b is None) for b, n in zip(blocks, lengths, strict=True)])
    return pa.FixedSizeListArray.from_arrays(
        pa.array(flat, pa.float32()),
        width,
        mask=pa.array(mask, pa.bool_()) if mask.any() else None,
    )


def _frames_table(results: Sequence[SequenceResult], joint_set: str) -> pa.Table:
    schema = frames_schema(joint_set)
    num_joints = _joint_count(joint_set)
    lengths = [r.num_frames for r in results]
    frames = np.concatenate([np.asarray(r.frames, np.int64) for r in results])
    fps = np.concatenate(
        [np.full(n, r.fps, np.float64) for r, n in zip(results, lengths, strict=True)]
    )
    columns = {
        "sequence_id": pa.array(
            np.repeat([r.sequence_id for r in results], lengths).tolist(), pa.string()
        ),
        "track_id": pa.array(np.repeat([int(r.track_id) for r in results], lengths), pa.int32()),
        "frame": pa.array(frames.astype(np.int32), pa.int32()),
        # Time from the clip's frame 0, so that frame numbers and times agree across tracks.
        "time_s": pa.array(frames / fps, pa.float64()),
        "joints_world": _fixed_list_array(
            [np.asarray(r.joints) for r in results], lengths, num_joints * 3
        ),
        "joints_conf": _fixed_list_array(
            [np.asarray(r.conf) for r in results], lengths, num_joints
        ),
    }
    for name, width in SMPL_FRAME_COLUMNS.items():
        columns[name] = _fixed_list_array([getattr(r, name) for r in results], lengths, width)
    return pa.Table.from_arrays(list(columns.values()), schema=schema)


def _tracks2d_table(results: Sequence[SequenceResult], joint_set: str) -> pa.Table:
    schema = tracks2d_schema(joint_set)
    lengths = [r.num_frames for r in results]
    frames = np.concatenate([np.asarray(r.frames, np.int32) for r in results])
    columns = [
        pa.array(np.repeat([r.sequence_id for r in results], lengths).tolist(), pa.string()),
        pa.array(np.repeat([int(r.track_id) for r in results], lengths), pa.int32()),
        pa.array(frames, pa.int32()),
        _fixed_list_array(
            [np.asarray(r.tracks2d) for r in results], lengths, _joint_count(joint_set) * 3
        ),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _sequence_row(
    result: SequenceResult, frames_file: str | None, tracks2d_file: str | None
) -> dict[str, Any]:
    betas = result.smpl_betas
    return {
        "sequence_id": result.sequence_id,
        "track_id": int(result.track_id),
        "status": result.status,
        "error": result.error,
        "source_path": result.source_path,
        "source_sha256": result.source_sha256,
        "input_sha256": result.input_sha256,
        "checkpoint_sha256": result.checkpoint_sha256,
        "params_hash": result.params_hash,
        "n_frames": result.num_frames,
        "fps": None if result.fps is None else float(result.fps),
        "joint_set": result.joint_set,
        "camera": _json_text(result.camera, "camera"),
        "has_smpl": result.has_smpl,
        "smpl_betas": None if betas is None else np.asarray(betas, np.float32).tolist(),
        "frames_file": frames_file,
        "tracks2d_file": tracks2d_file,
        "tracks2d_joint_set": result.tracks2d_joint_set if tracks2d_file else None,
        "seconds": None if result.seconds is None else float(result.seconds),
        "meta": _json_text(dict(result.meta), "meta"),
    }


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=ROW_GROUP_ROWS, compression="zstd")
    return buffer.getvalue()


def _write_table(root: Path, name: str, table: pa.Table) -> None:
    """Write ``root/name`` atomically (temporary name in the same folder, then rename)."""
    write_dataset_file(root, name, _parquet_bytes(table))


# --------------------------------------------------------------------------------------
# The writer


class ArchiveWriter:
    """The single writer of an archive: creates it, commits parts, compacts.

    Holds an exclusive ``flock`` on ``ARCHIVE/.writer.lock`` from construction to
    :meth:`close` (use it as a context manager); a second writer, in this process or
    another, raises :class:`ArchiveLocked`. The OS drops the lock when the process dies.

    Args:
        path: the archive folder; created with an empty index when absent.
        joint_set: the archive's joint set; must match an existing archive's.

    Raises:
        ArchiveLocked: another writer holds the archive.
        ArchiveFormatError: ``path`` holds something else, or a newer format.
        ValueError: unknown joint set, or the archive exists with another joint set.
    """

    def __init__(self, path: str | os.PathLike[str], joint_set: str) -> None:
        _joint_count(joint_set)
        self.path = Path(path).absolute()
        self.joint_set = joint_set
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = _acquire_lock(self.path / LOCK_FILE, self.path)
        try:
            if (self.path / SEQUENCES_FILE).exists():
                existing = read_archive_metadata(self.path)["joint_set"]
                if existing != joint_set:
                    raise ValueError(
                        f"archive {self.path} holds joint set {existing!r}, not {joint_set!r}"
                    )
            else:
                self._write_index(sequences_schema(joint_set).empty_table())
        except BaseException:
            self.close()
            raise

    # -- context manager -----------------------------------------------------------------
    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the lock (idempotent)."""
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def closed(self) -> bool:
        return self._lock_fd is None

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise ValueError(f"archive writer for {self.path} is closed")

    # -- writing ---------------------------------------------------------------------------
    def write_batch(self, results: Sequence[SequenceResult]) -> ArchivePart:
        """:func:`write_part` then :meth:`commit`: the local, one-process way to write."""
        self._check_open()
        part = write_part(self.path, results)
        self.commit([part])
        return part

    def commit(self, parts: Iterable[ArchivePart]) -> None:
        """Add parts to the index in one atomic replacement of ``sequences.parquet``.

        Every row the index held for a committed ``sequence_id`` is replaced (its old frames
        rows become orphans); among the given parts, a later part wins for a sequence id
        that appears in several.

        Raises:
            FileNotFoundError: a part's file is not in the archive (written elsewhere, or
                removed by :meth:`compact` before its commit).
        """
        self._check_open()
        parts = list(parts)
        if not parts:
            return
        latest: dict[str, list[dict[str, Any]]] = {}
        for part in parts:
            for name in part.files:
                if not (self.path / name).is_file():
                    raise FileNotFoundError(f"archive {self.path}: part file {name} is missing")
            by_id: dict[str, list[dict[str, Any]]] = {}
            for row in part.rows:
                by_id.setdefault(row["sequence_id"], []).append(row)
            latest.update(by_id)
        schema = sequences_schema(self.joint_set)
        new_rows = [row for rows in latest.values() for row in rows]
        new = pa.Table.from_pylist(new_rows, schema=schema)
        index = self._read_index()
        keep = pc.invert(pc.is_in(index["sequence_id"], value_set=pa.array(list(latest))))
        self._write_index(pa.concat_tables([index.filter(keep), new]))

    def compact(self) -> dict[str, int]:
        """Drop orphaned rows and files: rewrite part files to hold only indexed sequences.

        Files no row references (uncommitted parts, leftovers of replaced sequences,
        temporary files of interrupted writes) are deleted; files holding some orphaned rows
        are rewritten under a new name, the index is repointed, then the old file is
        deleted, so a crash during compaction also leaves a valid archive. Run it only when
        no :func:`write_part` is in flight (their finished but uncommitted parts would be
        deleted).

        Returns:
            Counts: ``files_deleted``, ``files_rewritten``, ``rows_dropped``.
        """
        self._check_open()
        index = self._read_index()
        counts = {"files_deleted": 0, "files_rewritten": 0, "rows_dropped": 0}
        replaced: dict[str, str] = {}
        unreferenced: list[Path] = []
        superseded: list[Path] = []
        for folder, column in ((FRAMES_DIR, "frames_file"), (TRACKS2D_DIR, "tracks2d_file")):
            directory = self.path / folder
            if not directory.is_dir():
                continue
            owners = _owners(index, column)
            for path in sorted(directory.iterdir()):
                name = f"{folder}/{path.name}"
                if name not in owners:
                    unreferenced.append(path)
                    continue
                ids = pq.read_table(path, columns=["sequence_id"])["sequence_id"]
                live = pc.is_in(ids, value_set=pa.array(sorted(owners[name])))
                dropped = len(ids) - int(pc.sum(live).as_py() or 0)
                if dropped == 0:
                    continue
                new_name = _renamed_part(name)
                _write_table(self.path, new_name, pq.read_table(path).filter(live))
                replaced[name] = new_name
                superseded.append(path)
                counts["files_rewritten"] += 1
                counts["rows_dropped"] += dropped
        if replaced:
            for column in ("frames_file", "tracks2d_file"):
                values = [replaced.get(v, v) for v in index[column].to_pylist()]
                position = index.schema.get_field_index(column)
                index = index.set_column(position, column, pa.array(values, pa.string()))
            self._write_index(index)
        # Only now that the index no longer names them may the superseded files go.
        for path in superseded:
            path.unlink(missing_ok=True)
        for path in unreferenced:
            if not path.name.startswith(TEMP_PREFIX):
                counts["rows_dropped"] += _row_count(path)
            path.unlink(missing_ok=True)
            counts["files_deleted"] += 1
        return counts

    # -- index -----------------------------------------------------------------------------
    def _read_index(self) -> pa.Table:
        return _read_sequences(self.path).cast(sequences_schema(self.joint_set))

    def _write_index(self, table: pa.Table) -> None:
        table = table.sort_by([("sequence_id", "ascending"), ("track_id", "ascending")])
        table = table.cast(sequences_schema(self.joint_set))
        _write_table(self.path, SEQUENCES_FILE, table)


def _acquire_lock(lock_path: Path, archive: Path) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ArchiveLocked(
            f"archive {archive} is being written by another writer ({holder}); one writer at a time"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return fd


def _owners(index: pa.Table, column: str) -> dict[str, set[str]]:
    """Part file -> the sequence ids whose index rows reference it."""
    owners: dict[str, set[str]] = {}
    for name, sequence_id in zip(
        index[column].to_pylist(), index["sequence_id"].to_pylist(), strict=True
    ):
        if name is not None:
            owners.setdefault(name, set()).add(sequence_id)
    return owners


def _renamed_part(name: str) -> str:
    """A fresh part name in the same folder, keeping a tracks2d file's joint-set suffix."""
    folder, base = name.split("/", 1)
    stem = base.removesuffix(".parquet")
    suffix = stem.split("-", 2)[2] if folder == TRACKS2D_DIR and stem.count("-") >= 2 else None
    token = uuid.uuid4().hex
    return f"{folder}/part-{token}" + (f"-{suffix}" if suffix else "") + ".parquet"


def _row_count(path: Path) -> int:
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowInvalid):
        return 0  # a truncated temporary file: nothing readable was in it


# --------------------------------------------------------------------------------------
# Reading


def _read_sequences(root: Path) -> pa.Table:
    path = root / SEQUENCES_FILE
    if not path.is_file():
        if not root.exists():
            raise FileNotFoundError(f"motion archive {root} does not exist")
        raise ArchiveFormatError(f"{root}: not a motion archive (no {SEQUENCES_FILE})")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as error:
        raise ArchiveFormatError(f"{path}: cannot be read as Parquet ({error})") from error
    meta = _check_metadata(table.schema, str(path), "sequences")
    expected = sequences_schema(meta["joint_set"])
    missing = [name for name in expected.names if name not in table.schema.names]
    if missing:
        raise ArchiveFormatError(f"{path}: missing columns {missing}")
    return table.select(expected.names)


def read_archive_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The archive's schema metadata: format, format_version, joint_set, joint_names, ...

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ArchiveFormatError: not a motion archive, or a newer format version.
    """
    root = Path(path)
    index = root / SEQUENCES_FILE
    if not index.is_file():
        _read_sequences(root)  # raises the right error
    try:
        schema = pq.read_schema(index)
    except (OSError, pa.ArrowInvalid) as error:
        raise ArchiveFormatError(f"{index}: cannot be read as Parquet ({error})") from error
    meta: dict[str, Any] = dict(_check_metadata(schema, str(index), "sequences"))
    meta["format_version"] = int(meta["format_version"])
    meta["joint_names"] = json.loads(meta["joint_names"])
    return meta


def _fixed_list_numpy(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray | None:
    """``(N, width) float32`` from a fixed-size-list column; None when every row is null."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(array) and array.null_count == len(array):
        return None
    if array.null_count:
        raise ArchiveFormatError("a sequence has SMPL parameters on some frames only")
    return array.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)


class MotionArchive:
    """Read-only view of an archive, as indexed when it was opened.

    Attributes:
        path: the archive folder.
        joint_set: the archive's joint set; ``joint_names`` its joint names.
        format_version: the version the archive was written with.
        sequences: the index, one row per (sequence_id, track_id), sorted
            (``sequences.parquet`` columns; missing strings are NaN, as pandas reads them;
            ``smpl_betas`` holds arrays or None).

    Reopen after :meth:`ArchiveWriter.compact`: it may delete files this snapshot names.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()
        meta = read_archive_metadata(self.path)
        self.metadata: dict[str, Any] = meta
        self.joint_set: str = meta["joint_set"]
        self.joint_names: list[str] = meta["joint_names"]
        self.format_version: int = meta["format_version"]
        self._index = _read_sequences(self.path).cast(sequences_schema(self.joint_set))
        self.sequences: pd.DataFrame = self._index.to_pandas()
        self._by_id: dict[str, list[dict[str, Any]]] = {}
        self._all_ok: dict[ResumeKey, bool] | None = None  # resume key -> no row failed
        for row in self._index.to_pylist():
            self._by_id.setdefault(row["sequence_id"], []).append(row)

    def __repr__(self) -> str:
        counts = self.sequences["status"].value_counts().to_dict()
        return f"MotionArchive({str(self.path)!r}, joint_set={self.joint_set!r}, {counts})"

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    # -- resumability ------------------------------------------------------------------------
    def finished_keys(self, *, retry_failed: bool = False) -> set[ResumeKey]:
        """Keys ``(sequence_id, input_sha256, checkpoint_sha256, params_hash)`` of finished work.

        A key is finished when the index holds rows for it and, with ``retry_failed``, none
        of them failed. Failed rows count as finished by default: the reasons (unreadable,
        wrong joint count, NaN, no camera) come from the input, which the key pins; a
        changed input or camera changes ``input_sha256`` and is recovered again.
        """
        if self._all_ok is None:
            all_ok: dict[ResumeKey, bool] = {}
            columns = ("sequence_id", "input_sha256", "checkpoint_sha256", "params_hash")
            keys = zip(*(self._index[c].to_pylist() for c in columns), strict=True)
            for key, state in zip(keys, self._index["status"].to_pylist(), strict=True):
                all_ok[key] = all_ok.get(key, True) and state == "ok"
            self._all_ok = all_ok
        return {key for key, ok in self._all_ok.items() if ok or not retry_failed}

    def finished(
        self,
        sequence_id: str,
        input_sha256: str,
        checkpoint_sha256: str,
        params_hash: str,
        *,
        retry_failed: bool = False,
    ) -> bool:
        """Whether this clip was already recovered with these inputs (see :meth:`finished_keys`)."""
        self.finished_keys()  # fills the cache
        assert self._all_ok is not None
        ok = self._all_ok.get((sequence_id, input_sha256, checkpoint_sha256, params_hash))
        return ok is not None and (ok or not retry_failed)

    # -- frames ----------------------------------------------------------------------------
    def _rows(self, sequence_id: str, track_id: int | None) -> list[dict[str, Any]]:
        """The index rows of a sequence (one track, or all) as Python values (None = null)."""
        rows = self._by_id.get(sequence_id)
        if not rows:
            raise KeyError(f"sequence {sequence_id!r} is not in archive {self.path}")
        if track_id is not None:
            rows = [row for row in rows if row["track_id"] == int(track_id)]
            if not rows:
                raise KeyError(f"sequence {sequence_id!r} has no track {track_id}")
        return rows

    def _read_part(self, name: str, sequence_id: str, track_id: int | None, table: str) -> pa.Table:
        path = self.path / name
        if not path.is_file():
            raise FileNotFoundError(
                f"archive {self.path}: {name} is missing (compacted since opening? reopen it)"
            )
        filters = [("sequence_id", "==", sequence_id)]
        if track_id is not None:
            filters.append(("track_id", "==", int(track_id)))
        data = pq.read_table(path, filters=filters)
        _check_metadata(data.schema, str(path), table)
        return data.sort_by([("track_id", "ascending"), ("frame", "ascending")])

    def frames_arrow(self, sequence_id: str, track_id: int | None = None) -> pa.Table:
        """The frames rows of a sequence (one track, or all), sorted by track then frame."""
        rows = self._rows(sequence_id, track_id)
        files = sorted({row["frames_file"] for row in rows if row["frames_file"] is not None})
        if not files:
            return frames_schema(self.joint_set).empty_table()
        # One file per sequence id by construction (commit replaces all its tracks at once).
        return self._read_part(files[0], sequence_id, track_id, "frames")

    def frames(self, sequence_id: str, track_id: int | None = None) -> pd.DataFrame:
        """The frames rows of a sequence as a DataFrame (empty when the sequence failed).

        Columns as in ``frames/*.parquet``; the fixed-size-list columns hold ``(J*3,)``,
        ``(J,)``, ... float32 arrays (None for SMPL columns without a body model).

        Raises:
            KeyError: the sequence (or track) is not in the archive.
        """
        return self.frames_arrow(sequence_id, track_id).to_pandas()

    def joints(self, sequence_id: str, track_id: int) -> np.ndarray:
        """``(T, J, 3) float32`` world joints of one track, metres, y-up, sorted by frame.

        Raises:
            KeyError: unknown sequence or track. ValueError: the track failed (with why).
        """
        return self.result(sequence_id, track_id, with_tracks2d=False).joints  # type: ignore[return-value]

    def result(
        self, sequence_id: str, track_id: int, *, with_tracks2d: bool = True
    ) -> SequenceResult:
        """One track as the :class:`SequenceResult` that was written (``seconds`` included).

        Raises:
            KeyError: unknown sequence or track.
            ValueError: the track failed; the message carries the recorded error.
        """
        row = self._rows(sequence_id, track_id)[0]
        if row["status"] != "ok":
            raise ValueError(f"sequence {sequence_id!r} track {track_id} failed: {row['error']}")
        data = self.frames_arrow(sequence_id, track_id)
        num_joints = self.num_joints
        joints = _fixed_list_numpy(data["joints_world"], num_joints * 3)
        conf = _fixed_list_numpy(data["joints_conf"], num_joints)
        smpl = {
            name: _fixed_list_numpy(data[name], width) for name, width in SMPL_FRAME_COLUMNS.items()
        }
        frames = data["frame"].to_numpy().astype(np.int64)
        tracks2d = None
        tracks2d_set = row["tracks2d_joint_set"] if row["tracks2d_file"] is not None else None
        if with_tracks2d and tracks2d_set is not None:
            part = self._read_part(row["tracks2d_file"], sequence_id, track_id, "tracks2d")
            width = JOINT_SETS[tracks2d_set].num_joints
            tracks2d = _fixed_list_numpy(part["keypoints"], width * 3).reshape(-1, width, 3)  # type: ignore[union-attr]
        betas = row["smpl_betas"]
        return SequenceResult(
            sequence_id=sequence_id,
            track_id=int(track_id),
            source_path=row["source_path"],
            input_sha256=row["input_sha256"],
            checkpoint_sha256=row["checkpoint_sha256"],
            params_hash=row["params_hash"],
            joint_set=row["joint_set"],
            fps=row["fps"],
            camera=None if row["camera"] is None else json.loads(row["camera"]),
            joints=None if joints is None else joints.reshape(-1, num_joints, 3),
            conf=conf,
            frames=frames,
            smpl_betas=None if betas is None else np.asarray(betas, np.float32),
            tracks2d=tracks2d,
            tracks2d_joint_set=tracks2d_set if with_tracks2d else None,
            source_sha256=row["source_sha256"],
            seconds=row["seconds"],
            meta=json.loads(row["meta"]),
            **smpl,
        )

    def frames_table(self) -> pa.Table:
        """Every indexed frames row (orphans left out), sorted by (sequence_id, track_id, frame)."""
        return _live_rows(self.path, self._index, "frames_file", frames_schema(self.joint_set))

    def to_pandas(self) -> pd.DataFrame:
        """:meth:`frames_table` as a DataFrame."""
        return self.frames_table().to_pandas()

    def tracks2d_tables(self) -> dict[str, pa.Table]:
        """Indexed 2D-track rows per 2D joint set, sorted by (sequence_id, track_id, frame)."""
        out = {}
        sets = self._index["tracks2d_joint_set"].to_pylist()
        for name in sorted({s for s in sets if s is not None}):
            mask = pc.equal(self._index["tracks2d_joint_set"], name)
            out[name] = _live_rows(
                self.path, self._index.filter(mask), "tracks2d_file", tracks2d_schema(name)
            )
        return out


def _live_rows(root: Path, index: pa.Table, column: str, schema: pa.Schema) -> pa.Table:
    parts = []
    for name, owners in sorted(_owners(index, column).items()):
        data = pq.read_table(root / name)
        _check_metadata(data.schema, str(root / name), schema.metadata[b"table"].decode())
        parts.append(data.filter(pc.is_in(data["sequence_id"], value_set=pa.array(sorted(owners)))))
    if not parts:
        return schema.empty_table()
    table = pa.concat_tables([p.cast(schema) for p in parts])
    keys = [("sequence_id", "ascending"), ("track_id", "ascending"), ("frame", "ascending")]
    return table.sort_by(keys)


def open_archive(path: str | os.PathLike[str]) -> MotionArchive:
    """Open a motion archive for reading (see :class:`MotionArchive`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ArchiveFormatError: not a motion archive, or written by a newer format version.
    """
    return MotionArchive(path)


# --------------------------------------------------------------------------------------
# Comparing runs


def load_canonical(path: str | os.PathLike[str]) -> dict[str, pa.Table]:
    """The archive's content independent of how a run batched and timed it.

    Returns:
        ``{"sequences": ..., "frames": ..., "tracks2d/<joint set>": ...}``: the index without
        :data:`RUN_DEPENDENT_COLUMNS`, sorted by (sequence_id, track_id); every indexed
        frames and 2D-track row sorted by (sequence_id, track_id, frame); no schema metadata
        beyond the archive's joint set, which all tables share.
    """
    archive = open_archive(path)
    keep = [n for n in archive._index.schema.names if n not in RUN_DEPENDENT_COLUMNS]
    index = archive._index.select(keep).sort_by(
        [("sequence_id", "ascending"), ("track_id", "ascending")]
    )
    tables = {"sequences": index, "frames": archive.frames_table()}
    for name, table in archive.tracks2d_tables().items():
        tables[f"{TRACKS2D_DIR}/{name}"] = table
    return {name: table.replace_schema_metadata(None) for name, table in tables.items()}


def archive_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of :func:`load_canonical`: equal for two runs that recovered the same motion.

    Hashes every column's name, type and values (fixed-size lists as their float32 bytes
    with the null mask; other columns as canonical JSON), so float values must match to
    the bit; compare :func:`load_canonical` tables with a tolerance otherwise.
    """
    digest = hashlib.sha256()
    digest.update(f"{FORMAT_NAME}/{read_archive_metadata(path)['joint_set']}\n".encode())
    for name, table in sorted(load_canonical(path).items()):
        digest.update(f"table {name} rows {table.num_rows}\n".encode())
        for column_name in table.schema.names:
            column = table[column_name].combine_chunks()
            digest.update(f"column {column_name} {column.type}\n".encode())
            if pa.types.is_fixed_size_list(column.type):
                valid = column.is_valid().to_numpy(zero_copy_only=False)
                digest.update(np.packbits(valid).tobytes())
                digest.update(column.flatten().to_numpy(zero_copy_only=False).tobytes())
            else:
                digest.update(canonical_json(column.to_pylist()))
    return digest.hexdigest()
