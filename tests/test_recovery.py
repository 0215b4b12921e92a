"""Tests of the recovery loop (mocap_core.recovery).

The key check is an oracle: a stand-in denoiser that knows the true 3D motion and the rig of
every window and returns the true, normalised x0 of every view. The loop must then give back
the true motion in the user's world to well under a millimetre, through the canonical
transform, lens undistortion, encodings, triangulation, windows and blending.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mocap_core import recovery
from mocap_core.cameras import (
    Camera,
    camera_from_height_pitch_roll,
    intrinsics_from_fov,
    project_points,
    transform_camera,
    transform_points,
)
from mocap_core.diffusion import DDIMScheduler
from mocap_core.evaluation import planted_foot_heights
from mocap_core.joint_sets import SMPL22
from mocap_core.model_config import ModelConfig
from mocap_core.models import MultiViewDenoiser, PointmapEncoder
from mocap_core.procedural import procedural_walk
from mocap_core.recovery import (
    ClipInput,
    RecoveryConfig,
    RigBatch,
    blend_weights,
    ground_contact_points,
    ground_contact_position,
    plan_windows,
    prepare_scene,
    recover_clips,
    recover_sequence,
    sample_windows,
    scene_observations,
    smooth_trajectories,
    window_seed,
)
from mocap_core.representation import FeatureStats, encode_local, to_channels_first
from mocap_core.rig import RigConfig
from mocap_core.scene import yaw_matrix
from mocap_core.skeleton_mapping import apply_mapping, get_skeleton_mapping

MAP = 32  # small pointmaps keep the tests fast
WIDTH, HEIGHT = 1280, 720
LENS = np.array([0.06, -0.03, 0.001, -0.0015, 0.005])


def walk_smpl22(num_frames: int, seed: int, start_xz=(0.0, 0.0), heading_deg=0.0) -> np.ndarray:
    """``(T, 22, 3)`` metres, y-up, a procedural walk in smpl22 order."""
    walk = procedural_walk(
        num_frames,
        fps=30.0,
        speed_m_s=1.0,
        turn_deg_per_s=10.0,
        seed=seed,
        start_xz=start_xz,
        initial_heading_deg=heading_deg,
    )
    joints, _ = apply_mapping(
        get_skeleton_mapping("bandai_namco", "smpl22"),
        walk.joint_names,
        walk.positions,
        walk.global_rotations,
    )
    return joints


def user_camera(
    yaw_deg: float = 37.0, offset=(2.5, 0.0, -1.2), dist=LENS
) -> tuple[Camera, Callable[[np.ndarray], np.ndarray]]:
    """A camera with a full R, t calibration in a user world (yaw and ground offset relative to
    its canonical frame) and the map canonical -> user world."""
    K = intrinsics_from_fov(WIDTH, HEIGHT, 60.0)
    canonical = camera_from_height_pitch_roll(1.6, 12.0, 2.0, K, WIDTH, HEIGHT, dist)
    R_cw, t_cw = yaw_matrix(np.radians(yaw_deg)), np.asarray(offset, dtype=np.float64)
    camera = transform_camera(canonical, R_cw, t_cw)
    return camera, lambda points: transform_points(points, R_cw, t_cw)


def keypoints_of(camera: Camera, joints_world: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(T, J, 3)`` distorted pixels and confidences in [0.6, 1]."""
    pixels, _ = camera.project(joints_world)
    conf = rng.uniform(0.6, 1.0, joints_world.shape[:2])
    return np.concatenate([pixels, conf[..., None]], axis=-1)


def model_config(max_frames: int = 120) -> ModelConfig:
    return ModelConfig.profile(
        "tiny",
        "smpl22",
        d_model=32,
        num_layers=2,
        num_heads=4,
        ff_dim=64,
        pointmap_size=MAP,
        pointmap_input_size=MAP,
        pointmap_channels=(4, 8, 8, 16),
        max_frames=max_frames,
    )


