"""Tests of the cosine schedule, the DDPM and DDIM samplers and the world noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mocap_core.diffusion import (
    DDIMScheduler,
    DDPMScheduler,
    SchedulerStepOutput,
    cosine_betas,
    world_noise,
)


def _alpha_bar(x: float) -> float:
    return math.cos((x + 0.008) / 1.008 * math.pi / 2) ** 2


def _rot(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def _sample(
    scheduler: DDPMScheduler | DDIMScheduler,
    x0: torch.Tensor,
    start: torch.Tensor,
    generator: torch.Generator | None = None,
    noises: list[torch.Tensor] | None = None,
    record: dict[int, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run the sampler with an oracle that predicts the true x0 (or the implied epsilon)."""
    sample = start
    for i, t in enumerate(scheduler.timesteps):
        if record is not None:
            record[int(t)] = sample
        if scheduler.prediction_type == "sample":
            output = x0
        else:
            alpha_bar = float(scheduler.alphas_cumprod[t])
            output = (sample - math.sqrt(alpha_bar) * x0) / math.sqrt(1 - alpha_bar)
        noise = None if noises is None else noises[i]
        step = scheduler.step(output, t, sample, noise=noise, generator=generator)
        assert isinstance(step, SchedulerStepOutput)
        sample = step.prev_sample
    return sample


def test_cosine_betas_match_the_formula() -> None:
    betas = cosine_betas(100)
    assert betas.dtype == torch.float64 and betas.shape == (100,)
    for i in (0, 1, 50, 98):
        assert float(betas[i]) == pytest.approx(
            1 - _alpha_bar((i + 1) / 100) / _alpha_bar(i / 100), rel=1e-12
        )
    assert float(betas[99]) == pytest.approx(0.999)  # alpha_bar(1) = 0: capped
    alpha_bar = torch.cumprod(1 - betas, 0)
    assert torch.all(alpha_bar[1:] < alpha_bar[:-1])
    assert 0.999 < float(alpha_bar[0]) < 1.0
    assert float(alpha_bar[-1]) < 1e-5
    assert float(cosine_betas(10, max_beta=0.5)[-1]) == 0.5
    with pytest.raises(ValueError):
        cosine_betas(0)


def test_add_noise_end_points_and_per_sample_timesteps() -> None:
    scheduler = DDPMScheduler()
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 46, 30, generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    timesteps = torch.tensor([0, 99, 40])
    noisy = scheduler.add_noise(x0, noise, timesteps)
    assert noisy.shape == x0.shape
    # alpha_bar_0 = 0.99937: t = 0 leaves x0 with a 2.5 % noise admixture; t = T-1 is noise.
    assert float((noisy[0] - x0[0]).std()) < 0.03
    assert float((noisy[1] - noise[1]).abs().max()) < 0.01
    alpha_bar = float(scheduler.alphas_cumprod[40])
    torch.testing.assert_close(
        noisy[2], math.sqrt(alpha_bar) * x0[2] + math.sqrt(1 - alpha_bar) * noise[2]
    )
    torch.testing.assert_close(scheduler.add_noise(x0, noise, 40)[2], noisy[2])
    with pytest.raises(ValueError, match="timesteps"):
        scheduler.add_noise(x0, noise, torch.tensor([0, 100, 1]))
    with pytest.raises(ValueError, match="timesteps"):
        scheduler.add_noise(x0, noise, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="timesteps"):
        scheduler.add_noise(x0, noise, torch.tensor([0.0, 1.0, 2.0]))


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 7, 10, 30, 100])
def test_timesteps_descend_within_range(spacing: str, steps: int) -> None:
    scheduler = DDIMScheduler(timestep_spacing=spacing)  # type: ignore[arg-type]
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps.tolist()
    assert len(timesteps) == steps and scheduler.timesteps.dtype == torch.long
    assert all(a > b for a, b in zip(timesteps, timesteps[1:], strict=False))
    assert 0 <= timesteps[-1] and timesteps[0] <= 99
    if spacing == "leading":
        assert timesteps[-1] == 0
        assert all(a - b == 100 // steps for a, b in zip(timesteps, timesteps[1:], strict=False))
    if spacing == "trailing":
        assert timesteps[0] == 99
    if spacing == "linspace":
        assert timesteps[0] == 99 and (steps == 1 or timesteps[-1] == 0)
    if steps == 100:
        assert timesteps == list(range(99, -1, -1))
    assert scheduler.previous_timestep(timesteps[-1]) == -1


def test_hand_checked_spacings() -> None:
    scheduler = DDPMScheduler()
    scheduler.set_timesteps(10)
    assert scheduler.timesteps.tolist() == [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]
    trailing = DDPMScheduler(timestep_spacing="trailing")
    trailing.set_timesteps(10)
    assert trailing.timesteps.tolist() == [99, 89, 79, 69, 59, 49, 39, 29, 19, 9]
    linspace = DDPMScheduler(timestep_spacing="linspace")
    linspace.set_timesteps(4)
    assert linspace.timesteps.tolist() == [99, 66, 33, 0]
    with pytest.raises(ValueError, match="num_inference_steps"):
        scheduler.set_timesteps(101)
    with pytest.raises(ValueError, match="not one of"):
        scheduler.step(torch.zeros(3), 55, torch.zeros(3))


def test_ddpm_full_sampler_recovers_x0_with_an_oracle() -> None:
    generator = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 4, 46, 20, generator=generator, dtype=torch.float64)
    scheduler = DDPMScheduler()
    assert len(scheduler.timesteps) == 100
    start = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    result = _sample(scheduler, x0, start, generator=generator)
    torch.testing.assert_close(result, x0, atol=1e-10, rtol=0)


