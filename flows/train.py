"""Training flows: ``pretrain-2d`` (stage 1) and ``finetune-multiview`` (stage 2).

Each flow builds the run's :class:`~tasks.training.TrainConfig` from its (small, JSON-able)
parameters, runs the training task (:data:`tasks.training.train_stage`) and reports:

- a progress artifact (percentage of ``max_steps``), updated every ``log_every`` steps, and a
  markdown artifact with the step and the losses, updated at every validation;
- at the end a loss-curve PNG in the run folder (``loss_curve.png``), a table artifact of the
  history and a markdown summary.

**One GPU, one run.** On CUDA the task runs inside the Prefect global concurrency limit
``mocap2to3-gpu`` (one slot), so two training runs never share a GPU, whichever process or
worker starts them. The flow creates the limit with one slot when it does not exist (Prefect
3 would otherwise run without limiting); to create or resize it by hand::

    prefect gcl create mocap2to3-gpu --limit 1

(With several GPUs per machine, give each worker its own ``CUDA_VISIBLE_DEVICES`` and limit.)

Stores are catalog dataset names (``data_catalog/catalog.yaml``) or store folders. The default
run folder is ``WORK/runs/<stage>-<profile>-<joint set>``, stable so that ``resume`` finds it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from data_catalog.paths import work_dir
from mocap_core.training import STAGE_MULTIVIEW, STAGE_PRETRAIN
from tasks.training import (
    TrainConfig,
    TrainingConfigError,
    TrainProgress,
    plot_loss_curve,
    result_as_dict,
    train_stage,
)

GPU_LIMIT = "mocap2to3-gpu"
LOSS_CURVE = "loss_curve.png"
# The history table artifact keeps at most this many rows (evenly thinned, last row kept).
MAX_TABLE_ROWS = 60

# CLI names of joint sets -> the model's joint set (COCO models carry the added pelvis).
JOINT_SET_ALIASES = {
    "smpl22": "smpl22",
    "coco17": "coco17_pelvis",
    "coco17_pelvis": "coco17_pelvis",
}


def model_joint_set(name: str) -> str:
    """``"coco17"`` -> ``"coco17_pelvis"``; ``"smpl22"`` and ``"coco17_pelvis"`` unchanged.

    Raises:
        TrainingConfigError: any other name.
    """
    if name not in JOINT_SET_ALIASES:
        raise TrainingConfigError(f"joint set {name!r} cannot be trained; choose smpl22 or coco17")
    return JOINT_SET_ALIASES[name]


def default_run_dir(stage: str, profile: str, joint_set: str) -> str:
    """``WORK/runs/<stage>-<profile>-<joint set>``."""
    return str(work_dir() / "runs" / f"{stage}-{profile}-{model_joint_set(joint_set)}")


def make_train_config(
    stage: str,
    stores: Sequence[str],
    profile: str = "tiny",
    joint_set: str = "smpl22",
    run_dir: str | None = None,
    init_checkpoint: str | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    workers: int | None = None,
    seed: int = 42,
    time_budget_s: float | None = None,
    **overrides: Any,
) -> TrainConfig:
    """The :class:`TrainConfig` of the flows' and the CLI's arguments (profile defaults for
    everything not given).

    Raises:
        TrainingConfigError: an unknown stage, profile or joint set, or an invalid value.
    """
    joint = model_joint_set(joint_set)
    return TrainConfig.for_profile(
        stage,
        profile,
        joint,
        list(stores),
        run_dir or default_run_dir(stage, profile, joint),
        init_checkpoint=init_checkpoint,
        max_steps=steps,
        batch_size=batch_size,
        device=device,
        num_workers=workers,
        seed=seed,
        time_budget_s=time_budget_s,
        **overrides,
    )


def ensure_gpu_limit(name: str = GPU_LIMIT, slots: int = 1) -> None:
    """Create the global concurrency limit ``name`` with ``slots`` slots if it does not
    exist (an existing limit is left as its owner set it)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=slots)
            )
        except ObjectAlreadyExists:  # another run created it meanwhile
            pass


@contextlib.contextmanager
def gpu_slot(needed: bool) -> Iterator[None]:
    """Hold one slot of :data:`GPU_LIMIT` while the block runs (nothing when not ``needed``)."""
    if not needed:
        yield
        return
    from prefect.concurrency.sync import concurrency

    ensure_gpu_limit()
    with concurrency(GPU_LIMIT, occupy=1, strict=True):
        yield


