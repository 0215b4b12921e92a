"""demo-full: the whole pipeline on a small procedural catalog (``make demo-full``).

Every stage a user runs on their own data, each by its own flow (subflows of this one), with
no data and no network, in about four minutes on a 2-core CPU:

1. **data**: ``num_clips`` procedural walks (varied speeds, curves, body sizes; 8 s each)
   written as Bandai-Namco-named BVH files, and a catalog YAML reading them
   (:func:`data_catalog.example_data.write_walk_catalog`; the last clip is held out for
   test, the one before it for validation);
2. **prepare** (``prepare-datasets``): the catalog into a Zarr motion store (``smpl22`` and
   ``coco17``);
3. **train** the ``tiny`` profile for ``coco17`` briefly: ``pretrain-2d`` then
   ``finetune-multiview`` from it, each stopped by its time budget (``stage1_minutes``,
   ``stage2_minutes``) or step count with a checkpoint; runs start afresh every time;
4. **recover** the demo's example input with the new stage-2 checkpoint (the ``demo`` flow:
   archive, previews, picture, scores against the example's truth);
5. **evaluate** that checkpoint and both baselines on the store's test split
   (``evaluate``: report.md, report.csv, plots).

A model trained for three minutes on twelve walks is a smoke test of the pipeline, not a
usable model: its errors are large, and the summary says so by printing them. Outputs under
``WORK/demo-full`` (``MOCAP2TO3_HOME``, default ``./work``)::

    data/bvh/*.bvh, data/catalog.yaml     the procedural catalog
    data/stores/demo_walks/               the prepared store
    runs/pretrain-2d/, runs/finetune-multiview/   checkpoints, history.csv, loss_curve.png
    recover/                              the demo on the new checkpoint (motion.archive, demo.png)
    eval/                                 report.md, report.csv, plots
    summary.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from data_catalog.paths import work_dir
from flows.demo import demo
from flows.evaluate import evaluate
from flows.prepare import format_row, run_prepare
from flows.train import finetune_multiview, pretrain_2d
from tasks.demo import remove_tree, write_demo_catalog

#: The catalog's one dataset.
DATASET = "demo_walks"
#: The demo's joint set (the example input is COCO-17; the model carries the added pelvis).
JOINT_SET = "coco17"
DEFAULT_CLIPS = 12
#: Frames per walk: 8 s at 30 fps, longer than the tiny profile's 120-frame window.
CLIP_FRAMES = 240
DEFAULT_STAGE1_MINUTES = 1.5
DEFAULT_STAGE2_MINUTES = 1.5


def _best_or_last(result: dict[str, Any]) -> str:
    """The run's best checkpoint (lowest validation loss) when it has one, else its last."""
    best = result.get("best_checkpoint") or ""
    return best if best and Path(best).is_file() else result["checkpoint"]


