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


COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_demo,)


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
