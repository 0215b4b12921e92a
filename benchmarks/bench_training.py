"""Train stage 1 then stage 2 for a fixed time or step budget and print the figures.

Usage::

    python benchmarks/bench_training.py [--stores bandai1 bandai2] [--profile tiny]
        [--minutes 15 15] [--steps 100000 100000] [--run-dir DIR] [--device auto]

Runs the plain training loop (:func:`tasks.training.run_training`, no Prefect) on the given
stores (catalog names or store folders; default the prepared Bandai-Namco stores): stage 1
(``pretrain-2d``) from scratch, then stage 2 (``finetune-multiview``) from stage 1's last
checkpoint. Each stage stops at its step limit or time budget, whichever comes first (the
time counts training steps only, not validation or checkpoints). Prints per stage: steps,
samples/s, the validation-loss curve, the best and final validation loss against step 0's,
peak resident memory of the training process (and of a data worker), and writes each stage's
loss-curve PNG into its run folder.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from datetime import datetime
from pathlib import Path

import torch
from machine import cpu_name

from data_catalog.paths import work_dir
from flows.train import make_train_config
from mocap_core.training import STAGE_MULTIVIEW, STAGE_PRETRAIN
from tasks.training import TrainResult, run_training, save_loss_curve


def report(result: TrainResult, wall_s: float) -> None:
    """Print one stage's figures."""
    print(f"\n== {result.stage} on {result.device} ==")
    print(
        f"steps: {result.steps} (stopped at {result.stopped}); wall time {wall_s:.0f} s, of "
        f"which training {result.elapsed_s:.0f} s"
    )
    print(f"throughput: {result.samples_per_s:.2f} samples/s")
    print(
        f"validation loss ({result.val_split}): step 0 {result.initial_val_loss:.4f}, "
        f"final {result.final_val_loss:.4f}, best {result.best_val_loss:.4f} "
        f"(best / step 0 = {result.best_val_loss / result.initial_val_loss:.3f})"
    )
    print(
        f"peak memory: {result.peak_rss_mb:.0f} MiB training process"
        + (
            f", {result.peak_worker_rss_mb:.0f} MiB largest data worker"
            if result.peak_worker_rss_mb
            else ""
        )
    )
    print("step  train_loss  val_loss  samples/s  elapsed_s")
    for row in result.history:
        if row.get("val_loss") is None:
            continue
        train = row["train_loss"]
        print(
            f"{row['step']:>4}  {'-' if math.isnan(train) else f'{train:.4f}':>10}  "
            f"{row['val_loss']:.4f}  {row['samples_per_s']:>9.2f}  {row['elapsed_s']:>9.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", nargs="+", default=["bandai1", "bandai2"])
    parser.add_argument("--profile", default="tiny", choices=["tiny", "small", "paper"])
    parser.add_argument("--joint-set", default="smpl22", choices=["smpl22", "coco17"])
    parser.add_argument(
        "--minutes",
        nargs=2,
        type=float,
        default=[15.0, 15.0],
        metavar=("STAGE1", "STAGE2"),
        help="training-time budget per stage, minutes (default 15 15)",
    )
    parser.add_argument(
        "--steps",
        nargs=2,
        type=int,
        default=[100_000, 100_000],
        metavar=("STAGE1", "STAGE2"),
        help="step limit per stage (default: effectively the time budget decides)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default: the profile's")
    parser.add_argument("--val-every", type=int, default=None, help="default: the profile's")
    parser.add_argument("--run-dir", default=None, help="default: WORK/runs/bench-<time>")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=None, help="data workers (default auto)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    root = Path(args.run_dir or work_dir() / "runs" / f"bench-{datetime.now():%Y%m%d-%H%M%S}")
    print(
        f"machine: {cpu_name()} ({platform.machine()}), {os.cpu_count()} logical CPUs, "
        f"torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")
    )
    print(f"run folder: {root}")
    init = None
    for stage, minutes, steps in (
        (STAGE_PRETRAIN, args.minutes[0], args.steps[0]),
        (STAGE_MULTIVIEW, args.minutes[1], args.steps[1]),
    ):
        extra = {}
        if args.val_every:
            extra = dict(val_every=args.val_every, checkpoint_every=args.val_every)
        config = make_train_config(
            stage,
            args.stores,
            profile=args.profile,
            joint_set=args.joint_set,
            run_dir=str(root / stage),
            init_checkpoint=init,
            steps=steps,
            batch_size=args.batch_size,
            device=args.device,
            workers=args.workers,
            seed=args.seed,
            time_budget_s=60.0 * minutes,
            **extra,
        )
        print(
            f"\n{stage}: batch {config.batch_size}, window {config.window}, lr {config.lr:g}, "
            f"budget {minutes:g} min or {steps} steps, validation every {config.val_every}"
        )
        start = time.perf_counter()
        result = run_training(config)
        report(result, time.perf_counter() - start)
        png = save_loss_curve(
            result.history, str(root / stage / "loss_curve.png"), f"{stage} ({args.profile})"
        )
        print(f"loss curve: {png}")
        init = result.checkpoint


if __name__ == "__main__":
    main()