def random_stats(seed: int, channels: int) -> FeatureStats:
    rng = np.random.default_rng(seed)
    return FeatureStats(rng.normal(0, 0.3, channels), rng.uniform(0.2, 2.0, channels))


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread: on the shared 2-core machine, two threads fighting other jobs for
    the cores made these tests 5-8x slower (measured); one thread is steady."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class OracleDenoiser(nn.Module):
    """Returns the true normalised x0 of every view of the window it recognises (by the
    views' rt embeddings); view 0 is deliberately wrong, the loop must replace it."""

    def __init__(
        self,
        config: ModelConfig,
        stats_local: FeatureStats,
        windows: list[dict],
        check_obs: bool = True,
        depth_per_timestep: float = 0.0,
    ):
        super().__init__()
        self.check_obs = check_obs
        self.depth_per_timestep = depth_per_timestep
        self.config = config
        self.stats_local = stats_local
        self.windows = windows
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the loop a device and dtype
        self.max_obs_error = 0.0
        self.calls = 0
        self.inputs: list[torch.Tensor] = []  # x of every call
        self.true_outputs: list[torch.Tensor] = []  # the true x0 of every call (view 0 right)

    def _window(self, rt: np.ndarray) -> dict:
        for window in self.windows:
            if np.allclose(window["rt"], rt, atol=1e-6):
                return window
        raise AssertionError("the loop used a rig the oracle does not know")

    def forward(self, x, timesteps, *, lengths, rt, k, pointmap, obs_global, obs_local):
        self.calls += 1
        num_frames = x.shape[-1]
        self.inputs.append(x.detach().clone())
        out, true = [], []
        for b in range(x.shape[0]):
            window = self._window(rt[b].cpu().numpy())
            joints = window["joints"]
            length = joints.shape[0]
            assert int(lengths[b]) == length
            padded = joints[np.minimum(np.arange(num_frames), length - 1)]
            if self.depth_per_timestep:
                # A prediction that changes with the step, along view 0's rays.
                rays = padded - (-window["R"][0].T @ window["t"][0])
                unit = rays / np.linalg.norm(rays, axis=-1)[..., None]
                padded = padded + self.depth_per_timestep * int(timesteps[b]) * unit
            pixels, _ = project_points(
                padded.reshape(1, -1, 3), window["K"], window["R"], window["t"]
            )
            pixels = pixels.reshape(len(window["K"]), num_frames, -1, 2)
            features = self.stats_local.normalize(encode_local(pixels, window["sizes"]))
            true.append(to_channels_first(features.copy()))
            features[0] += 0.7  # a wrong view 0
            out.append(to_channels_first(features))
            if not self.check_obs:
                continue
            # The conditioning must be the observed encoding (masked where missing).
            expected = window["obs_local"]
            given_obs = obs_local[b, :, :length].cpu().numpy().T
            rows = window["root_seen"]
            error = np.abs(given_obs[rows] - expected[rows]).max()
            self.max_obs_error = max(self.max_obs_error, float(error))
        self.true_outputs.append(torch.as_tensor(np.stack(true), dtype=x.dtype))
        return torch.as_tensor(np.stack(out), dtype=x.dtype)


def oracle_windows(
    clips, truths, config, rig_config, stats_local, depth_offsets=None
) -> list[dict]:
    """Rebuild every window's scene exactly as recover_clips does and attach the truth.

    ``depth_offsets[w]`` (metres) moves window w's joints along their view-0 rays: view 0
    sees the same pixels, the virtual views see a deeper (or nearer) motion.
    """
    windows = []
    for index, (clip, truth) in enumerate(zip(clips, truths, strict=True)):
        key = str(index) if clip.key is None else clip.key
        plan = plan_windows(len(clip.keypoints), config.window, config.resolved_overlap)
        for w, (start, stop) in enumerate(plan):
            scene = prepare_scene(
                clip.camera,
                clip.keypoints[start:stop],
                rig_config,
                MAP,
                np.random.default_rng(window_seed(config.seed, key, w)),
                foot_joints=SMPL22.foot_joints,
            )
            joints = transform_points(truth[start:stop], scene.R_wc, scene.t_wc)
            if depth_offsets is not None:
                centre = -scene.R[0].T @ scene.t[0]
                rays = joints - centre
                joints = joints + depth_offsets[w] * rays / np.linalg.norm(rays, axis=-1)[..., None]
            ideal, _ = project_points(joints, scene.K[0], scene.R[0], scene.t[0])
            visible = clip.keypoints[start:stop, :, 2] > 0
            obs_local = stats_local.normalize(encode_local(ideal, scene.sizes[0], visible))
            windows.append(
                dict(
                    rt=scene.rt,
                    K=scene.K,
                    R=scene.R,
                    t=scene.t,
                    sizes=scene.sizes,
                    joints=joints,
                    obs_local=obs_local,
                    root_seen=visible[:, 0],
                )
            )
    return windows


