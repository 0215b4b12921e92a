"""Training scenes and samples (mocap_core.training_data): ranges, geometry, trimming, masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from data_catalog.convert import CONTACT_HEIGHT_M
from mocap_core.cameras import height_pitch_roll, project_points
from mocap_core.joint_sets import add_pelvis, get_joint_set
from mocap_core.kinematics import bone_lengths
from mocap_core.normalize import ground
from mocap_core.pointmaps import ground_pointmaps
from mocap_core.procedural import procedural_walk
from mocap_core.representation import decode_global, decode_local
from mocap_core.rig import RigConfig
from mocap_core.skeleton_mapping import apply_mapping, get_skeleton_mapping
from mocap_core.training_data import (
    SAMPLE_KEYS,
    SceneConfig,
    TrainingSample,
    augment_bones,
    draw_input_camera,
    fit_feature_stats,
    make_scene_sample,
    make_track_sample,
)

SMPL22 = get_joint_set("smpl22")
COCO17_PELVIS = get_joint_set("coco17_pelvis")

# A scene with (almost) nothing left to chance: a standing person at 5 m straight ahead of a
# wide, level-ish camera fits the image in every frame, so nothing is ever trimmed.
FIXED = SceneConfig(
    image_sizes=[(1920, 1080)],
    hfov_deg=(75.0, 75.0),
    camera_height_m=(1.5, 1.5),
    camera_pitch_deg=(5.0, 5.0),
    camera_roll_deg=(0.0, 0.0),
    subject_distance_m=(5.0, 5.0),
    lateral_fraction=0.0,
    bone_scale_global=(1.0, 1.0),
    bone_scale_per_bone_std=0.0,
    pointmap_size=32,
)


def walk(
    joint_set: str = "smpl22",
    num_frames: int = 150,
    seed: int = 0,
    speed: float = 1.2,
    turn: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A procedural walk as a store holds it: ``(T, J, 3) float32`` grounded, all valid.

    ``coco17_pelvis`` gets the pelvis prepended, as the training dataset does.
    """
    motion = procedural_walk(num_frames, seed=seed, speed_m_s=speed, turn_deg_per_s=turn)
    target = "coco17" if joint_set == "coco17_pelvis" else joint_set
    joints, _ = apply_mapping(
        get_skeleton_mapping("bandai_namco", target),
        motion.joint_names,
        motion.positions,
        motion.global_rotations,
    )
    joints, _ = ground(
        joints, get_joint_set(target).foot_joints, foot_height=CONTACT_HEIGHT_M[target]
    )
    if joint_set == "coco17_pelvis":
        joints = add_pelvis(joints)
    return joints.astype(np.float32), np.ones(joints.shape[:2], dtype=bool)