def _uses_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _thin(rows: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    if len(rows) <= limit:
        return rows
    stride = math.ceil(len(rows) / limit)
    kept = rows[::stride]
    return kept if kept[-1] is rows[-1] else [*kept, rows[-1]]


def _run_stage(config: TrainConfig, resume: bool) -> dict[str, Any]:
    log = get_run_logger()
    key = config.stage  # artifact keys: lowercase letters, digits and dashes
    log.info(
        "%s: profile %s, joint set %s, stores %s, %d steps of %d samples, run folder %s%s",
        config.stage,
        config.profile,
        config.joint_set,
        list(config.stores),
        config.max_steps,
        config.batch_size,
        config.run_dir,
        " (resuming)" if resume else "",
    )
    progress_id = create_progress_artifact(
        progress=0.0,
        key=f"{key}-progress",
        description=f"{config.stage}: steps done out of {config.max_steps}",
    )

    def on_progress(event: TrainProgress) -> None:
        percent = 100.0 * event.step / max(event.max_steps, 1)
        update_progress_artifact(progress_id, min(percent, 100.0))
        log.info(
            "step %d/%d  train %s  val %s  best %s  %.1f samples/s",
            event.step,
            event.max_steps,
            _fmt(event.train_loss),
            _fmt(event.val_loss),
            _fmt(event.best_val_loss),
            event.samples_per_s,
        )
        if event.val_loss is not None:
            create_markdown_artifact(
                markdown=(
                    f"### {config.stage}: step {event.step} / {event.max_steps}\n\n"
                    "| train loss | validation loss | best validation | samples/s | "
                    "elapsed s |\n|---|---|---|---|---|\n"
                    f"| {_fmt(event.train_loss)} | {_fmt(event.val_loss)} | "
                    f"{_fmt(event.best_val_loss)} | {event.samples_per_s:.1f} | "
                    f"{event.elapsed_s:.0f} |\n"
                ),
                key=f"{key}-status",
                description=f"{config.stage}: latest losses",
            )

    with gpu_slot(_uses_cuda(config.device)):
        result = train_stage(config, resume, on_progress)
    png = plot_loss_curve(
        result.history,
        str(Path(config.run_dir) / LOSS_CURVE),
        f"{config.stage} ({config.profile}, {config.joint_set})",
    )
    rows = [
        {
            "step": row["step"],
            "train_loss": _fmt(row.get("train_loss")),
            "val_loss": _fmt(row.get("val_loss")),
            "samples_per_s": f"{row.get('samples_per_s', 0.0):.1f}",
            "elapsed_s": f"{row.get('elapsed_s', 0.0):.0f}",
        }
        for row in result.history
    ]
    create_table_artifact(
        table=_thin(rows, MAX_TABLE_ROWS),
        key=f"{key}-history",
        description=f"{config.stage}: training history ({result.history_csv})",
    )
    create_markdown_artifact(
        markdown=(
            f"### {config.stage} finished at step {result.steps} ({result.stopped})\n\n"
            f"```\n{result.summary()}\n  loss curve: {png}\n```\n"
        ),
        key=f"{key}-summary",
        description=f"{config.stage}: result",
    )
    log.info("%s\n  loss curve: %s", result.summary(), png)
    summary = result_as_dict(result)
    summary["loss_curve"] = png
    summary["report"] = f"{result.summary()}\n  loss curve: {png}"
    return summary


@flow(name="pretrain-2d", log_prints=True)
def pretrain_2d(
    stores: list[str],
    profile: str = "tiny",
    joint_set: str = "smpl22",
    run_dir: str | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    resume: bool = False,
    device: str = "auto",
    workers: int | None = None,
    seed: int = 42,
    time_budget_s: float | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stage 1: pretrain the single-view denoiser on 2D projections of the stores' motion (and
    2D tracks), fitting the normalisation statistics first.

    Args:
        stores: catalog dataset names or store folders.
        profile: ``tiny`` (CPU, minutes), ``small`` or ``paper``.
        joint_set: ``smpl22`` or ``coco17``.
        run_dir: run folder; default ``WORK/runs/pretrain-2d-<profile>-<joint set>``.
        steps: train until this step (default: the profile's).
        batch_size: samples per process and step (default: the profile's).
        resume: continue from the run folder's last checkpoint.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        workers: data-loading processes (default: automatic).
        seed: the run's seed.
        time_budget_s: stop with a checkpoint after this much training time.
        overrides: further :class:`~tasks.training.TrainConfig` fields (e.g. ``window``,
            ``lr``, ``val_every``, ``model_overrides``), JSON-able.

    Returns:
        The :class:`~tasks.training.TrainResult` as a dict, plus ``loss_curve`` and ``report``.
    """
    config = make_train_config(
        STAGE_PRETRAIN,
        stores,
        profile=profile,
        joint_set=joint_set,
        run_dir=run_dir,
        steps=steps,
        batch_size=batch_size,
        device=device,
        workers=workers,
        seed=seed,
        time_budget_s=time_budget_s,
        **(overrides or {}),
    )
    return _run_stage(config, resume)


@flow(name="finetune-multiview", log_prints=True)
def finetune_multiview(
    init_checkpoint: str,
    stores: list[str],
    profile: str = "tiny",
    joint_set: str = "smpl22",
    run_dir: str | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    resume: bool = False,
    device: str = "auto",
    workers: int | None = None,
    seed: int = 42,
    time_budget_s: float | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Stage 2: fine-tune the multi-view denoiser from a stage-1 checkpoint on 3D stores
    projected into sampled rigs, with world noise.

    Args:
        init_checkpoint: the stage-1 (``pretrain-2d``) checkpoint, same joint set and profile.
        Others: as :func:`pretrain_2d` (default run folder
            ``WORK/runs/finetune-multiview-<profile>-<joint set>``).

    Returns:
        The :class:`~tasks.training.TrainResult` as a dict, plus ``loss_curve`` and ``report``.
    """
    config = make_train_config(
        STAGE_MULTIVIEW,
        stores,
        profile=profile,
        joint_set=joint_set,
        run_dir=run_dir,
        init_checkpoint=init_checkpoint,
        steps=steps,
        batch_size=batch_size,
        device=device,
        workers=workers,
        seed=seed,
        time_budget_s=time_budget_s,
        **(overrides or {}),
    )
    return _run_stage(config, resume)