def _display(path: str | Path) -> str:
    try:
        return str(Path(path).absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def format_full_report(summary: dict[str, Any]) -> str:
    """The printed summary of a demo-full run (see :func:`demo_full`)."""
    stage1, stage2 = summary["stage1"], summary["stage2"]
    lines = [
        f"mocap2to3 demo --full: the whole pipeline in {summary['seconds']:.0f} s",
        f"  data:     {_display(summary['catalog'])} ({summary['clips']} procedural walks "
        f"as BVH in {_display(summary['bvh_dir'])})",
        f"  prepare:  {summary['prepare']}",
        f"  store:    {_display(summary['store'])}",
    ]
    for name, stage in (("stage 1", stage1), ("stage 2", stage2)):
        lines.append(
            f"  {name}:  {stage['steps']} steps in {stage['elapsed_s']:.0f} s ({stage['stopped']}), "
            f"validation loss {stage['initial_val_loss']:.3f} -> {stage['final_val_loss']:.3f}; "
            f"{_display(stage['checkpoint_used'])}"
        )
        lines.append(f"            loss curve: {_display(stage['loss_curve'])}")
    lines.append("  recover:  the demo's example with the new checkpoint:")
    lines.extend("  " + line for line in summary["recover_report"].splitlines()[1:])
    lines.append(
        f"  evaluate: {summary['evaluate_headline']}\n"
        f"            report: {_display(summary['evaluate_report'])}"
    )
    lines.extend("            " + line for line in summary["evaluate_table"].splitlines())
    lines.append(
        "  (a model trained for minutes on a dozen walks checks the pipeline, not accuracy: "
        "`make demo` uses the release checkpoint)"
    )
    lines.append(f"  summary:  {_display(summary['summary_json'])}")
    return "\n".join(lines)


@flow(name="demo-full", log_prints=True)
def demo_full(
    output_dir: str | None = None,
    num_clips: int = DEFAULT_CLIPS,
    stage1_minutes: float = DEFAULT_STAGE1_MINUTES,
    stage2_minutes: float = DEFAULT_STAGE2_MINUTES,
    stage1_steps: int | None = None,
    stage2_steps: int | None = None,
    sampling_steps: int = 10,
    clip_frames: int = CLIP_FRAMES,
    device: str = "auto",
    seed: int = 42,
) -> dict[str, Any]:
    """Prepare a small procedural catalog, train ``tiny`` briefly, recover and evaluate.

    Args:
        output_dir: the folder of everything (default ``WORK/demo-full``); its ``runs``
            subfolder is emptied first so that training starts afresh.
        num_clips: procedural walks in the catalog, >= 3 (one test, one validation).
        stage1_minutes, stage2_minutes: training time budget of each stage, minutes.
        stage1_steps, stage2_steps: stop each stage at this step if it comes first
            (default: the profile's step counts, far beyond the budgets on a CPU).
        sampling_steps: DDIM steps of the recovery and the evaluation.
        clip_frames: frames per walk (>= the tiny profile's 120-frame window).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` for training and evaluation.
        seed: seed of the walks, the training runs and the recovery.

    Returns:
        Paths and figures of every stage, and ``report`` (the printed text).
    """
    start = time.perf_counter()
    log = get_run_logger()
    out = (Path(output_dir) if output_dir else work_dir() / "demo-full").absolute()
    data_dir, runs_dir = out / "data", out / "runs"
    if stage1_minutes <= 0 or stage2_minutes <= 0:
        raise ValueError("stage1_minutes and stage2_minutes must be positive")

    catalog = write_demo_catalog(str(data_dir), num_clips, clip_frames, seed, DATASET)
    rows = run_prepare(catalog_path=catalog, only=[DATASET])
    (row,) = rows
    if row["status"] == "error":
        raise RuntimeError(f"prepare failed: {format_row(row)}")
    store = str(data_dir / "stores" / DATASET)

    remove_tree(str(runs_dir))
    common = dict(stores=[store], profile="tiny", joint_set=JOINT_SET, device=device, seed=seed)
    stage1 = pretrain_2d(
        run_dir=str(runs_dir / "pretrain-2d"),
        steps=stage1_steps,
        time_budget_s=60.0 * stage1_minutes,
        **common,
    )
    stage1["checkpoint_used"] = stage1["checkpoint"]  # stage 2 continues from the last state
    stage2 = finetune_multiview(
        init_checkpoint=stage1["checkpoint"],
        run_dir=str(runs_dir / "finetune-multiview"),
        steps=stage2_steps,
        time_budget_s=60.0 * stage2_minutes,
        **common,
    )
    model = _best_or_last(stage2)
    stage2["checkpoint_used"] = model
    log.info("trained %s; recovering the demo's example with it", model)

    recovered = demo(
        output_dir=str(out / "recover"), checkpoint=model, steps=sampling_steps, seed=seed
    )
    evaluated = evaluate(
        store=store,
        split="test",
        checkpoint=model,
        joint_set=JOINT_SET,
        steps=sampling_steps,
        output_dir=str(out / "eval"),
        device=device,
    )
    report_lines = evaluated["report"].splitlines()
    summary: dict[str, Any] = {
        "output_dir": str(out),
        "catalog": catalog,
        "bvh_dir": str(data_dir / "bvh"),
        "clips": num_clips,
        "prepare": format_row(row),
        "store": store,
        "stage1": {k: v for k, v in stage1.items() if k != "report"},
        "stage2": {k: v for k, v in stage2.items() if k != "report"},
        "checkpoint": model,
        "recover_report": recovered["report"],
        "recover_scores": recovered["scores"],
        "picture": recovered["picture"],
        "archive": recovered["archive"]["path"],
        "evaluate_headline": report_lines[0],
        "evaluate_table": "\n".join(
            line for line in report_lines[1:] if not line.startswith(("report:", "csv:"))
        ),
        "evaluate_report": evaluated["report_md"],
        "evaluate_overall": evaluated["overall"],
        "summary_json": str(out / "summary.json"),
    }
    summary["seconds"] = round(time.perf_counter() - start, 1)
    summary["report"] = format_full_report(summary)
    Path(summary["summary_json"]).write_text(
        json.dumps({k: v for k, v in summary.items() if k != "report"}, indent=2, default=str)
        + "\n"
    )
    log.info("%s", summary["report"])
    return summary
