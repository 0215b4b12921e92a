"""The training loop of both stages (docs/TRAINING.md), plain PyTorch, run as a Prefect task.

:func:`run_training` is one nanoGPT-style loop: AdamW, gradient clipping, x0-prediction MSE
(:mod:`mocap_core.training`), a fixed-seed validation loss on a held-out split, atomic
checkpoints (:mod:`data_catalog.checkpoints`) and bit-for-bit resumption. :data:`train_stage`
is the same function as a Prefect task; flows (``flows/train.py``) add the artifacts and the
GPU concurrency limit.

**Stages.** ``pretrain-2d`` fits the normalisation statistics on ``stats_samples`` training
samples (data seed ``seed + 1``) before the first step and trains a
:class:`~mocap_core.models.SingleViewDenoiser` on one view. ``finetune-multiview`` loads a
stage-1 checkpoint (``init_checkpoint``), builds
:meth:`~mocap_core.models.MultiViewDenoiser.from_single_view` from it, and reuses its
statistics, model config and scene config unchanged; the checkpoint's ``parent`` is the
sha256 of that file. ``init_checkpoint`` may also be a ``finetune-multiview`` checkpoint
(e.g. a release export, which has no optimiser state): its weights, statistics and
configuration are taken as they are and training continues from step 0 with a fresh
optimiser (typically at a lower ``lr``), unlike ``resume``, which needs ``last.pt``.

**Determinism.** Step ``s`` trains on the indices ``StepBatchSampler(seed).batch(s)``, and a
sample is a pure function of ``(seed, index)`` (``data_catalog.training_dataset``). Before
step ``s`` torch's global generator (dropout, classifier-free-guidance drops) and the loss's
generator (timesteps, noise) are seeded from ``(seed, s, rank)``. With the optimiser state
in the checkpoint, ``N`` steps equal ``N/2`` steps, a resume, and ``N/2`` more, bit for bit
(same device and thread count). Validation uses the first ``val_batches`` batches of a fixed
sampler over the validation split with fixed generators, so its value depends only on the
weights.

**Validation split.** ``"val"``; a store set without validation sequences falls back to
``"test"`` and then to ``"train"``, with a warning (the value is then no held-out measure).

**Run folder** (``run_dir``): ``checkpoints/last.pt`` (full state, for ``resume``),
``checkpoints/best.pt`` (lowest validation loss, inference export without optimiser state),
``history.csv`` (one row per ``log_every`` steps: step, mean train loss over the interval,
validation loss where computed, samples/s, elapsed seconds). A fresh run refuses a folder that
already holds ``last.pt``; ``resume=True`` needs it.

**Devices.** ``device="auto"`` takes CUDA when available. On CUDA the forward pass runs under
autocast (bf16 where supported, else fp16 with a loss scaler; ``amp="off"`` disables it); on
the CPU it is float32 with ``torch.set_num_threads(cores // local processes - data workers)``
(at least 1). Data workers default to 0 on machines with up to 2 cores (a worker would take a
core from the math, and a sample costs ~5-10 ms against ~0.5 s per step of the tiny profile),
else 1 on the CPU and ``min(8, cores - 1)`` on CUDA.

**Data parallelism** with ``torchrun`` (one process per GPU; ``WORLD_SIZE > 1`` in the
environment): the process group is initialised (NCCL on CUDA, gloo on the CPU), the model is
wrapped in ``DistributedDataParallel``, each step's index list holds ``batch_size x
WORLD_SIZE`` indices of which rank ``r`` takes the ``r``-th slice, and only rank 0 validates
and writes checkpoints and history. The documented command, from the repository root::

    torchrun --standalone --nproc_per_node=4 -m flows.cli train --stage pretrain-2d \\
        --profile paper --joint-set smpl22 --stores bandai1 bandai2

(``flows.cli`` runs the Prefect flow on rank 0, which alone takes the GPU concurrency slot,
and the plain loop on the other ranks.) Launch one stage per ``torchrun``; the process group
is created once per process and destroyed at exit.
"""

from __future__ import annotations

import atexit
import csv
import logging
import math
import os
import resource
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as torch_dist
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import DataLoader

from data_catalog.catalog import CatalogError, load_catalog
from data_catalog.checkpoints import (
    CheckpointError,
    checkpoint_sha256,
    load_checkpoint,
    load_stats,
    save_checkpoint,
)
from data_catalog.store import StoreFormatError, StoreNotFound, package_version
from data_catalog.training_dataset import (
    StepBatchSampler,
    TrainingWindows,
    dataset_fingerprints,
    validation_batches,
)
from mocap_core.diffusion import DDPMScheduler
from mocap_core.model_config import MODEL_JOINT_SETS, PROFILES, ModelConfig
from mocap_core.models import MultiViewDenoiser, SingleViewDenoiser
from mocap_core.representation import FeatureStats
from mocap_core.training import STAGE_MULTIVIEW, STAGE_PRETRAIN, train_step, validation_loss
from mocap_core.training_data import SceneConfig, fit_feature_stats

