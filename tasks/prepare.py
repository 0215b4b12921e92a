"""Tasks of dataset preparation: scan a source, convert shards of items, publish a store.

Tasks take and return small records (a resolved :class:`DatasetPlan`, item keys, counts);
arrays travel through the item cache on disk (``<dataset_dir>/items``), never through
Prefect. The flow resolves each catalog entry once into a :class:`DatasetPlan` (paths and
``${VAR}`` expanded, the store location fixed), so a task that runs on a Dask worker, whose
working folder and environment may differ from the flow's, reads and writes exactly what a
local task would.

Retries only on I/O (:mod:`tasks.retry`): a bad item is quarantined, never retried, and an
unexpected error (a bug) fails the run, leaving the published store untouched.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from data_catalog.catalog import Catalog, load_catalog
from data_catalog.convert import NORMALISATION, convert_item
from data_catalog.manifest import Manifest, build_manifest
from data_catalog.readers import check_reader_options, get_reader
from data_catalog.sources import (
    CHUNK_BYTES,
    Source,
    SourceError,
    SourceMissing,
    iter_item_bytes,
)
from data_catalog.store import (
    ItemCache,
    QuarantineEntry,
    SplitRule,
    cache_key,
    canonical_json,
    iter_cached_sequences,
    open_store,
    read_current,
    read_dataset_file,
    read_quarantine,
    store_is_current,
    write_dataset_file,
    write_quarantine,
    write_store_version,
)
from data_catalog.types import ReaderError
from tasks.retry import IO_RETRIES

#: The manifest of the run in progress, written by the scan, read by shards and publish.
STAGED_MANIFEST = "staging-manifest.json"
#: An archive source's file digest and the manifest fingerprint it gave, so that an
#: unchanged archive is recognised without decompressing it.
SOURCE_DIGEST = "source-digest.json"

# Tasks read and write the filesystem: their inputs never determine their result, so a
# result must never be taken from Prefect's cache.
_TASK_OPTIONS: dict[str, Any] = {**IO_RETRIES, "cache_policy": NO_CACHE}


def open_catalog(catalog_path: str | None) -> Catalog:
    """The catalog at ``catalog_path`` (default: the packaged ``catalog.yaml``)."""
    return load_catalog(catalog_path)


def item_config(catalog: Catalog, name: str) -> dict[str, Any]:
    """What decides an item's conversion: reader, options, joint sets, fps, normalisation."""
    return {**catalog.conversion_config(name), "normalisation": NORMALISATION}


@dataclass(frozen=True)
class DatasetPlan:
    """One catalog entry resolved for a run: everything the tasks need, picklable.

    Attributes:
        name: dataset name.
        source: the resolved source (absolute paths).
        source_spec: the source location as written in the catalog (recorded in the store,
            so that it does not depend on where the data lay on this machine).
        absent: why the source is absent ("" when present): the dataset is skipped.
        reader: registered reader name.
        options: reader options, ``${VAR}`` expanded.
        kind: ``"3d"`` or ``"2d"``.
        joint_sets: the store's joint sets.
        fps: the store's frame rate.
        split_rule: the split rule as plain JSON data (Prefect walks task arguments and
            cannot walk the pydantic model); :attr:`split` gives the model.
        store_url: the dataset folder (local path or fsspec URL).
        config: the item conversion config (part of every item's cache key).
    """

    name: str
    source: Source
    source_spec: str
    absent: str
    reader: str
    options: dict[str, Any]
    kind: str
    joint_sets: tuple[str, ...]
    fps: float
    split_rule: dict[str, Any]
    store_url: str
    config: dict[str, Any]

    @property
    def split(self) -> SplitRule:
        """The split rule."""
        return SplitRule.model_validate(self.split_rule)


