"""The Zarr motion store of a prepared dataset (DESIGN 4.1; contract in docs/STORE_FORMAT.md).

A *dataset folder* (a local path or any fsspec URL) holds::

    CURRENT                         JSON naming the current version (replaced atomically)
    versions/<fp12>-<UTC time>/     one complete, immutable store version
        store.zarr/                 Zarr v3 group, one subgroup per target joint set
        sequences.parquet           the sequence table
        manifest.json               the source manifest the version was built from
    items/<cache key>.npz           per-item cache of converted sequences
    quarantine.json                 items rejected by the last run, with reasons

A new version is written in full beside the current one and then published by replacing
``CURRENT``; readers resolve ``CURRENT`` once and keep reading their version, so they never
see a half-written store, and a crash mid-write leaves the previous version current. The
next run rebuilds from the item cache, which a crash leaves holding every item finished.

Main API:

- :class:`PreparedSequence`: one normalised sequence, the unit written to stores and caches.
- :func:`write_store_version` / :func:`open_store` -> :class:`MotionStore`.
- :class:`SplitRule`: the deterministic train/val/test assignment.
- :class:`ItemCache`, :func:`conversion_config`, :func:`cache_key`.
- :func:`read_quarantine` / :func:`write_quarantine`.
- :func:`read_current`, :func:`store_is_current`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import posixpath
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, Literal

import fsspec
import numpy as np
import pandas as pd
import zarr
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, ConfigDict, Field, model_validator

from data_catalog.manifest import Manifest
from mocap_core.joint_sets import JOINT_SETS

#: Format name written into group attributes, ``CURRENT`` and the Parquet schema metadata.
FORMAT_NAME = "mocap2to3.motion_store"
#: Version of the on-disk layout this package writes and the newest it reads.
FORMAT_VERSION = 1
#: Version of the conversion (readers + normalisation); part of every item cache key. Bump
#: it when a reader or ``mocap_core.normalize`` changes what it produces, so that cached
#: items are converted again.
CONVERSION_VERSION = 1
#: Frames per chunk along time (arrays are chunked along time only).
DEFAULT_CHUNK_FRAMES = 8192

StoreKind = Literal["3d", "2d"]
SplitName = Literal["train", "val", "test"]

ARRAY_NAMES: dict[str, str] = {"3d": "joints3d", "2d": "keypoints2d"}
UNITS: dict[str, str] = {"3d": "m", "2d": "px"}

SEQUENCE_COLUMNS: tuple[str, ...] = (
    "sequence_id",
    "start",
    "stop",
    "length",
    "source_key",
    "source_sha256",
    "original_fps",
    "subject",
    "labels",
    "split",
    "track_id",
    "width",
    "height",
    "K",
    "meta",
)


class StoreNotFound(FileNotFoundError):
    """A dataset folder has no store yet (no ``CURRENT``), or its version is gone."""


class StoreFormatError(ValueError):
    """A store is not a motion store, or is of a format version this package cannot read."""


# --------------------------------------------------------------------------------------
# Records


@dataclass
class PreparedSequence:
    """One normalised sequence of one source item, ready for a store.

    One item may give several (split at broken frames: ``part`` 0, 1, ...; several people in
    a 2D track file: one per ``track_id``).

    Attributes:
        source_key: the item's key in its source.
        source_sha256: the item's content digest (manifest ``digest``).
        joints: target joint set -> ``(T, J, 3) float32``: for 3D, joint positions in metres,
            world frame, y-up, ground y = 0; for 2D, pixel u, v and confidence in [0, 1].
        valid: target joint set -> ``(T, J) bool``, False where the joint cannot be derived
            (3D) or is missing (2D).
        original_fps: the source's frame rate before resampling.
        part: index of this sequence among those of the item.
        subject: subject/performer id when known.
        labels: JSON-able labels (e.g. ``{"content": 6, "style": 11}``).
        track_id: person/track id for 2D tracks, else None.
        width, height: image size in pixels (2D) when known.
        K: ``(3, 3)`` camera intrinsics (2D) when known.
        meta: further small JSON-able metadata.
    """

    source_key: str
    source_sha256: str
    joints: dict[str, np.ndarray]
    valid: dict[str, np.ndarray]
    original_fps: float
    part: int = 0
    subject: str | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    track_id: int | None = None
    width: int | None = None
    height: int | None = None
    K: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sequence_id(self) -> str:
        """``<source_key>#<part>``, or ``<source_key>#t<track_id>#<part>`` for a track."""
        track = f"#t{self.track_id}" if self.track_id is not None else ""
        return f"{self.source_key}{track}#{self.part}"

    @property
    def num_frames(self) -> int:
        return int(next(iter(self.joints.values())).shape[0]) if self.joints else 0

    def check(self, joint_sets: Sequence[str]) -> None:
        """Raise ValueError unless the arrays match ``joint_sets`` in shape and dtype."""
        if set(self.joints) != set(joint_sets) or set(self.valid) != set(joint_sets):
            raise ValueError(
                f"sequence {self.sequence_id}: joint sets {sorted(self.joints)} / valid "
                f"{sorted(self.valid)} differ from the store's {sorted(joint_sets)}"
            )
        frames = None
        for name in joint_sets:
            joints, valid = np.asarray(self.joints[name]), np.asarray(self.valid[name])
            num_joints = len(JOINT_SETS[name])
            if joints.ndim != 3 or joints.shape[1:] != (num_joints, 3):
                raise ValueError(
                    f"sequence {self.sequence_id}: {name} joints have shape {joints.shape}, "
                    f"expected (T, {num_joints}, 3)"
                )
            if valid.shape != joints.shape[:2] or valid.dtype != np.bool_:
                raise ValueError(
                    f"sequence {self.sequence_id}: {name} valid must be bool {joints.shape[:2]}, "
                    f"got {valid.dtype} {valid.shape}"
                )
            if frames is None:
                frames = joints.shape[0]
            elif joints.shape[0] != frames:
                raise ValueError(
                    f"sequence {self.sequence_id}: joint sets have different frame counts"
                )
            if not np.isfinite(joints[valid]).all():
                raise ValueError(f"sequence {self.sequence_id}: {name} has non-finite valid joints")
        if not frames:
            raise ValueError(f"sequence {self.sequence_id}: no frames")
        if not (np.isfinite(self.original_fps) and self.original_fps > 0):
            raise ValueError(f"sequence {self.sequence_id}: original_fps must be > 0")

    def row_meta(self) -> dict[str, Any]:
        """The JSON-able fields (everything but the arrays and ``K``)."""
        return {
            "source_key": self.source_key,
            "source_sha256": self.source_sha256,
            "original_fps": float(self.original_fps),
            "part": int(self.part),
            "subject": self.subject,
            "labels": self.labels,
            "track_id": None if self.track_id is None else int(self.track_id),
            "width": None if self.width is None else int(self.width),
            "height": None if self.height is None else int(self.height),
            "meta": self.meta,
        }


