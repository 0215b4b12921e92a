"""Tests for mocap_core.procedural: a plausible, grounded, deterministic walk."""

from __future__ import annotations

import numpy as np
import pytest

from mocap_core.joint_sets import SMPL22
from mocap_core.kinematics import bone_lengths, forward_kinematics
from mocap_core.procedural import PLANTED_ANKLE_HEIGHT_M, procedural_walk
from mocap_core.rotations import is_rotation_matrix
from mocap_core.skeleton_mapping import apply_mapping, get_skeleton_mapping


def joint(walk, name: str) -> np.ndarray:
    return walk.positions[:, walk.joint_names.index(name)]


def test_shapes_and_forward_kinematics_consistency() -> None:
    walk = procedural_walk(90, fps=30.0, seed=2)
    assert walk.positions.shape == (90, 22, 3) and walk.local_rotations.shape == (90, 22, 3, 3)
    assert walk.joint_names[:2] == ("joint_Root", "Hips")
    assert is_rotation_matrix(walk.local_rotations, atol=1e-9).all()
    positions, rotations = forward_kinematics(
        walk.parents,
        walk.offsets,
        walk.local_rotations,
        walk.root_translation,
        walk.local_translations,
        translated_joints=walk.translated_joints,
    )
    np.testing.assert_allclose(positions, walk.positions)
    np.testing.assert_allclose(rotations, walk.global_rotations)
    np.testing.assert_allclose(walk.root_translation[:, 1], 0.0)


def test_deterministic_by_seed() -> None:
    a = procedural_walk(40, seed=7)
    b = procedural_walk(40, seed=7)
    c = procedural_walk(40, seed=8)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert np.abs(a.positions - c.positions).max() > 0.01


@pytest.mark.parametrize(("speed", "turn"), [(0.8, 0.0), (1.2, 0.0), (1.6, 0.0), (1.2, 25.0)])
def test_feet_planted_on_the_ground(speed: float, turn: float) -> None:
    walk = procedural_walk(240, speed_m_s=speed, turn_deg_per_s=turn, seed=3)
    for column, side in enumerate(("L", "R")):
        toes = joint(walk, f"Toes_{side}")
        ankle = joint(walk, f"Foot_{side}")
        assert toes[:, 1].min() == pytest.approx(0.0, abs=1e-6)
        assert min(toes[:, 1].min(), ankle[:, 1].min()) >= -1e-6  # nothing below the floor
        stance = walk.foot_contacts[:, column]
        assert 0.5 < stance.mean() < 0.7  # ~60 % stance per foot
        planted = stance[1:] & stance[:-1]
        toe_speed = np.linalg.norm(np.diff(toes[:, [0, 2]], axis=0), axis=1) * walk.fps
        assert toe_speed[planted].max() < 0.02  # m/s: no foot skating
        assert toes[stance, 1].max() < 1e-6
        assert toes[~stance, 1].max() > 0.02  # the swing foot lifts
        # A flat planted foot's ankle stands at the documented height (the anchor's input).
        assert np.percentile(ankle[stance, 1], 10) == pytest.approx(
            PLANTED_ANKLE_HEIGHT_M, abs=2e-3
        )
    # Double support exists and at least one foot is always down.
    assert np.any(walk.foot_contacts.all(axis=1))
    assert np.all(walk.foot_contacts.any(axis=1))


@pytest.mark.parametrize("speed", [0.7, 1.2, 1.7])
def test_average_speed_matches(speed: float) -> None:
    walk = procedural_walk(300, speed_m_s=speed, seed=5)
    hips = joint(walk, "Hips")
    duration = (walk.positions.shape[0] - 1) / walk.fps
    displacement = np.linalg.norm(hips[-1, [0, 2]] - hips[0, [0, 2]]) / duration
    assert displacement == pytest.approx(speed, rel=0.03)
    # Facing +z at heading 0: the walk goes forward.
    assert hips[-1, 2] > hips[0, 2]


def test_turning_changes_heading_at_the_given_rate() -> None:
    walk = procedural_walk(301, speed_m_s=1.0, turn_deg_per_s=30.0, seed=1)
    root = walk.global_rotations[:, 0]
    forward = root[:, :, 2]  # the ground root's +z is the walking direction
    headings = np.unwrap(np.arctan2(forward[:, 0], forward[:, 2]))
    assert np.rad2deg(headings[-1] - headings[0]) == pytest.approx(300.0, abs=1e-6)
    hips = joint(walk, "Hips")
    # Circle of radius v / omega = 1.91 m around the centre to the walker's left, (1.91, 0).
    radius = np.linalg.norm(hips[:, [0, 2]] - [1.0 / np.deg2rad(30.0), 0.0], axis=1)
    assert np.all(np.abs(radius - 1.0 / np.deg2rad(30.0)) < 0.05)


def test_gait_features() -> None:
    walk = procedural_walk(300, speed_m_s=1.2, seed=6)
    hips = joint(walk, "Hips")
    assert 0.02 < np.ptp(hips[:, 1]) < 0.08  # vertical bob
    assert 0.85 < hips[:, 1].mean() < 0.96
    # Knee bend: the swing leg flexes well beyond 30 degrees, the stance leg stays near straight.
    thigh = joint(walk, "LowerLeg_L") - joint(walk, "UpperLeg_L")
    shank = joint(walk, "Foot_L") - joint(walk, "LowerLeg_L")
    cos = (
        np.sum(thigh * shank, axis=1)
        / np.linalg.norm(thigh, axis=1)
        / np.linalg.norm(shank, axis=1)
    )
    knee_flexion = np.rad2deg(np.arccos(np.clip(cos, -1, 1)))
    assert knee_flexion.max() > 30 and knee_flexion.min() < 20
    # Arms swing opposite to the legs: left hand forward while the left foot is back.
    forward = lambda name: joint(walk, name)[:, 2] - hips[:, 2]  # noqa: E731
    correlation = np.corrcoef(forward("Hand_L"), forward("Foot_L"))[0, 1]
    assert correlation < -0.5
    # Pelvis sway: the hips move side to side by a few centimetres.
    assert 0.02 < np.ptp(hips[:, 0]) < 0.1


def test_mapped_smpl22_has_plausible_bones() -> None:
    walk = procedural_walk(60, seed=9)
    smpl, measured = apply_mapping(
        get_skeleton_mapping("bandai_namco", "smpl22"),
        walk.joint_names,
        walk.positions,
        walk.global_rotations,
    )
    assert measured.sum() == 21
    lengths = dict(
        zip(SMPL22.joint_names, bone_lengths(SMPL22.parents, smpl).mean(axis=0), strict=True)
    )
    for thigh in ("left_knee", "right_knee"):
        assert 0.35 < lengths[thigh] < 0.5
    assert 0.35 < lengths["left_ankle"] < 0.5
    assert 0.22 < lengths["left_elbow"] < 0.35
    assert 0.08 < lengths["left_hip"] < 0.13
    height = smpl[:, SMPL22.index("head"), 1].max()
    assert 1.35 < height < 1.6
    smaller = procedural_walk(60, seed=9, body_scale=0.8)
    assert smaller.positions[:, 5, 1].max() < 0.85 * walk.positions[:, 5, 1].max()


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="num_frames"):
        procedural_walk(0)
    with pytest.raises(ValueError, match="speed_m_s"):
        procedural_walk(10, speed_m_s=3.0)
    with pytest.raises(ValueError, match="fps"):
        procedural_walk(10, fps=0.0)
    with pytest.raises(ValueError, match="body_scale"):
        procedural_walk(10, body_scale=3.0)