def plan_dataset(catalog: Catalog, name: str) -> DatasetPlan:
    """Resolve the catalog entry ``name`` into a :class:`DatasetPlan`.

    Raises:
        KeyError: no such dataset, or an unknown reader.
        ValueError: options the reader does not take, an unset ``${VAR}`` (CatalogError).
    """
    entry = catalog.get(name)
    options = catalog.reader_options(name)
    get_reader(entry.reader)
    check_reader_options(entry.reader, options)
    try:
        source = catalog.source(name)
        absent = ""
    except SourceMissing as error:
        source = catalog.source(name, check=False)
        absent = str(error)
    return DatasetPlan(
        name=name,
        source=source,
        source_spec=entry.source.location,
        absent=absent,
        reader=entry.reader,
        options=options,
        kind=str(entry.kind),
        joint_sets=tuple(entry.joint_sets),
        fps=float(entry.fps),
        split_rule=entry.split.model_dump(mode="json"),
        store_url=catalog.store_url(name),
        config=item_config(catalog, name),
    )


@dataclass(frozen=True)
class DatasetScan:
    """What a dataset needs.

    Attributes:
        dataset: the dataset name.
        status: ``ready`` (items to convert or a version to publish), ``current`` (the
            store already holds exactly this source under this config), ``absent`` (the
            source is missing: skipped), ``error`` (the source cannot be read as a whole).
        message: why, for ``absent``, ``error`` and ``current``.
        num_items: items in the source (unreadable ones included).
        pending: keys of the items to convert (no cached result, not known bad).
        cached: items whose converted result is in the item cache.
        quarantined: items rejected: unreadable members, and items quarantined by an
            earlier run whose content and config did not change (not read again); for a
            ``current`` store, the entries of its quarantine report.
        sequences, frames: totals of the current store version (``current`` only).
        version: the current store version (``current`` only).
    """

    dataset: str
    status: str
    message: str = ""
    num_items: int = 0
    pending: tuple[str, ...] = ()
    cached: int = 0
    quarantined: tuple[QuarantineEntry, ...] = ()
    sequences: int = 0
    frames: int = 0
    version: str = ""


