"""Mappings from source mocap skeletons (BVH joint names) to the project's joint sets.

A :class:`SkeletonMapping` gives, for every joint of a target joint set (``smpl22``,
``coco17``), a recipe that builds it from the source skeleton's global joint positions and
orientations (as returned by forward kinematics, metres):

- :class:`Measured` — the position of one source joint that corresponds to the target joint;
- :class:`Interpolated` — a weighted mean of source joints, for joints the source lacks (a
  spine segment between two source spine joints, a collar on the clavicle line);
- :class:`Marker` — a point fixed in one source joint's local frame,
  ``p = p_joint + R_joint @ offset``, for COCO's face points (nose, eyes, ears) in the head
  joint's frame.

Every mapped joint carries a flag: measured (a source joint) or derived (the other two).

Registered mappings (``SKELETON_MAPPINGS[(source, target)]``): ``bandai_namco`` (the
Bandai-Namco Research Motion dataset skeleton) and ``cmu`` (the CMU Graphics Lab BVH
conversion by cgspeed.com, MotionBuilder-friendly names) to ``smpl22`` and ``coco17``.
``docs/SKELETONS.md`` explains how to add a source skeleton.

Side convention: ``left`` is the body's own left, as in SMPL (+x in SMPL's rest pose, which
faces +z with y up). Both source skeletons name sides the same way (checked on the
Bandai-Namco data: in all 30 ``walk`` clips of dataset-1, ``UpperLeg_L - UpperLeg_R``
points 0.12-0.13 m to the left of the direction of travel).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mocap_core.joint_sets import get_joint_set


@dataclass(frozen=True)
class Measured:
    """The target joint is the source joint ``source``."""

    source: str

    @property
    def measured(self) -> bool:
        return True

    @property
    def source_joints(self) -> tuple[str, ...]:
        return (self.source,)


@dataclass(frozen=True)
class Interpolated:
    """The target joint is ``sum_k weights[k] * position(sources[k])`` (weights sum to 1)."""

    sources: tuple[str, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.sources) < 2 or len(self.sources) != len(self.weights):
            raise ValueError(f"Interpolated needs >= 2 sources with one weight each: {self}")
        if abs(sum(self.weights) - 1.0) > 1e-9:
            raise ValueError(f"Interpolated weights must sum to 1, got {self.weights}")

    @property
    def measured(self) -> bool:
        return False

    @property
    def source_joints(self) -> tuple[str, ...]:
        return self.sources


@dataclass(frozen=True)
class Marker:
    """A point fixed in joint ``source``'s frame: ``p_source + R_source @ offset``.

    ``offset`` is in metres, in the source joint's local frame (the frame its BVH rotation
    channels rotate).
    """

    source: str
    offset: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.offset) != 3:
            raise ValueError(f"Marker offset must have 3 components, got {self.offset}")

    @property
    def measured(self) -> bool:
        return False

    @property
    def source_joints(self) -> tuple[str, ...]:
        return (self.source,)


JointRecipe = Measured | Interpolated | Marker


def lerp(joint_a: str, joint_b: str, fraction: float) -> Interpolated:
    """The point ``fraction`` of the way from ``joint_a`` to ``joint_b`` (0 gives ``joint_a``)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"lerp fraction must lie in [0, 1], got {fraction}")
    return Interpolated((joint_a, joint_b), (1.0 - fraction, fraction))


@dataclass(frozen=True)
class SkeletonMapping:
    """How to build one target joint set from one source skeleton.

    Attributes:
        source: source skeleton name, e.g. ``"bandai_namco"``.
        target: target joint-set name in :mod:`mocap_core.joint_sets`, e.g. ``"smpl22"``.
        recipes: one recipe per target joint, in the joint set's order.
    """

    source: str
    target: str
    recipes: tuple[JointRecipe, ...]

    def __post_init__(self) -> None:
        joint_set = get_joint_set(self.target)
        if len(self.recipes) != joint_set.num_joints:
            raise ValueError(
                f"mapping {self.source}->{self.target}: {len(self.recipes)} recipes for "
                f"{joint_set.num_joints} target joints"
            )

    @property
    def target_joint_names(self) -> tuple[str, ...]:
        return get_joint_set(self.target).joint_names

    @property
    def measured(self) -> np.ndarray:
        """``(J,)`` bool, True where the target joint is a source joint (not derived)."""
        return np.array([r.measured for r in self.recipes], dtype=bool)

    @property
    def required_source_joints(self) -> tuple[str, ...]:
        """Source joint names the mapping reads, each once, in first-use order."""
        names: dict[str, None] = {}
        for recipe in self.recipes:
            names.update(dict.fromkeys(recipe.source_joints))
        return tuple(names)


