"""Tests of the stage-1 / stage-2 denoisers and their config (mocap_core.models, model_config)."""

from __future__ import annotations

import pytest
import torch

from mocap_core.model_config import PROFILES, ModelConfig
from mocap_core.models import (
    CrossViewBlock,
    MultiViewDenoiser,
    PointmapEncoder,
    SingleViewDenoiser,
    count_parameters,
    sinusoidal_embedding,
)

# Small maps keep the CPU cost down; the encoder still ends on 7 x 7 tokens.
MAP = 28


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these tiny models gain nothing from more, and on a CPU shared with
    other processes two spinning threads made the training test 10-20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(joint_set: str = "smpl22", **overrides) -> ModelConfig:
    base = dict(
        d_model=32,
        num_layers=2,
        num_heads=4,
        ff_dim=64,
        pointmap_size=MAP,
        pointmap_input_size=MAP,
        pointmap_channels=(4, 8, 8, 16),
        max_frames=40,
    )
    return ModelConfig.profile("tiny", joint_set, **{**base, **overrides})


def single_inputs(cfg: ModelConfig, b: int = 3, num_frames: int = 12, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        x=torch.randn(b, cfg.feature_dim, num_frames, generator=g),
        timesteps=torch.randint(0, 100, (b,), generator=g),
        lengths=torch.randint(1, num_frames + 1, (b,), generator=g),
        rt=torch.randn(b, 3, generator=g),
        k=torch.randn(b, 4, generator=g),
        pointmap=4.0 * torch.randn(b, cfg.pointmap_size, cfg.pointmap_size, 3, generator=g),
    )