__all__ = [
    "PROFILE_DEFAULTS",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "TrainingConfigError",
    "plan_run",
    "plot_loss_curve",
    "resolve_store",
    "result_as_dict",
    "run_training",
    "save_loss_curve",
    "train_stage",
]

logger = logging.getLogger(__name__)

Stage = Literal["pretrain-2d", "finetune-multiview"]

# Per profile: defaults of the run (overridable). Learning rates per stage: the paper's
# 1e-4 / 1e-5 for "paper"; the CPU profiles train for minutes, not days, so they take larger
# steps (a 1.6M-parameter model is stable at 3e-4 with clipping at 0.5), and stage 2 stays 3x
# below stage 1 so that the zero-initialised cross-view blocks learn in a few hundred steps
# without undoing the pretraining. Paper batch sizes are the reference's per-GPU sizes.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        window=120,
        batch_size={STAGE_PRETRAIN: 16, STAGE_MULTIVIEW: 8},
        lr={STAGE_PRETRAIN: 3e-4, STAGE_MULTIVIEW: 1e-4},
        max_steps={STAGE_PRETRAIN: 1500, STAGE_MULTIVIEW: 600},
        log_every=10,
        val_every=50,
        val_batches=4,
        checkpoint_every=100,
        stats_samples=256,
    ),
    "small": dict(
        window=200,
        batch_size={STAGE_PRETRAIN: 32, STAGE_MULTIVIEW: 16},
        lr={STAGE_PRETRAIN: 2e-4, STAGE_MULTIVIEW: 5e-5},
        max_steps={STAGE_PRETRAIN: 20_000, STAGE_MULTIVIEW: 10_000},
        log_every=50,
        val_every=500,
        val_batches=8,
        checkpoint_every=500,
        stats_samples=1024,
    ),
    "paper": dict(
        window=300,
        batch_size={STAGE_PRETRAIN: 64, STAGE_MULTIVIEW: 39},
        lr={STAGE_PRETRAIN: 1e-4, STAGE_MULTIVIEW: 1e-5},
        max_steps={STAGE_PRETRAIN: 200_000, STAGE_MULTIVIEW: 100_000},
        log_every=100,
        val_every=1000,
        val_batches=16,
        checkpoint_every=1000,
        stats_samples=4096,
    ),
}

# Fields that must be equal for a resumed run to continue the same run bit for bit.
_RESUME_IDENTITY = (
    "stage",
    "profile",
    "joint_set",
    "stores",
    "window",
    "batch_size",
    "lr",
    "weight_decay",
    "grad_clip",
    "seed",
    "stats_samples",
    "model_overrides",
    "scene_overrides",
)
# Offsets of the data seeds of the statistics and validation samples from the run's seed:
# different scenes than the training stream's.
_STATS_SEED_OFFSET = 1
_VAL_SEED_OFFSET = 2
_LAST = "last.pt"
_BEST = "best.pt"
_HISTORY_FIELDS = (
    "step",
    "train_loss",
    "val_loss",
    "samples_per_s",
    "elapsed_s",
    "grad_norm",
    "lr",
)


class TrainingConfigError(ValueError):
    """A training run that cannot start (the message says what to fix). Raised before any
    training step."""


