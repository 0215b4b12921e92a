"""Orchestration overhead of recover-archive: the flow against calling recovery directly.

Generates ``--clips`` short clips (``--frames`` frames each, procedural walks seen by one
calibrated camera, COCO-17 ``.npz`` files with a folder ``camera.json``) in a temporary
folder and a ``tiny``-profile stage-2 checkpoint with random weights (timing does not depend
on the weights; ``--checkpoint`` for a trained one), then measures, in this process:

1. **Prefect start-up**: the first flow run of the process (Prefect's temporary local
   server starts) and a second, empty flow run (the fixed cost of any flow run);
2. **direct**: :func:`mocap_core.recovery.recover_clips` on all clips at once, already
   loaded in memory, with the run's sampling configuration and one torch thread;
3. **flow**: ``mocap2to3 recover`` (the CLI path, in-process, the Prefect server already
   up) over the folder into a fresh archive, previews off, with ``--workers 1`` (the same
   single torch thread as the direct call: the like-for-like overhead) and with
   ``--workers 2``; it loads the clips from disk, fingerprints them, writes the parts and
   commits the index;
4. the same flow with previews on (a PNG per clip), and a re-run that skips every clip.

Direct calls and ``--workers 1`` flow runs alternate ``--repeats`` times and the best of each
is kept (the shared machine's load drifts). Overhead = flow wall time / direct wall time - 1
(target: under 10 % for 500 clips).

Usage::

    .venv/bin/python benchmarks/bench_recover_flow.py            # 500 clips x 60 frames
    .venv/bin/python benchmarks/bench_recover_flow.py --clips 100 --skip-previews
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from data_catalog.paths import configure_prefect_environment


def write_inputs(folder: Path, num_clips: int, num_frames: int, width: int, height: int) -> None:
    """``num_clips`` COCO-17 ``.npz`` walks of ``num_frames`` frames and a ``camera.json``."""
    from mocap_core.cameras import camera_from_height_pitch_roll, intrinsics_from_fov
    from mocap_core.procedural import procedural_walk
    from mocap_core.skeleton_mapping import apply_mapping, get_skeleton_mapping

    camera = camera_from_height_pitch_roll(
        1.6, 12.0, 0.0, intrinsics_from_fov(width, height, 60.0), width, height
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "camera.json").write_text(json.dumps(camera.to_dict()))
    mapping = get_skeleton_mapping("bandai_namco", "coco17")
    rng = np.random.default_rng(0)
    for index in range(num_clips):
        start = (rng.uniform(-1.5, 1.5), rng.uniform(-7.0, -3.5))
        walk = procedural_walk(
            num_frames,
            fps=30.0,
            speed_m_s=rng.uniform(0.8, 1.4),
            turn_deg_per_s=rng.uniform(-15.0, 15.0),
            seed=index,
            start_xz=start,
            initial_heading_deg=rng.uniform(0.0, 360.0),
        )
        joints, _ = apply_mapping(mapping, walk.joint_names, walk.positions, walk.global_rotations)
        pixels, _ = camera.project(joints)
        confidence = rng.uniform(0.5, 1.0, joints.shape[:2] + (1,))
        keypoints = np.concatenate([pixels, confidence], axis=-1).astype(np.float32)
        np.savez(folder / f"clip{index:04d}.npz", keypoints=keypoints, joint_set="coco17", fps=30.0)


def write_checkpoint(path: Path, window: int, width: int, height: int) -> Path:
    """A tiny-profile coco17_pelvis stage-2 checkpoint with random weights and statistics
    fitted on a walk's encodings (so that decoded outputs are plausible pixels)."""
    import torch

    from data_catalog.checkpoints import save_checkpoint
    from mocap_core.cameras import camera_from_height_pitch_roll, intrinsics_from_fov
    from mocap_core.joint_sets import add_pelvis_confidence
    from mocap_core.model_config import ModelConfig
    from mocap_core.models import MultiViewDenoiser
    from mocap_core.procedural import procedural_walk
    from mocap_core.representation import FeatureStats, encode_global, encode_local
    from mocap_core.skeleton_mapping import apply_mapping, get_skeleton_mapping
    from mocap_core.training_data import SceneConfig

    torch.manual_seed(0)
    config = ModelConfig.profile("tiny", "coco17_pelvis")
    model = MultiViewDenoiser(config)
    camera = camera_from_height_pitch_roll(
        1.6, 12.0, 0.0, intrinsics_from_fov(width, height, 60.0), width, height
    )
    walk = procedural_walk(240, fps=30.0, speed_m_s=1.0, turn_deg_per_s=10.0, seed=0)
    joints, _ = apply_mapping(
        get_skeleton_mapping("bandai_namco", "coco17"),
        walk.joint_names,
        walk.positions + np.array([0.0, 0.0, -5.0]),
        walk.global_rotations,
    )
    pixels, _ = camera.project(joints)
    pixels = add_pelvis_confidence(
        np.concatenate([pixels, np.ones(pixels.shape[:2] + (1,))], axis=-1)
    )[..., :2]
    payload = {
        "stage": "finetune-multiview",
        "model_config": config.to_dict(),
        "model": model.state_dict(),
        "step": 0,
        "stats": {
            "local": FeatureStats.fit(encode_local(pixels, (width, height))).to_dict(),
            "global": FeatureStats.fit(encode_global(pixels, (width, height))).to_dict(),
        },
        "scene_config": SceneConfig().model_dump(mode="json"),
        "train_config": {"window": window, "profile": "tiny", "joint_set": "coco17_pelvis"},
        "data": {},
        "history": [],
        "parent": None,
    }
    return save_checkpoint(path, payload)


