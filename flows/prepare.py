"""prepare-datasets: turn what is new or changed in the catalog's sources into Zarr stores.

For each dataset of the catalog: hash its source into a manifest; if the store was built
from exactly this, skip it; else convert the items that have no cached result, one task per
shard of items, and publish a new store version atomically from the item cache. Bad items
go to the dataset's quarantine report with the reason (and to a Prefect table artifact and
the log); everything else is stored. A dataset whose source is absent is reported and
skipped.

Concurrency: shards run on a local thread pool (one thread per CPU by default), or on an
existing Dask cluster (:func:`run_prepare` with ``dask_address``). Datasets are prepared one
after the other. A tar archive (compressed or not) is a stream that cannot be entered in the
middle: every shard of it reads the archive from the start up to its last item, so a tar
source is cut into at most ``workers`` shards (one sequential pass each, in parallel) instead
of one per ``shard_size`` items, which would decompress the archive once per shard. Prefect artifacts: ``prepare-<dataset>-progress`` (items converted, while
it runs), ``prepare-<dataset>-quarantine`` (items rejected and why, when any) and
``prepare-datasets-summary`` (per dataset: items stored, skipped, quarantined, frames, time).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from data_catalog.catalog import Catalog
from data_catalog.sources import archive_format
from data_catalog.store import QuarantineEntry
from tasks.prepare import (
    DatasetPlan,
    convert_shard,
    elapsed_since,
    open_catalog,
    plan_dataset,
    publish_dataset,
    quarantine_report_path,
    scan_dataset,
)

DEFAULT_SHARD_SIZE = 64
#: Rejected items named one by one in the log and on the command line (all are in the report).
MAX_REJECTED_SHOWN = 20
#: Columns of the summary table artifact, in order.
SUMMARY_COLUMNS = (
    "dataset",
    "status",
    "items",
    "stored",
    "skipped",
    "quarantined",
    "sequences",
    "frames",
    "seconds",
    "version",
    "message",
)


def default_workers() -> int:
    """Threads of the default local task runner: one per CPU (BVH parsing is CPU-bound)."""
    return max(1, os.cpu_count() or 1)


def _artifact_key(text: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    return "".join(c if c.isalnum() else "-" for c in text.lower())


def _progress_bar(name: str, done: int, total: int, width: int = 30) -> None:
    filled = int(width * done / max(total, 1))
    bar = "#" * filled + "-" * (width - filled)
    end = "\n" if done >= total else ""
    # Written to the stream, not print(): the flow's log_prints would turn every redraw
    # of the bar into a log line.
    sys.stderr.write(f"\r  {name:<16} [{bar}] {done}/{total} items{end}")
    sys.stderr.flush()


def check_only(catalog: Catalog, only: list[str] | None) -> list[str]:
    """The datasets to prepare: ``only`` (disabled ones included), else all enabled ones.

    Raises:
        ValueError: a name of ``only`` is not in the catalog (all unknown names listed).
    """
    if only:
        unknown = [n for n in only if n not in catalog.names()]
        if unknown:
            where = f"the catalog {catalog.path}" if catalog.path else "the catalog"
            raise ValueError(f"unknown dataset(s) {unknown}; {where} has {catalog.names()}")
        return list(dict.fromkeys(only))
    return [d.name for d in catalog.datasets(enabled_only=True)]


def _empty_row(name: str, status: str, message: str) -> dict[str, Any]:
    return {
        "dataset": name,
        "status": status,
        "items": 0,
        "stored": 0,
        "skipped": 0,
        "quarantined": 0,
        "sequences": 0,
        "frames": 0,
        "seconds": 0.0,
        "version": "",
        "message": message,
        "quarantine_report": "",
        "rejected": [],
    }


def _report_rejected(plan: DatasetPlan, entries: list[QuarantineEntry]) -> None:
    """Tell the user what was rejected and why: a warning per item and a table artifact."""
    if not entries:
        return
    logger = get_run_logger()
    entries = sorted(entries, key=lambda e: e.key)
    logger.warning(
        "%s: %d item(s) quarantined (report: %s)",
        plan.name,
        len(entries),
        quarantine_report_path(plan),
    )
    for entry in entries[:MAX_REJECTED_SHOWN]:
        logger.warning("  quarantined %s", entry.reason)
    create_table_artifact(
        table=[{"item": e.key, "reason": e.reason} for e in entries],
        key=_artifact_key(f"prepare-{plan.name}-quarantine"),
        description=f"{plan.name}: items rejected by the last run and why "
        f"(also in {quarantine_report_path(plan)})",
    )


def plan_shards(
    pending: list[str], *, shard_size: int, streamed: bool, workers: int
) -> list[list[str]]:
    """Cut the keys to convert into shards, one conversion task each.

    Args:
        pending: item keys, in order.
        shard_size: items per shard.
        streamed: the source is a tar stream (each shard reads it from the start).
        workers: shards that run at once; a streamed source gets at most this many shards.

    Returns:
        Contiguous runs of ``pending`` covering it in order, none empty.
    """
    if not pending:
        return []
    count = -(-len(pending) // shard_size)
    if streamed:
        count = min(count, max(1, workers))
    size = -(-len(pending) // count)
    return [pending[i : i + size] for i in range(0, len(pending), size)]


def _is_tar_stream(plan: DatasetPlan) -> bool:
    return plan.source.kind == "archive" and archive_format(plan.source.path) == "tar"


def _prepare_one(
    catalog: Catalog, name: str, shard_size: int, workers: int, show_progress: bool
) -> dict:
    start = time.perf_counter()
    try:
        plan = plan_dataset(catalog, name)
    except (KeyError, ValueError) as error:
        message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        return _empty_row(name, "error", f"dataset {name}: {message}")
    scan = scan_dataset(plan)
    row = _empty_row(name, scan.status, scan.message)
    row.update(
        items=scan.num_items,
        skipped=scan.cached,
        quarantined=len(scan.quarantined),
        sequences=scan.sequences,
        frames=scan.frames,
        version=scan.version,
    )
    if scan.status in ("current", "ready"):
        row["quarantine_report"] = quarantine_report_path(plan)
        row["rejected"] = [{"item": q.key, "reason": q.reason} for q in scan.quarantined]
    if scan.status != "ready":
        row["seconds"] = elapsed_since(start)
        return row

    pending = list(scan.pending)
    shards = plan_shards(
        pending, shard_size=shard_size, streamed=_is_tar_stream(plan), workers=workers
    )
    progress_id = create_progress_artifact(
        progress=0.0 if pending else 100.0,
        key=_artifact_key(f"prepare-{name}-progress"),
        description=f"{name}: items converted out of {len(pending)} new or changed",
    )
    quarantined = list(scan.quarantined)
    done = 0
    if show_progress and pending:
        _progress_bar(name, 0, len(pending))
    futures = {convert_shard.submit(plan, shard): len(shard) for shard in shards}
    for future in as_completed(list(futures)):
        result = future.result()  # an unexpected error fails the run here, store untouched
        done += futures[future]
        row["stored"] += result.converted
        quarantined.extend(result.quarantined)
        update_progress_artifact(progress_id, 100.0 * done / len(pending))
        if show_progress:
            _progress_bar(name, done, len(pending))

    published = publish_dataset(plan, quarantined)
    _report_rejected(plan, quarantined)
    row.update(
        status="prepared",
        quarantined=published.quarantined,
        sequences=published.num_sequences,
        frames=published.num_frames,
        version=published.version,
        message=", ".join(f"{k}: {v}" for k, v in sorted(published.split_counts.items())),
        rejected=[{"item": q.key, "reason": q.reason} for q in sorted(quarantined, key=_by_key)],
        seconds=elapsed_since(start),
    )
    return row


def _by_key(entry: QuarantineEntry) -> str:
    return entry.key


@flow(
    name="prepare-datasets",
    log_prints=True,
    task_runner=ThreadPoolTaskRunner(max_workers=default_workers()),
)
def prepare_datasets(
    catalog_path: str | None = None,
    only: list[str] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    show_progress: bool = False,
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """Prepare the catalog's enabled datasets (or ``only`` these) into Zarr stores.

    Args:
        catalog_path: a catalog YAML file; default the packaged ``data_catalog/catalog.yaml``.
        only: dataset names to prepare (disabled ones included when named); default all
            enabled datasets.
        shard_size: items per conversion task.
        show_progress: draw a progress bar on stderr (the CLI sets it).
        workers: shards that run at once (default one per CPU); a tar source is cut into
            at most this many shards. The task runner itself is set by :func:`run_prepare`.

    Returns:
        One summary row per dataset: ``status`` (``prepared``, ``current``, ``absent``,
        ``error``), ``items``, ``stored`` (converted this run), ``skipped`` (unchanged, from
        the item cache), ``quarantined``, ``sequences``, ``frames``, ``seconds``,
        ``version``, ``message``, ``quarantine_report`` (path of the report) and
        ``rejected`` (``{"item", "reason"}`` per quarantined item).

    Raises:
        ValueError: a name of ``only`` is not in the catalog.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    catalog = open_catalog(catalog_path)
    names = check_only(catalog, only)
    parallel = workers or default_workers()
    rows = [_prepare_one(catalog, name, shard_size, parallel, show_progress) for name in names]
    create_table_artifact(
        table=[{k: row[k] for k in SUMMARY_COLUMNS} for row in rows],
        key="prepare-datasets-summary",
        description="Per dataset: items stored (converted this run), skipped (unchanged), "
        "quarantined, sequences, frames, seconds",
    )
    for row in rows:
        print(format_row(row))
    return rows