@pytest.fixture(scope="module")
def oracle_case():
    """A 250-frame clip (distorted camera with yaw and offset, a joint missing for 50 frames,
    the root missing for 3, every joint for 6) and an 80-frame clip from another camera,
    batched together."""
    rng = np.random.default_rng(0)
    camera_a, to_world_a = user_camera()
    truth_a = to_world_a(walk_smpl22(250, seed=1, start_xz=(-1.5, -5.0), heading_deg=80.0))
    keypoints_a = keypoints_of(camera_a, truth_a, rng)
    keypoints_a[50:100, 20, 2] = 0.0  # left wrist unseen
    keypoints_a[50:100, 20, :2] = np.nan
    keypoints_a[10:13, 0, 2] = 0.0  # pelvis unseen
    keypoints_a[200:206, :, 2] = 0.0  # the detector lost the person
    camera_b, to_world_b = user_camera(yaw_deg=-120.0, offset=(-3.0, 0.0, 4.0), dist=np.zeros(5))
    truth_b = to_world_b(walk_smpl22(80, seed=2, start_xz=(0.5, -4.0), heading_deg=-90.0))
    keypoints_b = keypoints_of(camera_b, truth_b, rng)
    clips = [ClipInput(camera_a, keypoints_a, key="a"), ClipInput(camera_b, keypoints_b)]
    return clips, [truth_a, truth_b]


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 10), ("ddpm", 100)])
def test_oracle_recovers_truth_in_user_world(oracle_case, sampler: str, steps: int) -> None:
    clips, truths = oracle_case
    config = RecoveryConfig(window=120, overlap=30, sampler=sampler, steps=steps, batch_windows=4)
    rig_config = RigConfig()
    cfg = model_config()
    stats_local = random_stats(1, cfg.feature_dim)
    stats_global = random_stats(2, cfg.feature_dim)
    windows = oracle_windows(clips, truths, config, rig_config, stats_local)
    assert len(windows) == 4  # three windows for the long clip, one padded for the short
    oracle = OracleDenoiser(cfg, stats_local, windows)

    results = recover_clips(oracle, stats_local, stats_global, clips, config, rig_config)

    assert oracle.calls == steps  # all four windows in one forward pass per step
    assert oracle.max_obs_error < 1e-4
    for result, truth in zip(results, truths, strict=True):
        assert result.joints.shape == truth.shape
        assert result.valid.all()
        error = np.linalg.norm(result.joints - truth, axis=-1)
        assert error.max() < 1e-3, f"max error {error.max() * 1e3:.4f} mm"
    assert results[0].num_windows == 3 and results[1].num_windows == 1


def test_overlaps_are_cross_faded_linearly() -> None:
    rng = np.random.default_rng(12)
    camera, to_world = user_camera()
    truth = to_world(walk_smpl22(250, seed=13, start_xz=(-1.5, -5.0), heading_deg=80.0))
    clip = ClipInput(camera, keypoints_of(camera, truth, rng))
    config = RecoveryConfig(window=120, overlap=30, steps=2, batch_windows=2)
    cfg = model_config()
    stats = random_stats(6, cfg.feature_dim)
    offsets = [0.0, 0.1, 0.3]
    windows = oracle_windows([clip], [truth], config, RigConfig(), stats, depth_offsets=offsets)
    result = recover_clips(OracleDenoiser(cfg, stats, windows), stats, stats, [clip], config)[0]

    plan = plan_windows(250, 120, 30)
    assert plan == [(0, 120), (65, 185), (130, 250)]
    numerator, denominator = np.zeros(250), np.zeros(250)
    for w, (start, stop) in enumerate(plan):
        before = plan[w - 1][1] - start if w > 0 else 0
        after = stop - plan[w + 1][0] if w + 1 < len(plan) else 0
        ramp = blend_weights(stop - start, before, after)
        numerator[start:stop] += ramp * offsets[w]
        denominator[start:stop] += ramp
    depth = numerator / denominator
    assert depth[100] == pytest.approx(0.1 * (100 - 65 + 1) / 56)  # inside the first overlap
    rays = truth - camera.center
    expected = truth + depth[:, None, None] * rays / np.linalg.norm(rays, axis=-1)[..., None]
    np.testing.assert_allclose(result.joints, expected, atol=1e-4)


def test_confidence_weighting_reduces_the_pull_of_noisy_observations() -> None:
    rng = np.random.default_rng(3)
    camera, to_world = user_camera()
    truth = to_world(walk_smpl22(60, seed=4, start_xz=(0.0, -4.5), heading_deg=90.0))
    clean = keypoints_of(camera, truth, rng)
    noisy = clean.copy()
    noisy[..., :2] += rng.normal(0.0, 4.0, noisy[..., :2].shape)
    noisy[..., 2] = 0.3  # an unsure detector
    cfg = model_config(max_frames=60)
    stats = random_stats(5, cfg.feature_dim)
    errors = {}
    for weighted in (True, False):
        config = RecoveryConfig(window=60, steps=2, weighted=weighted)
        clip = ClipInput(camera, noisy)
        # The oracle's conditioning check uses the clean observation; only geometry matters here.
        oracle = OracleDenoiser(
            cfg, stats, oracle_windows([clip], [truth], config, RigConfig(), stats)
        )
        result = recover_sequence(oracle, stats, stats, camera, noisy, config)
        errors[weighted] = np.linalg.norm(result.joints - truth, axis=-1).mean()
    assert errors[True] < 0.3 * errors[False], errors


