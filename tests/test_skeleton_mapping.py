"""Tests for mocap_core.skeleton_mapping: recipes, registry, CMU and Bandai-Namco skeletons."""

from __future__ import annotations

import numpy as np
import pytest

from data_catalog.paths import shared_data_dir
from data_catalog.readers.bvh import read_bvh
from mocap_core.joint_sets import COCO17, SMPL22
from mocap_core.kinematics import bone_lengths
from mocap_core.procedural import procedural_walk
from mocap_core.rotations import axis_rotation_matrix
from mocap_core.skeleton_mapping import (
    SKELETON_MAPPINGS,
    Interpolated,
    Marker,
    Measured,
    SkeletonMapping,
    apply_mapping,
    get_skeleton_mapping,
    identify_source_skeleton,
    lerp,
    make_mapping,
)

DATA_ROOT = shared_data_dir()
BANDAI_DIR = DATA_ROOT / "bandai-namco-motion" / "dataset-1" / "data"
needs_bandai = pytest.mark.skipif(
    not BANDAI_DIR.is_dir(),
    reason=f"Bandai-Namco data not found at {BANDAI_DIR} (../shared/data absent)",
)

# The CMU (cgspeed BVH conversion) hierarchy with made-up adult proportions in CMU units
# (1 unit = 1/0.45 inch), rest pose a T-pose facing +z with the body's left on +x.
# (name, parent name, offset); left-side joints are mirrored to the right below.
CMU_LEFT_AND_CENTRE = [
    ("Hips", None, (0.0, 0.0, 0.0)),
    ("LHipJoint", "Hips", (0.0, 0.0, 0.0)),
    ("LeftUpLeg", "LHipJoint", (1.4, -1.8, 0.8)),
    ("LeftLeg", "LeftUpLeg", (2.4, -6.6, 0.0)),
    ("LeftFoot", "LeftLeg", (2.5, -6.9, 0.0)),
    ("LeftToeBase", "LeftFoot", (0.0, -0.4, 2.3)),
    ("LowerBack", "Hips", (0.0, 0.0, 0.0)),
    ("Spine", "LowerBack", (0.0, 2.0, -0.1)),
    ("Spine1", "Spine", (0.0, 2.0, 0.0)),
    ("Neck", "Spine1", (0.0, 2.0, -0.1)),
    ("Neck1", "Neck", (0.0, 1.6, 0.2)),
    ("Head", "Neck1", (0.0, 1.6, 0.2)),
    ("LeftShoulder", "Spine1", (0.0, 2.0, -0.1)),
    ("LeftArm", "LeftShoulder", (3.2, 0.9, 0.0)),
    ("LeftForeArm", "LeftArm", (5.2, 0.0, 0.0)),
    ("LeftHand", "LeftForeArm", (3.5, 0.0, 0.0)),
    ("LeftFingerBase", "LeftHand", (0.7, 0.0, 0.0)),
    ("LeftHandIndex1", "LeftFingerBase", (0.6, 0.0, 0.0)),
    ("LThumb", "LeftHand", (0.6, 0.0, 0.6)),
]


def mirrored(name: str) -> str:
    for left, right in (("Left", "Right"), ("LHip", "RHip"), ("LThumb", "RThumb")):
        if name.startswith(left):
            return right + name[len(left) :]
    return name