def standing(num_frames: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """Frame 0 of a walk held still."""
    joints, valid = walk(num_frames=1)
    return np.repeat(joints, num_frames, axis=0), np.repeat(valid, num_frames, axis=0)


def contact_height(joints: np.ndarray, feet: tuple[int, ...]) -> float:
    return float(np.percentile(joints[:, feet, 1].min(axis=1), 5.0))


# ---------------------------------------------------------------------------------------------
# Config and input camera


def test_scene_config_defaults_validation_and_round_trip() -> None:
    config = SceneConfig()
    assert config.image_sizes == [(1920, 1080), (1280, 720), (1080, 1920)]
    assert config.rig == RigConfig() and config.pointmap_size == 224
    assert SceneConfig.model_validate(config.model_dump()) == config
    np.testing.assert_allclose(config.image_size_probabilities(), [1 / 3] * 3)
    with pytest.raises(ValidationError, match="hfov_deg"):
        SceneConfig(hfov_deg=(60.0, 50.0))
    with pytest.raises(ValidationError, match="image_size_weights"):
        SceneConfig(image_size_weights=[1.0, 2.0])
    with pytest.raises(ValidationError, match="camera_height_m"):
        SceneConfig(camera_height_m=(0.0, 1.0))
    with pytest.raises(ValidationError):
        SceneConfig(unknown_field=1)
    with pytest.raises(ValidationError):
        config.min_frames = 3  # frozen


def test_input_cameras_stay_within_ranges() -> None:
    config = SceneConfig()
    rng = np.random.default_rng(0)
    sizes = set()
    for _ in range(200):
        camera = draw_input_camera(config, rng)
        height, pitch, roll = height_pitch_roll(camera)
        hfov = 2 * math.degrees(math.atan(camera.width / 2 / camera.K[0, 0]))
        assert 0.8 - 1e-9 <= height <= 2.5 + 1e-9
        assert -1e-9 <= pitch <= 30 + 1e-9 and -4 - 1e-9 <= roll <= 4 + 1e-9
        assert 45 - 1e-9 <= hfov <= 75 + 1e-9
        np.testing.assert_allclose(camera.center[[0, 2]], 0.0, atol=1e-12)  # canonical frame
        assert camera.optical_axis[2] < 0  # looks along -Z
        sizes.add((camera.width, camera.height))
    assert sizes == set(config.image_sizes)
    weighted = SceneConfig(image_size_weights=[0.0, 1.0, 0.0])
    assert {draw_input_camera(weighted, rng).width for _ in range(20)} == {1280}


# ---------------------------------------------------------------------------------------------
# Bone augmentation


def test_fixed_factor_scales_every_bone_and_regrounds() -> None:
    joints, valid = walk(num_frames=60)
    config = SceneConfig(bone_scale_global=(1.1, 1.1), bone_scale_per_bone_std=0.0)
    scaled = augment_bones(joints.astype(np.float64), SMPL22, np.random.default_rng(0), config)
    ratio = (
        bone_lengths(SMPL22.parents, scaled)[:, 1:] / bone_lengths(SMPL22.parents, joints)[:, 1:]
    )
    np.testing.assert_allclose(ratio, 1.1, rtol=1e-5)
    feet = SMPL22.foot_joints
    assert contact_height(scaled, feet) == pytest.approx(contact_height(joints, feet), abs=1e-6)
    # The root's horizontal trajectory is kept; it is lower or higher only with the legs.
    np.testing.assert_allclose(scaled[:, 0, [0, 2]], joints[:, 0, [0, 2]], atol=1e-6)
    assert scaled[:, 0, 1].mean() > joints[:, 0, 1].mean()


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_augmented_bones_keep_directions_and_symmetry(seed: int) -> None:
    joints, valid = walk(num_frames=30)
    config = SceneConfig(bone_scale_per_bone_std=0.1)
    scaled = augment_bones(joints, SMPL22, np.random.default_rng(seed), config, valid)
    assert scaled.dtype == np.float32
    parents = np.asarray(SMPL22.parents)
    before = joints[:, 1:] - joints[:, parents[1:]]
    after = scaled[:, 1:] - scaled[:, parents[1:]]
    cosine = (
        (before * after).sum(-1) / np.linalg.norm(before, axis=-1) / np.linalg.norm(after, axis=-1)
    )
    np.testing.assert_allclose(cosine, 1.0, atol=1e-5)
    ratio = np.linalg.norm(after, axis=-1) / np.linalg.norm(before, axis=-1)  # (T, J - 1)
    factor = ratio.mean(axis=0)
    np.testing.assert_allclose(ratio, factor[None].repeat(len(ratio), 0), rtol=1e-4)
    low = 0.85 * (1 - 2 * 0.1)
    high = 1.15 * (1 + 2 * 0.1)
    assert np.all((factor > low - 1e-4) & (factor < high + 1e-4))
    for left, right in SMPL22.left_right_pairs:
        assert factor[left - 1] == pytest.approx(factor[right - 1], rel=1e-4)
    feet = SMPL22.foot_joints
    assert contact_height(scaled, feet) == pytest.approx(contact_height(joints, feet), abs=1e-5)


def test_bones_through_an_invalid_joint_scale_as_one() -> None:
    joints, valid = walk(num_frames=20)
    valid[:, 6] = False  # spine2, between spine1 (3) and spine3 (9)
    joints = joints.astype(np.float64)
    config = SceneConfig(bone_scale_global=(1.0, 1.0), bone_scale_per_bone_std=0.0)
    same = augment_bones(joints, SMPL22, np.random.default_rng(0), config, valid)
    np.testing.assert_allclose(same[valid], joints[valid], atol=1e-9)
    config = SceneConfig(bone_scale_global=(1.2, 1.2), bone_scale_per_bone_std=0.0)
    scaled = augment_bones(joints, SMPL22, np.random.default_rng(0), config, valid)
    np.testing.assert_allclose(
        scaled[:, 9] - scaled[:, 3], 1.2 * (joints[:, 9] - joints[:, 3]), atol=1e-9
    )


# ---------------------------------------------------------------------------------------------
# Scenes


def _check_contract(sample: TrainingSample, views: int, window: int, joints: int, pm: int) -> None:
    channels = 2 * (joints + 1)
    out = sample.as_dict()
    assert tuple(out) == SAMPLE_KEYS
    expected = {
        "local": ((views, window, channels), np.float32),
        "global0": ((window, channels), np.float32),
        "feature_mask": ((views, window, channels), np.float32),
        "length": ((), np.int64),
        "rt": ((views, 3), np.float32),
        "k": ((views, 4), np.float32),
        "pointmap": ((views, pm, pm, 3), np.float32),
        "K": ((views, 3, 3), np.float32),
        "R": ((views, 3, 3), np.float32),
        "t": ((views, 3), np.float32),
        "sizes": ((views, 2), np.int64),
        "joints": ((window, joints, 3), np.float32),
        "camera_known": ((), np.bool_),
    }
    for key, (shape, dtype) in expected.items():
        assert out[key].shape == shape, key
        assert out[key].dtype == dtype, key
        assert np.all(np.isfinite(out[key])), key
        # Collation wraps them as tensors: they must be plain, writable arrays.
        assert out[key].flags.writeable and out[key].flags.c_contiguous, key


@pytest.mark.parametrize("views", [1, 4])
def test_scene_sample_contract_and_view0_decodes_to_projection(views: int) -> None:
    joints, valid = walk(num_frames=140, turn=20.0)
    config = SceneConfig(pointmap_size=48)
    in_image = []
    for index in range(12):
        sample = make_scene_sample(
            joints, valid, SMPL22, 120, views, config, np.random.default_rng([3, index])
        )
        _check_contract(sample, views, 120, 22, 48)
        assert sample.camera_known and 30 <= sample.length <= 120
        n = sample.length
        pixels, _ = project_points(
            sample.joints[:n].astype(np.float64).reshape(1, -1, 3),
            sample.K.astype(np.float64),
            sample.R.astype(np.float64),
            sample.t.astype(np.float64),
        )
        pixels = pixels.reshape(views, n, 22, 2)
        decoded = decode_local(sample.local[:, :n].astype(np.float64), sample.sizes)
        np.testing.assert_allclose(decoded, pixels, atol=0.05)
        decoded0 = decode_global(sample.global0[:n].astype(np.float64), sample.sizes[0])
        np.testing.assert_allclose(decoded0, pixels[0], atol=0.05)
        root = pixels[0, :, 0]
        width, height = sample.sizes[0]
        in_image.extend(
            (root[:, 0] >= 0) & (root[:, 0] <= width) & (root[:, 1] >= 0) & (root[:, 1] <= height)
        )
        # Recomputed from the float32 cameras: equal up to the rounding of K, R, t, which
        # near the horizon (hits kilometres away) moves a hit by more than float32 noise.
        expected = ground_pointmaps(sample.K, sample.R, sample.t, None, sample.sizes, size=48)
        near = np.abs(expected).max(axis=-1) < 100.0
        np.testing.assert_allclose(sample.pointmap[near], expected[near], rtol=1e-4, atol=1e-3)
        # rt: tilt = -pitch and height of the input camera in the canonical frame.
        centre = -sample.R[0].T.astype(np.float64) @ sample.t[0]
        assert sample.rt[0, 2] == pytest.approx(centre[1], abs=1e-5)
        assert -math.radians(30) - 1e-5 <= sample.rt[0, 0] <= 1e-5
    assert np.mean(in_image) > 0.9


def test_stage2_rig_surrounds_the_motion() -> None:
    joints, valid = walk(num_frames=90)
    config = SceneConfig(pointmap_size=16, pointmap_max_range_m=20.0)
    sample = make_scene_sample(joints, valid, SMPL22, 90, 4, config, np.random.default_rng(5))
    centres = -np.einsum("vji,vj->vi", sample.R.astype(np.float64), sample.t)
    root = sample.joints[: sample.length, 0].mean(axis=0)
    azimuths = np.degrees(np.arctan2(centres[:, 0] - root[0], centres[:, 2] - root[2]))
    gaps = np.diff(np.sort(azimuths))
    assert np.all(gaps > 40)  # four cameras spread around the subject
    assert np.all(centres[:, 1] > 0)
    hit = np.abs(sample.pointmap).max(axis=-1) > 0
    reach = np.linalg.norm(sample.pointmap - centres[:, None, None].astype(np.float32), axis=-1)
    assert hit.any() and reach[hit].max() <= 20.0 + 1e-3


def test_frames_far_outside_are_trimmed() -> None:
    joints, valid = standing(150)
    joints[50:61, :, 1] += 30.0  # eleven frames thrown far above every image
    sample = make_scene_sample(joints, valid, SMPL22, 150, 1, FIXED, np.random.default_rng(0))
    assert sample.length == 89  # frames 61..149, the longest clean run
    assert sample.joints[: sample.length, :, 1].max() < 2.5

    # Whatever the draw, no kept frame has a valid joint beyond max_outside_px of any view.
    walker, valid = walk(num_frames=150, speed=1.6)
    config = SceneConfig(max_outside_px=20.0, pointmap_size=16)
    for seed in range(6):
        sample = make_scene_sample(
            walker, valid, SMPL22, 150, 4, config, np.random.default_rng(seed)
        )
        n = sample.length
        decoded = decode_local(sample.local[:, :n].astype(np.float64), sample.sizes)
        size = sample.sizes[:, None, None, :]
        outside = np.linalg.norm(np.maximum(-decoded, 0) + np.maximum(decoded - size, 0), axis=-1)
        assert outside.max() <= 20.0 + 0.05


def test_impossible_scene_keeps_the_best_attempt() -> None:
    joints, valid = standing(60)
    config = FIXED.model_copy(update={"subject_distance_m": (0.05, 0.05), "max_redraws": 2})
    sample = make_scene_sample(joints, valid, SMPL22, 40, 1, config, np.random.default_rng(0))
    _check_contract(sample, 1, 40, 22, 32)
    assert sample.length == 0
    assert not sample.feature_mask.any() and not sample.local.any()


def test_padding_mask_and_length() -> None:
    joints, valid = standing(50)
    valid[10:21, 20] = False  # left wrist missing for eleven frames
    sample = make_scene_sample(joints, valid, SMPL22, 120, 1, FIXED, np.random.default_rng(1))
    assert sample.length == 50
    mask, local = sample.feature_mask[0], sample.local[0]
    assert not mask[50:].any() and not local[50:].any() and not sample.joints[50:].any()
    assert not sample.global0[50:].any()
    np.testing.assert_array_equal(mask[:50, [0, 1, 44, 45]], 1.0)  # root and scale slots
    np.testing.assert_array_equal(mask[10:21, 40:42], 0.0)  # the wrist, where it is missing
    np.testing.assert_array_equal(local[10:21, 40:42], 0.0)
    assert mask[:10, 40:42].all() and mask[21:50, 40:42].all()
    assert mask[:50].sum() == 50 * 46 - 11 * 2


def test_samples_are_a_function_of_the_generator() -> None:
    joints, valid = walk(num_frames=100)
    config = SceneConfig(pointmap_size=16)
    one = make_scene_sample(joints, valid, SMPL22, 80, 4, config, np.random.default_rng([7, 3]))
    two = make_scene_sample(joints, valid, SMPL22, 80, 4, config, np.random.default_rng([7, 3]))
    other = make_scene_sample(joints, valid, SMPL22, 80, 4, config, np.random.default_rng([7, 4]))
    for key in SAMPLE_KEYS:
        np.testing.assert_array_equal(one.as_dict()[key], two.as_dict()[key])
    assert not np.allclose(one.R, other.R)
    assert not np.allclose(one.joints, other.joints)


def test_coco17_pelvis_scene() -> None:
    joints, valid = walk("coco17_pelvis", num_frames=80)
    sample = make_scene_sample(
        joints, valid, COCO17_PELVIS, 64, 1, SceneConfig(pointmap_size=16), np.random.default_rng(2)
    )
    _check_contract(sample, 1, 64, 18, 16)
    n = sample.length
    # Twin hips share their factor: the pelvis stays their mid-point after augmentation.
    np.testing.assert_allclose(
        sample.joints[:n, 0], sample.joints[:n, 12:14].mean(axis=1), atol=1e-5
    )


def test_bad_scene_inputs() -> None:
    joints, valid = walk(num_frames=20)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="num_views"):
        make_scene_sample(joints, valid, SMPL22, 20, 3, SceneConfig(), rng)
    with pytest.raises(ValueError, match="joints"):
        make_scene_sample(joints[:, :18], valid[:, :18], SMPL22, 20, 1, SceneConfig(), rng)
    with pytest.raises(TypeError, match="valid"):
        make_scene_sample(joints, valid.astype(int), SMPL22, 20, 1, SceneConfig(), rng)
    with pytest.raises(ValueError, match="window"):
        make_scene_sample(joints, valid, SMPL22, 0, 1, SceneConfig(), rng)


