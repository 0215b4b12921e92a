"""A synthetic body model in SMPL's file format, for tests and demos without licensed files.

The SMPL family of body models cannot be redistributed, yet the AMASS reader and the SMPL
fitting code must be testable. :func:`make_synthetic_smpl_model` builds arrays with SMPL's
(or SMPL-H's) keys, shapes and kinematic tree, which ``smplx`` 0.1.28 loads like the real
thing. The mesh is random, but its joint regressor and skinning are built so that the model
has a humanoid rest skeleton:

- rest pose: T-pose, metres, +Y up, facing +Z, the body's left on +X, pelvis at the origin,
  soles at about y = -0.97 and the top of the head at about y = +0.74 (1.7 m tall);
- every joint is regressed exactly from six vertices placed symmetrically around it, so
  ``J_regressor @ v_template`` is the rest skeleton (rows of ``J_regressor`` sum to 1);
- the other vertices are scattered over capsules around the bones and skinned to the joint
  that moves that bone (blending into the next joint near its end; rows sum to 1);
- the vertices ``smplx`` selects as extra keypoints (nose, eyes, ears, toes, heels, finger
  tips; its ``vertex_ids['smplh']`` table) sit where those landmarks are on a body.

Shape blend shapes: beta 0 scales the body about the pelvis (+3 % per unit), beta 1 widens
it (x and z, +4 % per unit); the rest move body parts by a few millimetres each. Pose blend
shapes are small random offsets (the code path is exercised, the body stays intact).

Writing these arrays to a body-model folder is file I/O and lives in
``data_catalog.readers.amass.write_synthetic_smpl_model``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

NUM_VERTICES = 6890
NUM_FACES = 13776

# Kinematic parents of SMPL's 24 joints (pelvis, hips, spine, ..., wrists, hands).
SMPL_PARENTS: tuple[int, ...] = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21,
)  # fmt: skip

# SMPL-H: SMPL's first 22 joints, then 15 finger joints per hand (index, middle, pinky, ring,
# thumb; 3 each, in smplx's order) hanging from the wrists (20 left, 21 right).
SMPLH_PARENTS: tuple[int, ...] = SMPL_PARENTS[:22] + tuple(
    (wrist if i % 3 == 0 else first + i - 1)
    for wrist, first in ((20, 22), (21, 37))
    for i in range(15)
)

# Offsets of each SMPL joint from its parent in the rest pose, for the left side and the
# midline (metres; y up, facing +z, left = +x). Right-side joints mirror x. Values are
# rounded, human-proportioned figures close to SMPL's neutral rest skeleton.
_SMPL_OFFSETS: dict[int, tuple[float, float, float]] = {
    0: (0.0, 0.0, 0.0),
    1: (0.06, -0.09, -0.01),  # left hip
    3: (0.0, 0.11, -0.02),  # spine1
    4: (0.04, -0.38, 0.0),  # left knee
    6: (0.0, 0.135, 0.01),  # spine2
    7: (-0.01, -0.40, -0.04),  # left ankle
    9: (0.0, 0.055, 0.02),  # spine3
    10: (0.03, -0.06, 0.12),  # left foot (ball)
    12: (0.0, 0.215, -0.03),  # neck
    13: (0.075, 0.12, -0.015),  # left collar
    15: (0.0, 0.09, 0.05),  # head
    16: (0.12, 0.045, -0.015),  # left shoulder
    18: (0.25, -0.015, -0.025),  # left elbow
    20: (0.245, 0.01, -0.005),  # left wrist
    22: (0.085, -0.01, -0.01),  # left hand
}
_MIRRORED = {2: 1, 5: 4, 8: 7, 11: 10, 14: 13, 17: 16, 19: 18, 21: 20, 23: 22}

# Left-hand finger joints relative to their parent (index, middle, pinky, ring, thumb).
_FINGER_OFFSETS: tuple[tuple[float, float, float], ...] = (
    (0.09, 0.0, 0.03), (0.035, 0.0, 0.0), (0.025, 0.0, 0.0),
    (0.095, 0.0, 0.01), (0.037, 0.0, 0.0), (0.026, 0.0, 0.0),
    (0.08, 0.0, -0.035), (0.025, 0.0, -0.005), (0.02, 0.0, -0.004),
    (0.09, 0.0, -0.012), (0.032, 0.0, -0.002), (0.024, 0.0, -0.002),
    (0.025, -0.01, 0.025), (0.03, -0.005, 0.025), (0.025, 0.0, 0.02),
)  # fmt: skip

# Vertex indices smplx 0.1.28 selects as extra keypoints for SMPL/SMPL-H meshes
# (smplx/vertex_ids.py, 'smplh'): they are facts of SMPL's mesh topology.
SMPL_LANDMARK_VERTEX_IDS: dict[str, int] = {
    "nose": 332, "reye": 6260, "leye": 2800, "rear": 4071, "lear": 583,
    "rthumb": 6191, "rindex": 5782, "rmiddle": 5905, "rring": 6016, "rpinky": 6133,
    "lthumb": 2746, "lindex": 2319, "lmiddle": 2445, "lring": 2556, "lpinky": 2673,
    "LBigToe": 3216, "LSmallToe": 3226, "LHeel": 3387,
    "RBigToe": 6617, "RSmallToe": 6624, "RHeel": 6787,
}  # fmt: skip

# Capsule radius of the bones each joint moves (metres), by SMPL joint index.
_SMPL_RADII = (
    0.11, 0.075, 0.075, 0.11, 0.05, 0.05, 0.12, 0.04, 0.04, 0.12, 0.03, 0.03,
    0.05, 0.05, 0.05, 0.085, 0.045, 0.045, 0.035, 0.035, 0.03, 0.03, 0.025, 0.025,
)  # fmt: skip
_FINGER_RADIUS = 0.008
_REGRESSOR_VERTICES_PER_JOINT = 6


def _mirror(offset: tuple[float, float, float]) -> np.ndarray:
    return np.array([-offset[0], offset[1], offset[2]])


def parents_of(model_type: Literal["smpl", "smplh"]) -> tuple[int, ...]:
    """Kinematic parents of ``model_type``'s joints (24 for SMPL, 52 for SMPL-H)."""
    if model_type == "smpl":
        return SMPL_PARENTS
    if model_type == "smplh":
        return SMPLH_PARENTS
    raise ValueError(f"model_type must be 'smpl' or 'smplh', got {model_type!r}")