def test_ddpm_posterior_matches_the_textbook_formula() -> None:
    scheduler = DDPMScheduler()
    t = 40
    beta = float(scheduler.betas[t])
    alpha_bar, alpha_bar_prev = (float(scheduler.alphas_cumprod[i]) for i in (t, t - 1))
    x0, xt, z = torch.tensor([0.3]), torch.tensor([-1.2]), torch.tensor([0.7])
    mean = (
        math.sqrt(alpha_bar_prev) * beta / (1 - alpha_bar) * x0
        + math.sqrt(1 - beta) * (1 - alpha_bar_prev) / (1 - alpha_bar) * xt
    )
    variance = beta * (1 - alpha_bar_prev) / (1 - alpha_bar)
    assert scheduler.posterior_variance(t) == pytest.approx(variance, rel=1e-12)
    out = scheduler.step(x0, t, xt, noise=z)
    torch.testing.assert_close(out.prev_sample, mean + math.sqrt(variance) * z)
    torch.testing.assert_close(out.pred_original_sample, x0)


@pytest.mark.parametrize("steps", [100, 10])
def test_ddpm_marginals_are_the_forward_process(steps: int) -> None:
    # With the true x0 the posterior chain must reproduce q(x_t | x0) at every chosen step.
    generator = torch.Generator().manual_seed(2)
    x0 = torch.full((40_000,), 0.8, dtype=torch.float64)
    scheduler = DDPMScheduler(timestep_spacing="trailing")
    scheduler.set_timesteps(steps)
    record: dict[int, torch.Tensor] = {}
    start = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    _sample(scheduler, x0, start, generator=generator, record=record)
    for t in scheduler.timesteps.tolist()[2:-1]:
        alpha_bar = float(scheduler.alphas_cumprod[t])
        assert float(record[t].mean()) == pytest.approx(0.8 * math.sqrt(alpha_bar), abs=0.02)
        assert float(record[t].std()) == pytest.approx(math.sqrt(1 - alpha_bar), abs=0.02)


def test_ddpm_with_external_noise_is_reproducible() -> None:
    generator = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, 46, 10, generator=generator)
    start = torch.randn(x0.shape, generator=generator)
    noises = [torch.randn(x0.shape, generator=generator) for _ in range(25)]
    scheduler = DDPMScheduler()
    scheduler.set_timesteps(25)
    noisy_oracle = x0 + 0.1  # a wrong prediction keeps the noise visible in the result
    runs = []
    for _ in range(2):
        sample = start
        for i, t in enumerate(scheduler.timesteps):
            sample = scheduler.step(noisy_oracle, t, sample, noise=noises[i]).prev_sample
            if i == 10:
                runs.append(sample)
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    # The same draw from a seeded generator equals passing it in explicitly.
    first = scheduler.step(
        noisy_oracle,
        scheduler.timesteps[0],
        start,
        noise=None,
        generator=torch.Generator().manual_seed(9),
    )
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(9))
    second = scheduler.step(noisy_oracle, scheduler.timesteps[0], start, noise=z)
    torch.testing.assert_close(first.prev_sample, second.prev_sample, rtol=0, atol=0)


