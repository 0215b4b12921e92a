"""The evaluate flow end to end on a tiny store of procedural walks and a random-weights
stage-2 checkpoint; the programmatic API; the CLI's checks; the deployment."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import data_catalog.checkpoints
from data_catalog.checkpoints import save_checkpoint
from data_catalog.store import PreparedSequence, SplitRule, SplitSelector, write_store_version
from flows.evaluate import evaluate
from mocap_core.evaluation import METHODS
from mocap_core.model_config import ModelConfig
from mocap_core.models import MultiViewDenoiser, SingleViewDenoiser
from mocap_core.procedural import procedural_walk
from mocap_core.representation import FeatureStats
from mocap_core.skeleton_mapping import apply_mapping, get_skeleton_mapping
from mocap_core.training_data import SceneConfig
from tasks.evaluate import (
    EvaluationConfigError,
    compare_settings,
    evaluate_checkpoint,
    plotted_sequences,
)

WINDOW = 16


def walk_store(folder: Path, num_walks: int = 4, frames: int = 50) -> str:
    """A 3D store (smpl22 and coco17) of procedural walks; walk0-2 are the test split."""
    from factories import manifest_of_sequences

    sequences = []
    for i in range(num_walks):
        walk = procedural_walk(frames, seed=i, turn_deg_per_s=15.0 * i)
        joints, valid = {}, {}
        for name in ("smpl22", "coco17"):
            positions, ok = apply_mapping(
                get_skeleton_mapping("bandai_namco", name),
                walk.joint_names,
                walk.positions,
                walk.global_rotations,
            )
            joints[name] = positions.astype(np.float32)
            valid[name] = np.broadcast_to(np.asarray(ok, bool), positions.shape[:2]).copy()
        sequences.append(
            PreparedSequence(
                source_key=f"walk{i}.bvh",
                source_sha256=f"{i:064d}",
                joints=joints,
                valid=valid,
                original_fps=30.0,
            )
        )
    write_store_version(
        folder,
        iter(sequences),
        kind="3d",
        joint_sets=("smpl22", "coco17"),
        fps=30.0,
        manifest=manifest_of_sequences("walks", sequences),
        split_rule=SplitRule(
            test_fraction=0.0, val_fraction=0.0, test=SplitSelector(keys=["walk[012]*"])
        ),
        dataset="walks",
    )
    return str(folder)


def tiny_checkpoint(path: Path, joint_set: str = "smpl22", stage: str = "finetune-multiview"):
    """A random-weights checkpoint in the docs/TRAINING.md layout (tiny sizes)."""
    config = ModelConfig(
        joint_set=joint_set,
        d_model=32,
        num_layers=2,
        num_heads=2,
        ff_dim=64,
        max_frames=WINDOW,
        pointmap_size=16,
        pointmap_input_size=16,
        pointmap_channels=(4, 4, 8, 8),
    )
    torch.manual_seed(0)
    model = (MultiViewDenoiser if stage == "finetune-multiview" else SingleViewDenoiser)(config)
    stats = FeatureStats(np.zeros(config.feature_dim), np.full(config.feature_dim, 0.5))
    return str(
        save_checkpoint(
            path,
            {
                "stage": stage,
                "model_config": config.to_dict(),
                "model": model.state_dict(),
                "step": 1,
                "stats": {"local": stats.to_dict(), "global": stats.to_dict()},
                "scene_config": SceneConfig(pointmap_size=16).model_dump(mode="json"),
                "train_config": {"window": WINDOW},
                "data": {"walks": "0" * 64},
                "history": [],
                "parent": None,
            },
        )
    )


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def store(tmp_path) -> str:
    return walk_store(tmp_path / "walks")


def _artifacts(key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )


def test_flow_writes_the_report_with_three_methods(tmp_path, store):
    checkpoint = tiny_checkpoint(tmp_path / "model.pt")
    out = tmp_path / "report"
    summary = evaluate(store=store, checkpoint=checkpoint, steps=2, output_dir=str(out))

    assert summary["output_dir"] == str(out)
    for name in ("report.md", "report.csv", "errors_per_sequence.png", "top_view.png"):
        assert (out / name).is_file(), name
    assert (out / "abs_error_over_time.png").read_bytes()[:4] == b"\x89PNG"
    table = pd.read_csv(out / "report.csv")
    rows = table[table["scope"] == "sequence"]
    assert sorted(rows["sequence_id"].unique()) == ["walk0.bvh#0", "walk1.bvh#0", "walk2.bvh#0"]
    assert set(rows["method"]) == set(METHODS) and len(rows) == 9
    overall = table[table["scope"] == "overall"].set_index("method")
    assert set(overall.index) == set(METHODS)
    assert overall.loc["upper_bound", "abs_mpjpe_mm"] < 1e-3  # ground-truth 2D: exact
    assert overall.loc["upper_bound", "pa_mpjpe_mm"] < 1e-3
    assert np.isfinite(rows[rows["method"] == "ground_contact"]["abs_mpjpe_mm"]).all()
    assert np.isfinite(overall.loc["model", "abs_mpjpe_mm"])
    assert (table["checkpoint_sha256"] == summary["checkpoint_sha256"]).all()
    assert table["store_fingerprint"].nunique() == 1 and table["protocol"].eq("standard").all()
    assert (rows["grounded"]).all()  # walks keep a foot down
    assert rows["distance_m"].between(3.0, 6.0).all()

    markdown = (out / "report.md").read_text()
    assert summary["checkpoint_sha256"] in markdown and '"subject_distance_m"' in markdown
    assert "Ground-contact heuristic" in markdown and "![top_view](top_view.png)" in markdown
    assert "Abs-MPJPE" in summary["report"] and "upper_bound" in summary["report"]
    assert len(summary["contact_comparison"]) == 3

    artifact = _artifacts("evaluate-walks-test")
    assert artifact and artifact[0].type == "table"
    progress = _artifacts("evaluate-progress")
    assert progress and progress[0].data == 100.0


def test_evaluate_checkpoint_is_deterministic_and_compares_settings(tmp_path, store):
    checkpoint = tiny_checkpoint(tmp_path / "coco.pt", joint_set="coco17_pelvis")
    first = evaluate_checkpoint(store, checkpoint, steps=2, max_sequences=2)
    again = evaluate_checkpoint(store, checkpoint, steps=2, max_sequences=2)
    assert first.plan.store_joint_set == "coco17" and first.plan.model_joint_set == "coco17_pelvis"
    assert first.rows == again.rows
    assert {r["num_joints"] for r in first.rows} == {12}  # no face points on this skeleton
    # A subset draws the same scenes: sequence 0 scores the same alone.
    alone = evaluate_checkpoint(store, checkpoint, steps=2, max_sequences=1)
    key = ("walk0.bvh#0", "ground_contact")
    by_key = {(r["sequence_id"], r["method"]): r for r in first.rows}
    assert alone.rows[2]["abs_mpjpe_mm"] == by_key[key]["abs_mpjpe_mm"]
    assert "Abs-MPJPE" in first.table()

    rows = compare_settings(
        store, checkpoint, [{"noise_px": 0.0, "steps": 2}, {"noise_px": 5.0, "steps": 2}],
        max_sequences=1,
    )  # fmt: skip
    upper = [r for r in rows if r["method"] == "upper_bound" and r["scope"] == "overall"]
    assert [r["noise_px"] for r in upper] == [0.0, 5.0]
    assert upper[0]["abs_mpjpe_mm"] < 1e-3 < upper[1]["abs_mpjpe_mm"] < 100.0
    with pytest.raises(ValueError, match="unknown setting"):
        compare_settings(store, checkpoint, [{"noise": 1}])


def test_bad_configurations_are_refused_before_any_work(tmp_path, store, monkeypatch, capsys):
    from flows.cli import build_parser, main

    help_text = build_parser()._subparsers._group_actions[0].choices["evaluate"].format_help()
    for option in ("--store", "--split", "--checkpoint", "--steps", "--input-noise", "--cameras"):
        assert option in help_text
    stage1 = tiny_checkpoint(tmp_path / "stage1.pt", stage="pretrain-2d")
    assert main(["evaluate", "--store", store, "--checkpoint", stage1]) == 2
    assert "finetune-multiview" in capsys.readouterr().err
    checkpoint = tiny_checkpoint(tmp_path / "model.pt")
    assert main(["evaluate", "--store", store, "--checkpoint", checkpoint, "--split", "val"]) == 2
    assert "no sequences in split 'val'" in capsys.readouterr().err
    assert main(["evaluate", "--store", store, "--checkpoint", checkpoint, "--cameras", "x"]) == 2
    assert "unknown evaluation protocol" in capsys.readouterr().err

    monkeypatch.setattr(data_catalog.checkpoints, "RELEASE_DIR", tmp_path)  # none here
    assert main(["evaluate", "--store", store, "--joint-set", "coco17"]) == 2
    err = capsys.readouterr().err
    assert "no release checkpoint" in err and str(tmp_path / "coco17.pt") in err
    with pytest.raises(EvaluationConfigError, match="coco17_pelvis model"):
        evaluate_checkpoint(
            store, tiny_checkpoint(tmp_path / "c.pt", "coco17_pelvis"), joint_set="smpl22"
        )
    with pytest.raises(EvaluationConfigError, match="drop rate"):
        evaluate_checkpoint(store, checkpoint, drop_rate=2.0)


def test_checkpoint_post_processing_is_used_unless_turned_off(tmp_path, store):
    from data_catalog.checkpoints import load_checkpoint
    from tasks.evaluate import plan_evaluation

    path = tiny_checkpoint(tmp_path / "model.pt")
    payload = load_checkpoint(path)
    payload["recovery"] = {"ground_anchor_frames": 9, "smooth_frames": 5}
    save_checkpoint(path, payload)

    kept = plan_evaluation(store, "test", path)
    raw = plan_evaluation(store, "test", path, post_process=False)

    assert (kept.recovery.ground_anchor_frames, kept.recovery.smooth_frames) == (9, 5)
    assert (raw.recovery.ground_anchor_frames, raw.recovery.smooth_frames) == (0, 0)
    assert raw.output_dir.endswith("-method-only") and not kept.output_dir.endswith("-only")
    three = plan_evaluation(store, "test", path, num_samples=3)
    assert three.recovery.num_samples == 3 and three.output_dir.endswith("-samples3")
    with pytest.raises(EvaluationConfigError, match="num_samples"):
        plan_evaluation(store, "test", path, num_samples=0)


def test_cli_runs_the_flow_and_prints_the_table(tmp_path, store, capsys):
    from flows.cli import main

    checkpoint = tiny_checkpoint(tmp_path / "model.pt")
    out = tmp_path / "cli"
    args = ["evaluate", "--store", store, "--checkpoint", checkpoint, "--output", str(out)]
    assert main([*args, "--steps", "2", "--input-noise", "2", "--drop-rate", "0.1"]) == 0
    printed = capsys.readouterr().out
    assert "ground_contact" in printed and "report:" in printed
    table = pd.read_csv(out / "report.csv")
    assert (table["noise_px"] == 2.0).all() and (table["drop_rate"] == 0.1).all()
    upper = table[(table["scope"] == "overall") & (table["method"] == "upper_bound")]
    assert 0.0 < float(upper["abs_mpjpe_mm"].iloc[0]) < 100.0
    assert not math.isnan(float(upper["pa_mpjpe_mm"].iloc[0]))


def test_evaluate_deployment_names_real_parameters():
    import yaml

    from data_catalog.paths import REPO_ROOT

    config = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    deployment = {d["name"]: d for d in config["deployments"]}["evaluate"]
    assert deployment["entrypoint"] == "flows/evaluate.py:evaluate"
    assert evaluate.name == "evaluate"
    assert set(deployment["parameters"]) <= set(evaluate.parameters.properties)


def test_plotted_sequences_spread_over_the_order() -> None:
    ids = [f"s{i:02d}" for i in range(10)]
    assert plotted_sequences(ids, 4) == ["s00", "s03", "s06", "s09"]
    assert plotted_sequences(ids, 1) == ["s00"]
    assert plotted_sequences(ids, 12) == ids
    assert plotted_sequences(ids, 0) == [] and plotted_sequences([], 3) == []
