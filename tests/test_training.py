"""The training objective (mocap_core.training) and the loop (tasks.training).

Objective tests use hand-made batches (dicts of tensors with the contract's keys); loop tests
use a tiny store of procedural walks and a tiny model, one torch thread.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from data_catalog.checkpoints import load_checkpoint, save_checkpoint
from data_catalog.store import PreparedSequence, SplitRule, SplitSelector, write_store_version
from mocap_core.diffusion import DDPMScheduler
from mocap_core.model_config import ModelConfig
from mocap_core.models import MultiViewDenoiser, SingleViewDenoiser
from mocap_core.procedural import procedural_walk
from mocap_core.representation import FeatureStats
from mocap_core.skeleton_mapping import apply_mapping, get_skeleton_mapping
from mocap_core.training import (
    OBS_LOCAL_NOISE_STD,
    check_batch,
    diffusion_loss,
    train_step,
    validation_loss,
)
from tasks.training import (
    PROFILE_DEFAULTS,
    TrainConfig,
    TrainingConfigError,
    plan_run,
    run_training,
    save_loss_curve,
)

C = 46  # smpl22 channels


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------
# Hand-made batches


def make_batch(batch: int = 2, views: int = 3, frames: int = 16, size: int = 16, seed: int = 0):
    """A contract batch: smooth random features, one padded sample, one unknown camera."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, frames)
    freq = torch.rand(batch, views, 1, C, generator=g) * 6
    phase = torch.rand(batch, views, 1, C, generator=g) * 6
    local = torch.sin(freq * t[None, None, :, None] + phase)
    q, _ = torch.linalg.qr(torch.randn(batch, views, 3, 3, generator=g))
    q = q * torch.sign(torch.linalg.det(q))[..., None, None]
    mask = torch.ones(batch, views, frames, C)
    mask[1, :, frames - 4 :] = 0  # sample 1 is padded
    mask[0, :, :, 4:6] = 0  # joint 2 of sample 0 is missing
    return {
        "local": local.float(),
        "global0": torch.randn(batch, frames, C, generator=g),
        "feature_mask": mask,
        "length": torch.tensor([frames] + [frames - 4] * (batch - 1)),
        "rt": torch.randn(batch, views, 3, generator=g),
        "k": torch.rand(batch, views, 4, generator=g),
        "pointmap": torch.randn(batch, views, size, size, 3, generator=g),
        "R": q.float(),
        "camera_known": torch.tensor([True] + [False] * (batch - 1)),
    }


def unit_stats() -> dict[str, FeatureStats]:
    return {
        "local": FeatureStats(mean=np.zeros(C), std=np.ones(C)),
        "global": FeatureStats(mean=np.zeros(C), std=np.ones(C)),
    }


def small_config(**changes) -> ModelConfig:
    base = dict(
        joint_set="smpl22",
        d_model=32,
        num_layers=2,
        num_heads=2,
        ff_dim=64,
        dropout=0.0,
        cond_drop_prob=0.0,
        max_frames=16,
        pointmap_size=16,
        pointmap_input_size=16,
        pointmap_channels=(4, 4, 8, 8),
    )
    return ModelConfig(**{**base, **changes})


