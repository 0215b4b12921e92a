"""prepare-datasets: turn what is new or changed in the catalog's sources into Zarr stores.

For each dataset of the catalog: hash its source into a manifest; if the store was built
from exactly this, skip it; else convert the items that have no cached result, one task per
shard of items, and publish a new store version atomically from the item cache. Bad items
go to the dataset's quarantine report with the reason; everything else is stored. A dataset
whose source is absent is reported and skipped.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from prefect import flow
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.prepare import (
    convert_shard,
    elapsed_since,
    open_catalog,
    publish_dataset,
    scan_dataset,
)

DEFAULT_SHARD_SIZE = 64


def _artifact_key(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower())


def _progress_bar(name: str, done: int, total: int, width: int = 30) -> None:
    filled = int(width * done / max(total, 1))
    bar = "#" * filled + "-" * (width - filled)
    end = "\n" if done >= total else ""
    print(f"\r  {name:<16} [{bar}] {done}/{total} items", end=end, file=sys.stderr, flush=True)


def _prepare_one(
    catalog_path: str | None, name: str, shard_size: int, show_progress: bool
) -> dict[str, Any]:
    start = time.perf_counter()
    scan = scan_dataset(catalog_path, name)
    row: dict[str, Any] = {
        "dataset": name,
        "status": scan.status,
        "items": scan.num_items,
        "stored": 0,
        "skipped": scan.cached,
        "quarantined": 0,
        "sequences": scan.sequences,
        "frames": scan.frames,
        "seconds": 0.0,
        "version": "",
        "message": scan.message,
    }
    if scan.status != "ready":
        row["seconds"] = elapsed_since(start)
        return row

    shards = [
        list(scan.pending[i : i + shard_size]) for i in range(0, len(scan.pending), shard_size)
    ]
    progress_id = create_progress_artifact(
        progress=0.0,
        key=_artifact_key(f"prepare-{name}-progress"),
        description=f"{name}: items converted out of {len(scan.pending)} to convert",
    )
    quarantined = list(scan.unreadable)
    done = 0
    if show_progress and shards:
        _progress_bar(name, 0, len(scan.pending))
    futures = {convert_shard.submit(catalog_path, name, shard): len(shard) for shard in shards}
    for future in as_completed(list(futures)):
        result = future.result()
        done += futures[future]
        row["stored"] += result.converted
        quarantined.extend(result.quarantined)
        update_progress_artifact(progress_id, 100.0 * done / max(len(scan.pending), 1))
        if show_progress:
            _progress_bar(name, done, len(scan.pending))

    published = publish_dataset(catalog_path, name, quarantined)
    row.update(
        status="prepared",
        quarantined=published.quarantined,
        sequences=published.num_sequences,
        frames=published.num_frames,
        version=published.version,
        message=", ".join(f"{k}: {v}" for k, v in sorted(published.split_counts.items())),
        seconds=elapsed_since(start),
    )
    return row


@flow(name="prepare-datasets", log_prints=True, task_runner=ThreadPoolTaskRunner())
def prepare_datasets(
    catalog_path: str | None = None,
    only: list[str] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    show_progress: bool = False,
) -> list[dict[str, Any]]:
    """Prepare the catalog's enabled datasets (or ``only`` these) into Zarr stores.

    Args:
        catalog_path: a catalog YAML file; default the packaged ``data_catalog/catalog.yaml``.
        only: dataset names to prepare (disabled ones included when named); default all
            enabled datasets.
        shard_size: items per conversion task.
        show_progress: draw a progress bar on stderr (the CLI sets it).

    Returns:
        One summary row per dataset: status, items, stored (converted this run), skipped
        (unchanged, from the item cache), quarantined, sequences, frames, seconds, version.
    """
    catalog = open_catalog(catalog_path)
    if only:
        unknown = [n for n in only if n not in catalog.names()]
        if unknown:
            raise ValueError(f"unknown dataset(s) {unknown}; the catalog has {catalog.names()}")
        names = list(only)
    else:
        names = [d.name for d in catalog.datasets(enabled_only=True)]
    rows = [_prepare_one(catalog_path, name, shard_size, show_progress) for name in names]
    create_table_artifact(
        table=rows,
        key="prepare-datasets-summary",
        description="Per dataset: items stored, skipped (unchanged), quarantined, frames, time",
    )
    for row in rows:
        print(format_row(row))
    return rows


def format_row(row: dict[str, Any]) -> str:
    text = (
        f"{row['dataset']}: {row['status']}; {row['items']} items, {row['stored']} stored, "
        f"{row['skipped']} unchanged, {row['quarantined']} quarantined; "
        f"{row['sequences']} sequences, {row['frames']} frames; {row['seconds']:.1f} s"
    )
    return text + (f" ({row['message']})" if row["message"] else "")


def run_prepare(
    catalog_path: str | None = None,
    only: list[str] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int | None = None,
    dask_address: str | None = None,
    show_progress: bool = False,
) -> list[dict[str, Any]]:
    """Run :func:`prepare_datasets` on local threads or on an existing Dask cluster."""
    if dask_address:
        from prefect_dask import DaskTaskRunner

        runner: Any = DaskTaskRunner(address=dask_address)
    else:
        runner = ThreadPoolTaskRunner(max_workers=workers)
    return prepare_datasets.with_options(task_runner=runner)(
        catalog_path=catalog_path, only=only, shard_size=shard_size, show_progress=show_progress
    )
