"""Tests of the evaluation protocol, the simulated detector and the baselines
(mocap_core.evaluation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mocap_core.cameras import Camera, camera_from_height_pitch_roll, intrinsics_from_fov
from mocap_core.evaluation import (
    PROTOCOLS,
    EvalProtocol,
    case_seed,
    draw_eval_scene,
    evaluated_joints,
    feet_on_ground,
    get_protocol,
    ground_contact_baseline,
    make_eval_case,
    model_layout,
    score_case,
    simulate_detections,
    triangulation_upper_bound,
)
from mocap_core.joint_sets import SMPL22, get_joint_set
from mocap_core.procedural import procedural_walk
from mocap_core.recovery import RecoveryConfig
from mocap_core.rig import RigConfig
from mocap_core.skeleton_mapping import apply_mapping, get_skeleton_mapping

STANDARD = get_protocol("standard")


def walk(num_frames: int = 45, seed: int = 0, joint_set: str = "smpl22", turn: float = 0.0):
    """A procedural walk ``(T, J, 3)`` metres (y-up, ground y = 0) and its ``(T, J)`` validity."""
    motion = procedural_walk(num_frames, seed=seed, turn_deg_per_s=turn)
    joints, valid = apply_mapping(
        get_skeleton_mapping("bandai_namco", joint_set),
        motion.joint_names,
        motion.positions,
        motion.global_rotations,
    )
    return joints, np.broadcast_to(np.asarray(valid, bool), joints.shape[:2]).copy()


def flat_camera() -> Camera:
    K = intrinsics_from_fov(1920, 1080, 60.0)
    return camera_from_height_pitch_roll(1.5, 10.0, 1.0, K, 1920, 1080)


def to_world(camera: Camera, points_cam: np.ndarray) -> np.ndarray:
    """Camera-frame points ``(..., 3)`` -> world."""
    return (points_cam - camera.t) @ camera.R


def camera_y_for_height(camera: Camera, x_cam: float, z_cam: float, height: float) -> float:
    """The camera-frame y of the point ``(x_cam, ?, z_cam)`` whose world height is ``height``:
    world y = R[:, 1] . (p - t) is affine in the camera y."""
    column = camera.R[:, 1]
    offset = column @ camera.t
    return (height + offset - column[0] * x_cam - column[2] * z_cam) / column[1]


def flat_figure(
    camera: Camera, depth: float, x_shift: float = 0.0, foot_height: float = 0.0
) -> np.ndarray:
    """An smpl22 ``(22, 3)`` figure, every joint at camera depth ``depth``: the left foot
    (10) planted, at ``foot_height`` above the ground, the other foot joints lifted, the rest
    up to 1.7 m."""
    heights = np.linspace(0.3, 1.7, 22)
    x_cam = np.linspace(-0.4, 0.4, 22) + x_shift
    foot_heights = {10: 0.0, 7: 0.09, 8: 0.12, 11: 0.25}
    for joint, height in foot_heights.items():
        heights[joint] = height + foot_height
        x_cam[joint] = x_shift + (0.05 if joint in (7, 10) else -0.05)
    points = np.array(
        [
            [x, camera_y_for_height(camera, x, depth, h), depth]
            for x, h in zip(x_cam, heights, strict=True)
        ]
    )
    return to_world(camera, points)


def keypoints_of(camera: Camera, joints: np.ndarray) -> np.ndarray:
    pixels, _ = camera.project(joints)
    return np.concatenate([pixels, np.ones(pixels.shape[:-1] + (1,))], axis=-1)


# ---------------------------------------------------------------------------------------------
# Protocol


def test_scene_draws_are_a_pure_function_of_seed_and_sequence_id():
    joints, valid = walk()
    first = draw_eval_scene(STANDARD, "clip-a#0", joints, valid)
    draw_eval_scene(STANDARD, "clip-b#0", joints, valid)  # another sequence in between
    again = draw_eval_scene(STANDARD, "clip-a#0", joints, valid)
    np.testing.assert_array_equal(first.joints, again.joints)
    assert first.camera.is_close(again.camera, atol=0.0)
    assert first.summary() == again.summary()
    other_id = draw_eval_scene(STANDARD, "clip-b#0", joints, valid)
    other_seed = draw_eval_scene(STANDARD.model_copy(update={"seed": 1}), "clip-a#0", joints, valid)
    assert other_id.summary() != first.summary() and other_seed.summary() != first.summary()
    assert case_seed(1, "a", "scene") == case_seed(1, "a", "scene")
    assert len({case_seed(1, "a", "scene"), case_seed(1, "a", "detections"),
                case_seed(2, "a", "scene"), case_seed(1, "b", "scene")}) == 4  # fmt: skip


@settings(max_examples=20, deadline=None)
@given(sequence_id=st.text(min_size=1, max_size=24), seed=st.integers(0, 10))
def test_scene_draws_stay_in_range_and_in_view(sequence_id, seed):
    joints, valid = walk(num_frames=45, seed=seed)
    scene = draw_eval_scene(STANDARD, sequence_id, joints, valid)
    cam = scene.camera
    assert (cam.width, cam.height) == (1920, 1080)
    hfov = math.degrees(2 * math.atan(cam.width / 2 / cam.K[0, 0]))
    assert STANDARD.hfov_deg[0] - 1e-9 <= hfov <= STANDARD.hfov_deg[1] + 1e-9
    assert math.isclose(hfov, scene.hfov_deg)
    assert STANDARD.camera_height_m[0] <= cam.center[1] <= STANDARD.camera_height_m[1]
    np.testing.assert_allclose(cam.center[[0, 2]], 0.0, atol=1e-12)  # origin below the camera
    assert STANDARD.camera_roll_deg[0] <= scene.roll_deg <= STANDARD.camera_roll_deg[1]
    assert 3.0 <= scene.distance_m <= 6.0
    assert abs(scene.lateral_deg) <= STANDARD.lateral_fraction * scene.hfov_deg / 2 + 1e-9
    # The mean root ground position sits exactly at the drawn distance and angle.
    mean_root = scene.joints[:, 0].mean(axis=0)
    assert math.isclose(math.hypot(mean_root[0], mean_root[2]), scene.distance_m, rel_tol=1e-9)
    # A 1.5 s walk fits: every joint in the image, the root 3-6 m away on every frame.
    assert scene.good_fraction == 1.0 and scene.in_view_fraction == 1.0
    pixels, depth = cam.project(scene.joints[valid])
    assert (depth > 0.1).all()
    assert (pixels >= 0).all() and (pixels[:, 0] <= 1920).all() and (pixels[:, 1] <= 1080).all()
    root_distance = np.hypot(scene.joints[:, 0, 0], scene.joints[:, 0, 2])
    assert (root_distance >= 3.0 - 1e-9).all() and (root_distance <= 6.0 + 1e-9).all()
    # Heights are kept: the walk stays on the ground.
    np.testing.assert_allclose(scene.joints[valid][:, 1], joints[valid][:, 1], atol=1e-12)
    assert np.isnan(scene.joints[~valid]).all()


def test_a_long_walk_keeps_the_best_draw_and_reports_it():
    joints, valid = walk(num_frames=450, seed=3)  # 15 s, ~18 m: cannot stay within 3-6 m
    scene = draw_eval_scene(STANDARD, "long#0", joints, valid)
    assert scene.draws == STANDARD.max_redraws + 1 and 1 <= scene.attempt <= scene.draws
    assert 0.0 < scene.good_fraction < 1.0 and scene.good_fraction <= scene.in_view_fraction
    low, high = scene.root_distance_m
    assert low < high and high - low > 3.0


def test_in_view_protocol_keeps_the_longest_good_run_of_the_same_draw():
    joints, valid = walk(num_frames=450, seed=3)
    full = draw_eval_scene(STANDARD, "long#0", joints, valid)
    in_view = draw_eval_scene(PROTOCOLS["in-view"], "long#0", joints, valid)
    start, stop = in_view.frames
    assert full.frames == (0, 450) and 30 <= stop - start < 450
    assert stop - start <= round(full.good_fraction * 450)
    np.testing.assert_array_equal(in_view.joints, full.joints[start:stop])  # same scene
    pixels, depth = in_view.camera.project(in_view.joints[valid[start:stop]])
    assert (depth > 0.1).all() and (pixels >= 0).all()
    assert (pixels[:, 0] <= 1920).all() and (pixels[:, 1] <= 1080).all()
    root = np.hypot(in_view.joints[:, 0, 0], in_view.joints[:, 0, 2])
    assert (root >= 3.0 - 1e-9).all() and (root <= 6.0 + 1e-9).all()
    strict = PROTOCOLS["in-view"].model_copy(update={"min_segment_frames": 449})
    with pytest.raises(ValueError, match="no 449 consecutive frames in view"):
        draw_eval_scene(strict, "long#0", joints, valid)


def test_presets_and_bad_protocols():
    assert set(PROTOCOLS) >= {"standard", "far", "high"}
    assert PROTOCOLS["standard"].subject_distance_m == (3.0, 6.0)
    assert all(p.name == name for name, p in PROTOCOLS.items())
    with pytest.raises(ValueError, match="unknown evaluation protocol 'nope'.*standard"):
        get_protocol("nope")
    with pytest.raises(ValueError, match="subject_distance_m: min 6.0 is greater than max 3.0"):
        EvalProtocol(subject_distance_m=(6.0, 3.0))
    with pytest.raises(ValueError, match="camera_height_m"):
        EvalProtocol(camera_height_m=(0.0, 1.0))
    joints, valid = walk()
    with pytest.raises(ValueError, match="root"):
        draw_eval_scene(STANDARD, "x", joints, np.zeros_like(valid))
    with pytest.raises(TypeError, match="EvalProtocol"):
        draw_eval_scene("standard", "x", joints, valid)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Simulated detections


def test_detections_without_noise_are_the_projection():
    joints, valid = walk()
    scene = draw_eval_scene(STANDARD, "a", joints, valid)
    keypoints = simulate_detections(
        scene.camera, scene.joints, valid, 0.0, 0.0, np.random.default_rng(0)
    )
    pixels, _ = scene.camera.project(scene.joints)
    np.testing.assert_allclose(keypoints[valid][:, :2], pixels[valid], atol=1e-9)
    assert (keypoints[valid][:, 2] == 1.0).all()
    # Joints the ground truth lacks (smpl22's spine2 from this skeleton) are never seen.
    assert (keypoints[~valid][:, 2] == 0.0).all() and np.isnan(keypoints[~valid][:, :2]).all()


def test_noise_and_drops_nest_across_settings():
    joints, valid = walk(num_frames=200)
    scene = draw_eval_scene(STANDARD, "a", joints, valid)
    exact, _ = scene.camera.project(scene.joints)

    def detect(noise, drop):
        return simulate_detections(
            scene.camera, scene.joints, valid, noise, drop, np.random.default_rng(5)
        )

    two, ten = detect(2.0, 0.0), detect(10.0, 0.0)
    seen = two[..., 2] > 0  # a 6.7 s walk leaves the image now and then
    assert 0.5 < seen[valid].mean() < 1.0
    np.testing.assert_array_equal(seen, ten[..., 2] > 0)
    np.testing.assert_allclose(
        ten[seen][:, :2] - exact[seen], 5.0 * (two[seen][:, :2] - exact[seen]), atol=1e-6
    )
    error = (two[seen][:, :2] - exact[seen]).ravel()
    assert abs(error.std() - 2.0) < 0.1 and abs(error.mean()) < 0.1
    low, high = detect(0.0, 0.1), detect(0.0, 0.3)
    dropped_low, dropped_high = (low[..., 2] == 0) & seen, (high[..., 2] == 0) & seen
    assert (dropped_low <= dropped_high).all()  # a subset
    fraction = dropped_high[seen].mean()  # drops among the joints in view
    n = seen.sum()
    assert abs(fraction - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n)
    assert np.isnan(high[dropped_high][:, :2]).all()


def test_joints_outside_the_image_or_behind_are_not_seen():
    cam = flat_camera()
    inside = to_world(cam, np.array([[0.0, 0.0, 4.0]]))
    outside = to_world(cam, np.array([[10.0, 0.0, 4.0]]))  # far to the right
    behind = to_world(cam, np.array([[0.0, 0.0, -4.0]]))
    joints = np.concatenate([inside, outside, behind])[None]
    keypoints = simulate_detections(
        cam, joints, np.ones((1, 3), bool), 0.0, 0.0, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(keypoints[0, :, 2], [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="drop_rate"):
        simulate_detections(cam, joints, np.ones((1, 3), bool), 0.0, 1.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="noise_px"):
        simulate_detections(cam, joints, np.ones((1, 3), bool), -1.0, 0.0, np.random.default_rng(0))


def test_coco_cases_get_the_pelvis_from_the_detected_hips():
    joints, valid = walk(joint_set="coco17")
    case = make_eval_case(STANDARD, "c#0", joints, valid, "coco17", noise_px=3.0)
    assert case.model_joint_set == "coco17_pelvis" and case.keypoints.shape == (45, 18, 3)
    np.testing.assert_allclose(case.keypoints[:, 0, :2], case.keypoints[:, 12:14, :2].mean(axis=1))
    # The scene does not depend on the detector settings.
    clean = make_eval_case(STANDARD, "c#0", joints, valid, "coco17")
    np.testing.assert_array_equal(case.gt, clean.gt)
    model_joints, model_valid, name = model_layout(joints, valid, "coco17")
    assert name == "coco17_pelvis" and model_joints.shape == (45, 18, 3)
    # The pelvis is valid with both hips; the procedural skeleton has no face points.
    np.testing.assert_array_equal(model_valid[:, 0], valid[:, 11] & valid[:, 12])
    assert np.isnan(model_joints[~model_valid]).all()
    with pytest.raises(ValueError, match="blazepose33"):
        model_layout(joints, valid, "blazepose33")


def test_feet_on_ground():
    joints, valid = walk()
    assert feet_on_ground(joints, valid, SMPL22.foot_joints, 0.05)
    lifted = joints + np.array([0.0, 0.3, 0.0])
    assert not feet_on_ground(lifted, valid, SMPL22.foot_joints, 0.05)
    assert make_eval_case(STANDARD, "w", joints, valid, "smpl22").grounded
    assert not make_eval_case(STANDARD, "w", lifted, valid, "smpl22").grounded


# ---------------------------------------------------------------------------------------------
# Ground-contact heuristic


def test_ground_contact_is_exact_on_a_flat_figure_with_a_foot_down():
    cam = flat_camera()
    figures = np.stack(
        [
            flat_figure(cam, d, x)
            for d, x in zip(np.linspace(3.2, 5.5, 6), np.linspace(-0.5, 0.5, 6), strict=True)
        ]
    )
    np.testing.assert_allclose(figures[:, 10, 1], 0.0, atol=1e-12)
    estimate = ground_contact_baseline(cam, keypoints_of(cam, figures), SMPL22)
    np.testing.assert_allclose(estimate, figures, atol=1e-9)


def test_ground_contact_cuts_the_foot_ray_at_the_planted_foot_height():
    cam = flat_camera()
    figure = flat_figure(cam, 4.0, foot_height=0.1)
    keypoints = keypoints_of(cam, figure[None])
    np.testing.assert_allclose(
        ground_contact_baseline(cam, keypoints, SMPL22, foot_height_m=0.1)[0], figure, atol=1e-9
    )
    # Cut at the ground instead, the figure lands farther away along the rays.
    on_ground = ground_contact_baseline(cam, keypoints, SMPL22)[0]
    farther = np.linalg.norm(on_ground - cam.center, axis=-1) - np.linalg.norm(
        figure - cam.center, axis=-1
    )
    assert (farther > 0.2).all()
    with pytest.raises(ValueError, match="foot_height_m"):
        ground_contact_baseline(cam, keypoints, SMPL22, foot_height_m=2.0)


def test_ground_contact_error_of_a_joint_off_the_plane_is_its_depth_offset_along_the_ray():
    cam = flat_camera()
    depth, offset = 4.0, 0.3
    figure = flat_figure(cam, depth)
    truth = figure.copy()
    joint = 15  # the head, pulled towards the camera along its own ray
    point_cam = cam.R @ figure[joint] + cam.t
    truth[joint] = to_world(cam, point_cam * (depth - offset) / depth)
    estimate = ground_contact_baseline(cam, keypoints_of(cam, truth[None]), SMPL22)[0]
    x, y = point_cam[0] / depth, point_cam[1] / depth
    expected = offset * math.sqrt(x * x + y * y + 1.0)
    errors = np.linalg.norm(estimate - truth, axis=-1)
    assert math.isclose(errors[joint], expected, rel_tol=1e-9)
    np.testing.assert_allclose(np.delete(errors, joint), 0.0, atol=1e-9)


def test_ground_contact_interpolates_frames_without_a_visible_foot():
    cam = flat_camera()
    # Sliding sideways at a constant depth: contact point and pixels move linearly.
    figures = np.stack([flat_figure(cam, 4.0, x) for x in np.linspace(-0.6, 0.6, 7)])
    keypoints = keypoints_of(cam, figures)
    keypoints[1:6, list(SMPL22.foot_joints), 2] = 0.0  # no foot seen on frames 1-5
    keypoints[1:6, list(SMPL22.foot_joints), :2] = np.nan
    keypoints[3, 15, 2] = 0.0  # the head missed on one frame
    estimate = ground_contact_baseline(cam, keypoints, SMPL22)
    np.testing.assert_allclose(estimate, figures, atol=1e-9)
    keypoints[:, list(SMPL22.foot_joints), 2] = 0.0  # never a foot: nothing to stand on
    assert np.isnan(ground_contact_baseline(cam, keypoints, SMPL22)).all()


# ---------------------------------------------------------------------------------------------
# Triangulation upper bound


@pytest.mark.parametrize("joint_set", ["smpl22", "coco17"])
def test_upper_bound_returns_the_truth_without_noise(joint_set):
    joints, valid = walk(num_frames=100, seed=2, joint_set=joint_set, turn=20.0)
    case = make_eval_case(STANDARD, "ub#0", joints, valid, joint_set)
    model_set = get_joint_set(case.model_joint_set)
    config = RecoveryConfig(window=32, overlap=8)  # four windows, each its own rig
    estimate = triangulation_upper_bound(
        case.camera, case.keypoints, case.gt, model_set, config, RigConfig(), case.sequence_id, 16
    )
    known = case.valid.copy()
    if joint_set == "coco17":
        # The observed pelvis is the hips' pixel mid-point, not the projected 3D mid-point.
        known[:, 0] = False
    np.testing.assert_allclose(estimate[known], case.gt[known], atol=1e-6)
    score = score_case(case, {"upper_bound": estimate}, 30.0)
    assert score.metrics["upper_bound"]["abs_mpjpe_mm"] < 1e-3
    # This skeleton gives no spine2 (smpl22) and no face points (coco17).
    assert score.num_joints == (12 if joint_set == "coco17" else 21)


def test_upper_bound_with_noise_and_drops_is_small_and_complete():
    joints, valid = walk(num_frames=60, seed=4)
    case = make_eval_case(STANDARD, "n#0", joints, valid, "smpl22", noise_px=5.0, drop_rate=0.2)
    estimate = triangulation_upper_bound(
        case.camera,
        case.keypoints,
        case.gt,
        SMPL22,
        RecoveryConfig(window=32),
        RigConfig(),
        "n#0",
        16,
    )
    assert np.isfinite(estimate[case.valid]).all()  # dropped joints come from the rig
    error_mm = 1000 * np.linalg.norm(estimate[case.valid] - case.gt[case.valid], axis=-1)
    assert 0.1 < error_mm.mean() < 30.0


# ---------------------------------------------------------------------------------------------
# Scoring


def test_score_case_hand_computed_offsets_and_empty_methods():
    joints, valid = walk(num_frames=30)
    case = make_eval_case(STANDARD, "s#0", joints, valid, "smpl22")
    shifted = case.gt + np.array([0.1, 0.0, 0.0])
    score = score_case(
        case, {"exact": case.gt, "shifted": shifted, "none": np.full_like(case.gt, np.nan)}, 30.0
    )
    assert score.metrics["exact"]["abs_mpjpe_mm"] == 0.0
    assert math.isclose(score.metrics["shifted"]["abs_mpjpe_mm"], 100.0, rel_tol=1e-9)
    assert (
        score.metrics["shifted"]["mpjpe_mm"] < 1e-9
        and score.metrics["shifted"]["pa_mpjpe_mm"] < 1e-6
    )
    assert score.metrics["none"]["num_frames"] == 0 and math.isnan(
        score.metrics["none"]["abs_mpjpe_mm"]
    )
    np.testing.assert_allclose(score.abs_error_mm["shifted"], 100.0)
    np.testing.assert_allclose(
        score.roots["shifted"] - score.gt_root, [[0.1, 0.0, 0.0]] * 30, atol=1e-12
    )
    with pytest.raises(ValueError, match="shape"):
        score_case(case, {"bad": case.gt[:, :5]}, 30.0)


def test_evaluated_joints_leave_out_joints_the_truth_lacks():
    valid = np.ones((5, 22), bool)
    subset, indices = evaluated_joints(SMPL22, valid)
    assert subset is SMPL22 and len(indices) == 22
    valid[:, 6] = False
    valid[2, 7] = False  # an ankle missing on one frame is left out too
    subset, indices = evaluated_joints(SMPL22, valid)
    assert 6 not in indices and 7 not in indices and subset.num_joints == 20
    assert [subset.joint_names[i] for i in subset.hip_pair] == [
        SMPL22.joint_names[i] for i in SMPL22.hip_pair
    ]
    valid[:, 1] = False
    with pytest.raises(ValueError, match="hip"):
        evaluated_joints(SMPL22, valid)
