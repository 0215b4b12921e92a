"""evaluate: a checkpoint and two baselines on a prepared 3D store's held-out split.

Each sequence of the split is placed before an input camera drawn from a documented, seeded
protocol (``mocap_core.evaluation``: 3-6 m from the camera in ``standard``), projected to 2D
(optionally with pixel noise and dropped joints), and recovered with the checkpoint; the
triangulation of ground-truth virtual views (upper bound) and the monocular ground-contact
heuristic run on the same 2D input. Every metric of DESIGN 5 per sequence and overall.

Tasks: ``plan-evaluation`` (every check, before any work), ``evaluate-sequences`` per batch
of sequences (one recovery call each), ``write-eval-report``. Output folder (default
``WORK/eval/<store>-<split>-<sha256[:8]>-<protocol>``): ``report.md``, ``report.csv``,
``errors_per_sequence.png``, ``abs_error_over_time.png``, ``top_view.png``. Prefect
artifacts: ``evaluate-progress`` (sequences done) and ``evaluate-<store>-<split>`` (table of
the overall rows).

Several settings side by side (noise, steps) from Python: :func:`tasks.evaluate.
compare_settings`.
"""

from __future__ import annotations

import sys
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from tasks.evaluate import (
    DEFAULT_PLOT_SEQUENCES,
    DEFAULT_SAMPLER,
    DEFAULT_SEED,
    DEFAULT_STEPS,
    METRIC_COLUMNS,
    EvalResult,
    evaluate_batch,
    evaluate_plan,
    plan_evaluation,
    plan_evaluation_task,
    write_report,
)

#: Sequences per recovery call (their windows share forward passes).
DEFAULT_BATCH_SEQUENCES = 8


