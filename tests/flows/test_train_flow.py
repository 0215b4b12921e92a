"""The training flows end to end on a tiny store of procedural walks, and the GPU limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data_catalog.checkpoints import build_model, load_checkpoint
from data_catalog.store import PreparedSequence, SplitRule, SplitSelector, write_store_version
from flows.train import GPU_LIMIT, LOSS_CURVE, finetune_multiview, gpu_slot, pretrain_2d
from mocap_core.procedural import procedural_walk
from mocap_core.skeleton_mapping import apply_mapping, get_skeleton_mapping

# Small enough to run in seconds on one CPU thread (the model and scene sizes are overrides
# of the tiny profile).
OVERRIDES = dict(
    window=16,
    log_every=2,
    val_every=2,
    checkpoint_every=2,
    val_batches=1,
    stats_samples=8,
    lr=1e-3,
)
STAGE1_ONLY = dict(
    model_overrides=dict(
        d_model=32,
        num_layers=2,
        num_heads=2,
        ff_dim=64,
        pointmap_input_size=16,
        pointmap_channels=[4, 4, 8, 8],
    ),
    scene_overrides=dict(pointmap_size=16, min_frames=8),
)


def walk_store(folder: Path, num_walks: int = 5, frames: int = 60) -> str:
    """A prepared 3D store of procedural walks (smpl22), walk4 held out for validation."""
    mapping = get_skeleton_mapping("bandai_namco", "smpl22")
    sequences = []
    for i in range(num_walks):
        walk = procedural_walk(frames, seed=i, turn_deg_per_s=20.0 * i)
        joints, valid = apply_mapping(
            mapping, walk.joint_names, walk.positions, walk.global_rotations
        )
        sequences.append(
            PreparedSequence(
                source_key=f"walk{i}.bvh",
                source_sha256=f"{i:064d}",
                joints={"smpl22": joints.astype(np.float32)},
                valid={"smpl22": np.broadcast_to(np.asarray(valid, bool), joints.shape[:2]).copy()},
                original_fps=30.0,
            )
        )
    from factories import manifest_of_sequences

    write_store_version(
        folder,
        iter(sequences),
        kind="3d",
        joint_sets=("smpl22",),
        fps=30.0,
        manifest=manifest_of_sequences("walks", sequences),
        split_rule=SplitRule(
            test_fraction=0.0, val_fraction=0.0, val=SplitSelector(keys=["walk4*"])
        ),
        dataset="walks",
    )
    return str(folder)


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _artifacts(key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )


def test_both_stages_end_to_end(tmp_path):
    store = walk_store(tmp_path / "walks")
    stage1 = pretrain_2d(
        stores=[store],
        run_dir=str(tmp_path / "s1"),
        steps=2,
        batch_size=4,
        device="cpu",
        workers=0,
        overrides={**OVERRIDES, **STAGE1_ONLY},
    )
    assert stage1["steps"] == 2 and stage1["stage"] == "pretrain-2d"
    png = Path(stage1["loss_curve"])
    assert png == tmp_path / "s1" / LOSS_CURVE
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert Path(stage1["history_csv"]).is_file()
    assert "validation loss" in stage1["report"]

    stage2 = finetune_multiview(
        init_checkpoint=stage1["checkpoint"],
        stores=[store],
        run_dir=str(tmp_path / "s2"),
        steps=2,
        batch_size=2,
        device="cpu",
        workers=1,  # one data worker process, as on a larger CPU machine
        overrides=OVERRIDES,
    )
    assert stage2["steps"] == 2
    model, stats, scene = build_model(load_checkpoint(stage2["checkpoint"]))
    assert type(model).__name__ == "MultiViewDenoiser" and scene.pointmap_size == 16
    assert (tmp_path / "s2" / LOSS_CURVE).is_file()

    for stage in ("pretrain-2d", "finetune-multiview"):
        progress = _artifacts(f"{stage}-progress")
        assert progress and progress[0].type == "progress" and progress[0].data == 100.0
        table = _artifacts(f"{stage}-history")
        assert table and table[0].type == "table"
        assert _artifacts(f"{stage}-status") and _artifacts(f"{stage}-summary")


def test_gpu_slot_creates_the_limit_and_holds_one_slot():
    from prefect.client.orchestration import get_client

    with gpu_slot(True):
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(GPU_LIMIT)
        assert limit.limit == 1 and limit.active_slots == 1
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(GPU_LIMIT).active_slots == 0
    with gpu_slot(False):  # CPU runs take no slot
        pass


def test_training_deployments_name_real_parameters():
    import yaml

    from data_catalog.paths import REPO_ROOT

    config = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in config["deployments"]}
    for name, flow in (("pretrain-2d", pretrain_2d), ("finetune-multiview", finetune_multiview)):
        assert deployments[name]["entrypoint"].endswith(":" + flow.fn.__name__)
        assert flow.name == name
        assert set(deployments[name]["parameters"]) <= set(flow.parameters.properties)


def test_cli_train_refuses_a_bad_configuration_before_training(tmp_path, capsys):
    from flows.cli import build_parser, main

    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for option in ("--stage", "--stores", "--init", "--resume", "--profile", "--joint-set"):
        assert option in help_text
    store = walk_store(tmp_path / "walks", num_walks=2)
    run_dir = tmp_path / "run"
    code = main(
        ["train", "--stage", "finetune-multiview", "--stores", store, "--run-dir", str(run_dir)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "pretrain-2d" in err and "--init" in err
    assert not run_dir.exists()
    code = main(["train", "--stage", "pretrain-2d", "--stores", store, "--joint-set", "coco17"])
    assert code == 2
    assert "no 'coco17' joint set" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_train_runs_the_flow(tmp_path, capsys):
    from flows.cli import main

    store = walk_store(tmp_path / "walks", num_walks=5)
    run_dir = tmp_path / "run"
    args = ["train", "--stage", "pretrain-2d", "--stores", store, "--run-dir", str(run_dir)]
    assert main([*args, "--steps", "1", "--batch-size", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "pretrain-2d: step 1" in out and "loss curve" in out
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert (run_dir / LOSS_CURVE).is_file()