def multi_inputs(cfg: ModelConfig, b: int = 2, v: int = 4, num_frames: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c, p = cfg.feature_dim, cfg.pointmap_size
    return dict(
        x=torch.randn(b, v, c, num_frames, generator=g),
        timesteps=torch.randint(0, 100, (b,), generator=g),
        lengths=torch.tensor([num_frames, num_frames // 2] * (b // 2) + [3] * (b % 2)),
        rt=torch.randn(b, v, 3, generator=g),
        k=torch.randn(b, v, 4, generator=g),
        pointmap=4.0 * torch.randn(b, v, p, p, 3, generator=g),
        obs_global=torch.randn(b, c, num_frames, generator=g),
        obs_local=torch.randn(b, c, num_frames, generator=g),
    )


def call(model, inputs: dict, **extra):
    inputs = {**inputs, **extra}
    x, t = inputs.pop("x"), inputs.pop("timesteps")
    return model(x, t, **inputs)


@torch.no_grad()
def randomise(model: torch.nn.Module, seed: int = 1) -> None:
    """Perturb every parameter and BatchNorm statistic so that no stage-1 part is at its init
    (the zero-initialised camera embeddings included)."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(0.2 * torch.randn(p.shape, generator=g))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


# -- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROFILES)
@pytest.mark.parametrize("joint_set", ["smpl22", "coco17_pelvis"])
def test_config_profiles_round_trip(name: str, joint_set: str) -> None:
    cfg = ModelConfig.profile(name, joint_set)
    assert cfg.feature_dim == 2 * (cfg.num_joints + 1)
    assert cfg.feature_dim == {"smpl22": 46, "coco17_pelvis": 38}[joint_set]
    data = cfg.to_dict()
    assert isinstance(data["pointmap_channels"], list)
    assert ModelConfig.from_dict(data) == cfg


def test_paper_profile_matches_reference_sizes() -> None:
    cfg = ModelConfig.profile("paper", "smpl22")
    assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.ff_dim) == (8, 512, 4, 1024)
    assert cfg.pointmap_channels == (64, 128, 256, 512) and cfg.pointmap_input_size == 224
    assert cfg.dropout == 0.1 and cfg.cond_drop_prob == 0.1 and cfg.activation == "gelu"


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="tiny"):
        ModelConfig.profile("huge", "smpl22")
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig.profile("tiny", "smpl22", num_heads=3)
    with pytest.raises(ValueError, match="coco17"):
        ModelConfig.profile("tiny", "coco17")
    with pytest.raises(ValueError, match="pointmap_input_size"):
        ModelConfig.profile("tiny", "smpl22", pointmap_input_size=448)
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({**ModelConfig.profile("tiny", "smpl22").to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="feature_dim"):
        ModelConfig.from_dict(
            {**ModelConfig.profile("tiny", "smpl22").to_dict(), "feature_dim": 38}
        )


def test_sinusoidal_embedding_values() -> None:
    emb = sinusoidal_embedding(torch.tensor([0.0, 1.0]), 4)
    # Frequencies 1 and 1e-2: [sin p, sin p/100, cos p, cos p/100].
    expected = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.841471, 0.0099998, 0.540302, 0.99995]])
    torch.testing.assert_close(emb, expected, atol=1e-5, rtol=0)


# -- pointmap encoder ------------------------------------------------------------------------


@pytest.mark.parametrize("input_size", [14, 28, 56, 70])
def test_pointmap_encoder_gives_49_tokens(input_size: int) -> None:
    cfg = tiny_config(pointmap_size=112, pointmap_input_size=input_size)
    encoder = PointmapEncoder(cfg).eval()
    tokens = encoder(torch.randn(2, 112, 112, 3))
    assert tokens.shape == (2, 49, cfg.d_model)
    assert torch.isfinite(tokens).all()
    with pytest.raises(ValueError, match="pointmap must be"):
        encoder(torch.randn(2, 3, 112, 112))


# -- shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("joint_set", ["smpl22", "coco17_pelvis"])
def test_shapes_both_models(joint_set: str) -> None:
    cfg = tiny_config(joint_set)
    sv = SingleViewDenoiser(cfg)
    out = call(sv, single_inputs(cfg))
    assert out.shape == (3, cfg.feature_dim, 12) and torch.isfinite(out).all()
    mv = MultiViewDenoiser(cfg)
    out = call(mv, multi_inputs(cfg, v=3))
    assert out.shape == (2, 3, cfg.feature_dim, 10) and torch.isfinite(out).all()
    # Everything optional may be left out.
    inputs = multi_inputs(cfg)
    assert mv(inputs["x"], inputs["timesteps"]).shape == inputs["x"].shape


def test_shapes_without_pointmap_or_camera() -> None:
    cfg = tiny_config(use_pointmap=False, use_camera_embedding=False)
    sv = SingleViewDenoiser(cfg)
    assert sv.pointmap_encoder is None and sv.embed_rt is None
    assert call(sv, single_inputs(cfg)).shape == (3, cfg.feature_dim, 12)
    mv = MultiViewDenoiser.from_single_view(sv)
    assert call(mv, multi_inputs(cfg)).shape == (2, 4, cfg.feature_dim, 10)


def test_bad_inputs_raise() -> None:
    cfg = tiny_config()
    sv = SingleViewDenoiser(cfg)
    inputs = single_inputs(cfg)
    with pytest.raises(ValueError, match="x must be"):
        sv(torch.randn(3, 38, 12), inputs["timesteps"])
    with pytest.raises(ValueError, match="max_frames"):
        sv(torch.randn(3, cfg.feature_dim, 41), inputs["timesteps"])
    with pytest.raises(ValueError, match="rt must"):
        call(sv, inputs, rt=torch.randn(3, 4))
    with pytest.raises(ValueError, match="unknown cond_mask"):
        call(sv, inputs, cond_mask={"obs_global": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        call(sv, inputs, cond_mask={"rt": torch.ones(2, dtype=torch.bool)})


# -- zero-init equivalence of stage 2 with stage 1 --------------------------------------------


def test_cross_view_block_is_identity_at_init() -> None:
    block = CrossViewBlock(tiny_config()).eval()
    tokens = torch.randn(5, 4, 32)
    assert torch.equal(block(tokens), tokens)


# float64 shows the equivalence is exact; float32 shows it within rounding (outputs ~4).
@pytest.mark.parametrize(
    ("joint_set", "dtype", "tolerance"),
    [
        ("smpl22", torch.float64, 1e-10),
        ("coco17_pelvis", torch.float64, 1e-10),
        ("smpl22", torch.float32, 1e-4),
    ],
)
def test_from_single_view_reproduces_stage1_per_view(
    joint_set: str, dtype: torch.dtype, tolerance: float
) -> None:
    cfg = tiny_config(joint_set)
    sv = SingleViewDenoiser(cfg)
    randomise(sv)
    sv.eval()
    mv = MultiViewDenoiser.from_single_view(sv).eval()
    assert set(mv.stage2_keys()) == set(mv.state_dict()) - set(sv.state_dict())
    sv.to(dtype)
    mv.to(dtype)
    inputs = {
        name: value.to(dtype) if value.is_floating_point() else value
        for name, value in multi_inputs(cfg, b=3, v=4).items()
    }
    # Some samples/views without a pointmap or camera: the per-view masks must line up.
    mask = {
        "pointmap": torch.tensor([[False, True, False, False]] * 3),
        "rt": torch.tensor([True, False, False]),
    }
    with torch.no_grad():
        out = call(mv, inputs, cond_mask=mask)
        for v in range(4):
            ref = sv(
                inputs["x"][:, v],
                inputs["timesteps"],
                lengths=inputs["lengths"],
                rt=inputs["rt"][:, v],
                k=inputs["k"][:, v],
                pointmap=inputs["pointmap"][:, v],
                cond_mask={"pointmap": mask["pointmap"][:, v], "rt": mask["rt"]},
            )
            assert torch.isfinite(ref).all()
            valid = torch.arange(10)[None, :] < inputs["lengths"][:, None]
            diff = (out[:, v] - ref).abs().amax(dim=1)[valid]
            assert diff.max() < tolerance, (v, diff.max())


def test_from_state_dict_and_error_messages() -> None:
    cfg = tiny_config()
    sv = SingleViewDenoiser(cfg)
    mv = MultiViewDenoiser.from_single_view(sv.state_dict(), cfg)
    for key, value in sv.state_dict().items():
        assert torch.equal(mv.state_dict()[key], value)
    with pytest.raises(ValueError, match="feature_dim=38"):
        MultiViewDenoiser.from_single_view(sv.state_dict(), tiny_config("coco17_pelvis"))
    with pytest.raises(ValueError, match="joint_set"):
        MultiViewDenoiser.from_single_view(sv, tiny_config("coco17_pelvis"))
    with pytest.raises(ValueError, match="other shapes"):
        MultiViewDenoiser.from_single_view(sv.state_dict(), tiny_config(ff_dim=128))
    with pytest.raises(ValueError, match="missing"):
        MultiViewDenoiser.from_single_view(sv.state_dict(), tiny_config(num_layers=3))
    with pytest.raises(ValueError, match="stage-2 keys"):
        MultiViewDenoiser.from_single_view(mv.state_dict(), cfg)
    with pytest.raises(ValueError, match="config is needed"):
        MultiViewDenoiser.from_single_view(sv.state_dict())
    # Stage 2 may change the training-only settings.
    relaxed = cfg.replace(dropout=0.0, cond_drop_prob=0.2, num_views=3)
    assert MultiViewDenoiser.from_single_view(sv, relaxed).config == relaxed


# -- classifier-free-guidance dropping --------------------------------------------------------


def test_cond_drop_prob_one_equals_explicit_mask() -> None:
    cfg = tiny_config(dropout=0.0, cond_drop_prob=1.0)
    sv = SingleViewDenoiser(cfg)
    randomise(sv)
    inputs = single_inputs(cfg)
    all_dropped = {name: torch.ones(3, dtype=torch.bool) for name in ("rt", "k", "pointmap")}
    with torch.no_grad():
        sv.train()
        drawn = call(sv, inputs)
        sv.eval()
        forced = call(sv, inputs, cond_mask=all_dropped)
        sv_p0 = SingleViewDenoiser(cfg.replace(cond_drop_prob=0.0))
        sv_p0.load_state_dict(sv.state_dict())
        conditioned = call(sv_p0.eval(), inputs)
    torch.testing.assert_close(drawn, forced, atol=1e-5, rtol=0)
    assert (conditioned - forced).abs().max() > 1e-3  # the conditions do matter

    mv = MultiViewDenoiser.from_single_view(sv)
    randomise(mv, seed=2)
    inputs = multi_inputs(cfg)
    mask = {
        name: torch.ones(2, dtype=torch.bool)
        for name in ("rt", "k", "pointmap", "obs_global", "obs_local")
    }
    with torch.no_grad():
        drawn = call(mv.train(), inputs)
        forced = call(mv.eval(), inputs, cond_mask=mask)
        none_given = mv(inputs["x"], inputs["timesteps"], lengths=inputs["lengths"])
    torch.testing.assert_close(drawn, forced, atol=1e-5, rtol=0)
    torch.testing.assert_close(none_given, forced, atol=1e-5, rtol=0)


@pytest.mark.parametrize("condition", ["rt", "k", "pointmap"])
def test_per_sample_mask_affects_only_that_sample(condition: str) -> None:
    cfg = tiny_config()
    sv = SingleViewDenoiser(cfg)
    randomise(sv)
    sv.eval()
    inputs = single_inputs(cfg)
    with torch.no_grad():
        base = call(sv, inputs)
        masked = call(sv, inputs, cond_mask={condition: torch.tensor([False, True, False])})
    assert torch.equal(masked[0], base[0]) and torch.equal(masked[2], base[2])
    assert (masked[1] - base[1]).abs().max() > 1e-4


def test_per_view_and_observation_masks_in_stage2() -> None:
    cfg = tiny_config()
    mv = MultiViewDenoiser(cfg)
    randomise(mv)
    mv.eval()
    inputs = multi_inputs(cfg)
    with torch.no_grad():
        base = call(mv, inputs)
        obs_masked = call(mv, inputs, cond_mask={"obs_local": torch.tensor([True, False])})
        view_masked = call(
            mv, inputs, cond_mask={"k": torch.tensor([[False] * 4, [False, False, True, False]])}
        )
    assert torch.equal(obs_masked[1], base[1]) and (obs_masked[0] - base[0]).abs().max() > 1e-4
    # Views talk to each other, so only sample 1 changes, all of its views.
    assert torch.equal(view_masked[0], base[0]) and (view_masked[1] - base[1]).abs().max() > 1e-4


# -- padding ---------------------------------------------------------------------------------


def test_padded_frames_do_not_reach_valid_frames() -> None:
    cfg = tiny_config()
    sv = SingleViewDenoiser(cfg)
    randomise(sv)
    sv.eval()
    inputs = single_inputs(cfg, b=2)
    inputs["lengths"] = torch.tensor([12, 5])
    changed = {**inputs, "x": inputs["x"].clone()}
    changed["x"][1, :, 5:] = torch.randn(cfg.feature_dim, 7) * 100
    nan_padded = {**inputs, "x": inputs["x"].clone()}
    nan_padded["x"][1, :, 5:] = float("nan")
    with torch.no_grad():
        a, b, c = call(sv, inputs), call(sv, changed), call(sv, nan_padded)
    torch.testing.assert_close(a[:, :, :5], b[:, :, :5], atol=1e-5, rtol=0)
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=0)
    assert torch.isfinite(c).all()

    mv = MultiViewDenoiser(cfg)
    randomise(mv)
    mv.eval()
    inputs = multi_inputs(cfg)  # lengths (10, 5)
    changed = {k: v.clone() for k, v in inputs.items()}
    changed["x"][1, :, :, 5:] = float("nan")
    changed["obs_global"][1, :, 5:] = 50.0
    with torch.no_grad():
        a, b = call(mv, inputs), call(mv, changed)
    assert torch.isfinite(b).all()
    torch.testing.assert_close(a[1, :, :, :5], b[1, :, :, :5], atol=1e-5, rtol=0)
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=0)


# -- training --------------------------------------------------------------------------------


def test_tiny_model_overfits_one_batch() -> None:
    torch.manual_seed(0)
    cfg = tiny_config(dropout=0.0, cond_drop_prob=0.0, d_model=64, ff_dim=128)
    model = SingleViewDenoiser(cfg).train()
    inputs = single_inputs(cfg, b=4, num_frames=16)
    x0 = inputs.pop("x")
    noise = torch.randn_like(x0)
    alpha_bar = 0.5  # a fixed, mid-schedule step
    x_t = alpha_bar**0.5 * x0 + (1 - alpha_bar) ** 0.5 * noise
    timesteps = torch.full((4,), 50)
    inputs.pop("timesteps")
    valid = (torch.arange(16)[None, :] < inputs["lengths"][:, None])[:, None, :]
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(150):
        pred = model(x_t, timesteps, **inputs)
        loss = ((pred - x0) ** 2 * valid).sum() / (valid.sum() * cfg.feature_dim)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_gradients_reach_zero_initialised_layers() -> None:
    cfg = tiny_config(dropout=0.0, cond_drop_prob=0.0)
    mv = MultiViewDenoiser(cfg).train()
    inputs = multi_inputs(cfg)
    optimiser = torch.optim.Adam(mv.parameters(), lr=1e-3)
    zero_init = {
        "embed_rt.weight",
        "embed_k.weight",
        "embed_obs_global.weight",
        "embed_obs_local.weight",
        "motion_view_blocks.0.out.weight",
        "pointmap_view_blocks.1.out.weight",
    }
    params = dict(mv.named_parameters())
    assert all(torch.count_nonzero(params[name]) == 0 for name in zero_init)
    for step in range(2):
        optimiser.zero_grad()
        call(mv, inputs).square().mean().backward()
        if step == 0:
            for name in zero_init:
                assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name
        optimiser.step()
    # After one step the zero linears are non-zero, so the attention behind them learns too.
    assert all(torch.count_nonzero(params[name]) > 0 for name in zero_init)
    attention = params["motion_view_blocks.0.attn.q_proj.weight"].grad
    assert attention is not None and attention.abs().sum() > 0


def test_parameter_counts() -> None:
    cfg = tiny_config()
    sv, mv = SingleViewDenoiser(cfg), MultiViewDenoiser(cfg)
    new = sum(p.numel() for name, p in mv.named_parameters() if name.startswith(mv.STAGE2_PREFIXES))
    assert count_parameters(mv) == count_parameters(sv) + new
    d = cfg.d_model
    # Per layer: two cross-view blocks of (attention 4d^2 + 4d, zero linear d^2 + d, LN 2d),
    # plus the two observation linears.
    assert new == cfg.num_layers * 2 * (5 * d * d + 7 * d) + 2 * (d * d + d)
    for p in sv.parameters():
        p.requires_grad_(False)
    assert count_parameters(sv, trainable_only=True) == 0
