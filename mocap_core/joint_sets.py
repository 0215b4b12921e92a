"""Registry of the joint sets the project speaks: names, parents, left/right pairs.

A :class:`JointSet` is pure metadata. Arrays laid out "by a joint set" have the joint axis in
the set's order, e.g. ``joints (T, J, 3)`` with ``J == len(joint_set)``.

Registered sets:

- ``smpl22``: the 22 body joints of SMPL (no hands), joint 0 the pelvis.
- ``coco17``: the 17 COCO keypoints, in COCO order (no root joint).
- ``coco17_pelvis``: the model's COCO layout (DESIGN 2.2): a pelvis, the mid-point of the
  two hips, prepended to ``coco17`` so that joint 0 is the root; 18 joints.
- ``blazepose33``: MediaPipe BlazePose's 33 landmarks (the video detector's output).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class JointSet:
    """Names, kinematic parents and symmetric pairs of one joint layout.

    Attributes:
        name: registry key, e.g. ``"smpl22"``.
        joint_names: one name per joint, in array order.
        parents: parent index per joint, ``-1`` for a root. For sets without a true
            kinematic tree (COCO, BlazePose) the parents form a spanning tree for drawing.
        extra_edges: further (i, j) segments drawn but not part of the tree (e.g. the
            shoulder line of COCO).
        hip_pair: indices of (left hip, right hip); the evaluation pelvis is their mean.
        foot_joints: indices of the joints that touch the ground (ankles/feet/toes), used
            for ground placement and foot-contact metrics.
    """

    name: str
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]
    hip_pair: tuple[int, int]
    foot_joints: tuple[int, ...]
    extra_edges: tuple[tuple[int, int], ...] = field(default=())

    def __post_init__(self) -> None:
        if len(self.joint_names) != len(self.parents):
            raise ValueError(
                f"{self.name}: {len(self.joint_names)} names but {len(self.parents)} parents"
            )
        if len(set(self.joint_names)) != len(self.joint_names):
            raise ValueError(f"{self.name}: duplicate joint names")
        for j in range(len(self.parents)):
            seen, k = set(), j
            while k >= 0:
                if k in seen or k >= len(self.parents):
                    raise ValueError(f"{self.name}: parents do not form a tree (joint {j})")
                seen.add(k)
                k = self.parents[k]

    def __len__(self) -> int:
        return len(self.joint_names)

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def index(self, joint_name: str) -> int:
        """Index of ``joint_name``; raises ``KeyError`` naming the set when unknown."""
        try:
            return self.joint_names.index(joint_name)
        except ValueError:
            raise KeyError(f"joint {joint_name!r} is not in joint set {self.name!r}") from None

    @cached_property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """(parent, child) pairs of the tree, then the extra drawing edges."""
        tree = tuple((p, j) for j, p in enumerate(self.parents) if p >= 0)
        return tree + tuple(self.extra_edges)

    @cached_property
    def left_right_pairs(self) -> tuple[tuple[int, int], ...]:
        """(left, right) index pairs found from the ``left_``/``right_`` name prefixes."""
        pairs = []
        for i, n in enumerate(self.joint_names):
            if n.startswith("left_"):
                other = "right_" + n[len("left_") :]
                if other in self.joint_names:
                    pairs.append((i, self.joint_names.index(other)))
        return tuple(pairs)

    @cached_property
    def mirror_permutation(self) -> np.ndarray:
        """``(J,)`` int index array that swaps every left joint with its right twin."""
        perm = np.arange(self.num_joints)
        for a, b in self.left_right_pairs:
            perm[a], perm[b] = b, a
        return perm


SMPL22 = JointSet(
    name="smpl22",
    joint_names=(
        "pelvis",
        "left_hip",
        "right_hip",
        "spine1",
        "left_knee",
        "right_knee",
        "spine2",
        "left_ankle",
        "right_ankle",
        "spine3",
        "left_foot",
        "right_foot",
        "neck",
        "left_collar",
        "right_collar",
        "head",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
    ),  # fmt: skip
    parents=(-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19),
    hip_pair=(1, 2),
    foot_joints=(7, 8, 10, 11),
)

COCO17 = JointSet(
    name="coco17",
    joint_names=(
        "nose",
        "left_eye",
        "right_eye",
        "left_ear",
        "right_ear",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
    ),  # fmt: skip
    # COCO has no kinematic root; this spanning tree, rooted at the left hip, follows the
    # COCO drawing skeleton (ears hang from the shoulders, the nose from the left eye).
    parents=(1, 3, 4, 5, 6, 11, 12, 5, 6, 7, 8, -1, 11, 11, 12, 13, 14),
    hip_pair=(11, 12),
    foot_joints=(15, 16),
    extra_edges=((5, 6), (0, 2)),
)

COCO17_PELVIS = JointSet(
    name="coco17_pelvis",
    joint_names=("pelvis",) + COCO17.joint_names,
    # The coco17 drawing tree re-rooted at the added pelvis, from which both hips hang.
    parents=(-1, 2, 4, 5, 6, 7, 12, 13, 6, 7, 8, 9, 0, 0, 12, 13, 14, 15),
    hip_pair=(12, 13),
    foot_joints=(16, 17),
    extra_edges=((6, 7), (1, 3)),
)

BLAZEPOSE33 = JointSet(
    name="blazepose33",
    joint_names=(
        "nose",
        "left_eye_inner",
        "left_eye",
        "left_eye_outer",
        "right_eye_inner",
        "right_eye",
        "right_eye_outer",
        "left_ear",
        "right_ear",
        "mouth_left",
        "mouth_right",
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
        "left_pinky",
        "right_pinky",
        "left_index",
        "right_index",
        "left_thumb",
        "right_thumb",
        "left_hip",
        "right_hip",
        "left_knee",
        "right_knee",
        "left_ankle",
        "right_ankle",
        "left_heel",
        "right_heel",
        "left_foot_index",
        "right_foot_index",
    ),  # fmt: skip
    parents=(
        -1,
        0,
        1,
        2,
        0,
        4,
        5,
        3,
        6,
        0,
        0,
        0,
        0,
        11,
        12,
        13,
        14,
        15,
        16,
        15,
        16,
        15,
        16,
        11,
        12,
        23,
        24,
        25,
        26,
        27,
        28,
        27,
        28,
    ),  # fmt: skip
    hip_pair=(23, 24),
    foot_joints=(27, 28, 29, 30, 31, 32),
    extra_edges=((11, 12), (23, 24), (9, 10), (17, 19), (18, 20), (29, 31), (30, 32)),
)

JOINT_SETS: dict[str, JointSet] = {s.name: s for s in (SMPL22, COCO17, COCO17_PELVIS, BLAZEPOSE33)}

# BlazePose landmark index for each COCO-17 keypoint (the detector's COCO view).
BLAZEPOSE33_TO_COCO17: tuple[int, ...] = (
    0,
    2,
    5,
    7,
    8,
    11,
    12,
    13,
    14,
    15,
    16,
    23,
    24,
    25,
    26,
    27,
    28,
)


def get_joint_set(name: str) -> JointSet:
    """The registered joint set called ``name``; a ``KeyError`` lists the known names."""
    try:
        return JOINT_SETS[name]
    except KeyError:
        raise KeyError(f"unknown joint set {name!r}; known: {sorted(JOINT_SETS)}") from None


def add_pelvis(coco17: np.ndarray) -> np.ndarray:
    """Prepend the COCO pelvis (mid-point of the hips) to COCO-17 keypoints.

    Args:
        coco17: ``(..., 17, C)`` keypoints (C = 2 pixels, 3 pixels+confidence, or 3 metres).
            With ``C == 3`` and pixel data, the pelvis confidence is the smaller of the two
            hip confidences, so a missing hip (0) makes a missing pelvis.

    Returns:
        ``(..., 18, C)`` in the ``coco17_pelvis`` layout.
    """
    hips = coco17[..., 11:13, :]
    pelvis = hips.mean(axis=-2, keepdims=True)
    return np.concatenate([pelvis, coco17], axis=-2)


def add_pelvis_confidence(coco17_keypoints: np.ndarray) -> np.ndarray:
    """Like :func:`add_pelvis` for ``(..., 17, 3)`` pixel keypoints ``(u, v, confidence)``.

    The pelvis position is the mean of the hips; its confidence is the minimum of theirs.
    """
    out = add_pelvis(coco17_keypoints)
    out[..., 0, 2] = np.minimum(coco17_keypoints[..., 11, 2], coco17_keypoints[..., 12, 2])
    return out


def drop_pelvis(coco17_pelvis: np.ndarray) -> np.ndarray:
    """``(..., 18, C)`` in ``coco17_pelvis`` layout -> ``(..., 17, C)`` COCO-17."""
    return coco17_pelvis[..., 1:, :]
