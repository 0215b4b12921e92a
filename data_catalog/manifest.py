"""Manifests: what a dataset's source holds, item by item, and what changed since last time.

A :class:`Manifest` lists every item of a source with its main file's key, size and sha256,
and the same for its sidecars; an item's :attr:`ManifestItem.digest` folds the sidecars'
hashes into the main file's (:func:`data_catalog.sources.item_digest`). The manifest's
canonical JSON (sorted keys, no spaces, UTF-8) is hashed into the dataset *fingerprint*
written into the store. The fingerprint depends on item keys and contents only, not on where
the source lies, so moving a data folder does not change it.

:func:`build_manifest` lists and hashes a source in one pass (one decompression of a tar),
streaming members through :mod:`hashlib` in 1 MiB chunks. :func:`diff` compares two manifests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from data_catalog.sources import (
    CHUNK_BYTES,
    READ_ERRORS,
    ItemRef,
    Source,
    group_items,
    item_digest,
    iter_members,
)

MANIFEST_FORMAT = "mocap2to3.manifest"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class FileEntry:
    """One file: key, size in bytes, sha256 (hex)."""

    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ManifestItem:
    """One item: its main file and its sidecars (suffix -> :class:`FileEntry`)."""

    key: str
    size: int
    sha256: str
    sidecars: Mapping[str, FileEntry] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """Content hash of the item, sidecars included; equal to the main sha256 without them."""
        return item_digest(self.sha256, {s: e.sha256 for s, e in self.sidecars.items()})

    def to_ref(self) -> ItemRef:
        """The item as a :class:`~data_catalog.sources.ItemRef` for reading it."""
        return ItemRef(
            self.key,
            self.size,
            {s: e.key for s, e in self.sidecars.items()},
            {s: e.size for s, e in self.sidecars.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "size": self.size, "sha256": self.sha256}
        if self.sidecars:
            out["sidecars"] = {
                s: {"key": e.key, "size": e.size, "sha256": e.sha256}
                for s, e in sorted(self.sidecars.items())
            }
        return out

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> ManifestItem:
        sidecars = {s: FileEntry(**e) for s, e in value.get("sidecars", {}).items()}
        return cls(str(value["key"]), int(value["size"]), str(value["sha256"]), sidecars)


@dataclass(frozen=True)
class Manifest:
    """Every item of a dataset's source, sorted by key.

    Attributes:
        dataset: dataset name.
        items: the items, sorted by key (enforced).
    """

    dataset: str
    items: tuple[ManifestItem, ...]

    def __post_init__(self) -> None:
        keys = [i.key for i in self.items]
        if keys != sorted(keys):
            object.__setattr__(self, "items", tuple(sorted(self.items, key=lambda i: i.key)))
        if len(set(keys)) != len(keys):
            raise ValueError(f"manifest of {self.dataset}: duplicate item keys")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_VERSION,
            "dataset": self.dataset,
            "items": [i.to_dict() for i in self.items],
        }

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces, UTF-8): the bytes the fingerprint hashes."""
        return json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()

    @property
    def fingerprint(self) -> str:
        """sha256 (hex) of :meth:`to_json`: the dataset fingerprint."""
        return hashlib.sha256(self.to_json()).hexdigest()

    @classmethod
    def from_json(cls, data: bytes | str) -> Manifest:
        """Parse a manifest; ValueError when it is not one or is of a newer version."""
        value = json.loads(data)
        if not isinstance(value, dict) or value.get("format") != MANIFEST_FORMAT:
            raise ValueError("not a mocap2to3 manifest")
        if value.get("format_version", 0) > MANIFEST_VERSION:
            raise ValueError(
                f"manifest format_version {value['format_version']} is newer than "
                f"{MANIFEST_VERSION}; upgrade mocap2to3"
            )
        return cls(str(value["dataset"]), tuple(ManifestItem.from_dict(i) for i in value["items"]))

    @property
    def keys(self) -> list[str]:
        return [i.key for i in self.items]

    def get(self, key: str) -> ManifestItem:
        """The item named ``key``; KeyError naming the dataset when absent."""
        for item in self.items:
            if item.key == key:
                return item
        raise KeyError(f"item {key!r} is not in the manifest of {self.dataset}")

    def by_key(self) -> dict[str, ManifestItem]:
        return {i.key: i for i in self.items}

    def refs(self) -> list[ItemRef]:
        """The items as :class:`~data_catalog.sources.ItemRef` (the listing for reading)."""
        return [i.to_ref() for i in self.items]

    @property
    def total_bytes(self) -> int:
        return sum(i.size + sum(e.size for e in i.sidecars.values()) for i in self.items)


@dataclass(frozen=True)
class ManifestScan:
    """Result of scanning a source.

    Attributes:
        manifest: the items that could be read and hashed.
        unreadable: item key -> reason, for items a member of which could not be read
            (they are not in the manifest; the flow quarantines them).
    """

    manifest: Manifest
    unreadable: dict[str, str]


@dataclass(frozen=True)
class ManifestDiff:
    """Keys of items added, changed (digest differs), removed and unchanged; each sorted."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    unchanged: tuple[str, ...]

    @property
    def is_empty(self) -> bool:
        """True when nothing was added, changed or removed."""
        return not (self.added or self.changed or self.removed)


def build_manifest(source: Source, dataset: str) -> ManifestScan:
    """List and hash every item of a source in one pass.

    Args:
        source: the source (see :mod:`data_catalog.sources`).
        dataset: dataset name recorded in the manifest.

    Returns:
        A :class:`ManifestScan`.

    Raises:
        SourceMissing: the source does not exist.
        SourceError: the archive is truncated or corrupt as a whole.
    """
    files: dict[str, FileEntry] = {}
    failed: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for key, size, stream in iter_members(source):
        sizes[key] = size
        digest = hashlib.sha256()
        count = 0
        try:
            while chunk := stream.read(CHUNK_BYTES):
                digest.update(chunk)
                count += len(chunk)
        except READ_ERRORS as error:
            where = f"archive {source.path}, member {key}" if source.kind == "archive" else key
            failed[key] = f"{where}: {type(error).__name__}: {error}"
            continue
        files[key] = FileEntry(key, count, digest.hexdigest())
    items = []
    unreadable: dict[str, str] = {}
    for ref in group_items(sizes, source.member_glob, source.sidecars):
        problems = [failed[k] for k in ref.member_keys if k in failed]
        if problems:
            unreadable[ref.key] = "; ".join(problems)
            continue
        main = files[ref.key]
        side = {s: files[k] for s, k in ref.sidecars.items()}
        items.append(ManifestItem(main.key, main.size, main.sha256, side))
    return ManifestScan(Manifest(dataset, tuple(items)), unreadable)


def diff(old: Manifest | None, new: Manifest) -> ManifestDiff:
    """What changed from ``old`` (None: nothing before) to ``new``, compared by item digest."""
    before = old.by_key() if old is not None else {}
    after = new.by_key()
    added = sorted(k for k in after if k not in before)
    removed = sorted(k for k in before if k not in after)
    common = sorted(k for k in after if k in before)
    changed = [k for k in common if before[k].digest != after[k].digest]
    unchanged = [k for k in common if before[k].digest == after[k].digest]
    return ManifestDiff(tuple(added), tuple(changed), tuple(removed), tuple(unchanged))
