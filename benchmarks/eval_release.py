"""Evaluation tables of a release checkpoint: the figures of docs/RESULTS.md and the card.

For one checkpoint: the standard protocol with ground-truth 2D on each store's test split
(model beside the two baselines and beside the model without its post-processing, all
sequences and those whose feet touch the ground, and the per-clip comparison with the
ground-contact heuristic), then the same on the first store with pixel noise (2, 5, 10 px)
and with other sampling settings (DDIM 5 and 25, DDPM 100; the default is DDIM 10).
Prints Markdown tables.

Run:  .venv/bin/python benchmarks/eval_release.py --checkpoint checkpoints/smpl22.pt \
          --stores bandai1 bandai2 [--cameras standard in-view] [--max-sequences N]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tasks.evaluate import evaluate_checkpoint

METRICS = (
    ("pa_mpjpe_mm", "PA-MPJPE"),
    ("mpjpe_mm", "MPJPE"),
    ("abs_mpjpe_mm", "Abs-MPJPE"),
    ("w_mpjpe100_mm", "W-MPJPE100"),
    ("wa_mpjpe100_mm", "WA-MPJPE100"),
    ("rte_mm", "RTE mm"),
    ("rte_pct", "RTE %"),
    ("jitter_m_s3", "Jitter m/s³"),
    ("accel_error_m_s2", "Accel m/s²"),
    ("foot_sliding_mm", "FS mm"),
)
METHODS = ("model", "ground_contact", "upper_bound")


def table(rows: list[dict], label_keys: tuple[str, ...]) -> str:
    head = list(label_keys) + ["seqs", "frames"] + [name for _, name in METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row[k]) for k in label_keys]
        cells += [f"{row[k]:.0f}" if k in row else "" for k in ("num_sequences", "num_frames")]
        cells += [f"{row[k]:.1f}" if isinstance(row.get(k), float) else "" for k, _ in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def overall(result, scope: str = "overall") -> list[dict]:
    return [dict(result.overall_row(m, scope), method=m) for m in METHODS]


def method_only(result, scope: str = "overall") -> dict:
    """The model row of a ``post_process=False`` run, named so."""
    return dict(result.overall_row("model", scope), method="model, method only")


def run(store, checkpoint, max_sequences, cameras, **settings):
    start = time.perf_counter()
    result = evaluate_checkpoint(
        store, checkpoint, "test", cameras, None, max_sequences=max_sequences, **settings
    )
    print(f"<!-- {store} {cameras} {settings}: {time.perf_counter() - start:.0f} s -->")
    return result


def main_tables(args, cameras: str) -> tuple[list[dict], dict]:
    """Per store: the model, both baselines and the method-only model; all and grounded."""
    dump, defaults = [], {}
    print(f"## {args.checkpoint}: protocol {cameras}, ground-truth 2D, test split\n")
    for store in args.stores:
        result = run(store, args.checkpoint, args.max_sequences, cameras)
        raw = run(store, args.checkpoint, args.max_sequences, cameras, post_process=False)
        defaults[store] = result
        rows = overall(result) + [method_only(raw)]
        rows += overall(result, "overall_grounded") + [method_only(raw, "overall_grounded")]
        for row in rows:
            row.update(store=store, protocol=cameras)
        dump += rows
        print(f"### {store}, {cameras}\n")
        print(table(rows, ("store", "scope", "method")))
        contact = result.contact_comparison()
        beaten = [c for c in contact if c["model_better"]]
        print(
            f"\nclips whose feet touch the ground: {len(contact)}; model Abs-MPJPE below the "
            f"ground-contact heuristic's on {len(beaten)} of them\n"
        )
        for c in contact:
            if not c["model_better"]:
                print(
                    f"- not below on {c['sequence_id']}: model "
                    f"{c['model_abs_mpjpe_mm']:.0f} mm, heuristic "
                    f"{c['ground_contact_abs_mpjpe_mm']:.0f} mm"
                )
        if result.skipped:
            print(f"\nskipped: {len(result.skipped)} ({result.skipped[0]['reason']}, ...)")
        print()
    return dump, defaults


def sweeps(args, store: str, cameras: str, default) -> list[dict]:
    """Pixel noise and sampling steps on one store."""
    rows = [dict(r, setting="noise 0 px") for r in overall(default)]
    for noise in (2.0, 5.0, 10.0):
        result = run(store, args.checkpoint, args.max_sequences, cameras, noise_px=noise)
        rows += [dict(r, setting=f"noise {noise:g} px") for r in overall(result)]
    steps_rows = [dict(default.overall_row("model"), method="model", setting="DDIM 10 (default)")]
    for sampler, steps in (("ddim", 5), ("ddim", 25), ("ddpm", 100)):
        result = run(
            store, args.checkpoint, args.max_sequences, cameras, sampler=sampler, steps=steps
        )
        row = dict(result.overall_row("model"), method="model")
        steps_rows.append(dict(row, setting=f"{sampler.upper()} {steps}"))
    print(f"### {store}, {cameras}: pixel noise (all methods, DDIM 10)\n")
    print(table(rows, ("setting", "method")))
    print(f"\n### {store}, {cameras}: sampling steps (model, ground-truth 2D)\n")
    print(table(steps_rows, ("setting", "method")))
    print()
    return [dict(r, store=store, protocol=cameras) for r in rows + steps_rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--stores", nargs="+", default=["bandai1", "bandai2"])
    parser.add_argument(
        "--cameras", nargs="+", default=["standard", "in-view"], help="evaluation protocols"
    )
    parser.add_argument(
        "--sweep-cameras", default="in-view", help="protocol of the noise and steps sweeps"
    )
    parser.add_argument("--max-sequences", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-sweeps", action="store_true")
    parser.add_argument("--json", default=None, help="also write every overall row here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dump, defaults = [], {}
    for cameras in args.cameras:
        rows, results = main_tables(args, cameras)
        dump += rows
        defaults[cameras] = results
    if not args.skip_sweeps:
        store = args.stores[0]
        default = defaults.get(args.sweep_cameras, {}).get(store)
        if default is None:
            default = run(store, args.checkpoint, args.max_sequences, args.sweep_cameras)
        dump += sweeps(args, store, args.sweep_cameras, default)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(dump, handle, indent=1, default=str)


if __name__ == "__main__":
    main()