# ---------------------------------------------------------------------------------------------
# 2D tracks


def _track(num_frames: int = 40) -> np.ndarray:
    rng = np.random.default_rng(0)
    uv = rng.uniform([200.0, 100.0], [400.0, 400.0], size=(num_frames, 18, 2))
    uv += np.linspace(0, 100, num_frames)[:, None, None]
    conf = rng.uniform(0.3, 1.0, size=(num_frames, 18, 1))
    return np.concatenate([uv, conf], axis=-1).astype(np.float32)


def test_track_sample_known_size() -> None:
    keypoints = _track(40)
    keypoints[:5, 0, 2] = 0.0  # no root: cut
    keypoints[20:25, 7, 2] = 0.0  # a missing joint: not supervised
    keypoints[20:25, 7, :2] = np.nan
    sample = make_track_sample(keypoints, 640, 480, 60, np.random.default_rng(0), pointmap_size=16)
    _check_contract(sample, 1, 60, 18, 16)
    assert not sample.camera_known and sample.length == 35
    assert not sample.rt.any() and not sample.k.any() and not sample.pointmap.any()
    np.testing.assert_array_equal(sample.sizes, [[640, 480]])
    np.testing.assert_array_equal(sample.R[0], np.eye(3))
    decoded = decode_local(sample.local[0, :35].astype(np.float64), (640, 480))
    kept = keypoints[5:]
    seen = kept[..., 2] > 0
    np.testing.assert_allclose(decoded[seen], kept[..., :2][seen], atol=0.02)
    np.testing.assert_array_equal(sample.feature_mask[0, 15:20, 14:16], 0.0)
    assert sample.feature_mask[0, :35].sum() == 35 * 38 - 5 * 2