def synthetic_rest_joints(model_type: Literal["smpl", "smplh"] = "smpl") -> np.ndarray:
    """Rest-pose joints of the synthetic model.

    Returns:
        ``(24, 3)`` (SMPL) or ``(52, 3)`` (SMPL-H) float64, metres, T-pose, y-up, facing +z,
        left = +x, pelvis at the origin.
    """
    parents = parents_of(model_type)
    offsets: list[np.ndarray] = []
    for j in range(24 if model_type == "smpl" else 22):
        if j in _SMPL_OFFSETS:
            offsets.append(np.array(_SMPL_OFFSETS[j]))
        else:
            offsets.append(_mirror(_SMPL_OFFSETS[_MIRRORED[j]]))
    if model_type == "smplh":
        offsets += [np.array(o) for o in _FINGER_OFFSETS]
        offsets += [_mirror(o) for o in _FINGER_OFFSETS]
    joints = np.zeros((len(parents), 3))
    for j, p in enumerate(parents):
        joints[j] = offsets[j] + (joints[p] if p >= 0 else 0.0)
    return joints


def _landmarks(joints: np.ndarray, model_type: str) -> dict[str, tuple[np.ndarray, int]]:
    """Position and owning joint of each smplx landmark vertex, in the rest pose."""
    head, l_ankle, r_ankle, l_foot, r_foot = 15, 7, 8, 10, 11
    out: dict[str, tuple[np.ndarray, int]] = {
        "nose": (joints[head] + [0.0, 0.03, 0.105], head),
        "leye": (joints[head] + [0.032, 0.065, 0.085], head),
        "reye": (joints[head] + [-0.032, 0.065, 0.085], head),
        "lear": (joints[head] + [0.075, 0.04, -0.005], head),
        "rear": (joints[head] + [-0.075, 0.04, -0.005], head),
        # The big toe is on the inner (medial) side: -x for the left foot.
        "LBigToe": (joints[l_foot] + [-0.015, -0.02, 0.07], l_foot),
        "LSmallToe": (joints[l_foot] + [0.03, -0.02, 0.05], l_foot),
        "LHeel": (joints[l_ankle] + [0.0, -0.07, -0.05], l_ankle),
        "RBigToe": (joints[r_foot] + [0.015, -0.02, 0.07], r_foot),
        "RSmallToe": (joints[r_foot] + [-0.03, -0.02, 0.05], r_foot),
        "RHeel": (joints[r_ankle] + [0.0, -0.07, -0.05], r_ankle),
    }
    fingers = ("index", "middle", "pinky", "ring", "thumb")
    if model_type == "smplh":
        for side, base in (("l", 22), ("r", 37)):
            sign = 1.0 if side == "l" else -1.0
            for f, finger in enumerate(fingers):
                tip_joint = base + 3 * f + 2
                out[side + finger] = (joints[tip_joint] + [sign * 0.02, 0.0, 0.0], tip_joint)
    else:
        tips = {
            "index": (0.1, 0.0, 0.03),
            "middle": (0.11, 0.0, 0.01),
            "pinky": (0.085, 0.0, -0.03),
            "ring": (0.1, 0.0, -0.01),
            "thumb": (0.03, -0.01, 0.06),
        }
        for side, hand in (("l", 22), ("r", 23)):
            sign = 1.0 if side == "l" else -1.0
            for finger in fingers:
                dx, dy, dz = tips[finger]
                out[side + finger] = (joints[hand] + [sign * dx, dy, dz], hand)
    return out