def format_row(row: dict[str, Any]) -> str:
    """One line of the summary for a dataset row of :func:`prepare_datasets`."""
    text = (
        f"{row['dataset']}: {row['status']}; {row['items']} items, {row['stored']} stored, "
        f"{row['skipped']} unchanged, {row['quarantined']} quarantined; "
        f"{row['sequences']} sequences, {row['frames']} frames; {row['seconds']:.1f} s"
    )
    return text + (f" ({row['message']})" if row["message"] else "")


def format_rejected(row: dict[str, Any], limit: int = MAX_REJECTED_SHOWN) -> list[str]:
    """Lines naming the items a dataset rejected and why (at most ``limit``), then the report."""
    rejected = row.get("rejected") or []
    if not rejected:
        return []
    lines = [f"{r['reason']}" for r in rejected[:limit]]
    if len(rejected) > limit:
        lines.append(f"... and {len(rejected) - limit} more")
    lines.append(f"report: {row['quarantine_report']}")
    return lines


def check_prepare_arguments(
    catalog_path: str | None,
    only: list[str] | None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int | None = None,
) -> list[str]:
    """Validate the arguments of a run before it starts; returns the datasets it prepares.

    Raises:
        FileNotFoundError: the catalog file does not exist.
        ValueError: the catalog is invalid (``CatalogError``), a name of ``only`` is not in
            it, or ``shard_size`` / ``workers`` is below 1.
    """
    names = check_only(open_catalog(catalog_path), only)
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return names


