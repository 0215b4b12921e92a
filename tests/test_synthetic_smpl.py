"""Tests for the synthetic SMPL-format body model and that smplx loads it."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch
from smplx.vertex_ids import vertex_ids as smplx_vertex_ids

from data_catalog.readers.amass import write_synthetic_smpl_model
from mocap_core.joint_sets import SMPL22
from mocap_core.synthetic_smpl import (
    SMPL_LANDMARK_VERTEX_IDS,
    SMPL_PARENTS,
    SMPLH_PARENTS,
    make_synthetic_smpl_model,
    synthetic_rest_joints,
)


@pytest.mark.parametrize(
    ("model_type", "num_joints", "pose_basis"), [("smpl", 24, 207), ("smplh", 52, 459)]
)
def test_arrays_have_smpl_keys_and_shapes(
    model_type: str, num_joints: int, pose_basis: int
) -> None:
    model = make_synthetic_smpl_model(seed=3, model_type=model_type, num_betas=16)
    assert model["v_template"].shape == (6890, 3)
    assert model["f"].shape == (13776, 3) and model["f"].max() < 6890
    assert np.all(model["f"][:, 0] != model["f"][:, 1]) and np.all(
        model["f"][:, 1] != model["f"][:, 2]
    )
    assert model["shapedirs"].shape == (6890, 3, 16)
    assert model["posedirs"].shape == (6890, 3, pose_basis)
    assert model["J_regressor"].shape == (num_joints, 6890)
    assert model["weights"].shape == (6890, num_joints)
    np.testing.assert_allclose(model["J_regressor"].sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(model["weights"].sum(axis=1), 1.0, atol=1e-12)
    assert (model["weights"] >= 0).all()
    kintree = model["kintree_table"]
    assert kintree.shape == (2, num_joints)
    np.testing.assert_array_equal(kintree[1], np.arange(num_joints))
    # SMPL's real tree: the first 22 parents are the smpl22 joint set's.
    assert tuple(kintree[0, :22]) == SMPL22.parents
    if model_type == "smplh":
        for side in "lr":
            basis = model[f"hands_components{side}"]
            np.testing.assert_allclose(basis @ basis.T, np.eye(45), atol=1e-10)
            assert model[f"hands_mean{side}"].shape == (45,)


def test_tree_and_landmarks_match_smplx() -> None:
    assert SMPL_PARENTS[22:] == (20, 21)
    # Every finger chain starts at a wrist: left fingers at 20, right at 21.
    assert [SMPLH_PARENTS[j] for j in range(22, 52, 3)] == [20] * 5 + [21] * 5
    assert SMPL_LANDMARK_VERTEX_IDS == smplx_vertex_ids["smplh"]


def test_same_seed_same_model_and_regressor_gives_rest_skeleton() -> None:
    a = make_synthetic_smpl_model(seed=7)
    b = make_synthetic_smpl_model(seed=7)
    c = make_synthetic_smpl_model(seed=8)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["v_template"], c["v_template"])
    np.testing.assert_allclose(
        a["J_regressor"] @ a["v_template"], synthetic_rest_joints("smpl"), atol=1e-12
    )


def rest_joints_check(joints: np.ndarray, vertices: np.ndarray) -> None:
    """Human-shaped T-pose: y-up, facing +z, left on +x, 1.6-1.8 m tall."""
    names = SMPL22.joint_names
    j = {n: joints[i] for i, n in enumerate(names)}
    assert j["left_hip"][0] > 0.03 and j["right_hip"][0] < -0.03
    assert j["left_shoulder"][0] > 0.1 and j["left_wrist"][0] > 0.5  # T-pose arms along x
    assert j["head"][1] > j["neck"][1] > j["spine3"][1] > j["pelvis"][1]
    assert j["pelvis"][1] > j["left_knee"][1] > j["left_ankle"][1]
    assert j["left_foot"][2] > j["left_ankle"][2]  # toes point forward (+z)
    np.testing.assert_allclose(np.linalg.norm(j["pelvis"]), 0.0, atol=0.05)
    height = vertices[:, 1].max() - vertices[:, 1].min()
    assert 1.6 < height < 1.8
    # Left/right mirror symmetry of the skeleton.
    mirrored = joints[list(SMPL22.mirror_permutation)] * [-1.0, 1.0, 1.0]
    np.testing.assert_allclose(mirrored, joints, atol=1e-6)


def test_smplx_loads_the_smpl_pickle(tmp_path: Path) -> None:
    (path,) = write_synthetic_smpl_model(tmp_path, model_type="smpl")
    assert path.name == "SMPL_NEUTRAL.pkl"
    with contextlib.redirect_stdout(io.StringIO()):  # smplx warns about 10 shape components
        model = smplx.SMPL(str(tmp_path))
    out = model()
    joints = out.joints[0, :22].detach().numpy()
    rest_joints_check(joints, out.vertices[0].detach().numpy())
    # Face keypoints (after the 24 joints) sit on the front of the head.
    nose = out.joints[0, 24].detach().numpy()
    assert nose[2] > joints[15][2] + 0.05 and nose[1] > joints[12][1]
    # Bending the left knee moves the left ankle and nothing on the right.
    body_pose = torch.zeros(1, 69)
    body_pose[0, 3 * 3] = 1.2  # joint 4 (left knee) is body-pose slot 3
    bent = model(body_pose=body_pose).joints[0, :22].detach().numpy()
    assert np.linalg.norm(bent[7] - joints[7]) > 0.2
    np.testing.assert_allclose(bent[[2, 5, 8]], joints[[2, 5, 8]], atol=1e-6)
    # Joint 4 itself stays put (rotation about the knee).
    np.testing.assert_allclose(bent[4], joints[4], atol=1e-6)


def test_smplx_loads_the_smplh_npz(tmp_path: Path) -> None:
    (path,) = write_synthetic_smpl_model(
        tmp_path, model_type="smplh", num_betas=16, file_format="npz"
    )
    assert path.name == "SMPLH_NEUTRAL.npz"
    with contextlib.redirect_stdout(io.StringIO()):
        model = smplx.SMPLH(str(tmp_path), ext="npz", use_pca=False, flat_hand_mean=True)
    out = model()
    assert out.joints.shape == (1, 52 + 21, 3)
    rest_joints_check(out.joints[0, :22].detach().numpy(), out.vertices[0].detach().numpy())
    # Shape: beta 0 makes the body taller.
    taller = model(betas=torch.tensor([[2.0] + [0.0] * 9])).vertices[0].detach().numpy()
    assert np.ptp(taller[:, 1]) > np.ptp(out.vertices[0].detach().numpy()[:, 1]) * 1.04