def _artifact_key(text: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    return "".join(c if c.isalnum() else "-" for c in text.lower())


def _progress_bar(done: int, total: int, width: int = 30) -> None:
    filled = int(width * done / max(total, 1))
    bar = "#" * filled + "-" * (width - filled)
    end = "\n" if done >= total else ""
    # The stream, not print(): log_prints would make every redraw a log line.
    sys.stderr.write(f"\r  evaluate [{bar}] {done}/{total} sequences{end}")
    sys.stderr.flush()


def _artifact_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {
        "scope": row["scope"],
        "method": row["method"],
        "sequences": int(row["num_sequences"]),
        "frames": int(row["num_frames"]),
    }
    for key in METRIC_COLUMNS:
        value = float(row[key])
        out[key] = None if value != value else round(value, 2)  # NaN -> empty cell
    return out


def summarise(result: EvalResult, files: Any) -> dict[str, Any]:
    """The flow's return value: paths, overall rows, the ground-contact comparison and the
    printed report."""
    comparison = result.contact_comparison()
    wins = sum(c["model_better"] for c in comparison)
    report = "\n".join(
        [
            f"evaluate {result.plan.store_name}/{result.plan.split}: "
            f"{len({r['sequence_id'] for r in result.rows})} sequences, "
            f"{len(result.skipped)} skipped, {result.seconds:.0f} s "
            f"(checkpoint {result.plan.checkpoint_sha256[:12]}, protocol "
            f"{result.plan.protocol.name}, noise {result.plan.noise_px:g} px, drop "
            f"{result.plan.drop_rate:g}, {result.plan.recovery.sampler} "
            f"{result.plan.recovery.steps} steps)",
            result.table(),
            f"feet on the ground: model below the heuristic's Abs-MPJPE on {wins} of "
            f"{len(comparison)} clips",
            f"report: {files.markdown}",
            f"csv:    {files.csv}",
        ]
    )
    return {
        "output_dir": files.output_dir,
        "report_md": files.markdown,
        "report_csv": files.csv,
        "plots": list(files.plots),
        "overall": result.overall,
        "contact_comparison": comparison,
        "skipped": result.skipped,
        "checkpoint_sha256": result.plan.checkpoint_sha256,
        "seconds": result.seconds,
        "report": report,
    }


@flow(name="evaluate", log_prints=True)
def evaluate(
    store: str,
    split: str = "test",
    checkpoint: str | None = None,
    joint_set: str | None = None,
    protocol: str = "standard",
    sampler: str = DEFAULT_SAMPLER,
    steps: int = DEFAULT_STEPS,
    input_noise_px: float = 0.0,
    drop_rate: float = 0.0,
    max_sequences: int | None = None,
    output_dir: str | None = None,
    seed: int = DEFAULT_SEED,
    post_process: bool = True,
    samples: int | None = None,
    device: str = "auto",
    batch_sequences: int = DEFAULT_BATCH_SEQUENCES,
    plot_sequences: int = DEFAULT_PLOT_SEQUENCES,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a checkpoint and both baselines on a store's split; write the report.

    Args:
        store: catalog dataset name or prepared 3D store folder.
        split: ``train``, ``val`` or ``test``.
        checkpoint: a finetune-multiview checkpoint; None = the release checkpoint of the
            joint set (``checkpoints/<smpl22|coco17>.pt``).
        joint_set: ``smpl22`` or ``coco17`` (store subgroup and release checkpoint); None =
            the checkpoint's, else smpl22 when the store has it.
        protocol: scene preset of :data:`mocap_core.evaluation.PROTOCOLS`.
        sampler, steps, seed: recovery sampling (DDIM 10 steps, seed 42 by default).
        post_process: keep the checkpoint's post-processing (ground anchor, smoothing);
            False evaluates the method's output as is.
        samples: diffusion samples averaged per window; None = the checkpoint's setting.
        input_noise_px: std of the Gaussian pixel noise of the simulated detector.
        drop_rate: probability that the detector misses a joint.
        max_sequences: only the first N sequences of the split.
        output_dir: report folder (default under ``WORK/eval``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        batch_sequences: sequences per recovery call.
        plot_sequences: sequences drawn in the over-time and top-view plots.
        show_progress: draw a progress bar on stderr (the CLI sets it).

    Returns:
        ``output_dir``, ``report_md``, ``report_csv``, ``plots``, ``overall`` (rows),
        ``contact_comparison``, ``skipped``, ``checkpoint_sha256``, ``seconds``, ``report``
        (text the CLI prints).
    """
    log = get_run_logger()
    plan = plan_evaluation_task(
        store,
        split,
        checkpoint,
        protocol,
        None,
        input_noise_px,
        drop_rate,
        max_sequences,
        joint_set=joint_set,
        sampler=sampler,
        steps=steps,
        seed=seed,
        post_process=post_process,
        num_samples=samples,
        device=device,
        output_dir=output_dir,
    )
    total = len(plan.sequence_ids)
    log.info(
        "evaluate %s/%s: %d sequences, checkpoint %s (%s), protocol %s, %s %d steps on %s",
        plan.store_name,
        plan.split,
        total,
        plan.checkpoint,
        plan.checkpoint_sha256[:12],
        plan.protocol.name,
        plan.recovery.sampler,
        plan.recovery.steps,
        plan.device,
    )
    progress_id = create_progress_artifact(
        progress=0.0,
        key="evaluate-progress",
        description=f"evaluate {plan.store_name}/{plan.split}: sequences done out of {total}",
    )
    if show_progress:
        _progress_bar(0, total)

    def on_progress(done: int, count: int) -> None:
        update_progress_artifact(progress_id, 100.0 * done / max(count, 1))
        if show_progress:
            _progress_bar(done, count)

    result = evaluate_plan(
        plan,
        batch_sequences=batch_sequences,
        plot_sequences=plot_sequences,
        on_progress=on_progress,
        batch_runner=evaluate_batch,
    )
    files = write_report(result)
    create_table_artifact(
        table=[_artifact_row(row) for row in result.overall],
        key=_artifact_key(f"evaluate-{plan.store_name}-{plan.split}"),
        description=(
            f"{plan.store_name}/{plan.split}, checkpoint {plan.checkpoint_sha256[:12]}, "
            f"protocol {plan.protocol.name}, noise {plan.noise_px:g} px, drop "
            f"{plan.drop_rate:g}, {plan.recovery.sampler} {plan.recovery.steps}: overall "
            f"metrics per method (mm; report {files.markdown})"
        ),
    )
    summary = summarise(result, files)
    for skipped in result.skipped:
        log.warning("skipped %s: %s", skipped["sequence_id"], skipped["reason"])
    # The CLI prints the whole table; the log keeps the headline and where the report is.
    log.info("%s\n  report: %s", summary["report"].splitlines()[0], files.markdown)
    return summary


def check_evaluate_arguments(**kwargs: Any) -> None:
    """Run every check of :func:`tasks.evaluate.plan_evaluation` before Prefect starts.

    Raises:
        tasks.evaluate.EvaluationConfigError: the message says what is wrong.
    """
    plan_evaluation(**kwargs)