def test_sample_windows_directly_returns_the_last_steps_triangulation(oracle_case) -> None:
    """The batched loop on its own: two windows of different lengths, one generator, and a
    prediction that moves with the step; the answer is the last step's triangulation."""
    clips, truths = oracle_case
    config = RecoveryConfig(window=120, steps=3, sampler="ddpm")
    cfg = model_config()
    stats = random_stats(3, cfg.feature_dim)
    rng = np.random.default_rng(0)
    scenes, truths_canonical = [], []
    for clip, truth, frames in zip(clips, truths, (slice(0, 120), slice(0, 70)), strict=True):
        scene = prepare_scene(
            clip.camera, clip.keypoints[frames], RigConfig(), MAP, rng, foot_joints=(7, 8, 10, 11)
        )
        scenes.append(scene)
        truths_canonical.append(transform_points(truth[frames], scene.R_wc, scene.t_wc))
    windows = [
        dict(rt=s.rt, K=s.K, R=s.R, t=s.t, sizes=s.sizes, joints=j)
        for s, j in zip(scenes, truths_canonical, strict=True)
    ]
    oracle = OracleDenoiser(cfg, stats, windows, check_obs=False, depth_per_timestep=0.002)
    obs_pixels, obs_conf, lengths = scene_observations(scenes, 120)
    assert obs_pixels.shape == (2, 120, 22, 2) and list(lengths) == [120, 70]
    result = sample_windows(
        oracle,
        stats,
        stats,
        obs_pixels,
        obs_conf,
        lengths,
        RigBatch.from_scenes(scenes, "cpu", torch.float32),
        config,
        torch.Generator().manual_seed(0),
    )
    assert result.joints.shape == (2, 120, 22, 3) and result.view_pixels.shape == (2, 4, 120, 22, 2)
    assert bool(result.valid[0].all()) and bool(result.valid[1, :70].all())
    assert not bool(result.valid[1, 70:].any())
    last_step = 32  # trailing spacing, 3 of 100 steps: 99, 66, 32
    for i, truth in enumerate(truths_canonical):
        rays = truth - (-scenes[i].R[0].T @ scenes[i].t[0])
        unit = rays / np.linalg.norm(rays, axis=-1)[..., None]
        expected = truth + 0.002 * last_step * unit
        np.testing.assert_allclose(result.joints[i, : len(truth)].numpy(), expected, atol=1e-4)


def test_sampler_steps_from_the_consistent_x0(oracle_case) -> None:
    """The DDIM step takes the re-encoded triangulation (view 0 observed), not the model's
    x0: with the oracle that is the true x0, although the model's view 0 is wrong."""
    clips, truths = oracle_case
    clip = clips[1]  # 80 frames, one padded window
    config = RecoveryConfig(window=120, steps=2)
    cfg = model_config()
    stats = random_stats(4, cfg.feature_dim)
    oracle = OracleDenoiser(
        cfg, stats, oracle_windows([clip], truths[1:], config, RigConfig(), stats)
    )
    recover_clips(oracle, stats, stats, [clip], config)
    scheduler = DDIMScheduler(100, timestep_spacing="trailing")
    scheduler.set_timesteps(2)
    first = int(scheduler.timesteps[0])
    expected = scheduler.step(oracle.true_outputs[0], first, oracle.inputs[0]).prev_sample
    valid_frames = slice(0, 80)  # padding frames hold values of no meaning
    np.testing.assert_allclose(
        oracle.inputs[1][..., valid_frames].numpy(),
        expected[..., valid_frames].numpy(),
        atol=2e-5,
    )


def test_view0_of_the_consistent_x0_is_the_observation(oracle_case) -> None:
    """With noisy observed pixels the triangulation does not reproject onto them; view 0 of
    the sample must still be stepped from the observed encoding."""
    clips, truths = oracle_case
    rng = np.random.default_rng(21)
    keypoints = clips[1].keypoints.copy()
    keypoints[..., :2] += rng.normal(0.0, 3.0, keypoints[..., :2].shape)
    clip = ClipInput(clips[1].camera, keypoints)
    config = RecoveryConfig(window=120, steps=2)
    cfg = model_config()
    stats = random_stats(4, cfg.feature_dim)
    windows = oracle_windows([clip], truths[1:], config, RigConfig(), stats)
    oracle = OracleDenoiser(cfg, stats, windows, check_obs=False)
    recover_clips(oracle, stats, stats, [clip], config)

    scene = prepare_scene(
        clip.camera, keypoints, RigConfig(), MAP, np.random.default_rng(0), foot_joints=(7,)
    )
    observed = stats.normalize(encode_local(scene.pixels, scene.sizes[0]))  # (80, C)
    x0_view0 = torch.as_tensor(to_channels_first(observed), dtype=torch.float32)
    scheduler = DDIMScheduler(100, timestep_spacing="trailing")
    scheduler.set_timesteps(2)
    x_view0 = oracle.inputs[0][0, 0, :, :80]
    expected = scheduler.step(x0_view0, int(scheduler.timesteps[0]), x_view0).prev_sample
    np.testing.assert_allclose(oracle.inputs[1][0, 0, :, :80].numpy(), expected.numpy(), atol=2e-5)