@pytest.mark.parametrize("steps", [10, 25, 50])
def test_ddim_recovers_x0_and_stays_on_the_noise_trajectory(steps: int) -> None:
    generator = torch.Generator().manual_seed(4)
    x0 = torch.randn(2, 4, 38, 16, generator=generator, dtype=torch.float64)
    epsilon = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(steps)
    first = int(scheduler.timesteps[0])
    start = scheduler.add_noise(x0, epsilon, first)
    record: dict[int, torch.Tensor] = {}
    result = _sample(scheduler, x0, start, record=record)
    torch.testing.assert_close(result, x0, atol=1e-10, rtol=0)
    # Deterministic DDIM with the true x0 keeps the initial noise: x_t = q(x_t | x0, eps).
    for t, sample in record.items():
        torch.testing.assert_close(sample, scheduler.add_noise(x0, epsilon, t), atol=1e-10, rtol=0)


def test_ddim_eta_zero_is_deterministic_and_eta_one_uses_noise() -> None:
    generator = torch.Generator().manual_seed(5)
    x0 = torch.randn(3, 46, 8, generator=generator)
    start = torch.randn(x0.shape, generator=generator)
    prediction = x0 * 0.9  # an imperfect model makes the trajectory depend on the noise
    deterministic = DDIMScheduler()
    deterministic.set_timesteps(10)
    results = [
        _sample(deterministic, prediction, start, generator=torch.Generator().manual_seed(s))
        for s in (0, 1)
    ]
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)

    stochastic = DDIMScheduler(eta=1.0)
    stochastic.set_timesteps(10)
    t = int(stochastic.timesteps[0])
    draws = [
        stochastic.step(
            prediction, t, start, generator=torch.Generator().manual_seed(s)
        ).prev_sample
        for s in (0, 1)
    ]
    assert not torch.allclose(draws[0], draws[1])
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(stochastic.step(prediction, t, start, noise=z).prev_sample, draws[0])
    # eta = 1 has the DDPM posterior variance.
    ddpm = DDPMScheduler()
    ddpm.set_timesteps(10)
    spread = (
        stochastic.step(prediction, t, start, noise=z).prev_sample
        - stochastic.step(prediction, t, start, noise=torch.zeros_like(z)).prev_sample
    )
    torch.testing.assert_close(spread, math.sqrt(ddpm.posterior_variance(t)) * z)


@pytest.mark.parametrize("scheduler_class", [DDPMScheduler, DDIMScheduler])
def test_epsilon_prediction_matches_sample_prediction(scheduler_class: type) -> None:
    generator = torch.Generator().manual_seed(6)
    x0 = torch.randn(2, 46, 12, generator=generator, dtype=torch.float64)
    start = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    noises = [torch.randn(x0.shape, generator=generator, dtype=torch.float64) for _ in range(20)]
    results = []
    for prediction_type in ("sample", "epsilon"):
        scheduler = scheduler_class(prediction_type=prediction_type)
        scheduler.set_timesteps(20)
        results.append(_sample(scheduler, x0, start, noises=noises))
    torch.testing.assert_close(results[1], x0, atol=1e-8, rtol=0)
    torch.testing.assert_close(results[0], results[1], atol=1e-8, rtol=0)
    # One step: the x0 the epsilon path reconstructs is the true one.
    scheduler = scheduler_class(prediction_type="epsilon")
    noisy = scheduler.add_noise(x0, noises[0], 60)
    out = scheduler.step(noises[0], 60, noisy)
    torch.testing.assert_close(out.pred_original_sample, x0, atol=1e-10, rtol=0)


def test_ddpm_clip_sample() -> None:
    scheduler = DDPMScheduler(clip_sample=True)
    out = scheduler.step(torch.tensor([3.0, -0.5]), 0, torch.zeros(2))
    torch.testing.assert_close(out.pred_original_sample, torch.tensor([1.0, -0.5]))
    torch.testing.assert_close(out.prev_sample, torch.tensor([1.0, -0.5]))


