"""Time ground pointmaps: one camera, and batches of V = 4 and V = 64 views.

Usage: ``python benchmarks/bench_pointmaps.py [--repeats N] [--size 224]``

Prints milliseconds per call and per map (median over repeats) with and without lens
distortion on the input view, plus the machine it ran on. Rigs are sampled with the default
:class:`mocap_core.rig.RigConfig` around a 1920x1080 camera, so the virtual views carry no
distortion, as in training.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
from machine import cpu_name

from mocap_core.cameras import camera_from_height_pitch_roll, intrinsics_from_fov, stack_cameras
from mocap_core.pointmaps import ground_pointmap, ground_pointmaps
from mocap_core.rig import RigConfig, sample_rig


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up: first-touch allocations and imports
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per case")
    parser.add_argument("--size", type=int, default=224, help="pointmap side, pixels")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    print(
        f"machine: {cpu_name()} ({platform.machine()}), "
        f"{os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"
    )
    print(f"python {platform.python_version()}, numpy {np.__version__}")
    print(f"size {args.size}x{args.size}, median of {args.repeats} repeats\n")

    K = intrinsics_from_fov(1920, 1080, 60.0)
    lens = np.array([-0.12, 0.03, 0.0005, -0.0004, 0.0])
    rng = np.random.default_rng(0)
    print(f"{'case':<34}{'ms / call':>12}{'ms / map':>12}")
    for label, dist in (("no distortion", None), ("input view distorted", lens)):
        cam = camera_from_height_pitch_roll(1.5, 12.0, 1.0, K, 1920, 1080, dist)
        seconds = median_seconds(lambda cam=cam: ground_pointmap(cam, size=args.size), args.repeats)
        print(f"{'single, ' + label:<34}{seconds * 1e3:>12.2f}{seconds * 1e3:>12.2f}")
        for views in (4, 64):
            config = RigConfig(num_views=views, azimuth_jitter_deg=min(20.0, 90.0 / views))
            stacked = stack_cameras(sample_rig(cam, config, rng))
            seconds = median_seconds(
                lambda s=stacked: ground_pointmaps(
                    s["K"], s["R"], s["t"], s["dist"], s["sizes"], size=args.size
                ),
                args.repeats,
            )
            print(
                f"{f'V={views}, ' + label:<34}{seconds * 1e3:>12.2f}{seconds * 1e3 / views:>12.2f}"
            )


if __name__ == "__main__":
    main()
