"""Choose a checkpoint's recovery settings on the validation split (never on test).

Evaluates the model under several recovery settings (with or without temporal smoothing and
the ground anchor of :func:`mocap_core.recovery.anchor_to_ground`) on a store's
``val`` split and prints one row per setting; the release procedure stores the best under
the checkpoint's ``"recovery"`` key (data_catalog.checkpoints.recovery_config reads it).

Run:  .venv/bin/python benchmarks/select_recovery.py --checkpoint CKPT --store bandai2 \
          [--max-sequences 40]
"""

from __future__ import annotations

import argparse
import json

import torch

from data_catalog.checkpoints import load_checkpoint, recovery_config
from tasks.evaluate import evaluate_checkpoint

SETTINGS = (
    {"smooth_frames": 0, "ground_anchor_frames": 0},
    {"smooth_frames": 9, "ground_anchor_frames": 0},
    {"smooth_frames": 0, "ground_anchor_frames": 9},
    {"smooth_frames": 5, "ground_anchor_frames": 9},
    {"smooth_frames": 5, "ground_anchor_frames": 15},
    {"smooth_frames": 5, "ground_anchor_frames": 31},
    {"smooth_frames": 9, "ground_anchor_frames": 15},
    {"smooth_frames": 5, "ground_anchor_frames": 9, "window": 60},
    {"smooth_frames": 9, "ground_anchor_frames": 9, "window": 60},
    {"smooth_frames": 5, "ground_anchor_frames": 9, "window": 90},
    {"smooth_frames": 3, "ground_anchor_frames": 9},
)
KEYS = ("pa_mpjpe_mm", "abs_mpjpe_mm", "w_mpjpe100_mm", "wa_mpjpe100_mm", "jitter_m_s3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--store", default="bandai2")
    parser.add_argument(
        "--only", type=int, nargs="*", default=None, help="indices of SETTINGS to run (default all)"
    )
    parser.add_argument("--split", default="val")
    parser.add_argument("--cameras", default="standard", help="evaluation protocol")
    parser.add_argument("--max-sequences", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    payload = load_checkpoint(args.checkpoint)
    print("| setting | " + " | ".join(KEYS) + " |")
    print("|" + "---|" * (len(KEYS) + 1))
    baseline_printed = False
    chosen = SETTINGS if args.only is None else [SETTINGS[i] for i in args.only]
    for setting in chosen:
        config = recovery_config(payload, **setting)
        result = evaluate_checkpoint(
            args.store, args.checkpoint, args.split, args.cameras, config,
            max_sequences=args.max_sequences,
        )  # fmt: skip
        row = result.overall_row("model")
        print(f"| {json.dumps(setting)} | " + " | ".join(f"{row[k]:.1f}" for k in KEYS) + " |")
        if not baseline_printed:
            base = result.overall_row("ground_contact")
            print(
                "| ground-contact heuristic | " + " | ".join(f"{base[k]:.1f}" for k in KEYS) + " |"
            )
            baseline_printed = True


if __name__ == "__main__":
    main()