class TrainConfig(BaseModel):
    """Everything that defines a training run; saved in its checkpoints (JSON-able).

    Build one with :meth:`for_profile`, which fills the profile's defaults
    (:data:`PROFILE_DEFAULTS`). ``stores`` are catalog dataset names or store folders.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: Stage
    profile: Literal["tiny", "small", "paper"]
    joint_set: Literal["smpl22", "coco17_pelvis"]
    stores: tuple[str, ...] = Field(min_length=1)
    run_dir: str
    window: int = Field(ge=8, le=300, description="frames per training window")
    batch_size: int = Field(ge=1, description="samples per process and step")
    lr: float = Field(gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    grad_clip: float | None = Field(0.5, gt=0, description="max gradient norm; None = off")
    max_steps: int = Field(ge=0, description="train until this step")
    log_every: int = Field(ge=1, description="steps per history row / progress update")
    val_every: int = Field(ge=1, description="steps per validation (multiple of log_every)")
    val_batches: int = Field(ge=1)
    checkpoint_every: int = Field(ge=1, description="steps per checkpoint (multiple of log_every)")
    seed: int = Field(42, ge=0)
    num_workers: int | None = Field(None, ge=0, description="data workers; None = automatic")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    stats_samples: int = Field(ge=1, description="samples the stage-1 statistics are fitted on")
    init_checkpoint: str | None = Field(
        None, description="stage 2: the stage-1 checkpoint (or a stage-2 one to continue)"
    )
    time_budget_s: float | None = Field(
        None, gt=0, description="stop (with a checkpoint) after this much training time"
    )
    model_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="stage 1: ModelConfig fields over the profile's (e.g. use_pointmap=False)",
    )
    scene_overrides: dict[str, Any] = Field(
        default_factory=dict, description="stage 1: SceneConfig fields over the defaults"
    )

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        for name in ("val_every", "checkpoint_every"):
            if getattr(self, name) % self.log_every != 0:
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be a multiple of log_every "
                    f"({self.log_every})"
                )
        if self.device != "auto" and not (
            self.device == "cpu"
            or self.device == "cuda"
            or (self.device.startswith("cuda:") and self.device[5:].isdigit())
        ):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        return self

    @classmethod
    def for_profile(
        cls,
        stage: str,
        profile: str,
        joint_set: str,
        stores: Sequence[str],
        run_dir: str | os.PathLike[str],
        **overrides: Any,
    ) -> TrainConfig:
        """The profile's defaults for ``stage`` with ``overrides`` (``None`` values are
        ignored, so optional CLI arguments pass straight through).

        Raises:
            TrainingConfigError: unknown stage, profile or joint set, or an invalid value.
        """
        if stage not in (STAGE_PRETRAIN, STAGE_MULTIVIEW):
            raise TrainingConfigError(
                f"unknown stage {stage!r}; choose {STAGE_PRETRAIN} or {STAGE_MULTIVIEW}"
            )
        if profile not in PROFILE_DEFAULTS:
            raise TrainingConfigError(f"unknown profile {profile!r}; choose one of {PROFILES}")
        if joint_set not in MODEL_JOINT_SETS:
            raise TrainingConfigError(
                f"joint set {joint_set!r} cannot be modelled; choose one of {MODEL_JOINT_SETS}"
            )
        values = {
            key: value[stage] if isinstance(value, dict) else value
            for key, value in PROFILE_DEFAULTS[profile].items()
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(stores, str):
            stores = [stores]
        try:
            return cls(
                stage=stage,
                profile=profile,
                joint_set=joint_set,
                stores=tuple(str(s) for s in stores),
                run_dir=str(run_dir),
                **values,
            )
        except ValueError as error:
            raise TrainingConfigError(f"invalid training configuration: {error}") from error

    def to_json_dict(self) -> dict[str, Any]:
        """The config as builtins (lists for tuples), as stored in checkpoints."""
        return self.model_dump(mode="json")


@dataclass(frozen=True)
class TrainProgress:
    """One history row as reported to a progress callback (rank 0 only).

    Attributes:
        step: optimisation steps done.
        max_steps: the run's last step.
        train_loss: mean training loss over the last ``log_every`` steps (NaN at step 0).
        val_loss: validation loss at this step, or None when not computed here.
        best_val_loss: lowest validation loss so far (NaN before the first).
        samples_per_s: training throughput over the interval (all processes).
        elapsed_s: training time of the run, resumed sessions included.
    """

    step: int
    max_steps: int
    train_loss: float
    val_loss: float | None
    best_val_loss: float
    samples_per_s: float
    elapsed_s: float


@dataclass(frozen=True)
class TrainResult:
    """What a run produced (small; the arrays stay in the run folder).

    Attributes:
        stage: the stage trained.
        run_dir: the run folder.
        checkpoint: ``checkpoints/last.pt`` (full state).
        best_checkpoint: ``checkpoints/best.pt`` (lowest validation loss), "" if none.
        history_csv: ``history.csv``.
        steps: the step reached; ``steps_this_session`` of them in this call.
        initial_val_loss: validation loss at step 0 (NaN if unknown).
        final_val_loss: validation loss at the last step.
        best_val_loss: the lowest validation loss.
        samples_per_s: mean training throughput of this session (all processes).
        elapsed_s: training time of this session (validation and checkpoints excluded).
        peak_rss_mb: peak resident memory of the training process, MiB.
        peak_worker_rss_mb: peak resident memory of the largest finished data worker, MiB.
        stopped: ``"max_steps"`` or ``"time_budget"``.
        val_split: the split the validation loss was computed on.
        device: the device trained on.
    """

    stage: str
    run_dir: str
    checkpoint: str
    best_checkpoint: str
    history_csv: str
    steps: int
    steps_this_session: int
    initial_val_loss: float
    final_val_loss: float
    best_val_loss: float
    samples_per_s: float
    elapsed_s: float
    peak_rss_mb: float
    peak_worker_rss_mb: float
    stopped: str
    val_split: str
    device: str
    world_size: int = 1
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def summary(self) -> str:
        """A few lines for a terminal."""
        return "\n".join(
            [
                f"{self.stage}: step {self.steps} ({self.steps_this_session} this session, "
                f"stopped at {self.stopped}) on {self.device} x{self.world_size}",
                f"  validation loss ({self.val_split}): {self.initial_val_loss:.4f} at step 0"
                f" -> {self.final_val_loss:.4f} (best {self.best_val_loss:.4f})",
                f"  {self.samples_per_s:.1f} samples/s over {self.elapsed_s:.0f} s of "
                f"training; peak memory {self.peak_rss_mb:.0f} MiB"
                + (
                    f" (+ {self.peak_worker_rss_mb:.0f} MiB per data worker)"
                    if self.peak_worker_rss_mb
                    else ""
                ),
                f"  checkpoint: {self.checkpoint}",
                f"  best:       {self.best_checkpoint or '-'}",
                f"  history:    {self.history_csv}",
            ]
        )


# ---------------------------------------------------------------------------------------------
# Configuration checks (all before training)


def resolve_store(store: str) -> str:
    """A catalog dataset name or a store folder -> the store folder (path or URL).

    Raises:
        TrainingConfigError: neither a catalog name nor an existing folder/URL.
    """
    if "://" in store or os.sep in store or Path(store).exists():
        if "://" not in store and not Path(store).is_dir():
            raise TrainingConfigError(f"store folder {store} does not exist")
        return store
    try:
        catalog = load_catalog()
    except (CatalogError, OSError) as error:
        raise TrainingConfigError(
            f"store {store!r} is no folder and the catalog cannot be read: {error}"
        ) from error
    if store not in catalog.names():
        raise TrainingConfigError(
            f"store {store!r} is neither a folder nor a dataset of the catalog "
            f"(datasets: {catalog.names()})"
        )
    return catalog.store_url(store)


def _open_windows(
    config: TrainConfig,
    urls: Sequence[str],
    scene_config: SceneConfig,
    num_views: int,
    split: str,
    seed: int,
) -> TrainingWindows:
    try:
        return TrainingWindows(
            list(urls), config.joint_set, scene_config, config.window, num_views, split, seed
        )
    except StoreNotFound as error:
        raise TrainingConfigError(
            f"cannot train on {list(config.stores)}: {error} (catalog datasets are prepared "
            "with `mocap2to3 prepare --only NAME`)"
        ) from error
    except (StoreFormatError, ValueError, KeyError) as error:
        raise TrainingConfigError(f"cannot train on {list(config.stores)}: {error}") from error


def _validation_windows(
    config: TrainConfig, urls: Sequence[str], scene_config: SceneConfig, num_views: int
) -> tuple[TrainingWindows, str]:
    """The held-out windows: split val, else test, else train (with a warning)."""
    failures = []
    for split in ("val", "test", "train"):
        try:
            windows = TrainingWindows(
                list(urls),
                config.joint_set,
                scene_config,
                config.window,
                num_views,
                split,
                config.seed + _VAL_SEED_OFFSET,
            )
        except ValueError as error:
            failures.append(f"{split}: {error}")
            continue
        if split != "val":
            message = (
                f"stores {list(config.stores)} have no validation sequences "
                f"({'; '.join(failures)}); validating on split {split!r}"
                + (" (not a held-out measure)" if split == "train" else "")
            )
            warnings.warn(message, stacklevel=2)
            logger.warning(message)
        return windows, split
    raise TrainingConfigError(f"no validation windows at all: {failures}")


def _check_resume_identity(config: TrainConfig, saved: Mapping[str, Any], path: Path) -> None:
    differences = []
    current = config.to_json_dict()
    for key in _RESUME_IDENTITY:
        if current.get(key) != saved.get(key):
            differences.append(f"{key}: checkpoint {saved.get(key)!r}, now {current.get(key)!r}")
    if differences:
        raise TrainingConfigError(
            f"cannot resume {path}: the run was started with other settings ("
            + "; ".join(differences)
            + "); use the same settings or another run folder"
        )


@dataclass
class _Plan:
    """What a run starts from, decided and checked before any training step."""

    urls: list[str]
    train: TrainingWindows
    val: TrainingWindows
    val_split: str
    scene_config: SceneConfig
    model_config: ModelConfig
    num_views: int
    fingerprints: dict[str, str]
    resume_payload: dict[str, Any] | None = None
    init_payload: dict[str, Any] | None = None
    parent: str | None = None


def plan_run(config: TrainConfig, resume: bool) -> _Plan:
    """Check a configuration and gather what the run needs, without training.

    Raises:
        TrainingConfigError: a store that does not exist or lacks the joint set, a stage-2 run
            without a stage-1 checkpoint (or with one of another stage, joint set or profile),
            a run folder that already holds a checkpoint (fresh run) or none (resume), or a
            resume with other settings.
    """
    last = Path(config.run_dir) / "checkpoints" / _LAST
    resume_payload = None
    if resume:
        if not last.is_file():
            raise TrainingConfigError(
                f"nothing to resume: {last} does not exist (start without resume)"
            )
        try:
            resume_payload = load_checkpoint(last)
        except CheckpointError as error:
            raise TrainingConfigError(f"cannot resume: {error}") from error
        if resume_payload["stage"] != config.stage:
            raise TrainingConfigError(
                f"cannot resume {last}: it is a {resume_payload['stage']} checkpoint, this run "
                f"is {config.stage}"
            )
        _check_resume_identity(config, resume_payload["train_config"], last)
    elif last.exists():
        raise TrainingConfigError(
            f"run folder {config.run_dir} already holds a checkpoint ({last}); pass resume to "
            "continue it, or choose another run folder"
        )

    init_payload = None
    parent = None
    if config.stage == STAGE_PRETRAIN:
        if config.init_checkpoint:
            raise TrainingConfigError(
                "stage pretrain-2d trains from scratch; init_checkpoint is for finetune-multiview"
            )
    elif config.model_overrides or config.scene_overrides:
        raise TrainingConfigError(
            "stage finetune-multiview inherits the model and scene configuration of its "
            "stage-1 checkpoint; model_overrides and scene_overrides are for pretrain-2d"
        )
    elif resume_payload is not None:
        parent = resume_payload.get("parent")
    else:
        if not config.init_checkpoint:
            raise TrainingConfigError(
                "stage finetune-multiview starts from a stage-1 (pretrain-2d) checkpoint; give "
                "its path (--init)"
            )
        init_path = Path(config.init_checkpoint)
        try:
            init_payload = load_checkpoint(init_path)
        except FileNotFoundError as error:
            raise TrainingConfigError(f"stage-1 checkpoint not found: {init_path}") from error
        except CheckpointError as error:
            raise TrainingConfigError(f"unusable stage-1 checkpoint: {error}") from error
        # Either stage: a pretrain-2d checkpoint starts stage 2, a finetune-multiview one
        # continues it (load_checkpoint has refused any other stage).
        init_joint_set = init_payload["model_config"].get("joint_set")
        if init_joint_set != config.joint_set:
            raise TrainingConfigError(
                f"{init_path} was trained for joint set {init_joint_set!r}, this run is for "
                f"{config.joint_set!r}"
            )
        init_profile = init_payload["train_config"].get("profile")
        if init_profile != config.profile:
            raise TrainingConfigError(
                f"{init_path} was trained with profile {init_profile!r}, this run asks for "
                f"{config.profile!r}"
            )
        parent = checkpoint_sha256(init_path)

    source = resume_payload or init_payload
    if source is not None:
        scene_config = SceneConfig.model_validate(source["scene_config"])
        model_config = ModelConfig.from_dict(dict(source["model_config"]))
    else:
        try:
            scene_config = SceneConfig(**config.scene_overrides)
            model_config = ModelConfig.profile(
                config.profile,
                config.joint_set,
                **{"pointmap_size": scene_config.pointmap_size, **config.model_overrides},
            )
        except (TypeError, ValueError) as error:
            raise TrainingConfigError(f"invalid model or scene overrides: {error}") from error
    if model_config.pointmap_size != scene_config.pointmap_size:
        raise TrainingConfigError(
            f"the model takes {model_config.pointmap_size} px pointmaps, the scenes make "
            f"{scene_config.pointmap_size} px"
        )
    num_views = 1 if config.stage == STAGE_PRETRAIN else scene_config.rig.num_views
    if config.stage == STAGE_MULTIVIEW:
        model_config = model_config.replace(num_views=num_views)
    if config.window > model_config.max_frames:
        raise TrainingConfigError(
            f"window {config.window} exceeds the model's max_frames {model_config.max_frames}"
        )

    urls = [resolve_store(store) for store in config.stores]
    train = _open_windows(config, urls, scene_config, num_views, "train", config.seed)
    val, val_split = _validation_windows(config, urls, scene_config, num_views)
    by_url = dataset_fingerprints(urls)
    fingerprints = {label: by_url[url] for label, url in zip(config.stores, urls, strict=True)}
    return _Plan(
        urls=urls,
        train=train,
        val=val,
        val_split=val_split,
        scene_config=scene_config,
        model_config=model_config,
        num_views=num_views,
        fingerprints=fingerprints,
        resume_payload=resume_payload,
        init_payload=init_payload,
        parent=parent,
    )


# ---------------------------------------------------------------------------------------------
# Devices, processes, seeds


@dataclass(frozen=True)
class _Processes:
    world_size: int
    rank: int
    local_rank: int
    local_world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> _Processes:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(
            world_size=world,
            rank=int(os.environ.get("RANK", "0")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
        )


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _resolve_device(requested: str, processes: _Processes) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingConfigError(f"device {requested!r} asked for, but CUDA is not available")
        if processes.world_size > 1:
            return torch.device("cuda", processes.local_rank)
        return torch.device(requested)
    return torch.device("cpu")


def _autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _num_workers(requested: int | None, device: torch.device, processes: _Processes) -> int:
    if requested is not None:
        return requested
    cores = max(1, _available_cores() // processes.local_world_size)
    if device.type == "cuda":
        return max(1, min(8, cores - 1))
    return 0 if cores <= 2 else 1


def _step_seeds(seed: int, step: int, rank: int) -> tuple[int, int]:
    """Two independent 63-bit seeds (torch's global generator, the loss generator) of a step."""
    words = np.random.SeedSequence([seed, step, rank]).generate_state(4, dtype=np.uint32)
    mask = (1 << 63) - 1
    first = (int(words[0]) << 32 | int(words[1])) & mask
    second = (int(words[2]) << 32 | int(words[3])) & mask
    return first, second


class _RankSlice:
    """Rank ``r``'s slice of every step's index list (``batch_size`` of ``batch_size x world``)."""

    def __init__(self, sampler: StepBatchSampler, rank: int, per_rank: int) -> None:
        self.sampler = sampler
        self.rank = rank
        self.per_rank = per_rank

    def __iter__(self):
        for indices in self.sampler:
            yield indices[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]

    def __len__(self) -> int:
        return len(self.sampler)


def _peak_rss_mb(who: int) -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(who).ru_maxrss / 1024.0


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _write_history_csv(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=_HISTORY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow(
                {k: ("" if row.get(k) is None else row.get(k)) for k in _HISTORY_FIELDS}
            )
    os.replace(tmp, path)


def _make_loader(
    dataset: TrainingWindows,
    batch_sampler: Any,
    num_workers: int,
    device: torch.device,
) -> DataLoader:
    # One pass over a step-indexed sampler: the workers live for the whole run anyway, and
    # without persistent_workers they are joined as soon as the iterator is dropped, so the
    # run ends with no process left behind (and their peak memory is measurable).
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if num_workers > 0 else None,
        persistent_workers=False,
    )


# ---------------------------------------------------------------------------------------------
# The loop


def _fit_stats(plan: _Plan, config: TrainConfig) -> dict[str, FeatureStats]:
    """Stage-1 statistics from ``stats_samples`` training samples of a fixed data seed."""
    windows = TrainingWindows(
        plan.urls,
        config.joint_set,
        plan.scene_config,
        config.window,
        plan.num_views,
        "train",
        config.seed + _STATS_SEED_OFFSET,
    )
    local, global_ = fit_feature_stats(windows[i] for i in range(config.stats_samples))
    return {"local": local, "global": global_}


def _broadcast(value: Any, processes: _Processes) -> Any:
    if processes.world_size == 1:
        return value
    box = [value]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def run_training(
    config: TrainConfig,
    resume: bool = False,
    progress_callback: Callable[[TrainProgress], None] | None = None,
) -> TrainResult:
    """Train one stage (module docstring): check, set up, loop, checkpoint.

    Args:
        config: the run (:meth:`TrainConfig.for_profile`).
        resume: continue from ``run_dir/checkpoints/last.pt``.
        progress_callback: called on rank 0 with each history row (every ``log_every``
            steps, and at step 0 with the initial validation loss).

    Returns:
        :class:`TrainResult` (on every rank; the figures are rank 0's).

    Raises:
        TrainingConfigError: a configuration that cannot train (see :func:`plan_run`), before
            any training step.
    """
    processes = _Processes.from_env()
    device = _resolve_device(config.device, processes)
    plan = plan_run(config, resume)

    if processes.world_size > 1 and not torch_dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        # Kept for later runs in this process (re-creating a group under torchrun's
        # rendezvous hangs) and destroyed at exit.
        atexit.register(torch_dist.destroy_process_group)
    previous_threads = torch.get_num_threads()
    num_workers = _num_workers(config.num_workers, device, processes)
    if device.type == "cpu":
        cores = max(1, _available_cores() // processes.local_world_size)
        torch.set_num_threads(max(1, cores - num_workers))
    elif device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    try:
        return _train(config, plan, processes, device, num_workers, progress_callback)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    config: TrainConfig,
    plan: _Plan,
    processes: _Processes,
    device: torch.device,
    num_workers: int,
    progress_callback: Callable[[TrainProgress], None] | None,
) -> TrainResult:
    run_dir = Path(config.run_dir)
    checkpoint_dir = run_dir / "checkpoints"
    last_path, best_path = checkpoint_dir / _LAST, checkpoint_dir / _BEST
    history_path = run_dir / "history.csv"
    if processes.is_main:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)

    resume_payload = plan.resume_payload
    # Stats: saved (resume), inherited (stage 2), or fitted once on rank 0 (stage 1).
    if resume_payload is not None:
        stats = load_stats(resume_payload)
    elif plan.init_payload is not None:
        stats = load_stats(plan.init_payload)
    else:
        fitted = _fit_stats(plan, config) if processes.is_main else None
        fitted = _broadcast(
            None if fitted is None else {k: v.to_dict() for k, v in fitted.items()}, processes
        )
        stats = {k: FeatureStats.from_dict(v) for k, v in fitted.items()}

    # Same initial weights on every rank (DDP also broadcasts rank 0's).
    torch.manual_seed(config.seed)
    model: torch.nn.Module
    if config.stage == STAGE_PRETRAIN:
        model = SingleViewDenoiser(plan.model_config)
    elif resume_payload is not None:
        model = MultiViewDenoiser(plan.model_config)
    else:
        assert plan.init_payload is not None
        if plan.init_payload["stage"] == STAGE_MULTIVIEW:
            # Continued fine-tuning: the weights as they are, a fresh optimiser and step 0.
            model = MultiViewDenoiser(plan.model_config)
            model.load_state_dict(plan.init_payload["model"])
        else:
            model = MultiViewDenoiser.from_single_view(
                plan.init_payload["model"], plan.model_config
            )
    if resume_payload is not None:
        model.load_state_dict(resume_payload["model"])
    model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.lr,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=config.weight_decay,
    )
    autocast_dtype = _autocast_dtype(config.amp, device)
    grad_scaler = torch.amp.GradScaler("cuda") if autocast_dtype == torch.float16 else None
    step = 0
    history: list[dict[str, Any]] = []
    loop_state: dict[str, Any] = {"elapsed_s": 0.0, "best_val_loss": math.inf}
    if resume_payload is not None:
        optimizer.load_state_dict(resume_payload["optimizer"])
        if grad_scaler is not None and resume_payload.get("grad_scaler"):
            grad_scaler.load_state_dict(resume_payload["grad_scaler"])
        step = int(resume_payload["step"])
        history = [dict(row) for row in resume_payload["history"]]
        loop_state.update(resume_payload.get("loop_state", {}))
        saved_world = int(loop_state.get("world_size", 1))
        if saved_world != processes.world_size:
            warnings.warn(
                f"resuming a run of {saved_world} process(es) with {processes.world_size}: the "
                "batches differ, the continuation is not bit-for-bit",
                stacklevel=2,
            )
    loop_state["world_size"] = processes.world_size

    train_model: torch.nn.Module = model
    if processes.world_size > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    scheduler = DDPMScheduler()
    val_indices = validation_batches(plan.val, config.val_batches, config.batch_size, config.seed)

    def validate() -> float:
        batches = (
            torch.utils.data.default_collate([plan.val[i] for i in indices])
            for indices in val_indices
        )
        return validation_loss(
            model, batches, scheduler, stats, config.stage, config.seed, device, autocast_dtype
        )

    def save(path: Path, with_optimizer: bool) -> None:
        payload: dict[str, Any] = {
            "stage": config.stage,
            "model_config": model.config.to_dict(),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "step": step,
            "stats": {name: s.to_dict() for name, s in stats.items()},
            "scene_config": plan.scene_config.model_dump(mode="json"),
            "train_config": config.to_json_dict(),
            "data": dict(plan.fingerprints),
            "package_version": package_version(),
            "history": [dict(row) for row in history],
            "parent": plan.parent,
            "loop_state": dict(loop_state),
        }
        if with_optimizer:
            payload["optimizer"] = optimizer.state_dict()
            if grad_scaler is not None:
                payload["grad_scaler"] = grad_scaler.state_dict()
        save_checkpoint(path, payload)

    def report(row: dict[str, Any]) -> None:
        history.append(row)
        _write_history_csv(history_path, history)
        if progress_callback is not None:
            progress_callback(
                TrainProgress(
                    step=row["step"],
                    max_steps=config.max_steps,
                    train_loss=row["train_loss"],
                    val_loss=row["val_loss"],
                    best_val_loss=loop_state["best_val_loss"],
                    samples_per_s=row["samples_per_s"],
                    elapsed_s=row["elapsed_s"],
                )
            )

    def record_val(value: float) -> None:
        if value < loop_state["best_val_loss"]:
            loop_state["best_val_loss"] = value
            save(best_path, with_optimizer=False)

    if step == 0 and not history and processes.is_main:
        initial = validate()
        loop_state["initial_val_loss"] = initial
        record_val(initial)
        report(
            {
                "step": 0,
                "train_loss": math.nan,
                "val_loss": initial,
                "samples_per_s": 0.0,
                "elapsed_s": 0.0,
                "grad_norm": math.nan,
                "lr": config.lr,
            }
        )

    per_step = config.batch_size * processes.world_size
    remaining = max(0, config.max_steps - step)
    sampler = StepBatchSampler(
        plan.train.num_windows, per_step, config.seed, start_step=step, num_steps=remaining
    )
    batch_sampler: Any = sampler
    if processes.world_size > 1:
        batch_sampler = _RankSlice(sampler, processes.rank, config.batch_size)
    loader = _make_loader(plan.train, batch_sampler, num_workers, device)

    train_model.train()
    start_step = step
    session_train_time = 0.0
    interval_time = 0.0
    interval_loss = torch.zeros((), device=device)
    interval_grad = torch.zeros((), device=device)
    interval_steps = 0
    stopped = "max_steps"
    last_val: float = math.nan
    loader_iter = iter(loader)
    tick = time.perf_counter()
    try:
        while step < config.max_steps:
            batch = next(loader_iter)
            global_seed, loss_seed = _step_seeds(config.seed, step, processes.rank)
            torch.manual_seed(global_seed)
            generator = torch.Generator(device="cpu").manual_seed(loss_seed)
            batch = {
                k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()
            }
            result = train_step(
                train_model,
                optimizer,
                batch,
                scheduler,
                stats,
                config.stage,
                generator,
                config.grad_clip,
                autocast_dtype,
                grad_scaler,
            )
            step += 1
            interval_loss += result.loss
            interval_grad += result.grad_norm
            interval_steps += 1
            out_of_time = False
            if config.time_budget_s is not None:
                out_of_time = session_train_time + time.perf_counter() - tick >= (
                    config.time_budget_s
                )
                if processes.world_size > 1:
                    flag = torch.tensor([float(out_of_time)], device=device)
                    torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
                    out_of_time = bool(flag.item() > 0)
            final = step >= config.max_steps or out_of_time
            if step % config.log_every != 0 and not final:
                continue

            if processes.world_size > 1:
                # Report the mean over all ranks' batches, not rank 0's alone.
                sums = torch.stack([interval_loss, interval_grad])
                torch_dist.all_reduce(sums)
                interval_loss, interval_grad = (sums / processes.world_size).unbind()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - tick
            interval_time += elapsed
            session_train_time += elapsed
            loop_state["elapsed_s"] = float(loop_state["elapsed_s"]) + elapsed
            if processes.is_main:
                val = None
                if step % config.val_every == 0 or final:
                    val = validate()
                    last_val = val
                    record_val(val)
                report(
                    {
                        "step": step,
                        "train_loss": float(interval_loss) / interval_steps,
                        "val_loss": val,
                        "samples_per_s": interval_steps * per_step / max(interval_time, 1e-9),
                        "elapsed_s": float(loop_state["elapsed_s"]),
                        "grad_norm": float(interval_grad) / interval_steps,
                        "lr": config.lr,
                    }
                )
                if step % config.checkpoint_every == 0 or final:
                    save(last_path, with_optimizer=True)
            if processes.world_size > 1:
                torch_dist.barrier()
            interval_loss = torch.zeros((), device=device)
            interval_grad = torch.zeros((), device=device)
            interval_steps = 0
            interval_time = 0.0
            if out_of_time:
                stopped = "time_budget"
                break
            tick = time.perf_counter()
    finally:
        del loader_iter, loader
    peak_worker = _peak_rss_mb(resource.RUSAGE_CHILDREN) if num_workers else 0.0

    steps_done = step - start_step
    if processes.is_main and steps_done == 0 and not last_path.exists():
        save(last_path, with_optimizer=True)
    vals = [row["val_loss"] for row in history if row.get("val_loss") is not None]
    if math.isnan(last_val) and vals:
        last_val = float(vals[-1])
    return TrainResult(
        stage=config.stage,
        run_dir=str(run_dir),
        checkpoint=str(last_path),
        best_checkpoint=str(best_path) if best_path.exists() else "",
        history_csv=str(history_path),
        steps=step,
        steps_this_session=steps_done,
        initial_val_loss=float(loop_state.get("initial_val_loss", math.nan)),
        final_val_loss=last_val,
        best_val_loss=float(loop_state["best_val_loss"]) if vals else math.nan,
        samples_per_s=steps_done * per_step / session_train_time if session_train_time else 0.0,
        elapsed_s=session_train_time,
        peak_rss_mb=_peak_rss_mb(resource.RUSAGE_SELF),
        peak_worker_rss_mb=peak_worker,
        stopped=stopped,
        val_split=plan.val_split,
        device=str(device),
        world_size=processes.world_size,
        history=[dict(row) for row in history],
    )