def _segments(
    joints: np.ndarray, parents: tuple[int, ...]
) -> list[tuple[int, int, np.ndarray, np.ndarray, float]]:
    """Capsules to scatter vertices over: (owner joint, blend joint or -1, start, end, radius)."""
    num_joints = len(parents)
    if num_joints == 24:
        radii = np.array(_SMPL_RADII)
    else:
        radii = np.array(_SMPL_RADII[:22] + (_FINGER_RADIUS,) * (num_joints - 22))
    children = {j: [c for c, p in enumerate(parents) if p == j] for j in range(num_joints)}
    segments = []
    for j in range(1, num_joints):
        p = parents[j]
        segments.append((p, j, joints[p], joints[j], float(radii[p])))
    # Leaves get a capsule beyond the joint: skull, toes, hands, finger tips.
    for j in range(num_joints):
        if children[j]:
            continue
        direction = joints[j] - joints[parents[j]]
        direction = direction / np.linalg.norm(direction)
        if j == 15:
            tip = joints[j] + [0.0, 0.06, 0.0]
        elif j in (10, 11):
            tip = joints[j] + [0.0, -0.02, 0.07]
        else:
            tip = joints[j] + direction * (0.08 if num_joints == 24 else 0.02)
        segments.append((j, -1, joints[j], tip, float(radii[j])))
    return segments