def cmu_bvh(num_frames_yaw_deg: tuple[float, ...]) -> str:
    """CMU-named BVH text; one frame per root yaw (degrees about +y), T-pose otherwise."""
    joints = list(CMU_LEFT_AND_CENTRE)
    for name, parent, (x, y, z) in CMU_LEFT_AND_CENTRE:
        if mirrored(name) != name:
            joints.append((mirrored(name), mirrored(parent), (-x, y, z)))  # type: ignore[arg-type]
    # Order as in the cgspeed files: left leg, right leg, then the back and arms.
    order = [
        "Hips", "LHipJoint", "LeftUpLeg", "LeftLeg", "LeftFoot", "LeftToeBase",
        "RHipJoint", "RightUpLeg", "RightLeg", "RightFoot", "RightToeBase",
        "LowerBack", "Spine", "Spine1", "Neck", "Neck1", "Head",
        "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand", "LeftFingerBase", "LeftHandIndex1", "LThumb",
        "RightShoulder", "RightArm", "RightForeArm", "RightHand", "RightFingerBase", "RightHandIndex1", "RThumb",
    ]  # fmt: skip
    table = {name: (parent, offset) for name, parent, offset in joints}
    children: dict[str | None, list[str]] = {}
    for name in order:
        children.setdefault(table[name][0], []).append(name)
    lines = ["HIERARCHY"]

    def emit(name: str, depth: int) -> None:
        pad = "\t" * depth
        lines.append(f"{pad}{'ROOT' if depth == 0 else 'JOINT'} {name}")
        lines.append(pad + "{")
        lines.append(pad + "\tOFFSET " + " ".join(f"{v:.6f}" for v in table[name][1]))
        if depth == 0:
            lines.append(
                pad + "\tCHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation"
            )
        else:
            lines.append(pad + "\tCHANNELS 3 Zrotation Yrotation Xrotation")
        for child in children.get(name, []):
            emit(child, depth + 1)
        if name not in children:
            lines.extend(
                [
                    pad + "\tEnd Site",
                    pad + "\t{",
                    pad + "\t\tOFFSET 0.000000 0.000000 0.800000",
                    pad + "\t}",
                ]
            )
        lines.append(pad + "}")

    emit("Hips", 0)
    lines += ["MOTION", f"Frames: {len(num_frames_yaw_deg)}", "Frame Time: 0.008333"]
    hips_height = 1.8 + 6.6 + 6.9 + 0.4  # feet on the floor in the T-pose
    for yaw in num_frames_yaw_deg:
        root = [0.0, hips_height, 0.0, 0.0, yaw, 0.0]
        lines.append(" ".join(f"{v:.6f}" for v in root + [0.0] * (3 * (len(order) - 1))))
    return "\n".join(lines) + "\n"


def test_registry_has_the_four_mappings() -> None:
    for pair in [
        ("bandai_namco", "smpl22"),
        ("bandai_namco", "coco17"),
        ("cmu", "smpl22"),
        ("cmu", "coco17"),
    ]:
        mapping = get_skeleton_mapping(*pair)
        assert (mapping.source, mapping.target) == pair
        assert len(mapping.recipes) == (22 if pair[1] == "smpl22" else 17)
    assert len(SKELETON_MAPPINGS) >= 4
    with pytest.raises(KeyError, match="registered"):
        get_skeleton_mapping("cmu", "blazepose33")