# --------------------------------------------------------------------------------------
# Split rule


class SplitSelector(BaseModel):
    """Sequences sent to one split whatever the hash says.

    Attributes:
        labels: label name -> values; a sequence matches when one of its labels equals one
            of the values, compared as strings (so ``11`` and ``"11"`` match; a list-valued
            label matches when any element does).
        keys: fnmatch patterns on the source key (``*`` also matches ``/``).
    """

    model_config = ConfigDict(extra="forbid")

    labels: dict[str, list[str | int | float | bool]] = Field(default_factory=dict)
    keys: list[str] = Field(default_factory=list)

    def matches(self, source_key: str, labels: Mapping[str, Any]) -> bool:
        for name, values in self.labels.items():
            if name not in labels:
                continue
            have = labels[name]
            have_values = have if isinstance(have, list | tuple) else [have]
            wanted = {str(v) for v in values}
            if any(str(v) in wanted for v in have_values):
                return True
        return any(fnmatch.fnmatchcase(source_key, pattern) for pattern in self.keys)

    @property
    def empty(self) -> bool:
        return not self.labels and not self.keys


class SplitRule(BaseModel):
    """Deterministic train/val/test assignment of the sequences of a store.

    A sequence goes to ``test`` when it matches the ``test`` selector, else to ``val`` when it
    matches the ``val`` selector, else by hash: ``u = sha256("<seed>:<source_key>")`` read as
    a number in [0, 1); ``u < test_fraction`` -> test, ``u < test_fraction + val_fraction`` ->
    val, else train. The hash uses the *source key*, so all sequences cut from one item land
    in the same split, and the assignment never changes when other items come or go.

    Example (YAML)::

        split:
          test_fraction: 0.1
          val_fraction: 0.05
          seed: 0
          test: {labels: {style: [13]}, keys: ["*_kick_*"]}
    """

    model_config = ConfigDict(extra="forbid")

    test_fraction: float = Field(0.1, ge=0.0, le=1.0)
    val_fraction: float = Field(0.05, ge=0.0, le=1.0)
    seed: int = 0
    test: SplitSelector = Field(default_factory=SplitSelector)
    val: SplitSelector = Field(default_factory=SplitSelector)

    @model_validator(mode="after")
    def _fractions_sum(self) -> SplitRule:
        if self.test_fraction + self.val_fraction > 1.0:
            raise ValueError(
                f"test_fraction + val_fraction = {self.test_fraction + self.val_fraction} > 1"
            )
        return self

    def assign(self, source_key: str, labels: Mapping[str, Any] | None = None) -> SplitName:
        """The split of a sequence from its source key and labels."""
        labels = labels or {}
        if self.test.matches(source_key, labels):
            return "test"
        if self.val.matches(source_key, labels):
            return "val"
        digest = hashlib.sha256(f"{self.seed}:{source_key}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2.0**64
        if u < self.test_fraction:
            return "test"
        if u < self.test_fraction + self.val_fraction:
            return "val"
        return "train"


# --------------------------------------------------------------------------------------
# Locations (local paths and fsspec URLs)


def canonical_json(value: Any) -> bytes:
    """UTF-8 JSON with sorted keys and no spaces: equal values give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class _Location:
    """A folder given as a local path or an fsspec URL, with the few operations needed."""

    def __init__(self, url: str | os.PathLike[str], storage_options: Mapping[str, Any] | None):
        text = os.fspath(url)
        if "://" not in text:
            text = os.path.abspath(text)
        self.given = text
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = fsspec.core.url_to_fs(text, **self.storage_options)
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts) if parts else self.root

    def url(self, *parts: str) -> str:
        path = self.path(*parts)
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def exists(self, *parts: str) -> bool:
        return bool(self.fs.exists(self.path(*parts)))

    def read_bytes(self, *parts: str) -> bytes:
        return bytes(self.fs.cat_file(self.path(*parts)))

    def write_atomic(self, data: bytes, *parts: str) -> None:
        """Write a file so that a reader sees the old content or the new, never a part.

        Local: a temporary file in the same folder, flushed, then ``os.replace``. Object
        stores and the memory filesystem replace an object in one put.
        """
        target = self.path(*parts)
        if self.is_local:
            folder = os.path.dirname(target)
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, target)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        else:
            self.fs.pipe_file(target, data)

    def listdir(self, *parts: str) -> list[str]:
        path = self.path(*parts)
        if not self.fs.exists(path):
            return []
        return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(path, detail=False))

    def remove(self, *parts: str) -> None:
        path = self.path(*parts)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def zarr_store(self, *parts: str, read_only: bool) -> Any:
        if self.is_local:
            return zarr.storage.LocalStore(self.path(*parts), read_only=read_only)
        return zarr.storage.FsspecStore.from_url(
            self.url(*parts), storage_options=self.storage_options or None, read_only=read_only
        )


def package_version() -> str:
    """The installed ``mocap2to3`` version (``0+unknown`` when not installed)."""
    try:
        return metadata.version("mocap2to3")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------
# Conversion config, item cache and quarantine


def conversion_config(
    reader: str,
    options: Mapping[str, Any],
    joint_sets: Sequence[str],
    fps: float,
    **extra: Any,
) -> dict[str, Any]:
    """The settings that decide what an item converts to, as a JSON-able dict.

    Includes :data:`CONVERSION_VERSION`. Two runs with equal configs convert an unchanged
    item to the same sequences, so :func:`cache_key` reuses the cached result.

    Args:
        reader: reader name (``"bvh"``, ``"amass"``, ...).
        options: reader options from the catalog.
        joint_sets: target joint-set names, in store order.
        fps: target frame rate, frames per second.
        **extra: further JSON-able settings (e.g. normalisation options).
    """
    return {
        "reader": reader,
        "options": dict(options),
        "joint_sets": list(joint_sets),
        "fps": float(fps),
        "conversion_version": CONVERSION_VERSION,
        **extra,
    }


def cache_key(item_digest: str, config: Mapping[str, Any]) -> str:
    """Item-cache key: sha256 of the item's content digest and the conversion config."""
    return hashlib.sha256(canonical_json({"item": item_digest, "config": dict(config)})).hexdigest()


class ItemCache:
    """Per-item cache of converted sequences: ``<dataset_dir>/items/<key>.npz``.

    Each entry is one file, written atomically, holding every :class:`PreparedSequence` one
    item produced (possibly none: an item that converts to nothing is remembered as such).
    A run converts only items whose key is absent; a crash loses at most the items in flight.
    """

    def __init__(
        self, dataset_dir: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
    ) -> None:
        self._loc = _Location(dataset_dir, storage_options)

    def _name(self, key: str) -> str:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"bad item cache key {key!r}")
        return f"{key}.npz"

    def has(self, key: str) -> bool:
        return self._loc.exists("items", self._name(key))

    def keys(self) -> set[str]:
        """Keys of every cached item."""
        return {
            name[: -len(".npz")]
            for name in self._loc.listdir("items")
            if name.endswith(".npz") and not name.startswith(".")
        }

    def put(self, key: str, sequences: Sequence[PreparedSequence]) -> None:
        """Store the sequences of one item (validated; arrays as float32/bool)."""
        arrays: dict[str, np.ndarray] = {}
        metas = []
        for i, seq in enumerate(sequences):
            seq.check(list(seq.joints))
            for name in seq.joints:
                arrays[f"s{i}/{name}/joints"] = np.asarray(seq.joints[name], dtype=np.float32)
                arrays[f"s{i}/{name}/valid"] = np.asarray(seq.valid[name], dtype=np.bool_)
            if seq.K is not None:
                arrays[f"s{i}/K"] = np.asarray(seq.K, dtype=np.float64).reshape(3, 3)
            metas.append({**seq.row_meta(), "joint_sets": list(seq.joints)})
        arrays["meta"] = np.frombuffer(canonical_json(metas), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self._loc.write_atomic(buffer.getvalue(), "items", self._name(key))

    def get(self, key: str) -> list[PreparedSequence]:
        """The sequences stored under ``key``; KeyError when absent."""
        try:
            data = self._loc.read_bytes("items", self._name(key))
        except FileNotFoundError:
            raise KeyError(f"item {key} is not in the cache at {self._loc.given}") from None
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            metas = json.loads(npz["meta"].tobytes().decode())
            out = []
            for i, meta in enumerate(metas):
                names = meta.pop("joint_sets")
                joints = {n: npz[f"s{i}/{n}/joints"] for n in names}
                valid = {n: npz[f"s{i}/{n}/valid"] for n in names}
                K = npz[f"s{i}/K"] if f"s{i}/K" in npz.files else None
                out.append(PreparedSequence(joints=joints, valid=valid, K=K, **meta))
        return out

    def prune(self, keep_keys: Iterable[str]) -> list[str]:
        """Delete entries not in ``keep_keys`` (items removed or changed); returns them."""
        keep = set(keep_keys)
        removed = sorted(self.keys() - keep)
        for key in removed:
            self._loc.remove("items", self._name(key))
        return removed


@dataclass(frozen=True)
class QuarantineEntry:
    """An item the preparation rejected.

    Attributes:
        key: the item's source key.
        sha256: the item's content digest ("" when it could not be read at all).
        reason: why (the reader's or the source's error message).
        cache_key: the item's cache key under the run's config ("" when unknown); an item
            quarantined under the same key fails the same way, so a run may skip it.
    """

    key: str
    sha256: str
    reason: str
    cache_key: str = ""


def write_quarantine(
    dataset_dir: str | os.PathLike[str],
    entries: Iterable[QuarantineEntry],
    *,
    dataset: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Replace ``<dataset_dir>/quarantine.json`` atomically with ``entries`` (sorted by key)."""
    items = sorted((asdict(e) for e in entries), key=lambda e: e["key"])
    report = {
        "format": "mocap2to3.quarantine",
        "format_version": 1,
        "dataset": dataset,
        "updated": _now().isoformat(),
        "items": items,
    }
    data = json.dumps(report, indent=1, sort_keys=True).encode()
    _Location(dataset_dir, storage_options).write_atomic(data, "quarantine.json")


def read_quarantine(
    dataset_dir: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> list[QuarantineEntry]:
    """The entries of ``<dataset_dir>/quarantine.json``; empty when there is none."""
    loc = _Location(dataset_dir, storage_options)
    if not loc.exists("quarantine.json"):
        return []
    report = json.loads(loc.read_bytes("quarantine.json"))
    return [QuarantineEntry(**e) for e in report.get("items", [])]


# --------------------------------------------------------------------------------------
# Writing a version


@dataclass(frozen=True)
class CurrentPointer:
    """Content of ``CURRENT``: which version is current and what it was built from."""

    version: str
    manifest_fingerprint: str
    config_hash: str
    created: str
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION


@dataclass(frozen=True)
class StoreInfo:
    """Summary of a written store version (small; what a task returns).

    Attributes:
        dataset_dir: the dataset folder as given.
        version: the version folder name.
        version_url: the version folder as a path or URL.
        manifest_fingerprint: the manifest's fingerprint.
        config_hash: hash of the conversion config, split rule and layout settings.
        num_sequences, num_frames: totals.
        split_counts: split -> number of sequences.
        pruned: version folders deleted after the swap.
    """

    dataset_dir: str
    version: str
    version_url: str
    manifest_fingerprint: str
    config_hash: str
    num_sequences: int
    num_frames: int
    split_counts: dict[str, int]
    pruned: tuple[str, ...] = ()


def store_config_hash(
    config: Mapping[str, Any] | None,
    split_rule: SplitRule | None,
    *,
    kind: str,
    joint_sets: Sequence[str],
    fps: float,
) -> str:
    """Hash of everything besides the items that decides a store's content."""
    value = {
        "config": dict(config or {}),
        "split": (split_rule or SplitRule()).model_dump(mode="json"),
        "kind": kind,
        "joint_sets": list(joint_sets),
        "fps": float(fps),
        "format_version": FORMAT_VERSION,
    }
    return hashlib.sha256(canonical_json(value)).hexdigest()


def read_current(
    dataset_dir: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> CurrentPointer | None:
    """The dataset's ``CURRENT`` pointer, or None when no version was published yet.

    Raises:
        StoreFormatError: ``CURRENT`` is not a motion-store pointer or is of a newer format.
    """
    loc = _Location(dataset_dir, storage_options)
    if not loc.exists("CURRENT"):
        return None
    where = loc.url("CURRENT")
    try:
        raw = json.loads(loc.read_bytes("CURRENT"))
    except ValueError as error:
        raise StoreFormatError(f"{where}: not a motion-store pointer: {error}") from error
    if not isinstance(raw, dict):
        raise StoreFormatError(f"{where}: not a motion-store pointer")
    _check_format(raw.get("format"), raw.get("format_version"), where)
    try:
        return CurrentPointer(**raw)
    except TypeError as error:
        raise StoreFormatError(f"{where}: not a motion-store pointer: {error}") from error


def store_is_current(
    dataset_dir: str | os.PathLike[str],
    manifest: Manifest,
    config: Mapping[str, Any] | None,
    split_rule: SplitRule | None,
    *,
    kind: str,
    joint_sets: Sequence[str],
    fps: float,
    storage_options: Mapping[str, Any] | None = None,
) -> bool:
    """True when the current version was built from this manifest with these settings."""
    try:
        pointer = read_current(dataset_dir, storage_options)
    except StoreFormatError:
        return False
    if pointer is None:
        return False
    wanted = store_config_hash(config, split_rule, kind=kind, joint_sets=joint_sets, fps=fps)
    return pointer.manifest_fingerprint == manifest.fingerprint and pointer.config_hash == wanted


class _FrameAppender:
    """Appends frames to the time-chunked arrays of one joint set, whole chunks at a time.

    Frames are held until a full chunk is ready so that every chunk is written once;
    memory stays at about one chunk plus one sequence per joint set.
    """

    def __init__(self, group: Any, name: str, array_name: str, num_joints: int, chunk: int):
        self.chunk = chunk
        sub = group.create_group(name)
        self.data = sub.create_array(
            array_name,
            shape=(0, num_joints, 3),
            chunks=(chunk, num_joints, 3),
            dtype="float32",
            dimension_names=("frame", "joint", "coord"),
        )
        self.valid = sub.create_array(
            "valid",
            shape=(0, num_joints),
            chunks=(chunk, num_joints),
            dtype="bool",
            dimension_names=("frame", "joint"),
        )
        self.pending_data: list[np.ndarray] = []
        self.pending_valid: list[np.ndarray] = []
        self.pending = 0
        self.written = 0

    def add(self, data: np.ndarray, valid: np.ndarray) -> None:
        data = np.where(valid[..., None], data, 0.0).astype(np.float32)
        self.pending_data.append(data)
        self.pending_valid.append(valid)
        self.pending += data.shape[0]
        if self.pending >= self.chunk:
            self.flush(final=False)

    def flush(self, final: bool) -> None:
        if not self.pending:
            return
        data = np.concatenate(self.pending_data)
        valid = np.concatenate(self.pending_valid)
        count = data.shape[0] if final else (data.shape[0] // self.chunk) * self.chunk
        start, stop = self.written, self.written + count
        self.data.resize((stop, *self.data.shape[1:]))
        self.valid.resize((stop, *self.valid.shape[1:]))
        self.data[start:stop] = data[:count]
        self.valid[start:stop] = valid[:count]
        self.written = stop
        self.pending_data = [data[count:]] if count < data.shape[0] else []
        self.pending_valid = [valid[count:]] if count < data.shape[0] else []
        self.pending = data.shape[0] - count


def write_store_version(
    dataset_dir: str | os.PathLike[str],
    sequences: Iterable[PreparedSequence],
    *,
    kind: StoreKind,
    joint_sets: Sequence[str],
    fps: float,
    manifest: Manifest,
    split_rule: SplitRule | None = None,
    config: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    source: str | None = None,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    keep_versions: int = 2,
    storage_options: Mapping[str, Any] | None = None,
) -> StoreInfo:
    """Write a complete new store version from ``sequences``, then make it current.

    Sequences are consumed one at a time and written in whole time chunks, so memory stays
    bounded whatever the dataset's size. Only after everything (arrays, attributes, sequence
    table, manifest) is written is ``CURRENT`` replaced; if anything raises before, the
    partial version folder is removed (best effort), ``CURRENT`` still names the previous
    version, and the error propagates. After the swap, versions other than the newest
    ``keep_versions`` (the new one and the one it replaced, by default) are deleted, with any
    folder left by a crashed run. One writer per dataset folder at a time.

    Args:
        dataset_dir: dataset folder, local path or fsspec URL.
        sequences: the sequences, in the order to store them (e.g. sorted by source key).
            Each has ``joints[js] (T, J, 3)`` and ``valid[js] (T, J) bool`` for every
            ``js`` of ``joint_sets``: metres, world frame, y-up for ``kind="3d"``; pixels
            u, v and confidence for ``kind="2d"``. Joints not valid are stored as 0.
        kind: ``"3d"`` or ``"2d"``.
        joint_sets: target joint-set names (registry names), one subgroup each.
        fps: the store's frame rate (every sequence was resampled to it).
        manifest: the source manifest; its fingerprint goes into attributes and ``CURRENT``.
        split_rule: split assignment (default :class:`SplitRule` ()).
        config: the conversion config (:func:`conversion_config`), recorded in attributes.
        dataset: dataset name, recorded.
        source: source description, recorded.
        chunk_frames: frames per chunk along time.
        keep_versions: version folders kept after the swap (at least 1).
        storage_options: fsspec options for a URL.

    Returns:
        A :class:`StoreInfo`.
    """
    if kind not in ARRAY_NAMES:
        raise ValueError(f"kind must be '3d' or '2d', not {kind!r}")
    if not joint_sets:
        raise ValueError("at least one joint set is needed")
    unknown = [j for j in joint_sets if j not in JOINT_SETS]
    if unknown:
        raise ValueError(f"unknown joint sets {unknown}; known: {sorted(JOINT_SETS)}")
    if len(set(joint_sets)) != len(joint_sets):
        raise ValueError(f"duplicate joint sets in {list(joint_sets)}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if chunk_frames < 1 or keep_versions < 1:
        raise ValueError("chunk_frames and keep_versions must be >= 1")
    split_rule = split_rule or SplitRule()
    loc = _Location(dataset_dir, storage_options)
    previous = read_current(dataset_dir, storage_options)
    created = _now()
    version = f"{manifest.fingerprint[:12]}-{created.strftime('%Y%m%dT%H%M%S%fZ')}"
    config_hash = store_config_hash(config, split_rule, kind=kind, joint_sets=joint_sets, fps=fps)
    try:
        rows, num_frames = _write_version(
            loc,
            version,
            sequences,
            kind=kind,
            joint_sets=list(joint_sets),
            split_rule=split_rule,
            chunk_frames=chunk_frames,
        )
        attrs = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "joint_sets": {j: list(JOINT_SETS[j].joint_names) for j in joint_sets},
            "array_name": ARRAY_NAMES[kind],
            "fps": float(fps),
            "units": UNITS[kind],
            "up_axis": "y",
            "num_frames": num_frames,
            "num_sequences": len(rows),
            "chunk_frames": chunk_frames,
            "manifest_fingerprint": manifest.fingerprint,
            "config_hash": config_hash,
            "config": dict(config or {}),
            "split_rule": split_rule.model_dump(mode="json"),
            "dataset": dataset,
            "source": source,
            "package_version": package_version(),
            "created": created.isoformat(),
        }
        group = zarr.open_group(loc.zarr_store("versions", version, "store.zarr", read_only=False))
        group.attrs.update(attrs)
        table = _sequence_table(rows)
        loc.write_atomic(_parquet_bytes(table, attrs), "versions", version, "sequences.parquet")
        loc.write_atomic(manifest.to_json(), "versions", version, "manifest.json")
    except BaseException:
        try:
            loc.remove("versions", version)
        except Exception:  # noqa: BLE001 - cleanup only; the original error matters
            pass
        raise
    pointer = CurrentPointer(version, manifest.fingerprint, config_hash, created.isoformat())
    loc.write_atomic(json.dumps(asdict(pointer), indent=1).encode(), "CURRENT")
    pruned = _prune_versions(loc, version, previous.version if previous else None, keep_versions)
    counts = {s: int(sum(1 for r in rows if r["split"] == s)) for s in ("train", "val", "test")}
    return StoreInfo(
        dataset_dir=loc.given,
        version=version,
        version_url=loc.url("versions", version),
        manifest_fingerprint=manifest.fingerprint,
        config_hash=config_hash,
        num_sequences=len(rows),
        num_frames=num_frames,
        split_counts=counts,
        pruned=pruned,
    )


def _prune_versions(
    loc: _Location, current: str, previous: str | None, keep_versions: int
) -> tuple[str, ...]:
    """Delete version folders beyond the newest ``keep_versions``; returns the deleted.

    Kept: the new current version, then the one it replaced, then other finished versions
    (those with ``manifest.json``, the last file written) newest first. Folders a crashed
    run left behind are never finished and always deleted.
    """
    keep = [current]
    if previous is not None and previous != current and keep_versions > 1:
        keep.append(previous)
    others = [v for v in loc.listdir("versions") if v not in keep]
    finished = [v for v in others if loc.exists("versions", v, "manifest.json")]
    finished.sort(key=lambda v: v.rsplit("-", 1)[-1], reverse=True)
    keep += finished[: max(0, keep_versions - len(keep))]
    pruned = tuple(v for v in others if v not in keep)
    for stale in pruned:
        loc.remove("versions", stale)
    return pruned


def _write_version(
    loc: _Location,
    version: str,
    sequences: Iterable[PreparedSequence],
    *,
    kind: str,
    joint_sets: list[str],
    split_rule: SplitRule,
    chunk_frames: int,
) -> tuple[list[dict[str, Any]], int]:
    group = zarr.open_group(
        loc.zarr_store("versions", version, "store.zarr", read_only=False),
        mode="w",
        zarr_format=3,
    )
    appenders = {
        j: _FrameAppender(group, j, ARRAY_NAMES[kind], len(JOINT_SETS[j]), chunk_frames)
        for j in joint_sets
    }
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    start = 0
    for seq in sequences:
        seq.check(joint_sets)
        if seq.sequence_id in seen:
            raise ValueError(f"duplicate sequence id {seq.sequence_id}")
        seen.add(seq.sequence_id)
        frames = seq.num_frames
        for j in joint_sets:
            appenders[j].add(np.asarray(seq.joints[j]), np.asarray(seq.valid[j], dtype=np.bool_))
        meta = seq.row_meta()
        rows.append(
            {
                "sequence_id": seq.sequence_id,
                "start": start,
                "stop": start + frames,
                "length": frames,
                "source_key": seq.source_key,
                "source_sha256": seq.source_sha256,
                "original_fps": float(seq.original_fps),
                "subject": seq.subject,
                "labels": json.dumps(seq.labels, sort_keys=True),
                "split": split_rule.assign(seq.source_key, seq.labels),
                "track_id": meta["track_id"],
                "width": meta["width"],
                "height": meta["height"],
                "K": None if seq.K is None else json.dumps(np.asarray(seq.K).tolist()),
                "meta": json.dumps(seq.meta, sort_keys=True),
            }
        )
        start += frames
    for appender in appenders.values():
        appender.flush(final=True)
    return rows, start


def _sequence_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=list(SEQUENCE_COLUMNS))
    dtypes = {
        "sequence_id": "string",
        "start": "int64",
        "stop": "int64",
        "length": "int64",
        "source_key": "string",
        "source_sha256": "string",
        "original_fps": "float64",
        "subject": "string",
        "labels": "string",
        "split": "string",
        "track_id": "Int32",
        "width": "Int32",
        "height": "Int32",
        "K": "string",
        "meta": "string",
    }
    return table.astype(dtypes)


def _parquet_bytes(table: pd.DataFrame, attrs: Mapping[str, Any]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    extra = {
        b"mocap2to3": canonical_json(
            {k: attrs[k] for k in ("format", "format_version", "kind", "manifest_fingerprint")}
        )
    }
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **extra})
    buffer = io.BytesIO()
    pq.write_table(arrow, buffer)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------
# Reading


def _check_format(name: Any, version: Any, where: str) -> None:
    if name != FORMAT_NAME:
        raise StoreFormatError(
            f"{where}: not a motion store (format {name!r}, expected {FORMAT_NAME!r})"
        )
    if not isinstance(version, int) or version < 1:
        raise StoreFormatError(f"{where}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise StoreFormatError(
            f"{where}: store format_version {version} is newer than this package reads "
            f"({FORMAT_VERSION}); upgrade mocap2to3"
        )


class MotionStore:
    """Read-only view of one version of a motion store.

    Attributes:
        dataset_dir: the dataset folder as given.
        version: the version folder name.
        attrs: the group attributes (see docs/STORE_FORMAT.md).
        sequences: the sequence table, one row per sequence in store order.

    Picklable: the Zarr handle is not pickled but reopened on first use in each process.
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike[str],
        version: str,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._loc = _Location(dataset_dir, storage_options)
        self.dataset_dir = self._loc.given
        self.version = version
        self._storage_options = dict(storage_options or {})
        if not self._loc.exists("versions", version, "store.zarr"):
            raise StoreNotFound(
                f"store version {self._loc.url('versions', version)} does not exist"
            )
        self._group: Any = None
        self._pid: int | None = None
        group = self._open_group()
        self.attrs: dict[str, Any] = dict(group.attrs)
        _check_format(
            self.attrs.get("format"),
            self.attrs.get("format_version"),
            self._loc.url("versions", version, "store.zarr"),
        )
        table = pd.read_parquet(
            io.BytesIO(self._loc.read_bytes("versions", version, "sequences.parquet"))
        )
        self.sequences: pd.DataFrame = table
        self._row_of_id = {sid: i for i, sid in enumerate(table["sequence_id"])}

    # pickling: drop the live handle, reopen lazily
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_group"] = None
        state["_pid"] = None
        state["_loc"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._loc = _Location(self.dataset_dir, self._storage_options)

    def _open_group(self) -> Any:
        # A handle opened in a parent process is not reused after fork (fsspec clients
        # and event loops do not survive it).
        if self._group is None or self._pid != os.getpid():
            self._group = zarr.open_group(
                self._loc.zarr_store("versions", self.version, "store.zarr", read_only=True),
                mode="r",
            )
            self._pid = os.getpid()
        return self._group

    @property
    def kind(self) -> StoreKind:
        return self.attrs["kind"]

    @property
    def fps(self) -> float:
        return float(self.attrs["fps"])

    @property
    def joint_sets(self) -> dict[str, list[str]]:
        """Joint-set name -> joint names, in store order."""
        return dict(self.attrs["joint_sets"])

    @property
    def array_name(self) -> str:
        """``"joints3d"`` for a 3D store, ``"keypoints2d"`` for a 2D store."""
        return ARRAY_NAMES[self.kind]

    @property
    def manifest_fingerprint(self) -> str:
        return str(self.attrs["manifest_fingerprint"])

    @property
    def num_frames(self) -> int:
        return int(self.attrs["num_frames"])

    @property
    def url(self) -> str:
        """The version folder, as a path or URL."""
        return self._loc.url("versions", self.version)

    def array(self, joint_set: str) -> Any:
        """The Zarr array ``<joint_set>/joints3d`` (or ``keypoints2d``), ``(N, J, 3) float32``."""
        return self._open_group()[f"{self._check_joint_set(joint_set)}/{self.array_name}"]

    def valid_array(self, joint_set: str) -> Any:
        """The Zarr array ``<joint_set>/valid``, ``(N, J) bool``."""
        return self._open_group()[f"{self._check_joint_set(joint_set)}/valid"]

    def frame_range(self, which: int | str | slice) -> slice:
        """Frame range of a sequence (row position or sequence id), or a frame slice as is."""
        if isinstance(which, slice):
            return which
        if isinstance(which, str):
            if which not in self._row_of_id:
                raise KeyError(f"no sequence {which!r} in {self.url}")
            row = self._row_of_id[which]
        elif isinstance(which, int | np.integer):
            row = int(which)
            if not -len(self.sequences) <= row < len(self.sequences):
                raise IndexError(f"sequence row {row} out of range ({len(self.sequences)} rows)")
        else:
            raise TypeError(
                f"expected a row index, sequence id or slice, got {type(which).__name__}"
            )
        record = self.sequences.iloc[row]
        return slice(int(record["start"]), int(record["stop"]))

    def joints(self, joint_set: str, which: int | str | slice) -> np.ndarray:
        """Frames of one sequence (or a frame slice): ``(T, J, 3) float32``.

        Metres, world frame, y-up, ground y = 0 for a 3D store; pixel u, v and confidence for
        a 2D store. ``which`` is a row position in :attr:`sequences`, a sequence id, or a
        slice of store frames.
        """
        return np.asarray(self.array(joint_set)[self.frame_range(which)])

    def valid(self, joint_set: str, which: int | str | slice) -> np.ndarray:
        """Validity of the same frames: ``(T, J) bool``."""
        return np.asarray(self.valid_array(joint_set)[self.frame_range(which)])

    def manifest(self) -> Manifest:
        """The source manifest this version was built from."""
        return Manifest.from_json(self._loc.read_bytes("versions", self.version, "manifest.json"))

    def _check_joint_set(self, joint_set: str) -> str:
        if joint_set not in self.attrs["joint_sets"]:
            raise KeyError(
                f"joint set {joint_set!r} is not in store {self.url}; it has "
                f"{sorted(self.attrs['joint_sets'])}"
            )
        return joint_set

    def __repr__(self) -> str:
        return (
            f"MotionStore({self.url!r}, kind={self.kind}, sequences={len(self.sequences)}, "
            f"frames={self.num_frames})"
        )


def open_store(
    dataset_dir: str | os.PathLike[str],
    *,
    version: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> MotionStore:
    """Open the current version of a dataset's store (or a given version), read-only.

    Raises:
        StoreNotFound: no version was published yet, or the version folder is gone.
        StoreFormatError: not a motion store, or a newer ``format_version`` than this package.
    """
    if version is None:
        pointer = read_current(dataset_dir, storage_options)
        if pointer is None:
            raise StoreNotFound(
                f"no motion store at {os.fspath(dataset_dir)} (no CURRENT); prepare the dataset first"
            )
        version = pointer.version
    return MotionStore(dataset_dir, version, storage_options)


def iter_cached_sequences(cache: ItemCache, keys: Iterable[str]) -> Iterator[PreparedSequence]:
    """The cached sequences of ``keys`` in order: the input of :func:`write_store_version`."""
    for key in keys:
        yield from cache.get(key)


def write_dataset_file(
    dataset_dir: str | os.PathLike[str],
    name: str,
    data: bytes,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write ``<dataset_dir>/<name>`` atomically (temporary name, then rename/put)."""
    _Location(dataset_dir, storage_options).write_atomic(data, name)


def read_dataset_file(
    dataset_dir: str | os.PathLike[str],
    name: str,
    storage_options: Mapping[str, Any] | None = None,
) -> bytes | None:
    """The bytes of ``<dataset_dir>/<name>``, or None when it does not exist."""
    loc = _Location(dataset_dir, storage_options)
    return loc.read_bytes(name) if loc.exists(name) else None