@dataclass(frozen=True)
class ShardResult:
    """What one shard of items gave.

    Attributes:
        converted: items of the shard now in the item cache: converted by this attempt, or
            by an earlier attempt of the task that failed on I/O and was retried.
        sequences, frames: what this attempt's conversions gave.
        quarantined: items rejected, with the reasons.
    """

    converted: int = 0
    sequences: int = 0
    frames: int = 0
    quarantined: tuple[QuarantineEntry, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class PublishResult:
    """The store version a run published."""

    version: str
    num_sequences: int
    num_frames: int
    split_counts: dict[str, int]
    quarantined: int


def _archive_digest(plan: DatasetPlan) -> str | None:
    """A digest of an archive source as a whole (its file's sha256 and the item rules).

    None for folders and globs. Hashing the compressed file reads it once without
    decompressing it: a fraction of a second where listing a ``.tar.xz`` takes seconds.
    """
    if plan.source.kind != "archive":
        return None
    file_hash = hashlib.sha256()
    with open(plan.source.path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            file_hash.update(chunk)
    rules = {
        "archive_sha256": file_hash.hexdigest(),
        "member_glob": plan.source.member_glob,
        "sidecars": list(plan.source.sidecars),
    }
    return hashlib.sha256(canonical_json(rules)).hexdigest()


def _current_scan(plan: DatasetPlan, num_items: int) -> DatasetScan:
    store = open_store(plan.store_url)
    report = tuple(read_quarantine(plan.store_url))
    return DatasetScan(
        plan.name,
        "current",
        "store is up to date",
        num_items,
        cached=len(store.manifest().items) - sum(1 for q in report if q.cache_key),
        quarantined=report,
        sequences=len(store.sequences),
        frames=store.num_frames,
        version=store.version,
    )


def _unchanged_archive_is_current(plan: DatasetPlan, digest: str) -> bool:
    """True when the archive is byte for byte the one the current store was built from."""
    recorded = read_dataset_file(plan.store_url, SOURCE_DIGEST)
    current = read_current(plan.store_url)
    if recorded is None or current is None:
        return False
    record = json.loads(recorded)
    if record.get("digest") != digest:
        return False
    if record.get("manifest_fingerprint") != current.manifest_fingerprint:
        return False  # the run that scanned this archive did not publish
    manifest = open_store(plan.store_url).manifest()
    return store_is_current(
        plan.store_url,
        manifest,
        plan.config,
        plan.split,
        kind=plan.kind,
        joint_sets=plan.joint_sets,
        fps=plan.fps,
    )


@task(name="scan-dataset", task_run_name="scan-{plan.name}", **_TASK_OPTIONS)
def scan_dataset(plan: DatasetPlan) -> DatasetScan:
    """Hash the dataset's source into a manifest and decide which items need converting.

    Writes the manifest to ``<dataset_dir>/staging-manifest.json`` for the shards and the
    publish step of this run when there is work to do. An archive identical to the one the
    current store was built from (same file sha256) is not listed again.
    """
    if plan.absent:
        return DatasetScan(plan.name, "absent", plan.absent)
    try:
        archive_digest = _archive_digest(plan)
        if archive_digest is not None and _unchanged_archive_is_current(plan, archive_digest):
            report = read_quarantine(plan.store_url)
            unreadable = sum(1 for q in report if not q.cache_key)
            return _current_scan(
                plan, len(open_store(plan.store_url).manifest().items) + unreadable
            )
        scan = build_manifest(plan.source, plan.name)
    except (SourceMissing, FileNotFoundError) as error:  # removed since the plan was made
        return DatasetScan(plan.name, "absent", f"dataset {plan.name}: {error}")
    except SourceError as error:
        # A truncated or corrupt archive as a whole: nothing of it can be trusted.
        return DatasetScan(plan.name, "error", f"dataset {plan.name}: {error}")
    manifest = scan.manifest
    if archive_digest is not None:
        # Recorded now, trusted only once a version built from this manifest is current.
        record = {"digest": archive_digest, "manifest_fingerprint": manifest.fingerprint}
        write_dataset_file(plan.store_url, SOURCE_DIGEST, canonical_json(record))
    num_items = len(manifest.items) + len(scan.unreadable)
    if store_is_current(
        plan.store_url,
        manifest,
        plan.config,
        plan.split,
        kind=plan.kind,
        joint_sets=plan.joint_sets,
        fps=plan.fps,
    ):
        return _current_scan(plan, num_items)
    cache = ItemCache(plan.store_url)
    cached_keys = cache.keys()
    # An item quarantined under the same cache key (same content, same config) fails the
    # same way: it stays in the report without being read again.
    known_bad = {q.cache_key: q for q in read_quarantine(plan.store_url) if q.cache_key}
    pending: list[str] = []
    cached = 0
    bad_before: list[QuarantineEntry] = []
    for item in manifest.items:
        key = cache_key(item.digest, plan.config)
        if key in cached_keys:
            cached += 1
        elif key in known_bad:
            bad_before.append(known_bad[key])
        else:
            pending.append(item.key)
    unreadable = tuple(QuarantineEntry(k, "", reason) for k, reason in scan.unreadable.items())
    write_dataset_file(plan.store_url, STAGED_MANIFEST, manifest.to_json())
    return DatasetScan(
        plan.name,
        "ready",
        "",
        num_items,
        tuple(pending),
        cached,
        unreadable + tuple(bad_before),
    )


def _staged_manifest(plan: DatasetPlan) -> Manifest:
    data = read_dataset_file(plan.store_url, STAGED_MANIFEST)
    if data is None:
        # The scan of this run writes it; gone means another run interfered. Not an
        # OSError: retrying would not bring it back.
        raise RuntimeError(
            f"dataset {plan.name}: {plan.store_url}/{STAGED_MANIFEST} is missing; "
            "was the dataset prepared by two runs at once?"
        )
    return Manifest.from_json(data)


def _reason(key: str, error: Exception) -> str:
    """The quarantine reason: the error's message, naming the item."""
    message = str(error) or type(error).__name__
    return message if key in message else f"{key}: {message}"


@task(name="convert-shard", task_run_name="convert-{plan.name}", **_TASK_OPTIONS)
def convert_shard(plan: DatasetPlan, keys: list[str]) -> ShardResult:
    """Read and normalise a shard of items into the item cache; bad items are reported.

    Items already cached (by an earlier attempt of this task, retried after an I/O error)
    are not converted again. A :class:`~data_catalog.types.ReaderError` or ``ValueError``
    from an item quarantines that item; any other exception is a bug and fails the task.
    """
    cache = ItemCache(plan.store_url)
    items = _staged_manifest(plan).by_key()
    todo = sorted(k for k in keys if not cache.has(cache_key(items[k].digest, plan.config)))
    listing = [items[k].to_ref() for k in todo]
    converted = len(set(keys)) - len(todo)  # cached by an earlier attempt of this task
    sequences = frames = 0
    quarantined: list[QuarantineEntry] = []
    for item in iter_item_bytes(plan.source, todo, listing=listing):
        digest = items[item.key].digest
        key = cache_key(digest, plan.config)
        if not item.ok:
            # Could not be read this time (its bytes were fine when the scan hashed them):
            # reported without a cache key, so that the next run tries it again.
            reason = _reason(item.key, ReaderError(item.error or "could not be read"))
            quarantined.append(QuarantineEntry(item.key, digest, reason))
            continue
        if item.digest() != digest:
            # Changed since the scan: this run's manifest describes the old content, so
            # the item is left out of this version (without a cache key: not remembered
            # as bad) and read again by the next run, whose scan sees the change.
            reason = f"{item.key}: changed while being prepared; the next run reads it"
            quarantined.append(QuarantineEntry(item.key, digest, reason))
            continue
        try:
            result = convert_item(
                item,
                reader=plan.reader,
                options=plan.options,
                joint_sets=plan.joint_sets,
                fps=plan.fps,
            )
        except (ReaderError, ValueError) as error:
            quarantined.append(QuarantineEntry(item.key, digest, _reason(item.key, error), key))
            continue
        cache.put(key, result)
        converted += 1
        sequences += len(result)
        frames += sum(s.num_frames for s in result)
    return ShardResult(converted, sequences, frames, tuple(quarantined))


@task(name="publish-dataset", task_run_name="publish-{plan.name}", **_TASK_OPTIONS)
def publish_dataset(plan: DatasetPlan, quarantined: list[QuarantineEntry]) -> PublishResult:
    """Write a new store version from the item cache, swap it in, drop removed items.

    The version is written beside the current one and published by replacing ``CURRENT``
    (:func:`data_catalog.store.write_store_version`); the quarantine report is replaced
    after it, and only then are cache entries of items no longer in the source deleted.
    """
    manifest = _staged_manifest(plan)
    cache = ItemCache(plan.store_url)
    keys = [cache_key(item.digest, plan.config) for item in manifest.items]
    cached_keys = cache.keys()
    stored = [k for k in keys if k in cached_keys]
    info = write_store_version(
        plan.store_url,
        iter_cached_sequences(cache, stored),
        kind=plan.kind,  # type: ignore[arg-type]
        joint_sets=plan.joint_sets,
        fps=plan.fps,
        manifest=manifest,
        split_rule=plan.split,
        config=plan.config,
        dataset=plan.name,
        source=plan.source_spec,
    )
    write_quarantine(plan.store_url, quarantined, dataset=plan.name)
    cache.prune(keys)  # items removed from the source (or changed) leave the cache
    return PublishResult(
        info.version, info.num_sequences, info.num_frames, info.split_counts, len(quarantined)
    )


def quarantine_report_path(plan: DatasetPlan) -> str:
    """Where the dataset's quarantine report lives (path or URL)."""
    return f"{plan.store_url.rstrip('/')}/quarantine.json"


def elapsed_since(start: float) -> float:
    """Seconds since ``start`` (a :func:`time.perf_counter` value), rounded to 10 ms."""
    return round(time.perf_counter() - start, 2)
