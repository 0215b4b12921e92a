"""The ``mocap2to3`` command line: one subcommand per flow.

A user never needs to know Prefect to start work: each subcommand validates its arguments,
runs the matching flow in this process (Prefect's temporary local server records it), and
prints a summary. The same flows are deployable from ``prefect.yaml``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from data_catalog.paths import configure_prefect_environment

DESCRIPTION = """\
mocap2to3: absolute, metric 3D human motion from one calibrated camera.

2D keypoints seen by one camera are lifted to 3D by a multi-view diffusion model that
imagines the same motion from other cameras, whose views are triangulated (Mocap-2-to-3).
Each subcommand runs one pipeline; `mocap2to3 SUBCOMMAND --help` explains it.
"""


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="recover the bundled two-person example (--full: the whole pipeline)",
        description=(
            "Run a demo on built-in defaults, with no data and no network. By default: the "
            "bundled example input (examples/two_walkers: COCO-17 2D tracks of two "
            "procedurally generated people and the calibrated camera that saw them) is "
            "recovered with the release checkpoint checkpoints/coco17.pt into a Parquet "
            "motion archive with previews, scored against the example's ground truth "
            "beside the ground-contact baseline, and drawn (WORK/demo/demo.png); a summary "
            "says where everything is. --full runs the whole pipeline: a small procedural "
            "BVH catalog is prepared, the tiny profile trained briefly (both stages), the "
            "example recovered and the store's test split evaluated (WORK/demo-full). "
            "--geometry runs the geometric demo: a motion before a camera, a virtual rig, "
            "ground pointmaps, triangulation back, and a picture (WORK/geometry-demo)."
        ),
        epilog=(
            "examples: mocap2to3 demo; mocap2to3 demo --checkpoint runs/best.pt; "
            "mocap2to3 demo --full --stage1-minutes 1 --stage2-minutes 1; "
            "mocap2to3 demo --geometry"
        ),
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--full",
        action="store_true",
        help="the whole pipeline: prepare, train tiny briefly, recover, evaluate",
    )
    mode.add_argument(
        "--geometry",
        action="store_true",
        help="the geometric demo (rig, pointmaps, triangulation) instead",
    )
    p.add_argument(
        "--output",
        default=None,
        help="output folder (default: WORK/demo, WORK/demo-full or WORK/geometry-demo)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed (default 42; --geometry: 0)")
    recovery = p.add_argument_group("recovery (the default demo, and the recovery of --full)")
    recovery.add_argument(
        "--checkpoint",
        default=None,
        metavar="FILE",
        help="coco17 finetune-multiview checkpoint (default: $MOCAP2TO3_DEMO_CHECKPOINT, "
        "else the release checkpoint checkpoints/coco17.pt)",
    )
    recovery.add_argument(
        "--example",
        default=None,
        metavar="DIR",
        help="an example folder (input/scene.npz, input/camera.json, truth.npz) instead of "
        "the bundled examples/two_walkers",
    )
    recovery.add_argument(
        "--steps", type=int, default=None, help="sampling steps (default DDIM 10)"
    )
    recovery.add_argument(
        "--picture",
        default=None,
        metavar="PNG",
        help="also save the picture here (the README's is docs/images/demo.png)",
    )
    full = p.add_argument_group("--full")
    full.add_argument(
        "--clips", type=int, default=None, help="procedural walks in the catalog (default 12)"
    )
    full.add_argument(
        "--stage1-minutes",
        type=float,
        default=None,
        help="pretrain-2d time budget (default 1.5)",
    )
    full.add_argument(
        "--stage2-minutes",
        type=float,
        default=None,
        help="finetune-multiview time budget (default 1.5)",
    )
    full.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    geometry = p.add_argument_group("--geometry")
    geometry.add_argument(
        "--pixel-noise",
        type=float,
        default=2.0,
        help="std of Gaussian pixel noise added to the projections, px (default 2)",
    )
    geometry.add_argument(
        "--procedural",
        action="store_true",
        help="use the procedural walk even when real data is available",
    )
    p.set_defaults(run=_run_demo)


def _demo_option_errors(args: argparse.Namespace) -> list[str]:
    """Options given that the chosen demo does not use, and bad values."""
    problems = []
    full_only = {
        "--clips": args.clips,
        "--stage1-minutes": args.stage1_minutes,
        "--stage2-minutes": args.stage2_minutes,
    }
    if not args.full:
        problems += [f"{name} needs --full" for name, value in full_only.items() if value]
    if args.full and args.checkpoint:
        problems.append("--checkpoint: --full trains its own checkpoint")
    if args.geometry:
        recovery_only = {
            "--checkpoint": args.checkpoint,
            "--example": args.example,
            "--steps": args.steps,
            "--picture": args.picture,
        }
        problems += [
            f"{name} does not apply to --geometry" for name, v in recovery_only.items() if v
        ]
    if args.steps is not None and args.steps < 1:
        problems.append(f"--steps must be a positive integer, got {args.steps}")
    if args.clips is not None and args.clips < 3:
        problems.append(f"--clips must be at least 3 (train, val, test), got {args.clips}")
    for name in ("stage1_minutes", "stage2_minutes"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            problems.append(f"--{name.replace('_', '-')} must be positive, got {value}")
    return problems


def _run_demo(args: argparse.Namespace) -> int:
    problems = _demo_option_errors(args)
    if problems:
        for problem in problems:
            print(f"mocap2to3 demo: error: {problem}", file=sys.stderr)
        return 2
    if args.geometry:
        from flows.demo import geometry_demo

        summary = geometry_demo(
            output_dir=args.output,
            seed=0 if args.seed is None else args.seed,
            pixel_noise_px=args.pixel_noise,
            force_procedural=args.procedural,
        )
        print(summary["report"])
        return 0
    seed = 42 if args.seed is None else args.seed
    if args.full:
        from flows.demo_full import (
            DEFAULT_CLIPS,
            DEFAULT_STAGE1_MINUTES,
            DEFAULT_STAGE2_MINUTES,
            demo_full,
        )

        summary = demo_full(
            output_dir=args.output,
            num_clips=args.clips or DEFAULT_CLIPS,
            stage1_minutes=args.stage1_minutes or DEFAULT_STAGE1_MINUTES,
            stage2_minutes=args.stage2_minutes or DEFAULT_STAGE2_MINUTES,
            sampling_steps=args.steps or 10,
            device=args.device,
            seed=seed,
        )
        print("\n" + summary["report"])
        return 0
    from data_catalog.example_data import example_files
    from flows.demo import demo, resolve_demo_checkpoint

    try:
        resolve_demo_checkpoint(args.checkpoint)  # before Prefect starts: a message
        if args.example:
            example_files(args.example)
    except (FileNotFoundError, ValueError) as error:
        print(f"mocap2to3 demo: error: {error}", file=sys.stderr)
        return 2
    summary = demo(
        output_dir=args.output,
        checkpoint=args.checkpoint,
        example_dir=args.example,
        steps=args.steps,
        seed=seed,
        picture_copy=args.picture,
    )
    print("\n" + summary["report"])
    return 0


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="prepare the catalog's datasets into Zarr motion stores",
        description=(
            "Turn what is new or changed in the catalog's sources (folders, globs, or "
            ".tar/.tar.gz/.tar.xz/.zip archives read without unpacking) into normalised Zarr "
            "motion stores: 30 fps, metres, y-up, ground at y = 0, mapped onto the target "
            "joint sets. Unchanged items are skipped, changed items re-read, removed items "
            "dropped; a new store version replaces the old one atomically. Items that cannot "
            "be read go to the dataset's quarantine.json with the reason; a dataset whose "
            "source is absent is reported and skipped. Stores live under WORK/stores/NAME "
            "unless the catalog says otherwise."
        ),
    )
    p.add_argument(
        "--catalog", default=None, help="catalog YAML (default: the packaged catalog.yaml)"
    )
    p.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="prepare only these datasets (default: all enabled)",
    )
    p.add_argument("--shard-size", type=int, default=64, help="items per task (default 64)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local worker threads, and the most shards a tar archive is cut into, as each "
        "shard reads it from the start (default: CPUs)",
    )
    p.add_argument(
        "--dask-address",
        default=None,
        metavar="ADDR",
        help="run the tasks on an existing Dask cluster, e.g. tcp://127.0.0.1:8786",
    )
    p.set_defaults(run=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    from data_catalog.catalog import CatalogError
    from flows.prepare import check_prepare_arguments, format_rejected, format_row, run_prepare

    try:
        check_prepare_arguments(args.catalog, args.only, args.shard_size, args.workers)
    except (FileNotFoundError, CatalogError, ValueError) as error:
        # A missing or invalid catalog, an unknown --only name: a message, no traceback.
        print(f"mocap2to3 prepare: error: {error}", file=sys.stderr)
        return 2
    rows = run_prepare(
        catalog_path=args.catalog,
        only=args.only,
        shard_size=args.shard_size,
        workers=args.workers,
        dask_address=args.dask_address,
        show_progress=True,
    )
    print("\nprepare-datasets summary:")
    for row in rows:
        print("  " + format_row(row))
        for line in format_rejected(row):
            print("    " + line)
    failed = [r for r in rows if r["status"] == "error"]
    # A dataset whose source is absent is reported and skipped, not a failure; the command
    # fails only when every dataset asked for failed.
    return 1 if failed and len(failed) == len(rows) else 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model stage (pretrain-2d, then finetune-multiview) on prepared stores",
        description=(
            "Train one stage of the model on prepared motion stores. Stage pretrain-2d "
            "pretrains the single-view denoiser on 2D projections of the stores' 3D motion "
            "(and on 2D tracks); stage finetune-multiview turns a pretrain-2d checkpoint into "
            "the multi-view model. The configuration is checked before any training (stores "
            "exist and hold the joint set, stage 2 has a stage-1 checkpoint of the same joint "
            "set and profile). Checkpoints, history.csv and loss_curve.png go to the run "
            "folder; --resume continues a run bit for bit from its last checkpoint. On CUDA: "
            "mixed precision, one run per GPU (Prefect limit mocap2to3-gpu); for several GPUs "
            "start it under torchrun, e.g. torchrun --standalone --nproc_per_node=4 -m "
            "flows.cli train ..."
        ),
        epilog=(
            "example: mocap2to3 train --stage pretrain-2d --stores bandai1 bandai2; then "
            "mocap2to3 train --stage finetune-multiview --stores bandai1 bandai2 --init "
            "WORK/runs/pretrain-2d-tiny-smpl22/checkpoints/last.pt"
        ),
    )
    p.add_argument(
        "--stage", required=True, choices=["pretrain-2d", "finetune-multiview"], help="the stage"
    )
    p.add_argument(
        "--stores",
        required=True,
        nargs="+",
        metavar="NAME",
        help="catalog dataset names or prepared store folders",
    )
    p.add_argument(
        "--profile",
        default="tiny",
        choices=["tiny", "small", "paper"],
        help="model and run size: tiny (a CPU, minutes), small, paper (GPUs) (default tiny)",
    )
    p.add_argument(
        "--joint-set",
        default="smpl22",
        choices=["smpl22", "coco17"],
        help="joints of the model; coco17 models carry the added pelvis (default smpl22)",
    )
    p.add_argument(
        "--init",
        default=None,
        metavar="CHECKPOINT",
        help=(
            "finetune-multiview: the pretrain-2d checkpoint to start from, or a "
            "finetune-multiview one to continue fine-tuning (fresh optimiser, step 0)"
        ),
    )
    p.add_argument("--steps", type=int, default=None, help="train until this step")
    p.add_argument("--batch-size", type=int, default=None, help="samples per process and step")
    p.add_argument(
        "--run-dir",
        default=None,
        metavar="DIR",
        help="run folder (default: WORK/runs/STAGE-PROFILE-JOINTSET)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto: CUDA if any)"
    )
    p.add_argument(
        "--workers", type=int, default=None, help="data-loading processes (default automatic)"
    )
    p.add_argument("--seed", type=int, default=42, help="seed of data and weights (default 42)")
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="stop with a checkpoint after this much training time",
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE.json",
        help=(
            "JSON object of further training settings (TrainConfig fields such as window, lr, "
            "val_every, and for pretrain-2d scene_overrides / model_overrides, e.g. a narrower "
            "virtual rig); see configs/ for the release settings"
        ),
    )
    p.set_defaults(run=_run_train)


def _read_json_object(path: str) -> dict:
    """A JSON object from ``path``; TrainingConfigError naming the file otherwise."""
    import json
    from pathlib import Path

    from tasks.training import TrainingConfigError

    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise TrainingConfigError(f"{path}: cannot read a JSON object ({error})") from error
    if not isinstance(value, dict):
        raise TrainingConfigError(f"{path}: expected a JSON object of training settings")
    return value


def _run_train(args: argparse.Namespace) -> int:
    import os

    from flows.train import finetune_multiview, make_train_config, pretrain_2d
    from tasks.training import TrainingConfigError, plan_run, run_training

    budget = None if args.minutes is None else 60.0 * args.minutes
    try:
        extra = _read_json_object(args.config) if args.config else {}
        config = make_train_config(
            args.stage,
            args.stores,
            profile=args.profile,
            joint_set=args.joint_set,
            run_dir=args.run_dir,
            init_checkpoint=args.init,
            steps=args.steps,
            batch_size=args.batch_size,
            device=args.device,
            workers=args.workers,
            seed=args.seed,
            time_budget_s=budget,
            **extra,
        )
        plan_run(config, args.resume)  # every check, before Prefect starts
    except TrainingConfigError as error:
        print(f"mocap2to3 train: {error}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) > 0:
        # torchrun: rank 0 runs the flow (artifacts, GPU limit), the others the plain loop.
        run_training(config, args.resume)
        return 0
    common = dict(
        stores=list(config.stores),
        profile=config.profile,
        joint_set=config.joint_set,
        run_dir=config.run_dir,
        steps=config.max_steps,
        batch_size=config.batch_size,
        resume=args.resume,
        device=config.device,
        workers=config.num_workers,
        seed=config.seed,
        time_budget_s=config.time_budget_s,
        overrides=extra or None,
    )
    if config.stage == "pretrain-2d":
        summary = pretrain_2d(**common)
    else:
        summary = finetune_multiview(init_checkpoint=config.init_checkpoint, **common)
    print(summary["report"])
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint and two baselines on a prepared 3D store's held-out split",
        description=(
            "Evaluate a multi-view checkpoint on a prepared 3D store's split. Each sequence is "
            "placed before an input camera drawn from a documented, seeded protocol (standard: "
            "1920x1080, subject 3-6 m from the camera), projected to 2D (optionally with pixel "
            "noise and dropped joints, like a detector) and recovered; the triangulation of "
            "ground-truth virtual views (upper bound) and the monocular ground-contact "
            "heuristic run on the same input. Every metric (PA-MPJPE, MPJPE, Abs-MPJPE, "
            "W/WA-MPJPE100, RTE, jitter, acceleration, foot sliding) per sequence and overall "
            "goes to report.md, report.csv and PNG plots; the overall table is printed."
        ),
        epilog="example: mocap2to3 evaluate --store bandai1 --split test --input-noise 2",
    )
    p.add_argument(
        "--store", required=True, metavar="NAME", help="catalog dataset name or store folder"
    )
    p.add_argument(
        "--split", default="test", choices=["train", "val", "test"], help="(default test)"
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        metavar="FILE",
        help="finetune-multiview checkpoint (default: the release checkpoint "
        "checkpoints/<smpl22|coco17>.pt of the joint set)",
    )
    p.add_argument(
        "--joint-set",
        default=None,
        choices=["smpl22", "coco17"],
        help="store joint set and release checkpoint (default: the checkpoint's, else smpl22 "
        "when the store has it)",
    )
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default 10)")
    p.add_argument(
        "--sampler", default="ddim", choices=["ddim", "ddpm"], help="sampler (default ddim)"
    )
    _add_recovery_setting_options(p)
    p.add_argument(
        "--input-noise",
        type=float,
        default=0.0,
        metavar="PX",
        help="std of Gaussian pixel noise on the 2D input (default 0: ground-truth 2D)",
    )
    p.add_argument(
        "--drop-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="probability that a joint is missed, confidence 0 (default 0)",
    )
    p.add_argument(
        "--cameras",
        default="standard",
        metavar="PROTOCOL",
        help="camera protocol: standard (3-6 m), in-view (standard, scored only on the frames "
        "where the subject is fully in view 3-6 m away), far (6-10 m) or high (wall-mounted) "
        "(default standard)",
    )
    p.add_argument(
        "--max-sequences", type=int, default=None, metavar="N", help="only the first N sequences"
    )
    p.add_argument(
        "--output",
        default=None,
        metavar="DIR",
        help="report folder (default WORK/eval/STORE-SPLIT-SHA8-PROTOCOL)",
    )
    p.add_argument(
        "--seed", type=int, default=42, help="seed of the recovery's rigs and noise (default 42)"
    )
    p.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto: CUDA if any)"
    )
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from flows.evaluate import check_evaluate_arguments, evaluate
    from tasks.evaluate import DEFAULT_STEPS, EvaluationConfigError

    options = dict(
        store=args.store,
        split=args.split,
        checkpoint=args.checkpoint,
        protocol=args.cameras,
        noise_px=args.input_noise,
        drop_rate=args.drop_rate,
        max_sequences=args.max_sequences,
        joint_set=args.joint_set,
        sampler=args.sampler,
        steps=DEFAULT_STEPS if args.steps is None else args.steps,
        seed=args.seed,
        post_process=not args.no_post_process,
        num_samples=args.samples,
        device=args.device,
        output_dir=args.output,
    )
    try:
        check_evaluate_arguments(**options)  # every check, before Prefect starts
    except EvaluationConfigError as error:
        print(f"mocap2to3 evaluate: error: {error}", file=sys.stderr)
        return 2
    summary = evaluate(
        store=args.store,
        split=args.split,
        checkpoint=args.checkpoint,
        joint_set=args.joint_set,
        protocol=args.cameras,
        sampler=args.sampler,
        steps=options["steps"],
        input_noise_px=args.input_noise,
        drop_rate=args.drop_rate,
        max_sequences=args.max_sequences,
        output_dir=args.output,
        seed=args.seed,
        post_process=not args.no_post_process,
        samples=args.samples,
        device=args.device,
        show_progress=True,
    )
    print(summary["report"])
    return 0


def _add_recover(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recover",
        help="recover 3D motion from a folder or archive of 2D clips into a motion archive",
        description=(
            "Recover absolute, metric 3D motion from 2D keypoint clips seen by one calibrated "
            "camera into a Parquet motion archive (README 'Recovering motion'). Inputs: a "
            "folder (searched recursively), a glob or a .tar/.tar.gz/.zip archive of .npz "
            "keypoint files, COCO-style JSON results, OpenPose JSON folders or (with the "
            "video extra) videos. The camera JSON comes from --camera, a camera.json in the "
            "clip's folder or a parent, or <clip>.camera.json beside a clip. Finished clips "
            "(same input, checkpoint and parameters) are skipped, so an interrupted run "
            "resumes; a clip that cannot be recovered is recorded as failed with the reason "
            "and the others go on. Exit status 1 only when no clip of this run succeeded."
        ),
        epilog=(
            "example: mocap2to3 recover --input clips/ --camera clips/camera.json "
            "--output motion.archive --checkpoint runs/finetune-multiview-tiny-coco17_pelvis/"
            "checkpoints/best.pt"
        ),
    )
    p.add_argument("--input", required=True, metavar="PATH", help="folder, glob or archive")
    p.add_argument(
        "--output", required=True, metavar="ARCHIVE", help="archive folder (created or added to)"
    )
    p.add_argument(
        "--camera",
        default=None,
        metavar="CAMERA.json",
        help="camera of clips without a camera file beside them or in their folder",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        metavar="FILE",
        help="finetune-multiview checkpoint (default: checkpoints/<joint set>.pt, the "
        "release checkpoint of the clips' joint set)",
    )
    p.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm"], help="(default ddim)")
    p.add_argument(
        "--steps", type=int, default=None, help="sampling steps (default: DDIM 10, DDPM 100)"
    )
    p.add_argument("--seed", type=int, default=42, help="seed of rigs and noise (default 42)")
    _add_recovery_setting_options(p)
    p.add_argument(
        "--ankle-height",
        type=float,
        default=None,
        metavar="M",
        help="height of a planted foot's ankle keypoint above the ground, metres, for the "
        "ground anchor (default 0.115: the Bandai-Namco skeleton the release checkpoints "
        "learned; a skeleton or detector whose ankle keypoints sit lower needs its own)",
    )
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of JSON clips (default 30)")
    p.add_argument(
        "--body-model",
        default=None,
        metavar="DIR",
        help="SMPL model folder: fit SMPL to the recovered joints (smpl22 checkpoints)",
    )
    p.add_argument(
        "--bvh",
        action="store_true",
        help="also write ARCHIVE/bvh/<sequence_id>[_t<track>].bvh (smpl22 checkpoints)",
    )
    p.add_argument(
        "--no-previews", action="store_true", help="skip the PNG preview of each sequence"
    )
    p.add_argument(
        "--rrd",
        action="store_true",
        help="also write a rerun .rrd recording per sequence (viz extra)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="clips per task (default 16)")
    p.add_argument("--workers", type=int, default=None, help="local worker threads (default: CPUs)")
    p.add_argument(
        "--torch-threads", type=int, default=1, help="torch threads per task (default 1)"
    )
    p.add_argument(
        "--retry-failed", action="store_true", help="recover clips that failed before again"
    )
    p.add_argument(
        "--dask-address",
        default=None,
        metavar="ADDR",
        help="run the tasks on an existing Dask cluster, e.g. tcp://127.0.0.1:8786",
    )
    p.set_defaults(run=_run_recover)


def _run_recover(args: argparse.Namespace) -> int:
    from flows.recover import plan_recovery, run_recover

    options = dict(
        camera=args.camera,
        checkpoint=args.checkpoint,
        steps=args.steps,
        sampler=args.sampler,
        samples=args.samples,
        ankle_height_m=args.ankle_height,
        body_model=args.body_model,
        bvh=args.bvh,
        previews=not args.no_previews,
        rrd=args.rrd,
        fps=args.fps,
        seed=args.seed,
        post_process=not args.no_post_process,
        batch_size=args.batch_size,
        torch_threads=args.torch_threads,
    )
    try:
        plan_recovery(args.input, args.output, workers=args.workers, **options)
    except (FileNotFoundError, ValueError) as error:
        # Missing input or checkpoint, a stage-1 checkpoint, a bad camera: a message.
        print(f"mocap2to3 recover: error: {error}", file=sys.stderr)
        return 2
    from data_catalog.motion_archive import ArchiveLocked

    try:
        summary = run_recover(
            args.input,
            args.output,
            workers=args.workers,
            dask_address=args.dask_address,
            retry_failed=args.retry_failed,
            show_progress=True,
            **options,
        )
    except ArchiveLocked as error:  # another run is writing this archive
        print(f"mocap2to3 recover: error: {error}", file=sys.stderr)
        return 2
    print("\n" + summary["report"])
    processed = summary["recovered"] + summary["failed"] + summary["errored"]
    return 1 if processed and not summary["recovered"] else 0


COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_demo,
    _add_prepare,
    _add_train,
    _add_evaluate,
    _add_recover,
)


def _add_recovery_setting_options(p: argparse.ArgumentParser) -> None:
    """``--samples`` and ``--no-post-process`` of ``recover`` and ``evaluate``: overrides of
    the recovery settings a checkpoint carries."""
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        metavar="N",
        help="diffusion samples averaged per window (default: the checkpoint's setting; "
        "the release smpl22 checkpoint takes 2, coco17 1); N times the sampling time",
    )
    p.add_argument(
        "--no-post-process",
        action="store_true",
        help="the method's output as is: skip the checkpoint's post-processing (the release "
        "checkpoints move the body onto the observed rays with its feet on the ground, and "
        "smooth it)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mocap2to3",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    configure_prefect_environment()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
