"""Checkpoint I/O: round trips, atomic writes, clear errors, inference exports."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from data_catalog.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    CheckpointError,
    build_model,
    checkpoint_sha256,
    export_for_inference,
    load_checkpoint,
    save_checkpoint,
)
from mocap_core.model_config import ModelConfig
from mocap_core.models import MultiViewDenoiser, SingleViewDenoiser
from mocap_core.representation import FeatureStats
from mocap_core.training_data import SceneConfig

CONFIG = ModelConfig(
    joint_set="smpl22",
    d_model=32,
    num_layers=2,
    num_heads=2,
    ff_dim=64,
    max_frames=16,
    pointmap_size=16,
    pointmap_input_size=16,
    pointmap_channels=(4, 4, 8, 8),
)


def payload(stage: str = "pretrain-2d", with_optimizer: bool = True) -> dict:
    torch.manual_seed(0)
    model = (SingleViewDenoiser if stage == "pretrain-2d" else MultiViewDenoiser)(CONFIG)
    stats = FeatureStats(mean=np.linspace(-1, 1, 46), std=np.linspace(0.5, 2, 46))
    out = {
        "stage": stage,
        "model_config": CONFIG.to_dict(),
        "model": model.state_dict(),
        "step": 7,
        "stats": {"local": stats.to_dict(), "global": stats.to_dict()},
        "scene_config": SceneConfig(pointmap_size=16).model_dump(mode="json"),
        "train_config": {"profile": "tiny", "seed": 1},
        "data": {"walks": "f" * 64},
        "history": [{"step": 7, "train_loss": 0.5, "val_loss": None}],
        "parent": None,
    }
    if with_optimizer:
        optimizer = torch.optim.AdamW(model.parameters())
        x = torch.randn(1, 46, 8) if stage == "pretrain-2d" else torch.randn(1, 2, 46, 8)
        model(x, torch.tensor([3])).sum().backward()
        optimizer.step()
        out["optimizer"] = optimizer.state_dict()
    return out


@pytest.mark.parametrize("stage", ["pretrain-2d", "finetune-multiview"])
def test_round_trip_and_build_model(tmp_path, stage):
    path = save_checkpoint(tmp_path / "sub" / "ckpt.pt", payload(stage))
    loaded = load_checkpoint(path)
    assert loaded["format"] == CHECKPOINT_FORMAT
    assert loaded["format_version"] == CHECKPOINT_FORMAT_VERSION
    assert loaded["package_version"] and loaded["step"] == 7
    model, stats, scene = build_model(loaded)
    assert not model.training
    assert isinstance(model, SingleViewDenoiser if stage == "pretrain-2d" else MultiViewDenoiser)
    assert np.allclose(stats["local"].mean, np.linspace(-1, 1, 46))
    assert scene.pointmap_size == 16
    reference = payload(stage)["model"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_failed_save_leaves_the_old_file_and_no_temporary(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pt", payload())
    before = path.read_bytes()
    broken = payload()
    broken["history"] = [lambda: None]  # cannot be pickled
    with pytest.raises(Exception):  # noqa: B017 - whatever pickle raises
        save_checkpoint(path, broken)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a torch file")
    with pytest.raises(CheckpointError, match="not a mocap2to3 checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a mocap2to3 checkpoint"):
        load_checkpoint(other)
    newer = payload()
    newer["format_version"] = CHECKPOINT_FORMAT_VERSION + 1
    torch.save({"format": CHECKPOINT_FORMAT, **newer}, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="newer than this package"):
        load_checkpoint(tmp_path / "newer.pt")
    partial = {k: v for k, v in payload().items() if k not in ("stats", "history")}
    torch.save({"format": CHECKPOINT_FORMAT, "format_version": 1, **partial}, tmp_path / "p.pt")
    with pytest.raises(
        CheckpointError, match=r"lacks keys \['stats', 'package_version', 'history'\]"
    ):
        load_checkpoint(tmp_path / "p.pt")
    with pytest.raises(CheckpointError, match="lacks keys"):
        save_checkpoint(tmp_path / "q.pt", partial)


def test_loading_never_runs_code_from_the_file(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({**payload(with_optimizer=False), "format": CHECKPOINT_FORMAT, "x": Path(".")}, path)
    with pytest.raises(CheckpointError, match="torch.load failed"):
        load_checkpoint(path)


def test_weights_of_another_config_are_refused(tmp_path):
    data = payload()
    data["model_config"] = CONFIG.replace(d_model=64, ff_dim=128).to_dict()
    loaded = load_checkpoint(save_checkpoint(tmp_path / "c.pt", data))
    with pytest.raises(CheckpointError, match="do not fit"):
        build_model(loaded)


def test_sha256_and_inference_export(tmp_path):
    src = save_checkpoint(tmp_path / "last.pt", payload())
    assert checkpoint_sha256(src) == hashlib.sha256(src.read_bytes()).hexdigest()
    dst = export_for_inference(src, tmp_path / "release" / "model.pt")
    exported = load_checkpoint(dst)
    assert "optimizer" not in exported
    assert exported["exported_from"] == checkpoint_sha256(src)
    assert dst.stat().st_size < src.stat().st_size
    a, _, _ = build_model(load_checkpoint(src))
    b, _, _ = build_model(exported)
    x, t = torch.randn(2, 46, 8), torch.tensor([5, 50])
    assert torch.equal(a(x, t), b(x, t))