# ---------------------------------------------------------------------------------------------
# A random tiny MultiViewDenoiser


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    cfg = model_config(max_frames=48)
    model = MultiViewDenoiser(cfg).eval()
    # Realistic statistics: the encodings of a walk seen by the input camera.
    camera, to_world = user_camera()
    pixels, _ = camera.project(to_world(walk_smpl22(90, seed=7, start_xz=(0.0, -4.0))))
    stats = FeatureStats.fit(encode_local(pixels, (WIDTH, HEIGHT)))
    return model, stats


def tiny_clips() -> list[ClipInput]:
    rng = np.random.default_rng(11)
    camera, to_world = user_camera()
    long = keypoints_of(camera, to_world(walk_smpl22(100, seed=8, start_xz=(0.0, -4.0))), rng)
    short = keypoints_of(camera, to_world(walk_smpl22(20, seed=9, start_xz=(1.0, -5.0))), rng)
    return [ClipInput(camera, long, key="long"), ClipInput(camera, short, key="short")]


def test_random_model_shapes_finite_and_seeded(tiny_model) -> None:
    model, stats = tiny_model
    clips = tiny_clips()
    config = RecoveryConfig(window=40, overlap=10, steps=3, batch_windows=3, keep_view_pixels=True)
    first = recover_clips(model, stats, stats, clips, config)
    second = recover_clips(model, stats, stats, clips, config)
    other_seed = recover_clips(model, stats, stats, clips, config.model_copy(update={"seed": 7}))
    for clip, a, b, c in zip(clips, first, second, other_seed, strict=True):
        T = len(clip.keypoints)
        assert a.joints.shape == (T, 22, 3) and a.valid.shape == (T, 22)
        assert a.valid.all() and np.isfinite(a.joints).all()
        assert a.view_pixels is not None and a.view_pixels.shape == (4, T, 22, 2)
        np.testing.assert_array_equal(a.joints, b.joints)
        assert not np.allclose(a.joints, c.joints)
    assert not model.training
    assert isinstance(model.pointmap_encoder, PointmapEncoder)  # the token cache is gone


def test_pointmap_token_cache_changes_nothing(tiny_model, monkeypatch) -> None:
    model, stats = tiny_model
    clips = tiny_clips()[:1]
    config = RecoveryConfig(window=40, overlap=10, steps=3)
    cached = recover_clips(model, stats, stats, clips, config)[0]
    monkeypatch.setattr(recovery, "_cached_pointmap_tokens", lambda m: contextlib.nullcontext())
    uncached = recover_clips(model, stats, stats, clips, config)[0]
    np.testing.assert_array_equal(cached.joints, uncached.joints)


def test_random_model_result_does_not_depend_on_batching(tiny_model) -> None:
    model, stats = tiny_model
    clips = tiny_clips()
    config = RecoveryConfig(window=40, overlap=10, steps=2, sampler="ddpm", batch_windows=4)
    together = recover_clips(model, stats, stats, clips, config)
    alone = recover_clips(
        model, stats, stats, clips[:1], config.model_copy(update={"batch_windows": 1})
    )
    np.testing.assert_allclose(together[0].joints, alone[0].joints, atol=1e-4)


def test_several_samples_average_their_triangulations(tiny_model, monkeypatch) -> None:
    """num_samples=2 is the mean of sample 0 (the single-sample result) and sample 1 (its own
    rig and noise seeds), both blended over the windows."""
    model, stats = tiny_model
    clips = tiny_clips()
    config = RecoveryConfig(window=40, overlap=10, steps=3, batch_windows=3)
    single = recover_clips(model, stats, stats, clips, config)
    both = recover_clips(model, stats, stats, clips, config.model_copy(update={"num_samples": 2}))
    seed_of = recovery.window_seed
    monkeypatch.setattr(
        recovery, "window_seed", lambda seed, key, index, sample=0: seed_of(seed, key, index, 1)
    )
    second = recover_clips(model, stats, stats, clips, config)
    for a, b, mean in zip(single, second, both, strict=True):
        assert not np.allclose(a.joints, b.joints)
        np.testing.assert_allclose(mean.joints, (a.joints + b.joints) / 2, atol=1e-4)
        assert mean.num_windows == a.num_windows


def test_bad_inputs_raise_clear_errors(tiny_model) -> None:
    model, stats = tiny_model
    camera, _ = user_camera()
    with pytest.raises(ValueError, match="overlap"):
        RecoveryConfig(window=40, overlap=25)
    with pytest.raises(ValueError, match="steps"):
        RecoveryConfig(window=40, steps=101)
    with pytest.raises(ValueError, match="max_frames"):
        recover_sequence(
            model, stats, stats, camera, np.zeros((10, 22, 3)), RecoveryConfig(window=60)
        )
    with pytest.raises(ValueError, match="clip 1: keypoints: 17 joints"):
        recover_clips(
            model,
            stats,
            stats,
            [ClipInput(camera, np.zeros((10, 22, 3))), ClipInput(camera, np.zeros((10, 17, 3)))],
            RecoveryConfig(window=40),
        )


# ---------------------------------------------------------------------------------------------
# Windows and blending


