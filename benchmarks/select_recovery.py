"""Choose a checkpoint's recovery settings on the validation split (never on test).

The post-processing steps (the ground anchor of :func:`mocap_core.recovery.anchor_to_ground`
with its window and contact tolerance, and temporal smoothing) do not change the sampling,
so each store's validation split is recovered once with the method alone and every setting
is applied to those outputs (:func:`mocap_core.recovery.post_process`), then scored beside
the ground-contact heuristic on the same input. One row per setting: frame-weighted metrics
over all stores, and the grounded clips where the model's Abs-MPJPE is not below the
heuristic's. The release procedure stores the chosen setting under the checkpoint's
``"recovery"`` key (data_catalog.checkpoints.recovery_config reads it).

Run:  .venv/bin/python benchmarks/select_recovery.py --checkpoint CKPT \
          --stores bandai1 bandai2 [--cameras in-view] [--max-sequences N]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from data_catalog.checkpoints import build_model, load_checkpoint
from mocap_core import metrics
from mocap_core.evaluation import FOOT_KEYPOINT_HEIGHT_M, ground_contact_baseline, score_case
from mocap_core.joint_sets import get_joint_set
from mocap_core.recovery import ClipInput, post_process
from tasks.evaluate import draw_cases, plan_evaluation, recover_cases

#: Post-processing settings compared (the first is the method's own output).
SETTINGS: tuple[dict, ...] = (
    {"smooth_frames": 0, "ground_anchor_frames": 0},
    {"smooth_frames": 3, "ground_anchor_frames": 0},
    {"smooth_frames": 3, "ground_anchor_frames": 9, "ground_anchor_tolerance_m": 0.0},
    {"smooth_frames": 3, "ground_anchor_frames": 9, "ground_anchor_tolerance_m": 0.02},
    {"smooth_frames": 3, "ground_anchor_frames": 9, "ground_anchor_tolerance_m": 0.03},
    {"smooth_frames": 3, "ground_anchor_frames": 9, "ground_anchor_tolerance_m": 0.04},
    {"smooth_frames": 3, "ground_anchor_frames": 9, "ground_anchor_tolerance_m": 0.05},
    {"smooth_frames": 0, "ground_anchor_frames": 9, "ground_anchor_tolerance_m": 0.04},
    {"smooth_frames": 5, "ground_anchor_frames": 9, "ground_anchor_tolerance_m": 0.04},
    {"smooth_frames": 3, "ground_anchor_frames": 15, "ground_anchor_tolerance_m": 0.04},
    {"smooth_frames": 3, "ground_anchor_frames": 5, "ground_anchor_tolerance_m": 0.04},
)
KEYS = ("pa_mpjpe_mm", "abs_mpjpe_mm", "w_mpjpe100_mm", "wa_mpjpe100_mm", "jitter_m_s3")


def recover_raw(plan, model, stats, scene_config, batch: int = 32):
    """``[(case, joints, valid)]``: the split recovered by the method alone."""
    cases, skipped = draw_cases(plan, plan.sequence_ids)
    for item in skipped:
        print(f"<!-- skipped {item['sequence_id']}: {item['reason']} -->")
    out = []
    for start in range(0, len(cases), batch):
        chunk = cases[start : start + batch]
        motions = recover_cases(plan.recovery, chunk, model, stats, scene_config)
        out += [(c, m.joints, m.valid) for c, m in zip(chunk, motions, strict=True)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--stores", nargs="+", default=["bandai1", "bandai2"])
    parser.add_argument("--split", default="val")
    parser.add_argument("--cameras", default="in-view", help="evaluation protocol")
    parser.add_argument("--max-sequences", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--num-samples", type=int, default=1, help="diffusion samples averaged per window"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    payload = load_checkpoint(args.checkpoint)
    model, stats, scene_config = build_model(payload)
    model.eval()
    scores: dict[int, list] = {i: [] for i in range(len(SETTINGS))}
    heuristic = []
    for store in args.stores:
        start = time.perf_counter()
        plan = plan_evaluation(
            store, args.split, args.checkpoint, args.cameras, None,
            max_sequences=args.max_sequences, post_process=False,
        )  # fmt: skip
        plan = replace(
            plan, recovery=plan.recovery.model_copy(update={"num_samples": args.num_samples})
        )
        joint_set = get_joint_set(plan.model_joint_set)
        for case, joints, valid in recover_raw(plan, model, stats, scene_config):
            clip = ClipInput(case.camera, case.keypoints, key=case.sequence_id)
            contact = ground_contact_baseline(
                case.camera, case.keypoints, joint_set, 0.0,
                FOOT_KEYPOINT_HEIGHT_M[plan.model_joint_set],
            )  # fmt: skip
            heuristic.append(score_case(case, {"ground_contact": contact}, plan.fps))
            for i, setting in enumerate(SETTINGS):
                config = plan.recovery.model_copy(update=setting)
                pred = post_process(joints, valid, clip, config, joint_set)
                scores[i].append(score_case(case, {"model": pred}, plan.fps))
        print(f"<!-- {store} {args.split} {args.cameras}: {time.perf_counter() - start:.0f} s -->")

    def row(label: str, case_scores, method: str, losses: str) -> str:
        summary = metrics.aggregate([s.metrics[method] for s in case_scores])
        return f"| {label} | " + " | ".join(f"{summary[k]:.1f}" for k in KEYS) + f" | {losses} |"

    print(
        f"\n{args.checkpoint}: stores {args.stores}, split {args.split}, cameras {args.cameras}\n"
    )
    print("| setting | " + " | ".join(KEYS) + " | grounded clips not below the heuristic |")
    print("|" + "---|" * (len(KEYS) + 2))
    for i, setting in enumerate(SETTINGS):
        losses = [
            s.sequence_id
            for s, h in zip(scores[i], heuristic, strict=True)
            if s.grounded
            and not (
                s.metrics["model"]["abs_mpjpe_mm"] < h.metrics["ground_contact"]["abs_mpjpe_mm"]
            )
        ]
        grounded = sum(s.grounded for s in scores[i])
        print(row(json.dumps(setting), scores[i], "model", f"{len(losses)} of {grounded}"))
    print(row("ground-contact heuristic", heuristic, "ground_contact", ""))


if __name__ == "__main__":
    main()