train_stage = task(
    run_training,
    name="train-stage",
    cache_policy=NO_CACHE,
    log_prints=True,
)
"""Prefect task of :func:`run_training` (same arguments; no caching, no retries: a failed
run resumes from its last checkpoint with ``resume=True``)."""


def result_as_dict(result: TrainResult) -> dict[str, Any]:
    """A :class:`TrainResult` as a JSON-able dict without the history rows."""
    out = asdict(result)
    out.pop("history", None)
    return out


def save_loss_curve(history: Sequence[Mapping[str, Any]], png_path: str, title: str) -> str:
    """Plot the training loss (interval means) and the validation loss against the step, log
    scale, and save it as PNG (matplotlib Agg).

    Args:
        history: rows with ``step``, ``train_loss`` and ``val_loss`` (None/NaN where absent).
        png_path: output file; its folder is created.
        title: figure title.

    Returns:
        ``png_path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[int], list[float]]:
        points = [
            (int(row["step"]), float(row[key]))
            for row in history
            if row.get(key) is not None and math.isfinite(float(row[key]))
        ]
        return [p[0] for p in points], [p[1] for p in points]

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    try:
        for key, label, style in (
            ("train_loss", "train (mean over interval)", dict(color="tab:blue", lw=1.2)),
            ("val_loss", "validation", dict(color="tab:red", marker="o", ms=3, lw=1.5)),
        ):
            steps, values = series(key)
            if steps:
                ax.plot(steps, values, label=label, **style)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("x0 MSE (normalised units)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        Path(png_path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png_path)
    finally:
        plt.close(fig)
    return png_path


plot_loss_curve = task(save_loss_curve, name="plot-loss-curve", cache_policy=NO_CACHE)
"""Prefect task of :func:`save_loss_curve`."""
