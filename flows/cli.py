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
        help="run the most complete end-to-end path on built-in defaults",
        description=(
            "Run the demo on built-in defaults. A motion (a real Bandai-Namco BVH clip from "
            "../shared/data when present, else a procedurally generated walk) is placed in "
            "the world before a calibrated input camera; a rig of virtual cameras is sampled "
            "around the activity area; ground pointmaps are rendered for every view; the "
            "motion is projected into all views and triangulated back; errors are printed "
            "and a picture of the rig, the ground and the motion is saved as PNG."
        ),
    )
    p.add_argument("--output", default=None, help="output folder (default: WORK/demo)")
    p.add_argument("--seed", type=int, default=0, help="seed of the rig and noise (default 0)")
    p.add_argument(
        "--pixel-noise",
        type=float,
        default=2.0,
        help="std of Gaussian pixel noise added to the projections, px (default 2)",
    )
    p.add_argument(
        "--procedural",
        action="store_true",
        help="use the procedural walk even when real data is available",
    )
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from flows.demo import geometry_demo

    summary = geometry_demo(
        output_dir=args.output,
        seed=args.seed,
        pixel_noise_px=args.pixel_noise,
        force_procedural=args.procedural,
    )
    print(summary["report"])
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


COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_demo, _add_prepare)


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