@settings(max_examples=60, deadline=None)
@given(
    num_frames=st.integers(1, 700),
    window=st.integers(2, 150),
    overlap_fraction=st.floats(0.0, 1.0),
)
def test_windows_cover_and_blend_to_one(num_frames: int, window: int, overlap_fraction: float):
    overlap = int(overlap_fraction * (window // 2))
    plan = plan_windows(num_frames, window, overlap)
    assert plan[0][0] == 0 and plan[-1][1] == num_frames
    total = np.zeros(num_frames)
    for i, (start, stop) in enumerate(plan):
        assert stop - start == min(window, num_frames)
        if i > 0:
            assert start > plan[i - 1][0]
            assert plan[i - 1][1] - start >= overlap  # at least the requested overlap
        before = plan[i - 1][1] - start if i > 0 else 0
        after = stop - plan[i + 1][0] if i + 1 < len(plan) else 0
        total[start:stop] += blend_weights(stop - start, max(before, 0), max(after, 0))
    # Consecutive windows' ramps form a partition of unity where at most two overlap.
    covered_twice_at_most = all(plan[i + 2][0] >= plan[i][1] for i in range(len(plan) - 2))
    if covered_twice_at_most:
        np.testing.assert_allclose(total, 1.0, atol=1e-12)
    assert (total > 0).all()


def test_plan_windows_hand_computed() -> None:
    assert plan_windows(80, 120, 30) == [(0, 80)]
    assert plan_windows(250, 120, 30) == [(0, 120), (65, 185), (130, 250)]
    np.testing.assert_allclose(blend_weights(5, 2, 0), [1 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(blend_weights(5, 0, 4), [1, 4 / 5, 3 / 5, 2 / 5, 1 / 5])


def test_window_seed_is_stable_and_distinct() -> None:
    assert window_seed(42, "a", 0) == window_seed(42, "a", 0)
    seeds = {window_seed(s, k, w) for s in (1, 2) for k in ("a", "b") for w in range(3)}
    assert len(seeds) == 12 and all(0 <= s < 2**63 for s in seeds)
    # Further samples of a window draw other streams; sample 0 is the single-sample seed.
    assert window_seed(42, "a", 0, sample=0) == window_seed(42, "a", 0)
    assert len({window_seed(42, "a", 0, sample=k) for k in range(4)} | seeds) == 16


# ---------------------------------------------------------------------------------------------
# Ground contact


def test_ground_contact_finds_the_walkers_ground_position() -> None:
    camera, to_world = user_camera()
    joints = to_world(walk_smpl22(120, seed=5, start_xz=(-1.0, -5.0), heading_deg=90.0))
    pixels, _ = camera.project(joints)
    visible = np.ones(joints.shape[:2], bool)
    centre = ground_contact_position(pixels, visible, camera, SMPL22.foot_joints)
    root_ground = joints[:, 0].mean(axis=0) * np.array([1.0, 0.0, 1.0])
    assert centre is not None and centre[1] == 0.0
    assert np.linalg.norm(centre - root_ground) < 0.3

    points = ground_contact_points(pixels, visible, camera, SMPL22.foot_joints)
    feet = joints[:, list(SMPL22.foot_joints)] * np.array([1.0, 0.0, 1.0])
    nearest_foot = np.linalg.norm(feet - points[:, None], axis=-1).min(axis=1)
    assert np.median(nearest_foot) < 0.2

    hidden = visible.copy()
    hidden[:, list(SMPL22.foot_joints)] = False
    assert ground_contact_position(pixels, hidden, camera, SMPL22.foot_joints) is None
    assert np.isnan(ground_contact_points(pixels, hidden, camera, SMPL22.foot_joints)).all()


def test_ground_contact_does_not_depend_on_camera_roll() -> None:
    """The same physical rays give the same hits whatever the roll (unlike 'largest v')."""
    K = intrinsics_from_fov(WIDTH, HEIGHT, 60.0)
    joints = walk_smpl22(60, seed=6, start_xz=(0.0, -4.0), heading_deg=90.0)
    contacts = []
    for roll in (0.0, 35.0):
        camera = camera_from_height_pitch_roll(1.5, 15.0, roll, K, WIDTH, HEIGHT)
        pixels, _ = camera.project(joints)
        visible = np.ones(joints.shape[:2], bool)
        contacts.append(ground_contact_points(pixels, visible, camera, SMPL22.foot_joints))
    np.testing.assert_allclose(contacts[0], contacts[1], atol=1e-9)


def test_oracle_recovers_truth_from_the_ground_contact_start(oracle_case) -> None:
    """Starting part-way from the ground-contact guess still converges to the truth with a
    perfect model, and skips the steps above the start."""
    clips, truths = oracle_case
    config = RecoveryConfig(
        window=120, overlap=30, steps=10, batch_windows=4, init="ground_contact", init_strength=0.5
    )
    rig_config = RigConfig()
    cfg = model_config()
    stats_local = random_stats(1, cfg.feature_dim)
    windows = oracle_windows(clips, truths, config, rig_config, stats_local)
    oracle = OracleDenoiser(cfg, stats_local, windows)

    results = recover_clips(oracle, stats_local, random_stats(2, cfg.feature_dim), clips, config)

    assert oracle.calls == 5  # DDIM 10 trailing: timesteps 49 and below
    for result, truth in zip(results, truths, strict=True):
        assert np.linalg.norm(result.joints - truth, axis=-1).max() < 1e-3


def test_smoothing_averages_over_valid_frames_only() -> None:
    T = 9
    joints = np.zeros((T, 1, 3))
    joints[:, 0, 0] = np.arange(T, dtype=float) ** 2
    valid = np.ones((T, 1), dtype=bool)
    valid[4] = False
    joints[4] = np.nan
    out = smooth_trajectories(joints, valid, width=3)
    assert np.isnan(out[4]).all()
    assert out[0, 0, 0] == pytest.approx((0 + 1) / 2)  # shrinks at the start
    assert out[3, 0, 0] == pytest.approx((4 + 9) / 2)  # frame 4 is left out
    assert out[7, 0, 0] == pytest.approx((36 + 49 + 64) / 3)
    # A straight line is unchanged inside the clip.
    line = np.repeat(np.arange(T, dtype=float)[:, None, None], 3, axis=-1)
    smooth = smooth_trajectories(line, np.ones((T, 1), bool), width=5)
    np.testing.assert_allclose(smooth[2:-2], line[2:-2])


def _seen_by_level_camera(truth: np.ndarray) -> tuple[Camera, np.ndarray]:
    """A 1.6 m high camera pitched 12° down (60° field of view) and its exact 2D view of
    ``truth`` (``(T, J, 3)`` metres): ``(T, J, 3)`` pixels and confidence 1."""
    camera = camera_from_height_pitch_roll(
        1.6, 12.0, 0.0, intrinsics_from_fov(WIDTH, HEIGHT, 60.0), WIDTH, HEIGHT
    )
    pixels, _ = camera.project(truth)
    return camera, np.concatenate([pixels, np.ones(truth.shape[:2] + (1,))], axis=-1)


def test_ground_anchor_restores_distance_along_the_observed_rays() -> None:
    """A motion recovered too far (scaled about the camera) and off its rays comes back to the
    truth; frames with both feet in the air (a jump) keep their neighbours' scale."""
    foot_height = 0.04
    truth = walk_smpl22(60, seed=3, start_xz=(0.3, -4.5), heading_deg=60.0)
    feet = list(SMPL22.foot_joints)
    truth[..., 1] += foot_height - truth[:, feet, 1].min(axis=1)[:, None]
    truth[20:26, :, 1] += 0.3  # a jump: no foot on the ground
    camera, keypoints = _seen_by_level_camera(truth)
    centre = camera.center
    recovered = centre + 1.12 * (truth - centre)
    recovered += 0.05 * camera.R[0]  # sideways, at the same camera depth: off the rays
    valid = np.ones(truth.shape[:2], bool)

    anchored = recovery.anchor_to_ground(
        recovered, valid, camera, keypoints, feet, foot_height, width=15
    )

    assert np.abs(recovered - truth).max() > 0.3
    np.testing.assert_allclose(anchored, truth, atol=1e-6)
    # Frames whose feet the camera does not see take their neighbours' scale, and an unseen
    # foot recovered wrongly does not move its frame.
    no_feet = keypoints.copy()
    no_feet[40:52][:, feet, 2] = 0.0
    wrong_foot = recovered.copy()
    wrong_foot[40:52][:, feet, 1] -= 0.5
    anchored = recovery.anchor_to_ground(
        wrong_foot, valid, camera, no_feet, feet, foot_height, width=15
    )
    others = [j for j in range(truth.shape[1]) if j not in feet]
    np.testing.assert_allclose(anchored[:, others], truth[:, others], atol=1e-6)
    # An unseen joint has no ray: it moves with its frame's seen joints (here all shifted
    # alike, so it comes back exactly), and frames where nothing is seen take their
    # neighbours' move. Without that it would stay 5 cm off the rest of the body.
    hidden = keypoints.copy()
    hidden[:, 0, 2] = 0.0
    hidden[30:33, :, 2] = 0.0
    moved = recovery.anchor_to_ground(recovered, valid, camera, hidden, feet, foot_height, 15)
    np.testing.assert_allclose(moved, truth, atol=1e-6)


def test_ground_anchor_pins_every_planted_joint_at_its_own_height() -> None:
    """Ankles and toes of two planted feet, each at its own planted height: exact when the
    recovered pose is right; with one toe recovered too deep, taking the lowest joint alone
    follows that toe, averaging the joints within the tolerance mostly does not."""
    heights = planted_foot_heights(SMPL22)  # ankles 0.115 m, toe bases 0.04 m
    feet = list(SMPL22.foot_joints)
    truth = walk_smpl22(40, seed=5, start_xz=(0.0, -4.5), heading_deg=90.0)
    truth[:, feet, 1] = heights  # both feet flat on the ground
    camera, keypoints = _seen_by_level_camera(truth)
    centre = camera.center
    recovered = centre + 1.1 * (truth - centre)
    valid = np.ones(truth.shape[:2], bool)

    exact = recovery.anchor_to_ground(
        recovered, valid, camera, keypoints, feet, heights, width=9, contact_tolerance_m=0.04
    )
    np.testing.assert_allclose(exact, truth, atol=1e-6)

    toe = SMPL22.joint_names.index("left_foot")
    wrong_toe = recovered.copy()
    wrong_toe[:, toe] = centre + 1.02 * (wrong_toe[:, toe] - centre)  # ~3 cm low on its ray
    lowest = recovery.anchor_to_ground(wrong_toe, valid, camera, keypoints, feet, heights, 9)
    averaged = recovery.anchor_to_ground(
        wrong_toe, valid, camera, keypoints, feet, heights, 9, contact_tolerance_m=0.04
    )
    pelvis_error = [
        np.linalg.norm(a[:, 0] - truth[:, 0], axis=-1).mean() for a in (lowest, averaged)
    ]
    assert pelvis_error[0] > 0.06  # ~2 % of 4.5 m
    assert pelvis_error[1] < 0.5 * pelvis_error[0]
    with pytest.raises(ValueError, match="contact_tolerance_m"):
        recovery.anchor_to_ground(
            recovered, valid, camera, keypoints, feet, heights, 9, contact_tolerance_m=-1.0
        )


def test_ankle_height_sets_the_planted_ankles_and_keeps_the_toes() -> None:
    names = [SMPL22.joint_names[j] for j in SMPL22.foot_joints]
    default = dict(zip(names, planted_foot_heights(SMPL22), strict=True))
    own = dict(zip(names, planted_foot_heights(SMPL22, 0.075), strict=True))
    for name in names:
        expected = 0.075 if name.endswith("ankle") else default[name]
        assert own[name] == pytest.approx(expected)
    assert default["left_ankle"] == pytest.approx(0.115)
    with pytest.raises(ValueError, match="ankle_height_m"):
        RecoveryConfig(window=30, ankle_height_m=0.0)


def test_post_process_pins_ankles_at_the_configured_height() -> None:
    """A skeleton whose planted ankles stand 7.5 cm up (not the default 11.5 cm) comes back
    exactly with ``ankle_height_m`` set, and about 2 % too near without it."""
    truth = walk_smpl22(40, seed=4, start_xz=(0.2, -4.5), heading_deg=70.0)
    ankles = [SMPL22.joint_names.index(n) for n in ("left_ankle", "right_ankle")]
    truth[..., 1] += 0.075 - truth[:, ankles, 1].min(axis=1)[:, None]
    camera, keypoints = _seen_by_level_camera(truth)
    keypoints[:, [j for j in SMPL22.foot_joints if j not in ankles], 2] = 0.0  # ankles only
    clip = recovery.ClipInput(camera, keypoints, key="c")
    recovered = camera.center + 1.1 * (truth - camera.center)
    valid = np.ones(truth.shape[:2], bool)
    config = RecoveryConfig(window=40, ground_anchor_frames=9)
    own = recovery.post_process(
        recovered, valid, clip, config.model_copy(update={"ankle_height_m": 0.075}), SMPL22
    )
    np.testing.assert_allclose(own, truth, atol=1e-6)
    default = recovery.post_process(recovered, valid, clip, config, SMPL22)
    depth_ratio = np.linalg.norm(default - camera.center, axis=-1) / np.linalg.norm(
        truth - camera.center, axis=-1
    )
    assert 0.95 < np.median(depth_ratio) < 0.99  # the ankle pinned 4 cm too high: too near


def test_post_process_applies_the_configured_steps_in_order() -> None:
    truth = walk_smpl22(30, seed=2, start_xz=(0.0, -4.5), heading_deg=30.0)
    camera, keypoints = _seen_by_level_camera(truth)
    clip = recovery.ClipInput(camera, keypoints, key="c")
    recovered = camera.center + 1.1 * (truth - camera.center)
    valid = np.ones(truth.shape[:2], bool)
    off = RecoveryConfig(window=30)
    np.testing.assert_array_equal(
        recovery.post_process(recovered, valid, clip, off, SMPL22), recovered
    )
    on = off.model_copy(
        update={"ground_anchor_frames": 9, "ground_anchor_tolerance_m": 0.04, "smooth_frames": 3}
    )
    anchored = recovery.anchor_to_ground(
        recovered,
        valid,
        camera,
        keypoints,
        SMPL22.foot_joints,
        planted_foot_heights(SMPL22),
        9,
        contact_tolerance_m=0.04,
    )
    np.testing.assert_allclose(
        recovery.post_process(recovered, valid, clip, on, SMPL22),
        smooth_trajectories(anchored, valid, 3),
    )