def make_synthetic_smpl_model(
    seed: int = 0,
    model_type: Literal["smpl", "smplh"] = "smpl",
    num_betas: int = 10,
) -> dict[str, np.ndarray]:
    """Arrays of a synthetic SMPL or SMPL-H body model, keyed as in SMPL's model files.

    Args:
        seed: random seed; the same seed gives the same model.
        model_type: ``"smpl"`` (24 joints) or ``"smplh"`` (52 joints: 22 body + 2 x 15 hand).
        num_betas: number of shape components (SMPL ships 10, the SMPL-H used by AMASS 16).

    Returns:
        dict with (float64 unless stated; ``J`` = 24 or 52, ``P = 9 (J - 1)``):
        ``v_template (6890, 3)`` metres, rest pose as in the module docstring;
        ``f (13776, 3) uint32`` triangles (each within one body part);
        ``shapedirs (6890, 3, num_betas)``; ``posedirs (6890, 3, P)`` (207 / 459);
        ``J_regressor (J, 6890)`` rows summing to 1; ``weights (6890, J)`` rows summing to 1;
        ``kintree_table (2, J) int64`` (row 0 parents with -1 for the root, row 1 joint ids);
        ``J (J, 3)`` rest joints; for SMPL-H also ``hands_componentsl/r (45, 45)``
        orthonormal hand-pose PCA bases and ``hands_meanl/r (45,)`` mean hand poses.
    """
    if num_betas < 2:
        raise ValueError(f"num_betas must be >= 2, got {num_betas}")
    parents = parents_of(model_type)
    num_joints = len(parents)
    rng = np.random.default_rng(seed)
    joints = synthetic_rest_joints(model_type)

    vertices = np.zeros((NUM_VERTICES, 3))
    weights = np.zeros((NUM_VERTICES, num_joints))
    owner = np.full(NUM_VERTICES, -1, dtype=np.int64)
    regressor = np.zeros((num_joints, NUM_VERTICES))

    landmarks = _landmarks(joints, model_type)
    for name, vid in SMPL_LANDMARK_VERTEX_IDS.items():
        position, joint = landmarks[name]
        vertices[vid] = position
        weights[vid, joint] = 1.0
        owner[vid] = joint
    free = rng.permutation(np.flatnonzero(owner < 0))

    # Six vertices per joint, at +-r along each axis: their mean is exactly the joint.
    per_joint = _REGRESSOR_VERTICES_PER_JOINT
    axes = np.concatenate([np.eye(3), -np.eye(3)])
    for j in range(num_joints):
        ids = free[j * per_joint : (j + 1) * per_joint]
        radius = 0.02 if j < 22 else 0.004
        vertices[ids] = joints[j] + radius * axes
        regressor[j, ids] = 1.0 / per_joint
        p = parents[j]
        if p >= 0:
            weights[ids, j] = 0.5
            weights[ids, p] = 0.5
        else:
            weights[ids, j] = 1.0
        owner[ids] = j
    free = free[num_joints * per_joint :]

    # The remaining vertices go onto the bone capsules, more on long, thick bones.
    segments = _segments(joints, parents)
    sizes = np.array([np.linalg.norm(b - a) * r + 1e-4 for _, _, a, b, r in segments])
    counts = np.maximum(8, np.floor(sizes / sizes.sum() * len(free))).astype(np.int64)
    counts[np.argmax(counts)] -= counts.sum() - len(free)  # make the counts add up exactly
    start = 0
    for (own, blend, a, b, radius), count in zip(segments, counts, strict=True):
        ids = free[start : start + count]
        start += count
        t = rng.uniform(0.0, 1.0, size=count)
        direction = rng.normal(size=(count, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        distance = radius * rng.uniform(0.8, 1.0, size=count)
        vertices[ids] = a + t[:, None] * (b - a) + direction * distance[:, None]
        if blend >= 0:
            # Near the far joint the surface follows both bones, as skin does at a joint.
            w_blend = 0.5 * np.clip((t - 0.75) / 0.25, 0.0, 1.0)
            weights[ids, blend] = w_blend
            weights[ids, own] = 1.0 - w_blend
        else:
            weights[ids, own] = 1.0
        owner[ids] = own

    shapedirs = np.zeros((NUM_VERTICES, 3, num_betas))
    shapedirs[:, :, 0] = 0.03 * vertices  # stature: scale about the pelvis (the origin)
    shapedirs[:, 0, 1] = 0.04 * vertices[:, 0]  # width
    shapedirs[:, 2, 1] = 0.04 * vertices[:, 2]
    if num_betas > 2:
        part_moves = rng.normal(scale=0.005, size=(num_joints, 3, num_betas - 2))
        shapedirs[:, :, 2:] = part_moves[owner] + rng.normal(
            scale=0.001, size=(NUM_VERTICES, 3, num_betas - 2)
        )
    posedirs = rng.normal(scale=2e-4, size=(NUM_VERTICES, 3, 9 * (num_joints - 1)))

    faces = _faces_within_parts(owner, rng)
    kintree = np.stack([np.array(parents, dtype=np.int64), np.arange(num_joints, dtype=np.int64)])
    model: dict[str, np.ndarray] = {
        "v_template": vertices,
        "f": faces,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": regressor,
        "weights": weights,
        "kintree_table": kintree,
        "J": regressor @ vertices,
    }
    if model_type == "smplh":
        for side in ("l", "r"):
            basis, _ = np.linalg.qr(rng.normal(size=(45, 45)))
            model[f"hands_components{side}"] = basis.T
            model[f"hands_mean{side}"] = rng.normal(scale=0.1, size=45)
    return model


def _faces_within_parts(owner: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(13776, 3) uint32`` triangles whose three distinct corners share a body part."""
    order = np.argsort(owner, kind="stable")
    sorted_owner = owner[order]
    starts = np.searchsorted(sorted_owner, sorted_owner, side="left")
    ends = np.searchsorted(sorted_owner, sorted_owner, side="right")
    first = np.arange(NUM_FACES) % NUM_VERTICES  # every vertex starts at least one face
    size = (ends - starts)[first]
    if np.any(size < 3):
        raise AssertionError("a body part has fewer than three vertices")
    local = first - starts[first]
    step1 = 1 + rng.integers(0, size - 1)
    step2 = 1 + (step1 - 1 + 1 + rng.integers(0, size - 2)) % (size - 1)
    corners = np.stack([local, (local + step1) % size, (local + step2) % size], axis=1)
    return order[corners + starts[first][:, None]].astype(np.uint32)