def time_direct(folder: Path, checkpoint: Path, steps: int) -> tuple[float, int]:
    """Seconds of one ``recover_clips`` call over the folder's clips (loaded beforehand)."""
    import torch

    from data_catalog.checkpoints import build_model, load_checkpoint
    from data_catalog.recovery_inputs import discover_clips, load_clips
    from mocap_core.joint_sets import add_pelvis_confidence
    from mocap_core.recovery import ClipInput, RecoveryConfig, recover_clips

    torch.set_num_threads(1)
    payload = load_checkpoint(checkpoint)
    model, stats, scene = build_model(payload)
    window = min(int(payload["train_config"]["window"]), model.config.max_frames)
    config = RecoveryConfig(window=window, steps=steps)
    loaded = load_clips(discover_clips(folder))
    clips = [
        ClipInput(
            clip.require_camera(),
            add_pelvis_confidence(clip.tracks.keypoints.astype(np.float64)),
            key=clip.clip_id,
        )
        for clip in loaded
    ]
    frames = sum(len(c.keypoints) for c in clips)
    start = time.perf_counter()
    recover_clips(
        model,
        stats["local"],
        stats["global"],
        clips,
        config,
        scene.rig,
        scene.pointmap_max_range_m,
    )
    return time.perf_counter() - start, frames


def time_cli(arguments: list[str]) -> float:
    """Wall seconds of ``mocap2to3`` with ``arguments`` in this process (exit code 0)."""
    from flows.cli import main as cli_main

    start = time.perf_counter()
    code = cli_main(arguments)
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"mocap2to3 {' '.join(arguments)} exited with {code}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=500)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--window", type=int, default=120, help="checkpoint's training window")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per task")
    parser.add_argument("--checkpoint", help="a trained stage-2 coco17 checkpoint instead")
    parser.add_argument("--repeats", type=int, default=2, help="direct/flow pairs (best of)")
    parser.add_argument("--skip-previews", action="store_true", help="skip the previews run")
    parser.add_argument("--workdir", help="keep inputs and archives here (default: temporary)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        root = Path(args.workdir or temporary)
        root.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MOCAP2TO3_HOME", str(root / "work"))
        configure_prefect_environment()
        from prefect import flow

        width, height = 1280, 720
        clips = root / "clips"
        if not clips.exists():
            write_inputs(clips, args.clips, args.frames, width, height)
        checkpoint = Path(args.checkpoint) if args.checkpoint else root / "tiny-coco17.pt"
        if not checkpoint.exists():
            write_checkpoint(checkpoint, args.window, width, height)
        print(f"command: {' '.join([sys.executable, *sys.argv])}")
        print(
            f"{args.clips} clips x {args.frames} frames, checkpoint {checkpoint.name}, "
            f"DDIM {args.steps}, {args.batch_size} clips per task, {os.cpu_count()} CPUs"
        )

        @flow(name="bench-noop")
        def noop() -> int:
            return 1

        start = time.perf_counter()
        noop()
        first_flow = time.perf_counter() - start
        start = time.perf_counter()
        noop()
        empty_flow = time.perf_counter() - start

        common = ["recover", "--input", str(clips), "--checkpoint", str(checkpoint)]
        common += ["--steps", str(args.steps), "--batch-size", str(args.batch_size)]
        # Direct and flow runs alternate, best of --repeats each: the shared machine's load
        # drifts over minutes, so a single pair measures the drift as much as the overhead.
        directs, flows_1 = [], []
        for repeat in range(args.repeats):
            seconds, frames = time_direct(clips, checkpoint, args.steps)
            directs.append(seconds)
            output = ["--output", str(root / f"a1-{repeat}"), "--no-previews", "--workers", "1"]
            flows_1.append(time_cli([*common, *output]))
        direct, flow_1 = min(directs), min(flows_1)
        flow_2 = time_cli(
            [*common, "--output", str(root / "a2"), "--no-previews", "--workers", "2"]
        )
        rerun = time_cli([*common, "--output", str(root / "a2"), "--no-previews", "--workers", "2"])
        previews = None
        if not args.skip_previews:
            previews = time_cli([*common, "--output", str(root / "a3"), "--workers", "2"])

        print("\nresults (wall seconds):")
        print(f"  Prefect start-up, first flow run of the process: {first_flow:7.2f}")
        print(f"  Prefect, an empty flow run afterwards:            {empty_flow:7.2f}")
        print(f"  direct runs: {', '.join(f'{x:.1f}' for x in directs)}")
        print(f"  flow --workers 1 runs: {', '.join(f'{x:.1f}' for x in flows_1)}")
        print(
            f"  direct recover_clips, 1 torch thread:             {direct:7.2f}"
            f"  ({frames / direct:.0f} frames/s)"
        )
        print(
            f"  flow, --workers 1 (1 torch thread):               {flow_1:7.2f}"
            f"  overhead {100 * (flow_1 / direct - 1):+.1f} %"
        )
        print(
            f"  flow, --workers 2 (1 torch thread each):          {flow_2:7.2f}"
            f"  ({flow_2 / direct:.2f}x direct)"
        )
        print(f"  re-run, every clip skipped:                       {rerun:7.2f}")
        if previews is not None:
            print(
                f"  flow, --workers 2, with PNG previews:             {previews:7.2f}"
                f"  (+{1000 * (previews - flow_2) / args.clips:.0f} ms per clip)"
            )


if __name__ == "__main__":
    main()