def test_measured_flags_follow_recipes() -> None:
    coco = get_skeleton_mapping("bandai_namco", "coco17")
    face = [COCO17.index(n) for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")]
    expected = np.ones(17, dtype=bool)
    expected[face] = False
    np.testing.assert_array_equal(coco.measured, expected)
    smpl = get_skeleton_mapping("bandai_namco", "smpl22")
    assert not smpl.measured[SMPL22.index("spine2")]
    assert smpl.measured[SMPL22.index("left_collar")]  # Shoulder_L is the collar
    cmu = get_skeleton_mapping("cmu", "smpl22")
    derived = {SMPL22.joint_names[j] for j in np.flatnonzero(~cmu.measured)}
    assert derived == {"spine3", "left_collar", "right_collar"}


def test_apply_mapping_hand_computed() -> None:
    names = ["b", "a", "head"]
    mapping = SkeletonMapping(
        "toy",
        "coco17",
        (Marker("head", (0.0, 0.0, 0.1)),)
        + (lerp("a", "b", 0.25),) * 4
        + (Measured("a"),) * 6
        + (Interpolated(("a", "b", "head"), (0.5, 0.25, 0.25)),) * 6,
    )
    positions = np.array([[[4.0, 0, 0], [0.0, 0, 0], [0.0, 2, 0]]])
    rotations = np.broadcast_to(np.eye(3), (1, 3, 3, 3)).copy()
    rotations[0, 2] = axis_rotation_matrix("Y", 90, degrees=True)  # head's z -> world x
    joints, measured = apply_mapping(mapping, names, positions, rotations)
    assert joints.shape == (1, 17, 3)
    np.testing.assert_allclose(joints[0, 0], [0.1, 2.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(joints[0, 1], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(joints[0, 5], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(joints[0, 11], [1.0, 0.5, 0.0])
    np.testing.assert_array_equal(measured, [False] * 5 + [True] * 6 + [False] * 6)


def test_missing_source_joints_are_named() -> None:
    mapping = get_skeleton_mapping("cmu", "coco17")
    names = [n for n in mapping.required_source_joints if n not in ("LeftArm", "Head")]
    positions = np.zeros((2, len(names), 3))
    with pytest.raises(ValueError, match=r"needs source joints \['Head', 'LeftArm'\]"):
        apply_mapping(mapping, names, positions, np.broadcast_to(np.eye(3), (2, len(names), 3, 3)))


def test_markers_need_rotations_and_shapes_are_checked() -> None:
    mapping = get_skeleton_mapping("bandai_namco", "coco17")
    names = list(mapping.required_source_joints)
    with pytest.raises(ValueError, match="needs global_rotations"):
        apply_mapping(mapping, names, np.zeros((1, len(names), 3)))
    with pytest.raises(ValueError, match="positions must have shape"):
        apply_mapping(mapping, names, np.zeros((1, len(names) + 1, 3)))
    # smpl22 from Bandai has no markers: positions alone suffice.
    smpl = get_skeleton_mapping("bandai_namco", "smpl22")
    joints, _ = apply_mapping(smpl, list(smpl.required_source_joints), np.zeros((3, 21, 3)))
    assert joints.shape == (3, 22, 3)


def test_recipe_validation() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        Interpolated(("a", "b"), (0.5, 0.6))
    with pytest.raises(ValueError, match="fraction"):
        lerp("a", "b", 1.5)
    with pytest.raises(ValueError, match=r"missing recipes for \['nose'"):
        make_mapping("toy", "coco17", {"left_eye": Measured("x")})
    with pytest.raises(ValueError, match="recipes for"):
        SkeletonMapping("toy", "smpl22", (Measured("a"),))


def test_identify_source_skeleton() -> None:
    assert identify_source_skeleton(procedural_walk(1).joint_names) == "bandai_namco"
    cmu_names = read_bvh(cmu_bvh((0.0,))).joint_names
    assert identify_source_skeleton(cmu_names) == "cmu"
    assert identify_source_skeleton(["pelvis", "knee"]) is None


def facing_checks(
    coco: np.ndarray, head: np.ndarray, forward: np.ndarray, left: np.ndarray
) -> None:
    """Face points: nose in front of the head, left eye/ear on the body's left."""
    ix = {n: COCO17.index(n) for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")}
    nose_ahead = np.einsum("ti,ti->t", coco[:, ix["nose"]] - head, forward)
    assert np.all((nose_ahead > 0.07) & (nose_ahead < 0.15))
    eyes_apart = np.einsum("ti,ti->t", coco[:, ix["left_eye"]] - coco[:, ix["right_eye"]], left)
    assert np.all((eyes_apart > 0.04) & (eyes_apart < 0.09))
    ears_apart = np.einsum("ti,ti->t", coco[:, ix["left_ear"]] - coco[:, ix["right_ear"]], left)
    assert np.all((ears_apart > 0.10) & (ears_apart < 0.18))
    # Eyes above the nose, ears behind the eyes.
    assert np.all(coco[:, ix["left_eye"], 1] > coco[:, ix["nose"], 1])
    assert np.all(
        np.einsum("ti,ti->t", coco[:, ix["left_eye"]] - coco[:, ix["left_ear"]], forward) > 0.05
    )


def test_cmu_skeleton_to_smpl22_and_coco17() -> None:
    motion = read_bvh(cmu_bvh((0.0, 90.0)), name="cmu_synthetic.bvh")
    assert motion.units_detected == "cmu"
    smpl, measured = apply_mapping(
        get_skeleton_mapping("cmu", "smpl22"),
        motion.joint_names,
        motion.positions,
        motion.global_rotations,
    )
    assert measured.sum() == 19
    lengths = dict(zip(SMPL22.joint_names, bone_lengths(SMPL22.parents, smpl)[0], strict=True))
    assert 0.35 < lengths["left_knee"] < 0.5 and 0.35 < lengths["right_ankle"] < 0.5
    assert 0.25 < lengths["left_elbow"] < 0.35
    # Left is +x when the T-pose faces +z; the collar lies between the midline and the shoulder.
    assert (
        smpl[0, SMPL22.index("left_hip"), 0] > 0.05
        and smpl[0, SMPL22.index("right_hip"), 0] < -0.05
    )
    collar_x = smpl[0, SMPL22.index("left_collar"), 0]
    assert 0.0 < collar_x < smpl[0, SMPL22.index("left_shoulder"), 0]
    spine_y = smpl[
        0, [SMPL22.index(n) for n in ("pelvis", "spine1", "spine2", "spine3", "neck", "head")], 1
    ]
    assert np.all(np.diff(spine_y) > 0)
    coco, _ = apply_mapping(
        get_skeleton_mapping("cmu", "coco17"),
        motion.joint_names,
        motion.positions,
        motion.global_rotations,
    )
    head = motion.positions[:, motion.joint_index("Head")]
    forward = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # yaw 90 degrees turns +z to +x
    left = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    facing_checks(coco, head, forward, left)


def test_procedural_walk_maps_with_the_bandai_tables() -> None:
    walk = procedural_walk(60, speed_m_s=1.2, seed=4)
    coco, _ = apply_mapping(
        get_skeleton_mapping("bandai_namco", "coco17"),
        walk.joint_names,
        walk.positions,
        walk.global_rotations,
    )
    head = walk.positions[:, walk.joint_names.index("Head")]
    forward = np.tile([0.0, 0.0, 1.0], (60, 1))
    facing_checks(coco, head, forward, np.tile([1.0, 0.0, 0.0], (60, 1)))


@needs_bandai
def test_real_bandai_face_points_and_bones() -> None:
    """On real walks the face is in front of the head along the direction of travel."""
    smpl_map = get_skeleton_mapping("bandai_namco", "smpl22")
    coco_map = get_skeleton_mapping("bandai_namco", "coco17")
    for clip in ("walk_normal_001", "walk_happy_001", "walk-back_normal_001"):
        motion = read_bvh(BANDAI_DIR / f"dataset-1_{clip}.bvh")
        hips = motion.positions[:, motion.joint_index("Hips")]
        travel = hips[-1] - hips[0]
        travel[1] = 0.0
        travel /= np.linalg.norm(travel)
        forward = -travel if "back" in clip else travel  # walking backwards faces the other way
        up = np.array([0.0, 1.0, 0.0])
        left = np.cross(up, forward)
        num_frames = motion.num_frames
        coco, measured = apply_mapping(
            coco_map, motion.joint_names, motion.positions, motion.global_rotations
        )
        assert measured.sum() == 12
        head = motion.positions[:, motion.joint_index("Head")]
        facing_checks(coco, head, np.tile(forward, (num_frames, 1)), np.tile(left, (num_frames, 1)))
        left_hip = coco[:, COCO17.index("left_hip")] - coco[:, COCO17.index("right_hip")]
        assert np.all(left_hip @ left > 0.08)
        smpl, _ = apply_mapping(
            smpl_map, motion.joint_names, motion.positions, motion.global_rotations
        )
        lengths = np.median(bone_lengths(SMPL22.parents, smpl), axis=0)
        named = dict(zip(SMPL22.joint_names, lengths, strict=True))
        assert 0.35 < named["left_knee"] < 0.5 and 0.35 < named["left_ankle"] < 0.5
        assert 0.2 < named["left_elbow"] < 0.35 and 0.15 < named["left_wrist"] < 0.3
        assert np.all(smpl[:, SMPL22.index("head"), 1] > smpl[:, SMPL22.index("neck"), 1])
