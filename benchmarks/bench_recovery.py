"""Recovery throughput (frames/s) and peak memory (mocap_core.recovery).

Throughput: a synthetic ``--frames``-frame smpl22 clip (a procedural walk on a circle in front
of a calibrated camera) through :func:`mocap_core.recovery.recover_clips` with DDIM 10,
DDIM 25 and DDPM 100 (``--modes``), best of ``--repeats`` runs after a warm-up; frames/s
counts the clip's frames over the wall time of the whole call (scenes, pointmaps, sampling,
triangulation, blending).

Memory: the same recovery (DDIM 10) on a ``--frames``, a ``--sweep-frames`` and a
``--long-frames`` clip, each in a fresh subprocess that reports its RSS before recovery, the
peak RSS during recovery (the kernel's high-water mark ``VmHWM``, reset through
``/proc/self/clear_refs`` just before) and its lifetime peak (``ru_maxrss``), next to a
subprocess that only builds the model.

The model is the ``tiny`` profile with random weights (timing does not depend on the
weights; ``--profile small|paper`` for the larger sizes), or a trained checkpoint with
``--checkpoint`` (then its rig distribution, pointmap range and statistics are used).
``--sweep`` times DDIM 10 over ``batch_windows`` and torch threads.

Usage::

    .venv/bin/python benchmarks/bench_recovery.py
    .venv/bin/python benchmarks/bench_recovery.py --sweep --skip-memory
    .venv/bin/python benchmarks/bench_recovery.py --checkpoint runs/stage2/last.pt
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mocap_core.cameras import Camera, camera_from_height_pitch_roll, intrinsics_from_fov
from mocap_core.joint_sets import SMPL22
from mocap_core.model_config import ModelConfig
from mocap_core.models import MultiViewDenoiser
from mocap_core.procedural import procedural_walk
from mocap_core.recovery import ClipInput, RecoveryConfig, prepare_scene, recover_clips
from mocap_core.representation import FeatureStats, encode_global, encode_local
from mocap_core.rig import RigConfig
from mocap_core.scene import project_to_views
from mocap_core.skeleton_mapping import apply_mapping, get_skeleton_mapping

WIDTH, HEIGHT = 1280, 720


@dataclass
class Setup:
    model: torch.nn.Module
    stats_local: FeatureStats
    stats_global: FeatureStats
    rig_config: RigConfig
    pointmap_max_range_m: float | None
    window: int
    source: str


def input_camera() -> Camera:
    K = intrinsics_from_fov(WIDTH, HEIGHT, 60.0)
    return camera_from_height_pitch_roll(1.6, 12.0, 0.0, K, WIDTH, HEIGHT)


def circle_walk(num_frames: int) -> np.ndarray:
    """``(T, 22, 3)`` smpl22 metres: a walk on a ~2.9 m radius circle centred 5.5 m in front of
    the camera, so any length stays in view."""
    walk = procedural_walk(
        num_frames, fps=30.0, speed_m_s=1.0, turn_deg_per_s=20.0, seed=0, start_xz=(2.9, -5.5)
    )
    joints, _ = apply_mapping(
        get_skeleton_mapping("bandai_namco", "smpl22"),
        walk.joint_names,
        walk.positions,
        walk.global_rotations,
    )
    return joints


def clip_keypoints(camera: Camera, joints: np.ndarray) -> np.ndarray:
    pixels, _ = camera.project(joints)
    confidence = np.full(joints.shape[:2] + (1,), 0.9)
    return np.concatenate([pixels, confidence], axis=-1)


def synthetic_stats(
    camera: Camera, rig_config: RigConfig, pointmap_size: int
) -> tuple[FeatureStats, FeatureStats]:
    """Statistics of a walk's encodings in sampled rigs: realistic feature ranges for the
    random model (its outputs then decode to plausible pixels)."""
    joints = circle_walk(240)
    keypoints = clip_keypoints(camera, joints)
    rng = np.random.default_rng(0)
    local, global0 = [], []
    for start in range(0, 240, 60):
        scene = prepare_scene(
            camera,
            keypoints[start : start + 60],
            rig_config,
            pointmap_size,
            rng,
            foot_joints=SMPL22.foot_joints,
        )
        placed = joints[start : start + 60] @ scene.R_wc.T + scene.t_wc  # canonical frame
        pixels, _ = project_to_views(placed, scene.K, scene.R, scene.t)
        local.append(encode_local(pixels, scene.sizes.astype(np.float64)).reshape(-1, 46))
        global0.append(encode_global(pixels[0], scene.sizes[0].astype(np.float64)))
    return FeatureStats.fit(np.concatenate(local)), FeatureStats.fit(np.concatenate(global0))


def build(checkpoint: str | None, window: int | None, profile: str = "tiny") -> Setup:
    if checkpoint is not None:
        from data_catalog.checkpoints import build_model, load_checkpoint

        payload = load_checkpoint(checkpoint)
        model, stats, scene_config = build_model(payload)
        if not isinstance(model, MultiViewDenoiser):
            raise SystemExit(f"{checkpoint}: a stage-2 (multi-view) checkpoint is needed")
        trained_window = (payload.get("train_config") or {}).get("window")
        return Setup(
            model=model,
            stats_local=stats["local"],
            stats_global=stats["global"],
            rig_config=scene_config.rig,
            pointmap_max_range_m=scene_config.pointmap_max_range_m,
            window=window or int(trained_window or model.config.max_frames),
            source=checkpoint,
        )
    torch.manual_seed(0)
    config = ModelConfig.profile(profile, "smpl22")
    model = MultiViewDenoiser(config).eval()
    rig_config = RigConfig()
    stats_local, stats_global = synthetic_stats(input_camera(), rig_config, config.pointmap_size)
    return Setup(
        model=model,
        stats_local=stats_local,
        stats_global=stats_global,
        rig_config=rig_config,
        pointmap_max_range_m=None,
        window=window or 120,
        source=f"{profile} profile, random weights",
    )


def run_recovery(setup: Setup, keypoints: np.ndarray, config: RecoveryConfig) -> float:
    """Seconds for one recover_clips call on ``keypoints (T, 22, 3)`` of :func:`input_camera`."""
    clip = ClipInput(input_camera(), keypoints, key="bench")
    start = time.perf_counter()
    result = recover_clips(
        setup.model,
        setup.stats_local,
        setup.stats_global,
        [clip],
        config,
        setup.rig_config,
        setup.pointmap_max_range_m,
    )[0]
    seconds = time.perf_counter() - start
    if not np.isfinite(result.joints[result.valid]).all():
        raise RuntimeError("recovery produced non-finite joints")
    return seconds


def best_frames_per_s(
    setup: Setup, keypoints: np.ndarray, config: RecoveryConfig, repeats: int
) -> tuple[float, float]:
    """``(frames/s, seconds)`` of the fastest of ``repeats`` runs."""
    best = min(run_recovery(setup, keypoints, config) for _ in range(repeats))
    return len(keypoints) / best, best


def parse_modes(text: str) -> list[tuple[str, int]]:
    modes = []
    for item in text.split(","):
        sampler, steps = item.split(":")
        modes.append((sampler.strip(), int(steps)))
    return modes


def _status_mib(field: str) -> float | None:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status in MiB (None off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0), so VmHWM measures from now on."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def memory_child(args: argparse.Namespace) -> None:
    """Subprocess body: build the model, load the keypoints in ``--keypoints`` (none: build
    only) and recover them; print a JSON line with the RSS before recovery, the peak RSS
    during recovery (VmHWM after a reset; the process's lifetime peak where the reset is
    unavailable) and the lifetime peak (``ru_maxrss``)."""
    torch.set_num_threads(args.threads)
    setup = build(args.checkpoint, args.window, args.profile)
    keypoints = np.load(args.keypoints) if args.keypoints else None
    rss_before = _status_mib("VmRSS")
    reset = _reset_peak_rss()
    seconds = 0.0
    if keypoints is not None:
        config = RecoveryConfig(window=setup.window, batch_windows=args.batch_windows)
        seconds = run_recovery(setup, keypoints, config)
    lifetime_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    record = {
        "frames": 0 if keypoints is None else len(keypoints),
        "rss_before_mib": rss_before,
        "peak_during_mib": _status_mib("VmHWM") if reset else lifetime_peak,
        "lifetime_peak_mib": lifetime_peak,
        "seconds": seconds,
    }
    print(json.dumps(record))


def measure_memory(args: argparse.Namespace, keypoints: np.ndarray | None) -> dict[str, Any]:
    """Run :func:`memory_child` in a fresh interpreter on ``keypoints`` (None: model only)."""
    command = [sys.executable, __file__, "--memory-child"]
    command += ["--threads", str(args.threads), "--batch-windows", str(args.batch_windows)]
    command += ["--profile", args.profile]
    if args.checkpoint:
        command += ["--checkpoint", args.checkpoint]
    if args.window:
        command += ["--window", str(args.window)]
    with tempfile.TemporaryDirectory() as folder:
        if keypoints is not None:
            path = Path(folder) / "keypoints.npy"
            np.save(path, keypoints)
            command += ["--keypoints", str(path)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="stage-2 checkpoint (default: random tiny model)")
    parser.add_argument("--profile", default="tiny", help="random model size: tiny|small|paper")
    parser.add_argument(
        "--window", type=int, help="frames per window (default: the checkpoint's, else 120)"
    )
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--long-frames", type=int, default=10_000)
    parser.add_argument("--sweep-frames", type=int, default=1000, help="sweep and memory clip")
    parser.add_argument("--modes", default="ddim:10,ddim:25,ddpm:100")
    parser.add_argument(
        "--samples", default="1", help="comma-separated num_samples to time (e.g. 1,2,4)"
    )
    parser.add_argument("--batch-windows", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sweep", action="store_true", help="time batch_windows x threads")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keypoints", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args)
        return

    torch.set_num_threads(args.threads)
    setup = build(args.checkpoint, args.window, args.profile)
    camera = input_camera()
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"model: {setup.source}; window {setup.window}; torch threads {args.threads}")
    # Warm-up: first calls pay for lazy initialisation.
    warm_up = clip_keypoints(camera, circle_walk(40))
    run_recovery(setup, warm_up, RecoveryConfig(window=setup.window, steps=2))

    keypoints = clip_keypoints(camera, circle_walk(args.frames))
    print(f"\nthroughput, {args.frames}-frame clip, batch_windows {args.batch_windows}:")
    sample_counts = [int(count) for count in args.samples.split(",")]
    for sampler, steps in parse_modes(args.modes):
        for num_samples in sample_counts:
            config = RecoveryConfig(
                window=setup.window,
                sampler=sampler,
                steps=steps,
                batch_windows=args.batch_windows,
                num_samples=num_samples,
            )
            rate, seconds = best_frames_per_s(setup, keypoints, config, args.repeats)
            print(
                f"  {sampler} {steps:>3} steps, {num_samples} sample(s) per window:"
                f" {rate:7.1f} frames/s ({seconds:.2f} s)"
            )

    if args.sweep:
        sweep_keypoints = clip_keypoints(camera, circle_walk(args.sweep_frames))
        print(f"\nsweep, DDIM 10, {args.sweep_frames}-frame clip (frames/s):")
        for threads in (1, 2):
            torch.set_num_threads(threads)
            row = []
            for batch_windows in (1, 2, 4, 8, 16):
                config = RecoveryConfig(window=setup.window, batch_windows=batch_windows)
                rate, _ = best_frames_per_s(setup, sweep_keypoints, config, args.repeats)
                row.append(f"bw {batch_windows}: {rate:6.1f}")
            print(f"  threads {threads}: " + ", ".join(row))
        torch.set_num_threads(args.threads)

    if not args.skip_memory:
        print("\nmemory, fresh subprocess each, DDIM 10 (RSS in MiB):")
        long_keypoints = clip_keypoints(camera, circle_walk(args.long_frames))
        middle_keypoints = clip_keypoints(camera, circle_walk(args.sweep_frames))
        for label, clip in (
            ("model only", None),
            (f"{args.frames}-frame clip", keypoints),
            (f"{args.sweep_frames}-frame clip", middle_keypoints),
            (f"{args.long_frames}-frame clip", long_keypoints),
        ):
            record = measure_memory(args, clip)
            line = f"  {label:>18}: before {record['rss_before_mib']:6.1f}"
            if clip is not None:
                line += (
                    f", peak during recovery {record['peak_during_mib']:6.1f}"
                    f" (+{record['peak_during_mib'] - record['rss_before_mib']:.1f}),"
                    f" lifetime peak {record['lifetime_peak_mib']:6.1f}; {record['seconds']:.1f} s"
                )
            print(line)


if __name__ == "__main__":
    main()
