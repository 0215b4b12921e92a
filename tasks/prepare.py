"""Tasks of dataset preparation: scan a source, convert shards of items, publish a store.

Tasks take and return small records (names, keys, counts); arrays travel through the item
cache on disk (``<dataset_dir>/items``), never through Prefect.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prefect import task

from data_catalog.catalog import Catalog, load_catalog
from data_catalog.convert import NORMALISATION, convert_item
from data_catalog.manifest import Manifest, build_manifest
from data_catalog.readers import check_reader_options, get_reader
from data_catalog.sources import SourceError, SourceMissing, iter_item_bytes
from data_catalog.store import (
    ItemCache,
    QuarantineEntry,
    cache_key,
    iter_cached_sequences,
    open_store,
    read_dataset_file,
    read_quarantine,
    store_is_current,
    write_dataset_file,
    write_quarantine,
    write_store_version,
)
from data_catalog.types import ReaderError
from tasks.retry import IO_RETRIES

STAGED_MANIFEST = "staging-manifest.json"


def open_catalog(catalog_path: str | None) -> Catalog:
    return load_catalog(catalog_path)


def item_config(catalog: Catalog, name: str) -> dict:
    """What decides an item's conversion: reader, options, joint sets, fps, normalisation."""
    return {**catalog.conversion_config(name), "normalisation": NORMALISATION}


@dataclass(frozen=True)
class DatasetScan:
    """What a dataset needs. ``status``: ``ready`` (work or a publish to do), ``current``
    (the store already holds exactly this), ``absent`` (source missing), ``error``."""

    dataset: str
    status: str
    message: str = ""
    store_url: str = ""
    num_items: int = 0
    pending: tuple[str, ...] = ()
    cached: int = 0
    quarantined_before: int = 0
    sequences: int = 0
    frames: int = 0
    unreadable: tuple[QuarantineEntry, ...] = ()


@dataclass(frozen=True)
class ShardResult:
    converted: int = 0
    sequences: int = 0
    frames: int = 0
    quarantined: tuple[QuarantineEntry, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class PublishResult:
    version: str
    num_sequences: int
    num_frames: int
    split_counts: dict[str, int]
    quarantined: int


@task(**IO_RETRIES)
def scan_dataset(catalog_path: str | None, name: str) -> DatasetScan:
    """Hash the dataset's source and decide which items need converting."""
    catalog = open_catalog(catalog_path)
    entry = catalog.get(name)
    try:
        check_reader_options(entry.reader, catalog.reader_options(name))
        source = catalog.source(name)
    except SourceMissing as error:
        return DatasetScan(name, "absent", str(error))
    except (KeyError, ValueError) as error:
        return DatasetScan(name, "error", f"dataset {name}: {error}")
    try:
        scan = build_manifest(source, name)
    except SourceError as error:
        return DatasetScan(name, "error", f"dataset {name}: {error}")
    manifest = scan.manifest
    store_url = catalog.store_url(name)
    config = item_config(catalog, name)
    split = entry.split
    kind = get_reader(entry.reader).kind
    if store_is_current(
        store_url, manifest, config, split, kind=kind, joint_sets=entry.joint_sets, fps=entry.fps
    ):
        store = open_store(store_url)
        return DatasetScan(
            name,
            "current",
            f"store is up to date ({store.version})",
            store_url,
            len(manifest.items),
            cached=len(manifest.items),
            sequences=len(store.sequences),
            frames=store.num_frames,
        )
    cache = ItemCache(store_url)
    known_bad = {q.cache_key: q for q in read_quarantine(store_url) if q.cache_key}
    pending, cached, bad_before = [], 0, []
    for item in manifest.items:
        key = cache_key(item.digest, config)
        if cache.has(key):
            cached += 1
        elif key in known_bad:
            bad_before.append(known_bad[key])
        else:
            pending.append(item.key)
    unreadable = tuple(QuarantineEntry(k, "", reason) for k, reason in scan.unreadable.items())
    write_dataset_file(store_url, STAGED_MANIFEST, manifest.to_json())
    return DatasetScan(
        name,
        "ready",
        "",
        store_url,
        len(manifest.items),
        tuple(pending),
        cached,
        len(bad_before),
        unreadable + tuple(bad_before),
    )


@task(**IO_RETRIES)
def convert_shard(catalog_path: str | None, name: str, keys: list[str]) -> ShardResult:
    """Read and normalise a shard of items into the item cache; bad items are reported."""
    catalog = open_catalog(catalog_path)
    entry = catalog.get(name)
    store_url = catalog.store_url(name)
    config = item_config(catalog, name)
    options = catalog.reader_options(name)
    cache = ItemCache(store_url)
    manifest = Manifest.from_json(read_dataset_file(store_url, STAGED_MANIFEST))
    items = manifest.by_key()
    listing = [items[k].to_ref() for k in keys]
    converted = sequences = frames = 0
    quarantined: list[QuarantineEntry] = []
    for item in iter_item_bytes(catalog.source(name), set(keys), listing=listing):
        digest = items[item.key].digest
        key = cache_key(digest, config)
        try:
            result = convert_item(
                item,
                reader=entry.reader,
                options=options,
                joint_sets=entry.joint_sets,
                fps=entry.fps,
            )
        except (ReaderError, ValueError) as error:
            quarantined.append(QuarantineEntry(item.key, digest, str(error), key))
            continue
        cache.put(key, result)
        converted += 1
        sequences += len(result)
        frames += sum(s.num_frames for s in result)
    return ShardResult(converted, sequences, frames, tuple(quarantined))


@task(**IO_RETRIES)
def publish_dataset(
    catalog_path: str | None, name: str, quarantined: list[QuarantineEntry]
) -> PublishResult:
    """Write a new store version from the item cache, swap it in, drop removed items."""
    catalog = open_catalog(catalog_path)
    entry = catalog.get(name)
    store_url = catalog.store_url(name)
    config = item_config(catalog, name)
    manifest = Manifest.from_json(read_dataset_file(store_url, STAGED_MANIFEST))
    cache = ItemCache(store_url)
    keys = [cache_key(item.digest, config) for item in manifest.items]
    stored = [k for k in keys if cache.has(k)]
    info = write_store_version(
        store_url,
        iter_cached_sequences(cache, stored),
        kind=get_reader(entry.reader).kind,
        joint_sets=entry.joint_sets,
        fps=entry.fps,
        manifest=manifest,
        split_rule=entry.split,
        config=config,
        dataset=name,
        source=entry.source.location,
    )
    write_quarantine(store_url, quarantined, dataset=name)
    cache.prune(keys)  # items removed from the source leave the cache
    return PublishResult(
        info.version, info.num_sequences, info.num_frames, info.split_counts, len(quarantined)
    )


def elapsed_since(start: float) -> float:
    return round(time.perf_counter() - start, 2)