def test_scheduler_config_round_trip() -> None:
    ddpm = DDPMScheduler(num_train_timesteps=50, clip_sample=True, prediction_type="epsilon")
    rebuilt = DDPMScheduler(**ddpm.config)
    assert rebuilt.config == ddpm.config
    torch.testing.assert_close(rebuilt.alphas_cumprod, ddpm.alphas_cumprod)
    ddim = DDIMScheduler(eta=0.5, timestep_spacing="trailing")
    assert DDIMScheduler(**ddim.config).config == ddim.config
    with pytest.raises(ValueError, match="prediction_type"):
        DDPMScheduler(prediction_type="v_prediction")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beta_schedule"):
        DDPMScheduler(beta_schedule="linear")
    with pytest.raises(ValueError, match="eta"):
        DDIMScheduler(eta=1.5)


def test_world_noise_is_standard_normal_in_every_view() -> None:
    R = np.stack([np.eye(3), _rot("y", 0.7) @ _rot("x", 0.3), _rot("x", 2.0) @ _rot("z", -1.1)])
    noise = world_noise(
        torch.tensor(R, dtype=torch.float32),
        num_frames=200,
        num_joints=22,
        batch=64,
        generator=torch.Generator().manual_seed(7),
    )
    assert noise.shape == (64, 3, 46, 200) and noise.dtype == torch.float32
    per_channel = noise.permute(1, 2, 0, 3).reshape(3, 46, -1)  # (V, C, samples)
    assert per_channel.mean(-1).abs().max() < 0.05  # 12 800 samples: std of the mean ~0.009
    assert (per_channel.std(-1) - 1).abs().max() < 0.05


def test_world_noise_is_one_3d_noise_seen_from_every_view() -> None:
    theta = 0.6
    R1 = _rot("y", 0.4) @ _rot("x", 0.2)
    views = np.stack([np.eye(3), _rot("x", math.pi / 2), R1, R1, _rot("z", theta) @ R1])
    noise = world_noise(
        torch.tensor(views),
        num_frames=5,
        num_joints=18,
        batch=2,
        generator=torch.Generator().manual_seed(8),
    )
    assert noise.dtype == torch.float64 and noise.shape == (2, 5, 38, 5)
    xy = noise.transpose(-1, -2).reshape(2, 5, 5, 19, 2)  # (B, V, L, J + 1, 2)
    # Identical rotations give identical noise.
    torch.testing.assert_close(xy[:, 2], xy[:, 3], rtol=0, atol=0)
    # A roll about the optical axis rotates the (x, y) noise by the same angle.
    c, s = math.cos(theta), math.sin(theta)
    rolled = torch.stack(
        [c * xy[:, 2, ..., 0] - s * xy[:, 2, ..., 1], s * xy[:, 2, ..., 0] + c * xy[:, 2, ..., 1]],
        dim=-1,
    )
    torch.testing.assert_close(xy[:, 4], rolled)
    # Views 0 and 1 expose the full 3D noise (view 1's y is -z); view 2 is R1 applied to it.
    n3 = torch.stack([xy[:, 0, ..., 0], xy[:, 0, ..., 1], -xy[:, 1, ..., 1]], dim=-1)
    torch.testing.assert_close(xy[:, 2], (n3 @ torch.tensor(R1).T)[..., :2])
    # The scale slot has its own point: it differs from the root's.
    assert not torch.allclose(noise[:, :, -2:], noise[:, :, :2])


def test_world_noise_per_sample_rigs_and_seed_independence_from_views() -> None:
    rigs = torch.tensor(np.stack([np.stack([np.eye(3), _rot("y", a)]) for a in (0.1, 0.9, 2.0)]))
    noise = world_noise(
        rigs, num_frames=4, num_joints=3, generator=torch.Generator().manual_seed(9)
    )
    assert noise.shape == (3, 2, 8, 4)
    identity_only = world_noise(
        torch.eye(3)[None].double(),
        num_frames=4,
        num_joints=3,
        batch=3,
        generator=torch.Generator().manual_seed(9),
    )
    torch.testing.assert_close(noise[:, 0], identity_only[:, 0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="rotation"):
        world_noise(2 * torch.eye(3)[None], num_frames=4, num_joints=3)
    with pytest.raises(ValueError, match="rotation"):
        world_noise(-torch.eye(3)[None], num_frames=4, num_joints=3)
    with pytest.raises(ValueError, match="batch"):
        world_noise(rigs, num_frames=4, num_joints=3, batch=2)
    with pytest.raises(ValueError, match="R"):
        world_noise(torch.eye(3), num_frames=4, num_joints=3)