def make_mapping(source: str, target: str, recipes: Mapping[str, JointRecipe]) -> SkeletonMapping:
    """Build a :class:`SkeletonMapping` from ``{target joint name: recipe}``.

    Raises ``ValueError`` naming any target joint without a recipe or any unknown name.
    """
    joint_names = get_joint_set(target).joint_names
    missing = [n for n in joint_names if n not in recipes]
    unknown = [n for n in recipes if n not in joint_names]
    if missing or unknown:
        raise ValueError(
            f"mapping {source}->{target}: missing recipes for {missing}, unknown target joints {unknown}"
        )
    return SkeletonMapping(source, target, tuple(recipes[n] for n in joint_names))


def apply_mapping(
    mapping: SkeletonMapping,
    joint_names: Sequence[str],
    positions: np.ndarray,
    global_rotations: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Target joints from a source skeleton's global joint positions and orientations.

    Args:
        mapping: the source -> target mapping.
        joint_names: ``S`` source joint names, in the order of the joint axis below.
        positions: ``(..., S, 3)`` global joint positions, metres, world frame (e.g.
            ``(T, S, 3)`` from :func:`mocap_core.kinematics.forward_kinematics`).
        global_rotations: ``(..., S, 3, 3)`` global joint orientations; needed only when
            the mapping has :class:`Marker` recipes.

    Returns:
        ``joints (..., J, 3)`` in the target joint set's order, same unit, frame and dtype
        as ``positions`` (float64 for integer input), and ``measured (J,)`` bool (True:
        a source joint; False: derived).

    Raises:
        ValueError: a source joint the mapping needs is absent (all such names are listed),
            shapes disagree, or rotations are missing for a marker.
    """
    names = list(joint_names)
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in mapping.required_source_joints if n not in index]
    if missing:
        raise ValueError(
            f"skeleton mapping {mapping.source}->{mapping.target} needs source joints {missing}, "
            f"absent from the given skeleton (joints: {names})"
        )
    pos = np.asarray(positions)
    if not np.issubdtype(pos.dtype, np.floating):
        pos = pos.astype(np.float64)
    if pos.ndim < 2 or pos.shape[-2:] != (len(names), 3):
        raise ValueError(f"positions must have shape (..., {len(names)}, 3), got {pos.shape}")
    needs_rotations = any(isinstance(r, Marker) for r in mapping.recipes)
    rot = None
    if needs_rotations:
        if global_rotations is None:
            raise ValueError(
                f"skeleton mapping {mapping.source}->{mapping.target} places markers and needs global_rotations"
            )
        rot = np.asarray(global_rotations)
        if rot.shape != pos.shape[:-1] + (3, 3):
            raise ValueError(
                f"global_rotations must have shape {pos.shape[:-1] + (3, 3)}, got {rot.shape}"
            )

    out = np.empty(pos.shape[:-2] + (len(mapping.recipes), 3), dtype=pos.dtype)
    for j, recipe in enumerate(mapping.recipes):
        if isinstance(recipe, Measured):
            out[..., j, :] = pos[..., index[recipe.source], :]
        elif isinstance(recipe, Interpolated):
            columns = [index[n] for n in recipe.sources]
            weights = np.asarray(recipe.weights, dtype=pos.dtype)
            out[..., j, :] = np.einsum("...kc,k->...c", pos[..., columns, :], weights)
        else:
            k = index[recipe.source]
            offset = np.asarray(recipe.offset, dtype=pos.dtype)
            assert rot is not None  # checked above: markers need rotations
            out[..., j, :] = pos[..., k, :] + np.einsum("...ij,j->...i", rot[..., k, :, :], offset)
    return out, mapping.measured


# --- Bandai-Namco Research Motion dataset -------------------------------------------------
#
# Joints: joint_Root (ground-level), Hips, Spine, Chest, Neck, Head, Shoulder_L/R (collars),
# UpperArm_L/R, LowerArm_L/R, Hand_L/R, UpperLeg_L/R, LowerLeg_L/R, Foot_L/R, Toes_L/R.
#
# The head joint's local frame: measured on the 63 standing clips of dataset-1 (bow, bye,
# byebye, call, guide, respond; first 10 frames each), the body's up, forward (from the
# horizontal hip and shoulder left-right lines) and left directions expressed in the Head
# joint's frame average to x = (1.000, -0.007, -0.012) up, y = (-0.002, 1.000, 0.005)
# forward and z = (0.002, -0.002, 1.000) left. So in the head frame x is up, y forward,
# z the body's left, and face markers are written (up, forward, left).
#
# Face offsets: the Head joint sits 6.5 cm above Neck (the neck's base, just above the
# shoulder joints) and about 1.35-1.39 m above the floor, i.e. at the upper neck, below the
# skull base; the face points are therefore placed higher than on a skull-base head joint.
# Anthropometric placements (adult head: eyes ~6.3 cm apart, ear canals ~14 cm apart, nose
# tip ~11 cm in front of the ear canals and ~2-3 cm below them, pupils ~1.5 cm above them).
_BANDAI_HEAD_FACE = {
    "nose": (0.060, 0.110, 0.000),
    "left_eye": (0.095, 0.085, 0.032),
    "right_eye": (0.095, 0.085, -0.032),
    "left_ear": (0.075, -0.005, 0.072),
    "right_ear": (0.075, -0.005, -0.072),
}

BANDAI_NAMCO_TO_SMPL22 = make_mapping(
    "bandai_namco",
    "smpl22",
    {
        "pelvis": Measured("Hips"),
        "left_hip": Measured("UpperLeg_L"),
        "right_hip": Measured("UpperLeg_R"),
        "spine1": Measured("Spine"),
        "left_knee": Measured("LowerLeg_L"),
        "right_knee": Measured("LowerLeg_R"),
        # SMPL's spine2 sits about 2/3 of the way from spine1 to spine3 (roughly 13 cm and
        # 6 cm segments on an adult template); Bandai has no joint between Spine and Chest.
        "spine2": lerp("Spine", "Chest", 0.7),
        "left_ankle": Measured("Foot_L"),
        "right_ankle": Measured("Foot_R"),
        "spine3": Measured("Chest"),
        "left_foot": Measured("Toes_L"),
        "right_foot": Measured("Toes_R"),
        "neck": Measured("Neck"),
        "left_collar": Measured("Shoulder_L"),
        "right_collar": Measured("Shoulder_R"),
        "head": Measured("Head"),
        "left_shoulder": Measured("UpperArm_L"),
        "right_shoulder": Measured("UpperArm_R"),
        "left_elbow": Measured("LowerArm_L"),
        "right_elbow": Measured("LowerArm_R"),
        "left_wrist": Measured("Hand_L"),
        "right_wrist": Measured("Hand_R"),
    },
)

BANDAI_NAMCO_TO_COCO17 = make_mapping(
    "bandai_namco",
    "coco17",
    {
        **{name: Marker("Head", offset) for name, offset in _BANDAI_HEAD_FACE.items()},
        "left_shoulder": Measured("UpperArm_L"),
        "right_shoulder": Measured("UpperArm_R"),
        "left_elbow": Measured("LowerArm_L"),
        "right_elbow": Measured("LowerArm_R"),
        "left_wrist": Measured("Hand_L"),
        "right_wrist": Measured("Hand_R"),
        "left_hip": Measured("UpperLeg_L"),
        "right_hip": Measured("UpperLeg_R"),
        "left_knee": Measured("LowerLeg_L"),
        "right_knee": Measured("LowerLeg_R"),
        "left_ankle": Measured("Foot_L"),
        "right_ankle": Measured("Foot_R"),
    },
)

# --- CMU Graphics Lab Motion Capture Database, cgspeed.com BVH conversion --------------------
#
# Hierarchy (MotionBuilder-friendly names): Hips (root) -> LHipJoint -> LeftUpLeg -> LeftLeg
# -> LeftFoot -> LeftToeBase; RHipJoint -> RightUpLeg -> ...; LowerBack -> Spine -> Spine1 ->
# {Neck -> Neck1 -> Head; LeftShoulder -> LeftArm -> LeftForeArm -> LeftHand ->
# {LeftFingerBase -> LeftHandIndex1, LThumb}; RightShoulder -> ... RThumb}. Each BVH joint
# sits at the *start* of the ASF bone of the same role: LeftUpLeg at the hip joint, LeftLeg
# at the knee, LeftFoot at the ankle, LeftToeBase at the ball of the foot, LowerBack at the
# root, Spine at the top of the lower back, Spine1 at the top of the upper back, Neck at the
# top of the thorax (neck base), Neck1 mid-neck, Head at the skull base; LeftShoulder starts
# at the neck base like Neck (the clavicle runs from the midline to LeftArm, the shoulder).
#
# Frames: CMU's BVH joint frames are aligned with the world in the rest pose, which faces
# +z with y up (cgspeed README: the T-poses face +Z), so the head frame's x is the body's
# left, y up and z forward. The Head joint is at the skull base, so the face sits lower
# relative to it than on the Bandai skeleton: (left, up, forward).
_CMU_HEAD_FACE = {
    "nose": (0.000, 0.030, 0.110),
    "left_eye": (0.032, 0.065, 0.085),
    "right_eye": (-0.032, 0.065, 0.085),
    "left_ear": (0.072, 0.045, -0.005),
    "right_ear": (-0.072, 0.045, -0.005),
}

CMU_TO_SMPL22 = make_mapping(
    "cmu",
    "smpl22",
    {
        "pelvis": Measured("Hips"),
        "left_hip": Measured("LeftUpLeg"),
        "right_hip": Measured("RightUpLeg"),
        "spine1": Measured("Spine"),
        "left_knee": Measured("LeftLeg"),
        "right_knee": Measured("RightLeg"),
        "spine2": Measured("Spine1"),
        "left_ankle": Measured("LeftFoot"),
        "right_ankle": Measured("RightFoot"),
        # SMPL's spine3 is ~6 cm above spine2 and ~21 cm below the neck on an adult
        # template; CMU has no joint between Spine1 and the neck base.
        "spine3": lerp("Spine1", "Neck", 0.3),
        "left_foot": Measured("LeftToeBase"),
        "right_foot": Measured("RightToeBase"),
        "neck": Measured("Neck"),
        # CMU's LeftShoulder starts on the midline; SMPL's collar sits ~40 % of the way
        # out along the clavicle towards the shoulder joint.
        "left_collar": lerp("LeftShoulder", "LeftArm", 0.4),
        "right_collar": lerp("RightShoulder", "RightArm", 0.4),
        "head": Measured("Head"),
        "left_shoulder": Measured("LeftArm"),
        "right_shoulder": Measured("RightArm"),
        "left_elbow": Measured("LeftForeArm"),
        "right_elbow": Measured("RightForeArm"),
        "left_wrist": Measured("LeftHand"),
        "right_wrist": Measured("RightHand"),
    },
)

CMU_TO_COCO17 = make_mapping(
    "cmu",
    "coco17",
    {
        **{name: Marker("Head", offset) for name, offset in _CMU_HEAD_FACE.items()},
        "left_shoulder": Measured("LeftArm"),
        "right_shoulder": Measured("RightArm"),
        "left_elbow": Measured("LeftForeArm"),
        "right_elbow": Measured("RightForeArm"),
        "left_wrist": Measured("LeftHand"),
        "right_wrist": Measured("RightHand"),
        "left_hip": Measured("LeftUpLeg"),
        "right_hip": Measured("RightUpLeg"),
        "left_knee": Measured("LeftLeg"),
        "right_knee": Measured("RightLeg"),
        "left_ankle": Measured("LeftFoot"),
        "right_ankle": Measured("RightFoot"),
    },
)

SKELETON_MAPPINGS: dict[tuple[str, str], SkeletonMapping] = {
    (m.source, m.target): m
    for m in (BANDAI_NAMCO_TO_SMPL22, BANDAI_NAMCO_TO_COCO17, CMU_TO_SMPL22, CMU_TO_COCO17)
}


def get_skeleton_mapping(source: str, target: str) -> SkeletonMapping:
    """The registered mapping ``source -> target``; ``KeyError`` lists the registered pairs."""
    try:
        return SKELETON_MAPPINGS[(source, target)]
    except KeyError:
        raise KeyError(
            f"no skeleton mapping {source!r} -> {target!r}; registered: {sorted(SKELETON_MAPPINGS)}"
        ) from None


def identify_source_skeleton(joint_names: Sequence[str]) -> str | None:
    """The registered source skeleton whose mappings find every joint they need.

    Args:
        joint_names: a BVH file's joint names.

    Returns:
        The source name (e.g. ``"bandai_namco"``), or ``None`` when no registered source
        matches. If several match, the one whose mappings use the most joints wins.
    """
    present = set(joint_names)
    best: tuple[int, str] | None = None
    sources = sorted({source for source, _ in SKELETON_MAPPINGS})
    for source in sources:
        needed: set[str] = set()
        for (s, _), mapping in SKELETON_MAPPINGS.items():
            if s == source:
                needed.update(mapping.required_source_joints)
        if needed <= present and (best is None or len(needed) > best[0]):
            best = (len(needed), source)
    return None if best is None else best[1]