def test_track_sample_unknown_size_and_random_crop() -> None:
    keypoints = _track(100)
    offsets = set()
    for seed in range(5):
        sample = make_track_sample(
            keypoints, None, None, 30, np.random.default_rng(seed), pointmap_size=8
        )
        side = sample.sizes[0, 0]
        assert sample.sizes[0, 1] == side and sample.length == 30
        decoded = decode_local(sample.local[0, :30].astype(np.float64), (side, side))
        # A square frame around the track, with a margin on every side.
        assert decoded.min() > 0 and decoded.max() < side
        # The crop's first frame, found back from the (translation-free) pose shape.
        offsets.add(float(np.round(decoded[0, 1, 0] - decoded[0, 0, 0], 3)))
    assert len(offsets) > 1  # different crops


# ---------------------------------------------------------------------------------------------
# Statistics


def test_fit_feature_stats_uses_supervised_entries_only() -> None:
    joints, valid = standing(50)
    valid[:, 5] = False
    samples = [
        make_scene_sample(
            joints, valid, SMPL22, 80, 1, SceneConfig(pointmap_size=8), np.random.default_rng(s)
        )
        for s in range(4)
    ]
    local, global_ = fit_feature_stats(samples)
    stacked = np.concatenate([s.local[0, : s.length] for s in samples])
    stacked0 = np.concatenate([s.global0[: s.length] for s in samples])
    keep = np.ones(46, dtype=bool)
    keep[10:12] = False  # joint 5 is never valid
    np.testing.assert_allclose(
        local.mean[keep], stacked[:, keep].mean(axis=0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        local.std[keep], np.maximum(stacked[:, keep].std(axis=0), 1e-3), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        global_.mean[keep], stacked0[:, keep].mean(axis=0), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(local.mean[~keep], 0.0)
    np.testing.assert_array_equal(local.std[~keep], 1.0)

    # Garbage in padded entries of a collated batch changes nothing.
    batch = {
        key: torch.as_tensor(np.stack([s.as_dict()[key] for s in samples])) for key in SAMPLE_KEYS
    }
    padding = batch["feature_mask"] == 0
    batch["local"][padding] = 1e6
    batch["global0"][padding[:, 0]] = -1e6
    local_b, global_b = fit_feature_stats([batch])
    np.testing.assert_allclose(local_b.mean, local.mean, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(global_b.std, global_.std, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="no samples"):
        fit_feature_stats([])