class Recorder(torch.nn.Module):
    """Returns zeros of the input's shape and keeps what it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.calls: list[tuple[torch.Tensor, torch.Tensor, dict]] = []

    def forward(self, x, timesteps, **kwargs):
        self.calls.append((x.detach().clone(), timesteps.clone(), kwargs))
        return torch.zeros_like(x) + 0.0 * self.weight


@pytest.mark.parametrize("stage", ["pretrain-2d", "finetune-multiview"])
def test_loss_is_mse_over_supervised_entries_only(stage):
    batch = make_batch()
    # Garbage on unsupervised entries must not reach the loss.
    batch["local"][1, :, 12:] = float("nan")
    batch["local"][0, :, :, 4:6] = 1e6
    model = Recorder()
    loss, metrics = diffusion_loss(
        model, batch, DDPMScheduler(), unit_stats(), stage, torch.Generator().manual_seed(0)
    )
    views = 1 if stage == "pretrain-2d" else 3
    local = batch["local"][:, :views]
    keep = batch["feature_mask"][:, :views] > 0
    expected = (local[keep] ** 2).mean()  # a zero prediction of z-scored x0 = local
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(metrics["supervised"], keep.sum().float())
    view0 = batch["local"][:, 0][batch["feature_mask"][:, 0] > 0]
    torch.testing.assert_close(metrics["loss_view0"], (view0**2).mean())
    x_t = model.calls[0][0]
    assert torch.isfinite(x_t).all()


def test_stage1_feeds_view0_and_drops_unknown_cameras():
    batch = make_batch()
    model = Recorder()
    diffusion_loss(model, batch, DDPMScheduler(), unit_stats(), "pretrain-2d", torch.Generator())
    x_t, timesteps, kwargs = model.calls[0]
    assert x_t.shape == (2, C, 16)
    assert ((timesteps >= 0) & (timesteps < 100)).all()
    torch.testing.assert_close(kwargs["rt"], batch["rt"][:, 0])
    assert kwargs["pointmap"].shape == (2, 16, 16, 3)
    for name in ("rt", "k", "pointmap"):
        assert kwargs["cond_mask"][name].tolist() == [False, True]
    assert "obs_local" not in kwargs


def test_stage2_world_noise_is_shared_by_aligned_views_and_observation_is_augmented():
    batch = make_batch(batch=3, views=3)
    batch["local"].zero_()  # x0 = 0: x_t is pure (scaled) noise
    batch["R"] = torch.eye(3).expand(3, 3, 3, 3).clone()  # every view looks the same way
    model = Recorder()
    diffusion_loss(
        model,
        batch,
        DDPMScheduler(),
        unit_stats(),
        "finetune-multiview",
        torch.Generator().manual_seed(1),
    )
    x_t, _, kwargs = model.calls[0]
    assert x_t.shape == (3, 3, C, 16)
    # Same rotation in every view -> the same 3D noise projects to the same features.
    torch.testing.assert_close(x_t[:, 1], x_t[:, 0])
    torch.testing.assert_close(x_t[:, 2], x_t[:, 0])
    # Observed local encoding = x0 (0) + N(0, 0.1^2) augmentation.
    obs = kwargs["obs_local"]
    assert obs.shape == (3, C, 16)
    assert abs(float(obs.std()) - OBS_LOCAL_NOISE_STD) < 0.02
    assert kwargs["rt"].shape == (3, 3, 3)


def test_loss_is_a_function_of_the_generator():
    batch = make_batch()
    torch.manual_seed(0)
    model = SingleViewDenoiser(small_config()).eval()
    losses = [
        float(
            diffusion_loss(
                model,
                batch,
                DDPMScheduler(),
                unit_stats(),
                "pretrain-2d",
                torch.Generator().manual_seed(seed),
            )[0].detach()
        )
        for seed in (5, 5, 6)
    ]
    assert losses[0] == losses[1] != losses[2]


def test_check_batch_names_the_problem():
    batch = make_batch()
    del batch["R"]
    with pytest.raises(ValueError, match="'R'"):
        check_batch(batch)
    batch = make_batch()
    batch["rt"] = batch["rt"][:, :, :2]
    with pytest.raises(ValueError, match="rt"):
        check_batch(batch)
    stats = {"local": FeatureStats(np.zeros(38), np.ones(38)), "global": unit_stats()["global"]}
    with pytest.raises(ValueError, match="another joint set"):
        diffusion_loss(Recorder(), make_batch(), DDPMScheduler(), stats, "pretrain-2d", None)
    with pytest.raises(ValueError, match="unknown training stage"):
        diffusion_loss(Recorder(), make_batch(), DDPMScheduler(), unit_stats(), "stage3", None)


@pytest.mark.parametrize(
    ("stage", "model_class"),
    [("pretrain-2d", SingleViewDenoiser), ("finetune-multiview", MultiViewDenoiser)],
)
def test_overfits_one_fixed_batch(stage, model_class):
    batch = make_batch()
    stats = {
        "local": FeatureStats.fit(batch["local"].reshape(-1, C)),
        "global": FeatureStats.fit(batch["global0"].reshape(-1, C)),
    }
    scheduler = DDPMScheduler()
    torch.manual_seed(0)
    model = model_class(small_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    before = validation_loss(model, [batch], scheduler, stats, stage, seed=0, device="cpu")
    for step in range(80):
        train_step(
            model,
            optimizer,
            batch,
            scheduler,
            stats,
            stage,
            torch.Generator().manual_seed(step),
            0.5,
        )
    after = validation_loss(model, [batch], scheduler, stats, stage, seed=0, device="cpu")
    assert model.training  # validation restored the mode
    assert after < before / 10, (before, after)


def test_train_step_clips_gradients():
    batch = make_batch()
    torch.manual_seed(0)
    model = SingleViewDenoiser(small_config())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    result = train_step(
        model,
        optimizer,
        batch,
        DDPMScheduler(),
        unit_stats(),
        "pretrain-2d",
        torch.Generator().manual_seed(0),
        1e-3,
    )
    total = torch.linalg.vector_norm(
        torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])
    )
    assert float(result.grad_norm) > 1e-3  # the norm before clipping is reported
    assert float(total) == pytest.approx(1e-3, rel=1e-3)
    with pytest.raises(ValueError, match="grad_clip"):
        train_step(
            model,
            optimizer,
            batch,
            DDPMScheduler(),
            unit_stats(),
            "pretrain-2d",
            torch.Generator(),
            -1.0,
        )


def test_validation_loss_repeats_exactly():
    batch = make_batch()
    torch.manual_seed(0)
    model = MultiViewDenoiser(small_config(dropout=0.1, cond_drop_prob=0.1)).train()
    args = ([batch, make_batch(seed=1)], DDPMScheduler(), unit_stats(), "finetune-multiview")
    first = validation_loss(model, *args, seed=3, device="cpu")
    second = validation_loss(model, *args, seed=3, device="cpu")
    assert first == second
    assert model.training
    assert math.isnan(validation_loss(model, [], *args[1:], seed=3, device="cpu"))


# ---------------------------------------------------------------------------------------------
# Configuration


def test_profile_defaults_and_overrides():
    config = TrainConfig.for_profile(
        "pretrain-2d", "tiny", "smpl22", ["bandai1"], "/tmp/x", max_steps=None, lr=1e-3
    )
    assert config.window == 120 and config.lr == 1e-3
    assert config.max_steps == PROFILE_DEFAULTS["tiny"]["max_steps"]["pretrain-2d"]
    paper = TrainConfig.for_profile("finetune-multiview", "paper", "smpl22", ["a"], "/tmp/x")
    assert (paper.window, paper.lr, paper.grad_clip, paper.weight_decay) == (300, 1e-5, 0.5, 1e-2)
    assert TrainConfig.model_validate(paper.to_json_dict()) == paper
    with pytest.raises(TrainingConfigError, match="profile"):
        TrainConfig.for_profile("pretrain-2d", "huge", "smpl22", ["a"], "/tmp/x")
    with pytest.raises(TrainingConfigError, match="joint set"):
        TrainConfig.for_profile("pretrain-2d", "tiny", "coco17", ["a"], "/tmp/x")
    with pytest.raises(TrainingConfigError, match="multiple of log_every"):
        TrainConfig.for_profile("pretrain-2d", "tiny", "smpl22", ["a"], "/tmp/x", val_every=15)
    with pytest.raises(TrainingConfigError, match="device"):
        TrainConfig.for_profile("pretrain-2d", "tiny", "smpl22", ["a"], "/tmp/x", device="tpu")


# ---------------------------------------------------------------------------------------------
# The loop on a tiny store of procedural walks


def walk_store(folder: Path, num_walks: int = 6, frames: int = 60, val_keys=("walk5*",)) -> str:
    """A prepared 3D store of procedural walks (smpl22 only); ``val_keys`` go to val."""
    mapping = get_skeleton_mapping("bandai_namco", "smpl22")
    sequences = []
    for i in range(num_walks):
        walk = procedural_walk(frames, seed=i, turn_deg_per_s=15.0 * i)
        joints, valid = apply_mapping(
            mapping, walk.joint_names, walk.positions, walk.global_rotations
        )
        key = f"walk{i}.bvh"
        sequences.append(
            PreparedSequence(
                source_key=key,
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
            test_fraction=0.0, val_fraction=0.0, val=SplitSelector(keys=list(val_keys))
        ),
        chunk_frames=64,
        dataset="walks",
    )
    return str(folder)


TINY = dict(
    window=16,
    batch_size=4,
    log_every=2,
    val_every=2,
    checkpoint_every=2,
    val_batches=1,
    stats_samples=8,
    num_workers=0,
    device="cpu",
    seed=3,
    lr=1e-3,
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


def tiny_config(stage, stores, run_dir, **changes) -> TrainConfig:
    values = {**TINY, **changes}
    if stage == "finetune-multiview":
        values.pop("model_overrides", None)
        values.pop("scene_overrides", None)
    return TrainConfig.for_profile(stage, "tiny", "smpl22", stores, str(run_dir), **values)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return walk_store(tmp_path_factory.mktemp("walks") / "walks")


@pytest.fixture(scope="module")
def stage1(store, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("stage1")
    return run_training(tiny_config("pretrain-2d", [store], run_dir, max_steps=4))


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_stage1_run_writes_checkpoint_history_and_best(stage1, store):
    assert stage1.steps == 4 and stage1.stopped == "max_steps"
    assert stage1.val_split == "val"
    checkpoint = load_checkpoint(stage1.checkpoint)
    assert checkpoint["stage"] == "pretrain-2d" and checkpoint["step"] == 4
    assert checkpoint["data"][store]  # manifest fingerprint
    assert checkpoint["parent"] is None and "optimizer" in checkpoint
    assert [row["step"] for row in checkpoint["history"]] == [0, 2, 4]
    assert math.isfinite(stage1.initial_val_loss) and math.isfinite(stage1.final_val_loss)
    best = load_checkpoint(stage1.best_checkpoint)
    assert "optimizer" not in best
    assert best["step"] in (0, 2, 4)
    lines = Path(stage1.history_csv).read_text().splitlines()
    assert lines[0].startswith("step,train_loss,val_loss") and len(lines) == 4
    assert stage1.peak_rss_mb > 0 and stage1.samples_per_s > 0


def test_resume_continues_bit_for_bit(store, tmp_path):
    straight = run_training(tiny_config("pretrain-2d", [store], tmp_path / "a", max_steps=4))
    half = run_training(tiny_config("pretrain-2d", [store], tmp_path / "b", max_steps=2))
    assert half.steps == 2
    resumed = run_training(
        tiny_config("pretrain-2d", [store], tmp_path / "b", max_steps=4), resume=True
    )
    assert resumed.steps == 4 and resumed.steps_this_session == 2
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    _assert_same_state(a["model"], b["model"])
    for key in a["optimizer"]["state"]:
        _assert_same_state(a["optimizer"]["state"][key], b["optimizer"]["state"][key])
    assert [r["val_loss"] for r in a["history"]] == [r["val_loss"] for r in b["history"]]
    assert [r["train_loss"] for r in a["history"][1:]] == [
        r["train_loss"] for r in b["history"][1:]
    ]


def test_stage2_from_stage1_and_resume(store, stage1, tmp_path):
    config = tiny_config(
        "finetune-multiview",
        [store],
        tmp_path / "s2",
        max_steps=2,
        init_checkpoint=stage1.checkpoint,
    )
    result = run_training(config)
    checkpoint = load_checkpoint(result.checkpoint)
    parent = load_checkpoint(stage1.checkpoint)
    assert checkpoint["stage"] == "finetune-multiview"
    assert checkpoint["stats"] == parent["stats"]
    assert checkpoint["scene_config"] == parent["scene_config"]
    assert checkpoint["model_config"]["num_views"] == 4
    from data_catalog.checkpoints import checkpoint_sha256

    assert checkpoint["parent"] == checkpoint_sha256(stage1.checkpoint)
    more = run_training(config.model_copy(update={"max_steps": 4}), resume=True)
    assert more.steps == 4 and load_checkpoint(more.checkpoint)["parent"] == checkpoint["parent"]


def test_stage2_continues_from_a_stage2_export(store, stage1, tmp_path):
    """A finetune-multiview checkpoint without optimiser state (a release export) starts a
    new run at step 0 with its weights, statistics and configuration as they are."""
    first = run_training(
        tiny_config(
            "finetune-multiview",
            [store],
            tmp_path / "a",
            max_steps=2,
            init_checkpoint=stage1.checkpoint,
        )
    )
    export = load_checkpoint(first.best_checkpoint)
    assert "optimizer" not in export
    config = tiny_config(
        "finetune-multiview",
        [store],
        tmp_path / "b",
        max_steps=2,
        lr=1e-4,
        init_checkpoint=first.best_checkpoint,
    )
    more = run_training(config)
    checkpoint = load_checkpoint(more.checkpoint)
    from data_catalog.checkpoints import checkpoint_sha256

    assert checkpoint["parent"] == checkpoint_sha256(first.best_checkpoint)
    assert checkpoint["stats"] == export["stats"]
    assert checkpoint["model_config"] == export["model_config"]
    assert more.steps == 2 and checkpoint["history"][0]["step"] == 0
    # Step 0 validates the inherited weights: the loss the export was selected with.
    best_val_loss = export["loop_state"]["best_val_loss"]
    assert checkpoint["history"][0]["val_loss"] == pytest.approx(best_val_loss, rel=1e-6)
    assert not all(torch.equal(checkpoint["model"][k], export["model"][k]) for k in export["model"])


def test_time_budget_stops_with_a_checkpoint(store, tmp_path):
    result = run_training(
        tiny_config("pretrain-2d", [store], tmp_path / "t", max_steps=1000, time_budget_s=1e-3)
    )
    assert result.stopped == "time_budget" and result.steps == 1
    assert load_checkpoint(result.checkpoint)["step"] == 1


def test_validation_falls_back_to_test_then_train_with_a_warning(tmp_path):
    no_val = walk_store(tmp_path / "noval", num_walks=3, val_keys=())
    with pytest.warns(UserWarning, match="no validation sequences"):
        plan = plan_run(tiny_config("pretrain-2d", [no_val], tmp_path / "r"), resume=False)
    assert plan.val_split == "train"


def _fake_checkpoint(path: Path, stage: str, joint_set: str, profile: str = "tiny") -> str:
    save_checkpoint(
        path,
        {
            "stage": stage,
            "model_config": {"joint_set": joint_set},
            "model": {},
            "step": 0,
            "stats": {},
            "scene_config": {},
            "train_config": {"profile": profile},
            "data": {},
            "history": [],
        },
    )
    return str(path)


def test_bad_configurations_stop_before_training(store, stage1, tmp_path):
    def fails(match: str, config: TrainConfig, resume: bool = False) -> None:
        history = Path(config.run_dir) / "history.csv"
        before = history.read_bytes() if history.exists() else None
        with pytest.raises(TrainingConfigError, match=match):
            run_training(config, resume=resume)
        assert (history.read_bytes() if history.exists() else None) == before

    fails("does not exist", tiny_config("pretrain-2d", [str(tmp_path / "nope")], tmp_path / "a"))
    fails(
        "neither a folder nor a dataset", tiny_config("pretrain-2d", ["nosuchname"], tmp_path / "b")
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    fails("prepare", tiny_config("pretrain-2d", [str(empty)], tmp_path / "c"))
    coco = TrainConfig.for_profile(
        "pretrain-2d", "tiny", "coco17_pelvis", [store], str(tmp_path / "d"), **TINY
    )
    fails("no 'coco17' joint set", coco)
    fails("--init", tiny_config("finetune-multiview", [store], tmp_path / "e"))
    fails(
        "not found",
        tiny_config("finetune-multiview", [store], tmp_path / "f", init_checkpoint="/no/such.pt"),
    )
    coco_ckpt = _fake_checkpoint(tmp_path / "coco.pt", "pretrain-2d", "coco17_pelvis")
    fails(
        "joint set 'coco17_pelvis'",
        tiny_config("finetune-multiview", [store], tmp_path / "h", init_checkpoint=coco_ckpt),
    )
    not_a_checkpoint = tmp_path / "junk.pt"
    not_a_checkpoint.write_bytes(b"junk")
    fails(
        "not a mocap2to3 checkpoint",
        tiny_config(
            "finetune-multiview", [store], tmp_path / "i", init_checkpoint=str(not_a_checkpoint)
        ),
    )
    fails("nothing to resume", tiny_config("pretrain-2d", [store], tmp_path / "j"), resume=True)
    fails("already holds a checkpoint", tiny_config("pretrain-2d", [store], stage1.run_dir))
    fails(
        "seed: checkpoint 3, now 4",
        tiny_config("pretrain-2d", [store], stage1.run_dir, seed=4),
        resume=True,
    )


def test_loss_curve_png(tmp_path):
    history = [
        {"step": 0, "train_loss": math.nan, "val_loss": 1.0},
        {"step": 10, "train_loss": 0.5, "val_loss": None},
        {"step": 20, "train_loss": 0.2, "val_loss": 0.3},
    ]
    png = save_loss_curve(history, str(tmp_path / "plots" / "curve.png"), "test")
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_torchrun_two_cpu_processes(store, tmp_path):
    """Data parallelism on the CPU (gloo): both stages under ``torchrun``, rank 0 writes."""
    import subprocess
    import sys

    script = tmp_path / "ddp.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import test_training as tt\n"
        f"store, root = {store!r}, {str(tmp_path)!r}\n"
        "r = tt.run_training(tt.tiny_config('pretrain-2d', [store], root + '/s1', max_steps=2))\n"
        "tt.run_training(tt.tiny_config('finetune-multiview', [store], root + '/s2',\n"
        "    max_steps=2, init_checkpoint=r.checkpoint))\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for stage_dir in ("s1", "s2"):
        checkpoint = load_checkpoint(tmp_path / stage_dir / "checkpoints" / "last.pt")
        assert checkpoint["step"] == 2 and checkpoint["loop_state"]["world_size"] == 2
