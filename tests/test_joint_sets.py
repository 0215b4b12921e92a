import numpy as np
import pytest

from mocap_core.joint_sets import (
    BLAZEPOSE33,
    BLAZEPOSE33_TO_COCO17,
    COCO17,
    COCO17_PELVIS,
    JOINT_SETS,
    SMPL22,
    JointSet,
    add_pelvis,
    add_pelvis_confidence,
    drop_pelvis,
    get_joint_set,
)


def test_registry_sizes_and_roots():
    assert {n: len(s) for n, s in JOINT_SETS.items()} == {
        "smpl22": 22,
        "coco17": 17,
        "coco17_pelvis": 18,
        "blazepose33": 33,
    }
    assert SMPL22.joint_names[0] == "pelvis" and SMPL22.parents[0] == -1
    assert COCO17_PELVIS.joint_names[0] == "pelvis" and COCO17_PELVIS.parents[0] == -1


@pytest.mark.parametrize("joint_set", list(JOINT_SETS.values()), ids=lambda s: s.name)
def test_left_right_pairs_mirror(joint_set: JointSet):
    perm = joint_set.mirror_permutation
    assert np.array_equal(perm[perm], np.arange(len(joint_set)))
    for left, right in joint_set.left_right_pairs:
        assert (
            joint_set.joint_names[left].replace("left_", "right_") == joint_set.joint_names[right]
        )
    names = [joint_set.joint_names[i] for i in joint_set.hip_pair]
    assert names[0].startswith("left_") and names[1].startswith("right_") and "hip" in names[0]


def test_smpl_parents_follow_the_smpl_tree():
    assert SMPL22.joint_names[SMPL22.parents[SMPL22.index("left_wrist")]] == "left_elbow"
    assert SMPL22.joint_names[SMPL22.parents[SMPL22.index("head")]] == "neck"
    assert SMPL22.joint_names[SMPL22.parents[SMPL22.index("right_collar")]] == "spine3"


def test_cyclic_parents_are_rejected():
    with pytest.raises(ValueError, match="tree"):
        JointSet("bad", ("a", "b"), (1, 0), hip_pair=(0, 1), foot_joints=(0,))


def test_unknown_names_raise_with_context():
    with pytest.raises(KeyError, match="known"):
        get_joint_set("h36m17")
    with pytest.raises(KeyError, match="smpl22"):
        SMPL22.index("nose")


def test_pelvis_is_hip_midpoint_and_confidence_min():
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 100, size=(5, 17, 3))
    out = add_pelvis_confidence(kp)
    assert out.shape == (5, 18, 3)
    np.testing.assert_allclose(out[:, 0, :2], (kp[:, 11, :2] + kp[:, 12, :2]) / 2)
    np.testing.assert_allclose(out[:, 0, 2], np.minimum(kp[:, 11, 2], kp[:, 12, 2]))
    np.testing.assert_array_equal(drop_pelvis(out), kp)
    assert add_pelvis(kp[..., :2]).shape == (5, 18, 2)


def test_blazepose_to_coco_names_agree():
    for coco_idx, bp_idx in enumerate(BLAZEPOSE33_TO_COCO17):
        assert COCO17.joint_names[coco_idx] == BLAZEPOSE33.joint_names[bp_idx]