def run_prepare(
    catalog_path: str | None = None,
    only: list[str] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int | None = None,
    dask_address: str | None = None,
    show_progress: bool = False,
) -> list[dict[str, Any]]:
    """Run :func:`prepare_datasets` on local threads or on an existing Dask cluster.

    Args:
        catalog_path, only, shard_size, show_progress: as :func:`prepare_datasets`.
        workers: local threads (default one per CPU); with ``dask_address``, only the
            bound on the shards of a tar source.
        dask_address: scheduler address of a running Dask cluster (``tcp://host:8786``);
            shards then run on its workers, which must reach the same Prefect API
            (``PREFECT_API_URL``) and the same dataset folders.

    Raises:
        FileNotFoundError, ValueError: a missing or invalid catalog, an unknown dataset name
            in ``only``, a bad ``workers`` or ``shard_size`` (before any flow run starts).
    """
    # Argument errors surface here, before a flow run is created, as plain exceptions.
    check_prepare_arguments(catalog_path, only, shard_size, workers)
    if dask_address:
        from prefect_dask import DaskTaskRunner

        runner: Any = DaskTaskRunner(address=dask_address)
    else:
        runner = ThreadPoolTaskRunner(max_workers=workers or default_workers())
    return prepare_datasets.with_options(task_runner=runner)(
        catalog_path=catalog_path,
        only=only,
        shard_size=shard_size,
        show_progress=show_progress,
        workers=workers,
    )
