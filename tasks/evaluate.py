"""Tasks of the evaluate flow: plan, evaluate batches of sequences, write the report.

The protocol, the simulated 2D input, the baselines and the scoring are pure functions of
:mod:`mocap_core.evaluation`; this module reads the store and the checkpoint, runs recovery
(:func:`mocap_core.recovery.recover_clips`, one call per batch of sequences), and writes
``report.md``, ``report.csv`` and PNG plots.

Programmatic use, e.g. for the release tables (no Prefect needed)::

    from tasks.evaluate import compare_settings, evaluate_checkpoint
    result = evaluate_checkpoint("bandai1", "checkpoints/smpl22.pt", noise_px=2.0)
    print(result.table())
    rows = compare_settings("bandai1", "checkpoints/smpl22.pt",
                            [{"noise_px": n} for n in (0, 2, 5, 10)] +
                            [{"steps": s} for s in (10, 25, 100)])

**Methods** (:data:`mocap_core.evaluation.METHODS`): ``model`` (the checkpoint through the
recovery loop), ``upper_bound`` (triangulation of ground-truth virtual views) and
``ground_contact`` (the monocular heuristic), all on the same simulated 2D input.

**Rows** (``report.csv``): ``scope`` is ``sequence`` (one row per sequence and method),
``overall`` (per method, frame-weighted over all sequences, :func:`mocap_core.metrics.
aggregate`) or ``overall_grounded`` (the same over the sequences whose feet touch the
ground). Every row repeats what makes runs comparable: store, split, manifest fingerprint,
checkpoint sha256, joint set, protocol name and JSON, recovery config JSON, input noise and
drop rate.

Tasks return small records (plans, metric rows, a few root trajectories for the plots);
sequences are read from the store inside the task.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from data_catalog.checkpoints import (
    METHOD_ONLY_RECOVERY,
    build_model,
    checkpoint_sha256,
    load_checkpoint,
    recovery_config,
    release_checkpoint,
)
from data_catalog.paths import work_dir
from data_catalog.store import StoreFormatError, StoreNotFound, open_store
from mocap_core import metrics
from mocap_core.evaluation import (
    FOOT_KEYPOINT_HEIGHT_M,
    METHODS,
    CaseScore,
    EvalCase,
    EvalProtocol,
    get_protocol,
    ground_contact_baseline,
    make_eval_case,
    score_case,
    triangulation_upper_bound,
)
from mocap_core.joint_sets import get_joint_set
from mocap_core.recovery import ClipInput, RecoveredMotion, RecoveryConfig, recover_clips
from tasks.retry import IO_RETRIES

__all__ = [
    "METHOD_LABELS",
    "METRIC_COLUMNS",
    "EvalPlan",
    "EvalResult",
    "EvaluationConfigError",
    "BatchResult",
    "ReportFiles",
    "assemble_result",
    "compare_settings",
    "default_recovery_config",
    "draw_cases",
    "recover_cases",
    "evaluate_batch",
    "evaluate_batch_fn",
    "evaluate_checkpoint",
    "evaluate_plan",
    "format_overall_table",
    "plan_evaluation",
    "plan_evaluation_task",
    "release_checkpoint",
    "write_report",
    "write_report_fn",
]

#: Human names of the methods in reports.
METHOD_LABELS: dict[str, str] = {
    "model": "Mocap-2-to-3 (model)",
    "upper_bound": "Upper bound: GT virtual views triangulated",
    "ground_contact": "Ground-contact heuristic",
}
#: Metric columns, in report order.
METRIC_COLUMNS: tuple[str, ...] = metrics.METRIC_KEYS
#: Short column titles of the metrics in the Markdown and printed tables.
METRIC_TITLES: dict[str, str] = {
    "pa_mpjpe_mm": "PA-MPJPE",
    "mpjpe_mm": "MPJPE",
    "abs_mpjpe_mm": "Abs-MPJPE",
    "w_mpjpe100_mm": "W-MPJPE100",
    "wa_mpjpe100_mm": "WA-MPJPE100",
    "rte_mm": "RTE mm",
    "rte_pct": "RTE %",
    "jitter_m_s3": "Jitter m/s3",
    "accel_error_m_s2": "Accel m/s2",
    "foot_sliding_mm": "FS mm",
}
#: Store joint sets the release checkpoints cover, with the model joint set of each.
MODEL_JOINT_SET_OF_STORE: dict[str, str] = {"smpl22": "smpl22", "coco17": "coco17_pelvis"}
DEFAULT_SAMPLER = "ddim"
DEFAULT_STEPS = RecoveryConfig.model_fields["steps"].default
DEFAULT_SEED = RecoveryConfig.model_fields["seed"].default
#: Sequences whose root trajectories and per-frame errors are kept for the plots.
DEFAULT_PLOT_SEQUENCES = 4

_TASK_OPTIONS: dict[str, Any] = {**IO_RETRIES, "cache_policy": NO_CACHE}


class EvaluationConfigError(ValueError):
    """An evaluation that cannot start (the message says why and what to do)."""


# ---------------------------------------------------------------------------------------------
# Planning


@dataclass(frozen=True)
class EvalPlan:
    """Everything an evaluation run needs, resolved and checked (small, picklable).

    Attributes:
        store_name: the store's name in reports (catalog name, or the folder's name).
        store_url: the dataset folder.
        store_version: the store version evaluated.
        store_fingerprint: its manifest fingerprint.
        split: ``train``, ``val`` or ``test``.
        sequence_ids: the evaluated sequences, store order.
        fps: the store's frame rate.
        store_joint_set: the store subgroup read (``smpl22`` or ``coco17``).
        model_joint_set: the checkpoint's joint set (``smpl22`` or ``coco17_pelvis``).
        checkpoint: the checkpoint file.
        checkpoint_sha256: its digest.
        protocol: the scene distribution.
        recovery: the sampling config of the model run (and the upper bound's windows/rigs).
        noise_px, drop_rate: the simulated detector.
        device: torch device of the model.
        output_dir: where the report goes.
    """

    store_name: str
    store_url: str
    store_version: str
    store_fingerprint: str
    split: str
    sequence_ids: tuple[str, ...]
    fps: float
    store_joint_set: str
    model_joint_set: str
    checkpoint: str
    checkpoint_sha256: str
    protocol: EvalProtocol
    recovery: RecoveryConfig
    noise_px: float
    drop_rate: float
    device: str
    output_dir: str

    def header(self) -> dict[str, Any]:
        """The columns every CSV row repeats (what makes two runs comparable)."""
        return {
            "store": self.store_name,
            "split": self.split,
            "store_fingerprint": self.store_fingerprint,
            "checkpoint_sha256": self.checkpoint_sha256,
            "joint_set": self.model_joint_set,
            "protocol": self.protocol.name,
            "noise_px": self.noise_px,
            "drop_rate": self.drop_rate,
            "sampler": self.recovery.sampler,
            "steps": self.recovery.steps,
            "protocol_json": json.dumps(self.protocol.model_dump(mode="json"), sort_keys=True),
            "recovery_json": json.dumps(self.recovery.model_dump(mode="json"), sort_keys=True),
        }


def _store_joint_set_name(joint_set: str) -> str:
    """``smpl22`` or ``coco17`` (``coco17_pelvis`` is the COCO model's name for ``coco17``)."""
    name = {"coco17_pelvis": "coco17"}.get(joint_set, joint_set)
    if name not in MODEL_JOINT_SET_OF_STORE:
        raise EvaluationConfigError(f"joint set must be smpl22 or coco17, got {joint_set!r}")
    return name


def _resolve_store(store: str) -> tuple[str, str]:
    """A catalog name or a store folder -> ``(name for reports, dataset folder)``."""
    from tasks.training import TrainingConfigError, resolve_store

    try:
        url = resolve_store(store)
    except TrainingConfigError as error:
        raise EvaluationConfigError(str(error)) from None
    name = store if url != store else Path(store.rstrip("/")).name or store
    return name, url


def default_recovery_config(
    checkpoint: Mapping[str, Any],
    sampler: str = DEFAULT_SAMPLER,
    steps: int = DEFAULT_STEPS,
    seed: int = DEFAULT_SEED,
    **overrides: Any,
) -> RecoveryConfig:
    """The recovery config of an evaluation: the checkpoint's own settings
    (:func:`data_catalog.checkpoints.recovery_config`) with the given sampler, steps, seed."""
    try:
        return recovery_config(checkpoint, sampler=sampler, steps=steps, seed=seed, **overrides)
    except ValueError as error:
        raise EvaluationConfigError(f"invalid recovery settings: {error}") from None


def _settings_suffix(
    recovery: RecoveryConfig,
    noise_px: float,
    drop_rate: float,
    max_sequences: int | None,
    post_process: bool = True,
) -> str:
    parts = [] if post_process else ["method-only"]
    if noise_px:
        parts.append(f"noise{noise_px:g}px")
    if drop_rate:
        parts.append(f"drop{drop_rate:g}")
    if (recovery.sampler, recovery.steps) != (DEFAULT_SAMPLER, DEFAULT_STEPS):
        parts.append(f"{recovery.sampler}{recovery.steps}")
    if recovery.seed != DEFAULT_SEED:
        parts.append(f"seed{recovery.seed}")
    if recovery.num_samples != 1:
        parts.append(f"samples{recovery.num_samples}")
    if max_sequences is not None:
        parts.append(f"first{max_sequences}")
    return "".join(f"-{p}" for p in parts)


def plan_evaluation(
    store: str,
    split: str = "test",
    checkpoint: str | None = None,
    protocol: EvalProtocol | str = "standard",
    recovery: RecoveryConfig | None = None,
    noise_px: float = 0.0,
    drop_rate: float = 0.0,
    max_sequences: int | None = None,
    *,
    joint_set: str | None = None,
    sampler: str = DEFAULT_SAMPLER,
    steps: int = DEFAULT_STEPS,
    seed: int = DEFAULT_SEED,
    post_process: bool = True,
    num_samples: int | None = None,
    device: str = "auto",
    output_dir: str | None = None,
) -> EvalPlan:
    """Resolve and check an evaluation before any work (store, split, checkpoint, settings).

    Args:
        store: a catalog dataset name or a prepared 3D store folder.
        split: ``train``, ``val`` or ``test``.
        checkpoint: a ``finetune-multiview`` checkpoint; None = the release checkpoint of the
            joint set (:func:`release_checkpoint`).
        protocol: an :class:`EvalProtocol` or a preset name (``standard``, ``far``, ``high``).
        recovery: the sampling config; None = :func:`default_recovery_config` with
            ``sampler``, ``steps`` and ``seed``.
        noise_px: std of the pixel noise of the simulated detector, >= 0.
        drop_rate: probability that the detector misses a joint, in [0, 1].
        max_sequences: evaluate only the first N sequences of the split (store order).
        joint_set: ``smpl22`` or ``coco17``: which store subgroup and release checkpoint;
            None = the checkpoint's, else ``smpl22`` when the store has it, else ``coco17``.
        post_process: with ``recovery`` None, keep the checkpoint's post-processing
            (ground anchor, smoothing); False = the method's output as is
            (:data:`~data_catalog.checkpoints.METHOD_ONLY_RECOVERY`, report folder suffix
            ``-method-only``).
        num_samples: with ``recovery`` None, diffusion samples averaged per window; None =
            the checkpoint's setting.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``.
        output_dir: report folder; default
            ``WORK/eval/<store>-<split>-<sha256[:8]>-<protocol>`` (plus the settings that
            differ from the defaults, e.g. ``-noise2px``).

    Raises:
        EvaluationConfigError: anything that would make the run fail (named, with a fix).
    """
    if split not in ("train", "val", "test"):
        raise EvaluationConfigError(f"split must be train, val or test, got {split!r}")
    if not (math.isfinite(noise_px) and noise_px >= 0):
        raise EvaluationConfigError(f"input noise must be a finite number >= 0, got {noise_px}")
    if not 0.0 <= drop_rate <= 1.0:
        raise EvaluationConfigError(f"drop rate must lie in [0, 1], got {drop_rate}")
    if max_sequences is not None and max_sequences < 1:
        raise EvaluationConfigError(f"max sequences must be >= 1, got {max_sequences}")
    try:
        protocol = get_protocol(protocol) if isinstance(protocol, str) else protocol
    except ValueError as error:
        raise EvaluationConfigError(str(error)) from None
    if not isinstance(protocol, EvalProtocol):
        raise EvaluationConfigError(f"protocol must be a name or an EvalProtocol, got {protocol!r}")
    torch_device = _resolve_device(device)

    store_name, store_url = _resolve_store(store)
    try:
        motion_store = open_store(store_url)
    except (StoreNotFound, StoreFormatError) as error:
        raise EvaluationConfigError(f"store {store!r}: {error}") from None
    if motion_store.kind != "3d":
        raise EvaluationConfigError(
            f"store {store!r} holds 2D tracks; evaluation needs a 3D store (ground truth)"
        )
    store_sets = set(motion_store.joint_sets)

    asked = None if joint_set is None else _store_joint_set_name(joint_set)
    if checkpoint is None:
        wanted = asked or ("smpl22" if "smpl22" in store_sets else "coco17")
        path = release_checkpoint(_store_joint_set_name(wanted))
        if not path.is_file():
            raise EvaluationConfigError(
                f"no release checkpoint at {path}; pass --checkpoint FILE (a finetune-multiview "
                f"checkpoint, e.g. WORK/runs/finetune-multiview-tiny-"
                f"{MODEL_JOINT_SET_OF_STORE[wanted]}/checkpoints/best.pt)"
            )
    else:
        path = Path(checkpoint)
        if not path.is_file():
            raise EvaluationConfigError(f"checkpoint {checkpoint} does not exist")
    try:
        payload = load_checkpoint(path, map_location="cpu")
    except ValueError as error:
        raise EvaluationConfigError(str(error)) from None
    if payload["stage"] != "finetune-multiview":
        raise EvaluationConfigError(
            f"{path} is a {payload['stage']} checkpoint; evaluation needs the multi-view model "
            "(stage finetune-multiview)"
        )
    model_joint_set = str(payload["model_config"]["joint_set"])
    if asked is not None and MODEL_JOINT_SET_OF_STORE[asked] != model_joint_set:
        raise EvaluationConfigError(
            f"joint set {joint_set!r} was asked for but {path} is a {model_joint_set} model"
        )
    candidates = [model_joint_set] + [
        s for s, m in MODEL_JOINT_SET_OF_STORE.items() if m == model_joint_set
    ]
    store_joint_set = next((s for s in candidates if s in store_sets), None)
    if store_joint_set is None:
        raise EvaluationConfigError(
            f"store {store!r} has joint sets {sorted(store_sets)}, none fits the "
            f"{model_joint_set} model of {path}"
        )

    if recovery is None:
        overrides = {} if post_process else dict(METHOD_ONLY_RECOVERY)
        overrides["num_samples"] = num_samples
        recovery = default_recovery_config(payload, sampler, steps, seed, **overrides)
    elif not isinstance(recovery, RecoveryConfig):
        raise EvaluationConfigError(f"recovery must be a RecoveryConfig, got {recovery!r}")
    if recovery.window > int(payload["model_config"]["max_frames"]):
        raise EvaluationConfigError(
            f"recovery window {recovery.window} exceeds the model's max_frames "
            f"{payload['model_config']['max_frames']}"
        )

    table = motion_store.sequences
    ids = [str(s) for s in table.loc[table["split"] == split, "sequence_id"]]
    if not ids:
        counts = table["split"].value_counts().to_dict()
        raise EvaluationConfigError(
            f"store {store!r} has no sequences in split {split!r} (it has {counts})"
        )
    if max_sequences is not None:
        ids = ids[:max_sequences]
    digest = checkpoint_sha256(path)
    if output_dir is None:
        suffix = _settings_suffix(recovery, noise_px, drop_rate, max_sequences, post_process)
        folder = f"{store_name}-{split}-{digest[:8]}-{protocol.name}{suffix}"
        output_dir = str(work_dir() / "eval" / folder)
    return EvalPlan(
        store_name=store_name,
        store_url=store_url,
        store_version=motion_store.version,
        store_fingerprint=motion_store.manifest_fingerprint,
        split=split,
        sequence_ids=tuple(ids),
        fps=motion_store.fps,
        store_joint_set=store_joint_set,
        model_joint_set=model_joint_set,
        checkpoint=str(path.resolve()),
        checkpoint_sha256=digest,
        protocol=protocol,
        recovery=recovery,
        noise_px=float(noise_px),
        drop_rate=float(drop_rate),
        device=str(torch_device),
        output_dir=str(output_dir),
    )


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise EvaluationConfigError(f"device {device!r}: {error}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise EvaluationConfigError(f"device {device!r} asked for but CUDA is not available")
    return resolved


# ---------------------------------------------------------------------------------------------
# Evaluating batches of sequences


@dataclass(frozen=True)
class BatchResult:
    """What one batch of sequences gives.

    Attributes:
        scores: one :class:`~mocap_core.evaluation.CaseScore` per evaluated sequence; the
            per-frame arrays are kept only for the sequences asked for (plots), emptied
            otherwise.
        skipped: ``{"sequence_id", "reason"}`` of sequences that could not be evaluated.
    """

    scores: list[CaseScore]
    skipped: list[dict[str, str]] = field(default_factory=list)


@functools.lru_cache(maxsize=2)
def _load_model(path: str, digest: str, device: str) -> tuple[Any, Any, Any]:
    # Keyed on the digest too: a checkpoint rewritten in place is loaded again.
    del digest
    model, stats, scene_config = build_model(load_checkpoint(path, map_location=device))
    return model, stats, scene_config


def _strip_traces(score: CaseScore) -> CaseScore:
    return replace(score, abs_error_mm={}, gt_root=np.zeros((0, 3)), roots={})


def draw_cases(
    plan: EvalPlan, sequence_ids: Sequence[str]
) -> tuple[list[EvalCase], list[dict[str, str]]]:
    """Read the sequences from the plan's store and draw their cases (scene and simulated
    2D input, :func:`mocap_core.evaluation.make_eval_case`).

    Returns:
        ``(cases, skipped)``: the cases in ``sequence_ids`` order and, for each sequence that
        has none, ``{"sequence_id", "reason"}``.
    """
    store = open_store(plan.store_url, version=plan.store_version)
    cases, skipped = [], []
    for sid in sequence_ids:
        joints = store.joints(plan.store_joint_set, sid)
        valid = store.valid(plan.store_joint_set, sid)
        if len(joints) < 4:
            skipped.append({"sequence_id": sid, "reason": f"{len(joints)} frames (< 4)"})
            continue
        try:
            cases.append(
                make_eval_case(
                    plan.protocol,
                    sid,
                    joints,
                    valid,
                    plan.store_joint_set,
                    plan.noise_px,
                    plan.drop_rate,
                )
            )
        except ValueError as error:
            skipped.append({"sequence_id": sid, "reason": str(error)})
    return cases, skipped


def recover_cases(
    config: RecoveryConfig, cases: Sequence[EvalCase], model: Any, stats: Any, scene_config: Any
) -> list[RecoveredMotion]:
    """The model's recovery of ``cases`` (one :func:`~mocap_core.recovery.recover_clips`
    call; ``model, stats, scene_config`` as :func:`data_catalog.checkpoints.build_model`
    returns them)."""
    with torch.no_grad():
        return recover_clips(
            model,
            stats["local"],
            stats["global"],
            [ClipInput(c.camera, c.keypoints, key=c.sequence_id) for c in cases],
            config,
            scene_config.rig,
            scene_config.pointmap_max_range_m,
        )


def evaluate_batch_fn(
    plan: EvalPlan, sequence_ids: Sequence[str], keep_traces: Iterable[str] = ()
) -> BatchResult:
    """Evaluate a batch of sequences: draw the cases, recover them with the model (one
    :func:`~mocap_core.recovery.recover_clips` call), run both baselines, score all three.

    Args:
        plan: the run's plan.
        sequence_ids: the batch, sequence ids of the plan's store.
        keep_traces: ids whose per-frame errors and root trajectories are kept (plots).

    Returns:
        :class:`BatchResult`.
    """
    keep = set(keep_traces)
    model, stats, scene_config = _load_model(plan.checkpoint, plan.checkpoint_sha256, plan.device)
    joint_set = get_joint_set(plan.model_joint_set)
    cases, skipped = draw_cases(plan, sequence_ids)
    if not cases:
        return BatchResult([], skipped)
    motions = recover_cases(plan.recovery, cases, model, stats, scene_config)
    scores = []
    for case, motion in zip(cases, motions, strict=True):
        predictions = {
            "model": motion.joints,
            "upper_bound": triangulation_upper_bound(
                case.camera,
                case.keypoints,
                case.gt,
                joint_set,
                plan.recovery,
                scene_config.rig,
                case.sequence_id,
                scene_config.pointmap_size,
                scene_config.pointmap_max_range_m,
            ),
            "ground_contact": ground_contact_baseline(
                case.camera,
                case.keypoints,
                joint_set,
                plan.recovery.min_confidence,
                FOOT_KEYPOINT_HEIGHT_M[plan.model_joint_set],
            ),
        }
        try:
            score = score_case(case, predictions, plan.fps)
        except ValueError as error:
            skipped.append({"sequence_id": case.sequence_id, "reason": str(error)})
            continue
        scores.append(score if case.sequence_id in keep else _strip_traces(score))
    return BatchResult(scores, skipped)


evaluate_batch = task(
    evaluate_batch_fn,
    name="evaluate-sequences",
    task_run_name="evaluate-{plan.store_name}-{plan.split}",
    **_TASK_OPTIONS,
)
"""Prefect task of :func:`evaluate_batch_fn`."""


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class EvalResult:
    """An evaluation's rows and what its plots need.

    Attributes:
        plan: the run's plan.
        rows: ``scope == "sequence"`` rows, one per sequence and method: ``method``,
            ``sequence_id``, ``grounded``, ``num_joints``, the metrics, ``num_frames``, and
            the scene draw (``distance_m``, ``in_view_fraction``, ...).
        overall: ``scope`` ``overall`` and ``overall_grounded`` rows, one per method each:
            the metrics (:func:`mocap_core.metrics.aggregate`), ``num_frames``,
            ``num_sequences``.
        traces: the scores of the sequences kept for the plots (with per-frame arrays).
        skipped: sequences not evaluated and why.
        seconds: wall time of the evaluation.
    """

    plan: EvalPlan
    rows: list[dict[str, Any]]
    overall: list[dict[str, Any]]
    traces: list[CaseScore]
    skipped: list[dict[str, str]]
    seconds: float

    def overall_row(self, method: str, scope: str = "overall") -> dict[str, Any]:
        """The overall row of ``method`` (``scope`` ``overall`` or ``overall_grounded``)."""
        for row in self.overall:
            if row["method"] == method and row["scope"] == scope:
                return row
        raise KeyError(f"no {scope} row for method {method!r}")

    def contact_comparison(self) -> list[dict[str, Any]]:
        """Per sequence whose feet touch the ground: model vs. heuristic Abs-MPJPE (mm)."""
        by_key = {(r["sequence_id"], r["method"]): r for r in self.rows}
        out = []
        for sid in dict.fromkeys(r["sequence_id"] for r in self.rows if r["grounded"]):
            model = by_key[(sid, "model")]["abs_mpjpe_mm"]
            heuristic = by_key[(sid, "ground_contact")]["abs_mpjpe_mm"]
            out.append(
                {
                    "sequence_id": sid,
                    "model_abs_mpjpe_mm": model,
                    "ground_contact_abs_mpjpe_mm": heuristic,
                    "model_better": bool(model < heuristic),
                }
            )
        return out

    def csv_rows(self) -> list[dict[str, Any]]:
        """Sequence rows then overall rows, each with :meth:`EvalPlan.header`'s columns."""
        header = self.plan.header()
        return [{**row, **header} for row in self.rows + self.overall]

    def table(self) -> str:
        """The overall rows as a fixed-width text table (what the CLI prints)."""
        return format_overall_table(self.overall)


def _sequence_rows(score: CaseScore) -> list[dict[str, Any]]:
    rows = []
    for method in METHODS:
        rows.append(
            {
                "scope": "sequence",
                "method": method,
                "sequence_id": score.sequence_id,
                "grounded": score.grounded,
                "num_joints": score.num_joints,
                **{k: score.metrics[method][k] for k in METRIC_COLUMNS},
                "num_frames": score.metrics[method][metrics.NUM_FRAMES_KEY],
                "num_sequences": 1.0,
                **score.scene,
            }
        )
    return rows


def _overall_rows(scores: Sequence[CaseScore]) -> list[dict[str, Any]]:
    rows = []
    for scope, chosen in (
        ("overall", list(scores)),
        ("overall_grounded", [s for s in scores if s.grounded]),
    ):
        for method in METHODS:
            if chosen and any(s.metrics[method][metrics.NUM_FRAMES_KEY] > 0 for s in chosen):
                summary = metrics.aggregate([s.metrics[method] for s in chosen])
            else:
                summary = {k: math.nan for k in METRIC_COLUMNS}
                summary.update(num_frames=0.0, num_sequences=float(len(chosen)))
            rows.append(
                {
                    "scope": scope,
                    "method": method,
                    "sequence_id": "",
                    "grounded": scope == "overall_grounded",
                    **{k: summary[k] for k in METRIC_COLUMNS},
                    "num_frames": summary["num_frames"],
                    "num_sequences": summary["num_sequences"],
                }
            )
    return rows


def assemble_result(plan: EvalPlan, batches: Sequence[BatchResult], seconds: float) -> EvalResult:
    """Rows, overall rows and traces of a run from its batches (in plan order)."""
    scores = [s for b in batches for s in b.scores]
    if not scores:
        reasons = "; ".join(
            f"{s['sequence_id']}: {s['reason']}" for b in batches for s in b.skipped
        )
        raise ValueError(f"no sequence could be evaluated ({reasons})")
    return EvalResult(
        plan=plan,
        rows=[row for s in scores for row in _sequence_rows(s)],
        overall=_overall_rows(scores),
        traces=[s for s in scores if s.roots],
        skipped=[s for b in batches for s in b.skipped],
        seconds=seconds,
    )


def plotted_sequences(sequence_ids: Sequence[str], count: int) -> list[str]:
    """``count`` of ``sequence_ids`` spread evenly over their order, first and last included
    (all of them when there are no more than ``count``; none for ``count <= 0``)."""
    ids = list(sequence_ids)
    if count <= 0 or not ids:
        return []
    if count >= len(ids):
        return ids
    if count == 1:
        return ids[:1]
    step = (len(ids) - 1) / (count - 1)
    return [ids[round(i * step)] for i in range(count)]


def evaluate_plan(
    plan: EvalPlan,
    *,
    batch_sequences: int = 8,
    plot_sequences: int = DEFAULT_PLOT_SEQUENCES,
    on_progress: Callable[[int, int], None] | None = None,
    batch_runner: Callable[..., BatchResult] = evaluate_batch_fn,
) -> EvalResult:
    """Evaluate every sequence of a plan, ``batch_sequences`` at a time.

    Args:
        plan: from :func:`plan_evaluation`.
        batch_sequences: sequences per recovery call (their windows are batched together,
            ``plan.recovery.batch_windows`` per forward pass).
        plot_sequences: N sequences spread evenly over the plan's order (first and last
            included) keep their trajectories for the plots: the ids sort by content, so a
            spread shows different motions, not N takes of the first.
        on_progress: called with ``(sequences done, total)`` after each batch.
        batch_runner: :func:`evaluate_batch_fn` or its task :data:`evaluate_batch`.

    Returns:
        :class:`EvalResult`.
    """
    if batch_sequences < 1:
        raise ValueError(f"batch_sequences must be >= 1, got {batch_sequences}")
    start = time.perf_counter()
    ids = list(plan.sequence_ids)
    keep = plotted_sequences(ids, plot_sequences)
    batches = []
    for first in range(0, len(ids), batch_sequences):
        chunk = ids[first : first + batch_sequences]
        batches.append(batch_runner(plan, chunk, [s for s in chunk if s in keep]))
        if on_progress is not None:
            on_progress(first + len(chunk), len(ids))
    return assemble_result(plan, batches, time.perf_counter() - start)


def evaluate_checkpoint(
    store: str,
    checkpoint: str | None = None,
    split: str = "test",
    protocol: EvalProtocol | str = "standard",
    recovery_config: RecoveryConfig | None = None,
    noise_px: float = 0.0,
    drop_rate: float = 0.0,
    max_sequences: int | None = None,
    **options: Any,
) -> EvalResult:
    """Evaluate a checkpoint and both baselines on a store's split (no files written, no
    Prefect): :func:`plan_evaluation` then :func:`evaluate_plan`.

    Args:
        store, checkpoint, split, protocol, noise_px, drop_rate, max_sequences: see
            :func:`plan_evaluation`.
        recovery_config: the sampling config; None = the checkpoint's window with DDIM 10.
        options: further keywords of :func:`plan_evaluation` (``joint_set``, ``sampler``,
            ``steps``, ``seed``, ``device``, ``output_dir``) and of :func:`evaluate_plan`
            (``batch_sequences``, ``plot_sequences``, ``on_progress``).

    Returns:
        :class:`EvalResult`; ``write_report(result, folder)`` writes its report.
    """
    run_keys = {"batch_sequences", "plot_sequences", "on_progress"}
    run_options = {k: v for k, v in options.items() if k in run_keys}
    plan_options = {k: v for k, v in options.items() if k not in run_keys}
    plan = plan_evaluation(
        store,
        split,
        checkpoint,
        protocol,
        recovery_config,
        noise_px,
        drop_rate,
        max_sequences,
        **plan_options,
    )
    return evaluate_plan(plan, **run_options)


def compare_settings(
    store: str,
    checkpoint: str | None,
    settings: Sequence[Mapping[str, Any]],
    split: str = "test",
    protocol: EvalProtocol | str = "standard",
    max_sequences: int | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Evaluate several settings and return their overall rows side by side.

    Args:
        store, checkpoint, split, protocol, max_sequences: as :func:`evaluate_checkpoint`.
        settings: one mapping per run with any of ``noise_px``, ``drop_rate``, ``sampler``,
            ``steps``, ``seed`` (e.g. ``[{"noise_px": 2}, {"steps": 25}]``).
        options: further keywords of :func:`evaluate_checkpoint` shared by all runs.

    Returns:
        Every run's ``overall`` and ``overall_grounded`` rows, each with the run's
        ``noise_px``, ``drop_rate``, ``sampler``, ``steps``, ``protocol`` and
        ``checkpoint_sha256`` columns.
    """
    allowed = {"noise_px", "drop_rate", "sampler", "steps", "seed"}
    out = []
    for setting in settings:
        unknown = set(setting) - allowed
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        result = evaluate_checkpoint(
            store,
            checkpoint,
            split,
            protocol,
            None,
            float(setting.get("noise_px", 0.0)),
            float(setting.get("drop_rate", 0.0)),
            max_sequences,
            sampler=setting.get("sampler", DEFAULT_SAMPLER),
            steps=int(setting.get("steps", DEFAULT_STEPS)),
            seed=int(setting.get("seed", DEFAULT_SEED)),
            **options,
        )
        header = result.plan.header()
        keep = ("noise_px", "drop_rate", "sampler", "steps", "protocol", "checkpoint_sha256")
        out.extend({**row, **{k: header[k] for k in keep}} for row in result.overall)
    return out


# ---------------------------------------------------------------------------------------------
# Reports


def _fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float | int | np.floating | np.integer):
        value = float(value)
        return "-" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def format_overall_table(overall: Sequence[Mapping[str, Any]]) -> str:
    """Overall rows as a fixed-width text table: one line per (scope, method)."""
    columns = ["scope", "method", "seqs", "frames"] + [METRIC_TITLES[k] for k in METRIC_COLUMNS]
    lines = []
    for row in overall:
        lines.append(
            [
                "grounded" if row["scope"] == "overall_grounded" else "all",
                row["method"],
                _fmt(row["num_sequences"], 0),
                _fmt(row["num_frames"], 0),
                *(_fmt(row[k]) for k in METRIC_COLUMNS),
            ]
        )
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(columns)]
    out = [
        "  ".join(
            c.rjust(w) if i > 1 else c.ljust(w)
            for i, (c, w) in enumerate(zip(columns, widths, strict=True))
        )
    ]
    for line in lines:
        out.append(
            "  ".join(
                c.rjust(w) if i > 1 else c.ljust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
        )
    return "\n".join(out)


def _pretty_json(value: Mapping[str, Any]) -> str:
    """One key per line, values compact (ranges stay on one line)."""
    items = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items()]
    return "{\n" + ",\n".join(items) + "\n}"


def _markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class ReportFiles:
    """Paths of a written report.

    Attributes:
        output_dir: the folder.
        markdown, csv: ``report.md`` and ``report.csv``.
        plots: the PNG files.
    """

    output_dir: str
    markdown: str
    csv: str
    plots: tuple[str, ...]


def _markdown(result: EvalResult, plots: Sequence[str]) -> str:
    plan = result.plan
    md: list[str] = [
        f"# Evaluation: {plan.store_name} / {plan.split}",
        "",
        f"- checkpoint: `{plan.checkpoint}`",
        f"- checkpoint sha256: `{plan.checkpoint_sha256}`",
        f"- store: `{plan.store_url}` (version `{plan.store_version}`)",
        f"- store manifest fingerprint: `{plan.store_fingerprint}`",
        f"- joint set: {plan.model_joint_set} (metrics on "
        f"{'the 17 COCO joints' if plan.model_joint_set == 'coco17_pelvis' else 'the 22 SMPL joints'})",
        f"- sequences: {len({r['sequence_id'] for r in result.rows})} evaluated, {len(result.skipped)} skipped; {result.seconds:.0f} s",
        f"- 2D input: ground-truth projection, pixel noise {plan.noise_px:g} px, "
        f"drop rate {plan.drop_rate:g}",
        f"- protocol `{plan.protocol.name}` (fixed seed; scenes are a pure function of the "
        "seed and the sequence id, see `mocap_core/evaluation.py`):",
        "",
        "```json",
        _pretty_json(plan.protocol.model_dump(mode="json")),
        "```",
        "",
        "- recovery config:",
        "",
        "```json",
        _pretty_json(plan.recovery.model_dump(mode="json")),
        "```",
        "",
        "Methods: **model** = the checkpoint through the recovery loop; **upper_bound** = "
        "triangulation of the same virtual rigs holding exact ground-truth projections (view 0 "
        "the observation); **ground_contact** = the lowest foot planted (its ray cut at "
        f"{FOOT_KEYPOINT_HEIGHT_M[plan.model_joint_set]:g} m above the ground), every joint on "
        "its ray at the contact point's depth. Units: mm, RTE also %, jitter m/s^3, "
        "acceleration error m/s^2, foot sliding mm/frame. Overall = frame-weighted means.",
        "",
        "## Overall",
        "",
    ]
    header = ["scope", "method", "sequences", "frames"] + [METRIC_TITLES[k] for k in METRIC_COLUMNS]
    md.append(
        _markdown_table(
            header,
            (
                [
                    "feet on ground" if r["scope"] == "overall_grounded" else "all",
                    METHOD_LABELS[r["method"]],
                    _fmt(r["num_sequences"], 0),
                    _fmt(r["num_frames"], 0),
                    *(_fmt(r[k]) for k in METRIC_COLUMNS),
                ]
                for r in result.overall
            ),
        )
    )
    comparison = result.contact_comparison()
    wins = sum(c["model_better"] for c in comparison)
    md += [
        "",
        "## Clips whose feet touch the ground: model vs. ground-contact heuristic",
        "",
        f"Abs-MPJPE (mm), no alignment. The model is below the heuristic on {wins} of "
        f"{len(comparison)} clips.",
        "",
    ]
    if comparison:
        md.append(
            _markdown_table(
                ["sequence", "model", "ground contact", "model better"],
                (
                    [
                        f"`{c['sequence_id']}`",
                        _fmt(c["model_abs_mpjpe_mm"]),
                        _fmt(c["ground_contact_abs_mpjpe_mm"]),
                        _fmt(c["model_better"]),
                    ]
                    for c in comparison
                ),
            )
        )
    md += ["", "## Per sequence", ""]
    seq_header = ["sequence", "method", "feet on ground", "distance m", "in view", "frames"]
    seq_header += [METRIC_TITLES[k] for k in METRIC_COLUMNS]
    md.append(
        _markdown_table(
            seq_header,
            (
                [
                    f"`{r['sequence_id']}`",
                    r["method"],
                    _fmt(r["grounded"]),
                    f"{r['root_distance_min_m']:.1f}-{r['root_distance_max_m']:.1f}",
                    f"{100 * r['in_view_fraction']:.0f}%",
                    _fmt(r["num_frames"], 0),
                    *(_fmt(r[k]) for k in METRIC_COLUMNS),
                ]
                for r in result.rows
            ),
        )
    )
    if result.skipped:
        md += ["", "## Skipped", ""]
        md += [f"- `{s['sequence_id']}`: {s['reason']}" for s in result.skipped]
    if plots:
        md += ["", "## Plots", ""]
        md += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(md) + "\n"


_METHOD_COLOURS = {"model": "tab:blue", "upper_bound": "tab:green", "ground_contact": "tab:red"}


def _plot_errors_per_sequence(result: EvalResult, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = list(dict.fromkeys(r["sequence_id"] for r in result.rows))
    by_key = {(r["sequence_id"], r["method"]): r for r in result.rows}
    x = np.arange(len(ids))
    width = 0.8 / len(METHODS)
    fig, axes = plt.subplots(2, 1, figsize=(max(8.0, 0.35 * len(ids) + 3), 7), dpi=110)
    try:
        for ax, key in zip(axes, ("abs_mpjpe_mm", "pa_mpjpe_mm"), strict=True):
            for i, method in enumerate(METHODS):
                values = [by_key[(s, method)][key] for s in ids]
                ax.bar(
                    x + (i - (len(METHODS) - 1) / 2) * width,
                    values,
                    width,
                    label=METHOD_LABELS[method],
                    color=_METHOD_COLOURS[method],
                )
            ax.set_ylabel(f"{METRIC_TITLES[key]} (mm)")
            ax.grid(True, axis="y", alpha=0.3)
        axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        axes[1].set_xticks(x, [s.split("#")[0][-28:] for s in ids], rotation=80, fontsize=6)
        axes[0].set_xticks(x, [""] * len(ids))
        axes[0].set_title(f"Error per sequence ({result.plan.store_name} / {result.plan.split})")
        fig.tight_layout()
        fig.savefig(png)
    finally:
        plt.close(fig)


def _plot_traces(result: EvalResult, png_time: Path, png_top: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traces = result.traces
    fps = result.plan.fps
    fig, axes = plt.subplots(len(traces), 1, figsize=(8, 2.4 * len(traces)), dpi=110, squeeze=False)
    try:
        for ax, trace in zip(axes[:, 0], traces, strict=True):
            for method in METHODS:
                error = trace.abs_error_mm[method]
                ax.plot(
                    np.arange(len(error)) / fps,
                    error,
                    color=_METHOD_COLOURS[method],
                    label=METHOD_LABELS[method],
                    lw=1.2,
                )
            ax.set_title(trace.sequence_id, fontsize=8)
            ax.set_ylabel("Abs error (mm)")
            ax.grid(True, alpha=0.3)
        axes[0, 0].legend(fontsize=7)
        axes[-1, 0].set_xlabel("time (s)")
        fig.tight_layout()
        fig.savefig(png_time)
    finally:
        plt.close(fig)

    columns = min(2, len(traces))
    rows = math.ceil(len(traces) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(4.5 * columns, 4.5 * rows), dpi=110, squeeze=False
    )
    try:
        for ax in axes.flat[len(traces) :]:
            ax.axis("off")
        for ax, trace in zip(axes.flat, traces, strict=False):
            ax.plot(trace.gt_root[:, 0], trace.gt_root[:, 2], color="black", lw=2, label="truth")
            for method in METHODS:
                root = trace.roots[method]
                ax.plot(
                    root[:, 0],
                    root[:, 2],
                    color=_METHOD_COLOURS[method],
                    lw=1.2,
                    label=METHOD_LABELS[method],
                )
            ax.plot([0.0], [0.0], marker="^", color="grey", ms=9, label="camera")
            ax.set_aspect("equal", adjustable="datalim")
            ax.invert_yaxis()  # the camera looks along -Z: subjects appear "up" the plot
            ax.set_xlabel("x (m)")
            ax.set_ylabel("z (m)")
            ax.set_title(trace.sequence_id, fontsize=8)
            ax.grid(True, alpha=0.3)
        axes.flat[0].legend(fontsize=7)
        fig.suptitle("Top view: pelvis trajectories (camera at the origin)")
        fig.tight_layout()
        fig.savefig(png_top)
    finally:
        plt.close(fig)


def write_report_fn(result: EvalResult, output_dir: str | None = None) -> ReportFiles:
    """Write ``report.md``, ``report.csv`` and the PNG plots of a result.

    Args:
        result: from :func:`evaluate_plan` / :func:`evaluate_checkpoint`.
        output_dir: the folder (created); default ``result.plan.output_dir``.

    Returns:
        :class:`ReportFiles`.
    """
    import pandas as pd

    folder = Path(output_dir or result.plan.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    plots = [folder / "errors_per_sequence.png"]
    _plot_errors_per_sequence(result, plots[0])
    if result.traces:
        plots += [folder / "abs_error_over_time.png", folder / "top_view.png"]
        _plot_traces(result, plots[1], plots[2])
    csv_path = folder / "report.csv"
    tmp = csv_path.with_suffix(".csv.tmp")
    pd.DataFrame(result.csv_rows()).to_csv(tmp, index=False)
    tmp.replace(csv_path)
    md_path = folder / "report.md"
    md_path.write_text(_markdown(result, [str(p) for p in plots]), encoding="utf-8")
    return ReportFiles(str(folder), str(md_path), str(csv_path), tuple(str(p) for p in plots))


write_report = task(write_report_fn, name="write-eval-report", **_TASK_OPTIONS)
"""Prefect task of :func:`write_report_fn`."""

plan_evaluation_task = task(plan_evaluation, name="plan-evaluation", cache_policy=NO_CACHE)
"""Prefect task of :func:`plan_evaluation` (no retries: its errors are configuration)."""
