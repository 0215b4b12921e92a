"""Tests for mocap_core.kinematics: forward kinematics, bone lengths, bone scaling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from mocap_core.kinematics import bone_lengths, forward_kinematics, scale_bones, topological_order
from mocap_core.rotations import axis_rotation_matrix

# root -> a -> b, and root -> c
PARENTS = np.array([-1, 0, 1, 0])
OFFSETS = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])


def naive_fk(parents, offsets, local_rotations, translations):
    """One frame at a time, by recursion to the root: an independent reference."""
    num_frames, num_joints = local_rotations.shape[:2]
    positions = np.zeros((num_frames, num_joints, 3))
    rotations = np.zeros((num_frames, num_joints, 3, 3))
    for t in range(num_frames):

        def world(j, t=t):
            if parents[j] < 0:
                return translations[t, j], local_rotations[t, j]
            parent_pos, parent_rot = world(parents[j])
            return parent_pos + parent_rot @ translations[t, j], parent_rot @ local_rotations[t, j]

        for j in range(num_joints):
            positions[t, j], rotations[t, j] = world(j)
    return positions, rotations


def test_hand_computed_chain() -> None:
    rotations = np.broadcast_to(np.eye(3), (1, 4, 3, 3)).copy()
    rotations[0, 0] = axis_rotation_matrix("Z", 90, degrees=True)  # x -> y, y -> -x
    rotations[0, 1] = axis_rotation_matrix("Z", 90, degrees=True)
    positions, global_rotations = forward_kinematics(PARENTS, OFFSETS, rotations)
    expected = np.array([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0], [-1.0, 2.0, 0.0], [0.0, 1.0, 2.0]])
    np.testing.assert_allclose(positions[0], expected, atol=1e-12)
    np.testing.assert_allclose(
        global_rotations[0, 2], axis_rotation_matrix("Z", 180, degrees=True), atol=1e-12
    )


def test_root_translation_replaces_root_offset() -> None:
    rotations = np.broadcast_to(np.eye(3), (2, 4, 3, 3))
    root = np.array([[5.0, 0.0, 0.0], [0.0, 0.0, -3.0]])
    positions, _ = forward_kinematics(PARENTS, OFFSETS, rotations, root_translation=root)
    np.testing.assert_allclose(positions[:, 0], root)
    np.testing.assert_allclose(positions[:, 1] - positions[:, 0], np.tile(OFFSETS[1], (2, 1)))


def test_local_translations_replace_offsets_where_selected() -> None:
    rotations = np.broadcast_to(np.eye(3), (1, 4, 3, 3))
    local = np.zeros((1, 4, 3))
    local[0, 2] = [0.0, 0.0, 7.0]
    mask = np.array([False, False, True, False])
    positions, _ = forward_kinematics(
        PARENTS, OFFSETS, rotations, local_translations=local, translated_joints=mask
    )
    np.testing.assert_allclose(positions[0, 2] - positions[0, 1], [0.0, 0.0, 7.0])
    np.testing.assert_allclose(positions[0, 1] - positions[0, 0], OFFSETS[1])
    with pytest.raises(ValueError, match="translated_joints given without"):
        forward_kinematics(PARENTS, OFFSETS, rotations, translated_joints=mask)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), num_joints=st.integers(1, 9), num_frames=st.integers(1, 4))
def test_matches_naive_recursion_on_random_trees(
    seed: int, num_joints: int, num_frames: int
) -> None:
    rng = np.random.default_rng(seed)
    parents = np.array([-1] + [int(rng.integers(0, j)) for j in range(1, num_joints)])
    offsets = rng.normal(size=(num_joints, 3))
    rotations = Rotation.random(num_frames * num_joints, random_state=seed).as_matrix()
    rotations = rotations.reshape(num_frames, num_joints, 3, 3)
    local = rng.normal(size=(num_frames, num_joints, 3))
    positions, global_rotations = forward_kinematics(
        parents, offsets, rotations, local_translations=local
    )
    ref_positions, ref_rotations = naive_fk(parents, offsets, rotations, local)
    np.testing.assert_allclose(positions, ref_positions, atol=1e-10)
    np.testing.assert_allclose(global_rotations, ref_rotations, atol=1e-10)


def test_parents_in_any_order() -> None:
    # The same tree as PARENTS with joints listed in the order (b, c, a, root).
    perm = np.array([2, 3, 1, 0])
    inverse = np.argsort(perm)
    parents = np.array([inverse[PARENTS[j]] if PARENTS[j] >= 0 else -1 for j in perm])
    assert topological_order(parents).tolist().index(3) == 0
    rotations = Rotation.random(3 * 4, random_state=1).as_matrix().reshape(3, 4, 3, 3)
    ordered, _ = forward_kinematics(PARENTS, OFFSETS, rotations)
    permuted, _ = forward_kinematics(parents, OFFSETS[perm], rotations[:, perm])
    np.testing.assert_allclose(permuted, ordered[:, perm], atol=1e-12)


def test_bad_trees_and_shapes_raise() -> None:
    rotations = np.broadcast_to(np.eye(3), (1, 3, 3, 3))
    with pytest.raises(ValueError, match="cycle"):
        forward_kinematics(np.array([-1, 2, 1]), np.zeros((3, 3)), rotations)
    with pytest.raises(ValueError, match="outside"):
        forward_kinematics(np.array([-1, 0, 5]), np.zeros((3, 3)), rotations)
    with pytest.raises(ValueError, match="offsets"):
        forward_kinematics(np.array([-1, 0, 1]), np.zeros((2, 3)), rotations)
    with pytest.raises(ValueError, match="root_translation"):
        forward_kinematics(
            np.array([-1, 0, 1]), np.zeros((3, 3)), rotations, root_translation=np.zeros(3)
        )


def test_bone_lengths() -> None:
    positions = np.array([[[0.0, 0, 0], [3.0, 4, 0], [3.0, 4, 2], [0.0, 0, -1]]] * 2)
    np.testing.assert_allclose(bone_lengths(PARENTS, positions), [[0.0, 5.0, 2.0, 1.0]] * 2)


def test_scale_bones_hand_computed() -> None:
    positions = np.array([[0.0, 0, 0], [1.0, 0, 0], [1.0, 1, 0], [0.0, 0, 2]])
    # Doubling bone root->a moves a and its child b by the same +1 in x.
    scaled = scale_bones(PARENTS, positions, np.array([7.0, 2.0, 1.0, 1.0]))
    np.testing.assert_allclose(scaled, [[0.0, 0, 0], [2.0, 0, 0], [2.0, 1, 0], [0.0, 0, 2]])
    np.testing.assert_allclose(scale_bones(PARENTS, positions, np.ones(4)), positions)
    with pytest.raises(ValueError, match=">= 0"):
        scale_bones(PARENTS, positions, np.array([1.0, -1.0, 1.0, 1.0]))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_scale_bones_scales_lengths_and_keeps_directions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    positions = rng.normal(size=(5, 4, 3))
    factors = rng.uniform(0.5, 1.5, size=4)
    scaled = scale_bones(PARENTS, positions, factors)
    np.testing.assert_allclose(scaled[:, 0], positions[:, 0])
    np.testing.assert_allclose(
        bone_lengths(PARENTS, scaled)[:, 1:], bone_lengths(PARENTS, positions)[:, 1:] * factors[1:]
    )
    for joint in (1, 2, 3):
        before = positions[:, joint] - positions[:, PARENTS[joint]]
        after = scaled[:, joint] - scaled[:, PARENTS[joint]]
        np.testing.assert_allclose(np.cross(before, after), 0.0, atol=1e-12)
        assert np.all(np.sum(before * after, axis=-1) > 0)
    per_frame = rng.uniform(0.5, 1.5, size=(5, 4))
    assert scale_bones(PARENTS, positions, per_frame).shape == (5, 4, 3)
