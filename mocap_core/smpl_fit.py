"""SMPL fitting to recovered ``smpl22`` joints (DESIGN 2.6), and local rotations from joints.

:func:`fit_smpl` fits SMPL parameters (``transl``, ``global_orient``, ``body_pose`` per frame;
``betas`` per sequence) to a sequence of 3D joints, batched over all frames, with a simple
pose prior, temporal smoothness and a shape prior. It takes a smplx ``SMPL``/``SMPLH``
module (loaded by ``data_catalog.readers.amass.load_body_model``); it reads the module's
buffers, never files, and never modifies the module.

Frames: smplx's output is in the body model's own frame, which for SMPL is y-up with the rest
body facing +z and its left on +x. The recovered joints are world y-up (metres), so the fit
uses them as they are; no axis change. ``global_orient`` rotates the body about the rest
pelvis, and ``transl`` is added afterwards: ``pelvis_world = rest_pelvis(betas) + transl``.

How the fit runs:

- Joints of the model are computed from the buffers, not from the full mesh: SMPL's joints
  are ``J_regressor @ (v_template + shapedirs @ betas)`` posed by forward kinematics (pose
  blend shapes move vertices, never joints), so the optimisation touches 22 joints per frame
  instead of 6890 vertices. The fit's reported ``joints`` come from the module's own forward
  pass, which checks that shortcut.
- Initialisation (a good start matters more than iterations): missing target joints are
  filled by linear interpolation in time (init only); the shape comes from the rigid
  distances (bones, and the hip-hip-spine1 and neck-collar triangles): a few Gauss-Newton
  steps match the model's distances under ``betas`` to the targets' median distances; the
  global orientation is the rotation that best aligns the rest pelvis's children (hips,
  spine1) with the targets (weighted Kabsch; all observed torso joints when the pelvis or
  its children are missing); the body pose comes from
  :func:`smpl22_local_rotations_from_joints`, which turns every bone onto its target and
  picks the limb twist that makes the knees and elbows hinges; ``transl`` is the pelvis
  minus the model's rest pelvis. On exact targets this start is within micrometres.
- Optimisation: L-BFGS (strong Wolfe line search) in two stages: first the global
  orientation and translation against the torso joints, then everything.
- Loss (means over frames and joints, the data term in square metres):
  ``data = sum_tj w_tj |J_tj - X_tj|^2 / sum_tj w_tj`` (22 joints, weights from
  ``joint_weights``; 0 for a missing joint);
  ``pose = pose_prior_weight * (mean_t sum_j |theta_tj|^2 + 100 * wrong-way bends)``, an L2
  prior on the axis-angle body pose (there is no GMM prior file offline) plus a penalty on
  knees and elbows bending the wrong way: the knees flex about +x in SMPL's rest frame, the
  left elbow about -y and the right elbow about +y, so the penalty is the square of the
  axis-angle component of the wrong sign beyond 5 degrees;
  ``smooth = smooth_weight * mean_tj |J_{t+1,j} - 2 J_tj + J_{t-1,j}|^2`` on the fit's
  joints (second differences at the sequence's own frame rate; the default 0.05 barely
  touches a 30 fps walk, about 1 mm at the sequence ends, and halves frame-to-frame jitter);
  ``shape = shape_prior_weight * |betas|^2``.
- Long sequences: up to ``chunk_frames`` frames are fitted in one batch. Longer ones first fit
  ``betas`` on evenly spaced frames, then fit poses chunk by chunk with the shape fixed; each
  chunk sees the previous chunk's last two fitted frames as fixed context in the smoothness
  term, so the seam is as smooth as the inside of a chunk.
- Rotations of joints that do not move any of the 22 joints (feet, head, wrists, hands) are
  not observable from joints; they stay zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mocap_core.joint_sets import SMPL22
from mocap_core.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    rotation_between_vectors,
)

NUM_SMPL22 = 22
NUM_FIT_BETAS = 10
SMPL_BODY_POSE_DIM = 69  # SMPL's 23 body joints (21 of smpl22 + 2 hands) x 3

_PARENTS = np.asarray(SMPL22.parents, dtype=np.int64)
_CHILDREN: tuple[tuple[int, ...], ...] = tuple(
    tuple(c for c in range(NUM_SMPL22) if _PARENTS[c] == j) for j in range(NUM_SMPL22)
)
_LEAVES = tuple(j for j in range(NUM_SMPL22) if not _CHILDREN[j])  # feet, head, wrists
# Joints whose rotation moves some of the 22 joints (the root is handled apart).
_POSED_JOINTS = tuple(j for j in range(1, NUM_SMPL22) if _CHILDREN[j])
_TORSO = (0, 1, 2, 3, 6, 9, 12, 13, 14, 16, 17)
_CHEST = 9
# Limb roots whose twist makes the next joint a pure hinge:
# limb root -> (middle joint, end joint, bend axis of the middle joint in SMPL's rest frame).
# Knees flex about +x on both sides; the left elbow flexes about -y, the right about +y.
_HINGES: dict[int, tuple[int, int, tuple[float, float, float]]] = {
    1: (4, 7, (1.0, 0.0, 0.0)),
    2: (5, 8, (1.0, 0.0, 0.0)),
    16: (18, 20, (0.0, -1.0, 0.0)),
    17: (19, 21, (0.0, 1.0, 0.0)),
}
_HINGE_MIDDLES = {middle: axis for middle, _, axis in _HINGES.values()}
# The spine joints between the pelvis and the chest share the torso's twist in equal parts.
_SPINE_TWIST_SHARE = {3: 1.0 / 3.0, 6: 2.0 / 3.0}
# Body-pose joint index (1..21) and axis component whose sign is a wrong-way bend; +1 means
# "positive is wrong".
_BEND_LIMITS = ((4, 0, -1.0), (5, 0, -1.0), (18, 1, 1.0), (19, 1, -1.0))
_BEND_TOLERANCE_RAD = np.deg2rad(5.0)
_BEND_PENALTY_SCALE = 100.0
# Bend from which a limb's hinge fully decides its twist (less: fade towards swing only).
_HINGE_FULL_BEND_RAD = float(np.deg2rad(20.0))
_LOSS_SCALE = 1.0e4  # the optimiser sees losses in cm^2 so float32 tolerances stay meaningful
_CONTEXT_FRAMES = 2


@dataclass(frozen=True)
class SmplFit:
    """SMPL parameters fitted to a joint sequence, and how well they fit.

    Attributes:
        transl: ``(T, 3)`` float32 metres, world y-up; ``pelvis = rest_pelvis(betas) + transl``.
        global_orient: ``(T, 3)`` float32 axis-angle (radians) of the pelvis in the world.
        body_pose: ``(T, 69)`` float32 axis-angle of SMPL's 23 body joints relative to their
            parents (joints 1..23 in SMPL order; the two hand joints, 22 and 23, stay zero).
        betas: ``(10,)`` float32 shape coefficients for the whole sequence (components beyond
            the model's own count are zero).
        joints: ``(T, 22, 3)`` float32 metres, world y-up: the fitted model's ``smpl22``
            joints from the body model's forward pass.
        per_joint_error_m: ``(22,)`` float32 mean distance (metres) between the fit and the
            target for each joint over the frames where it was observed (weight > 0); NaN
            for a joint never observed.
    """

    transl: np.ndarray
    global_orient: np.ndarray
    body_pose: np.ndarray
    betas: np.ndarray
    joints: np.ndarray
    per_joint_error_m: np.ndarray

    @property
    def num_frames(self) -> int:
        return int(self.transl.shape[0])

    @property
    def mean_error_m(self) -> float:
        """Mean of ``per_joint_error_m`` over observed joints (metres)."""
        return float(np.nanmean(self.per_joint_error_m))


# --------------------------------------------------------------------------------------------
# Local rotations from joint positions (numpy): the fit's initial pose, and the BVH export.


def _normalise(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norm = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norm, 1e-12), norm[..., 0]


def _frame(primary: np.ndarray, secondary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal frames ``(..., 3, 3)`` with columns (primary, secondary made orthogonal,
    their cross product), and ``(...)`` the norm of the orthogonalised secondary (0: none)."""
    e1, _ = _normalise(primary)
    secondary = secondary - np.sum(secondary * e1, axis=-1, keepdims=True) * e1
    e2, norm = _normalise(secondary)
    return np.stack([e1, e2, np.cross(e1, e2)], axis=-1), norm


def weighted_kabsch(source: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Rotations best aligning vectors: ``argmin_R sum_k w_k |R s_k - t_k|^2`` (no translation).

    Args:
        source: ``(K, 3)`` or ``(T, K, 3)`` vectors.
        target: ``(T, K, 3)`` vectors.
        weights: ``(K,)`` or ``(T, K)`` non-negative weights.

    Returns:
        ``(T, 3, 3)`` proper rotations (det +1). Degenerate inputs (fewer than two
        non-parallel weighted vectors) give one of the optimal rotations.
    """
    source_arr = np.broadcast_to(np.asarray(source, dtype=np.float64), np.shape(target))
    weights_arr = np.broadcast_to(np.asarray(weights, dtype=np.float64), np.shape(target)[:-1])
    covariance = np.einsum("tk,tki,tkj->tij", weights_arr, np.asarray(target), source_arr)
    u, _, vt = np.linalg.svd(covariance)
    sign = np.sign(np.linalg.det(u @ vt))
    sign = np.where(sign == 0.0, 1.0, sign)
    correction = np.broadcast_to(np.eye(3), covariance.shape).copy()
    correction[:, 2, 2] = sign
    return u @ correction @ vt


def smpl22_local_rotations_from_joints(
    joints: np.ndarray,
    rest_joints: np.ndarray,
    *,
    present: np.ndarray | None = None,
    root_rotation: np.ndarray | None = None,
) -> np.ndarray:
    """Local joint rotations of an ``smpl22`` skeleton that turn its rest bones onto ``joints``.

    The rest skeleton's joint frames are all aligned with the world (as in SMPL and in a
    BVH T-pose), so a joint's local rotation is ``L_j = G_parent^T G_j``. The global frames:

    - pelvis: the rotation best aligning its rest child bones (hips, spine1) with the targets
      (weighted Kabsch), unless ``root_rotation`` is given; the chest (spine3) likewise from
      the neck and collars;
    - a joint with one child: turns its rest bone onto the target bone exactly, aimed from
      where the joint itself landed (so errors do not accumulate along a chain). Its twist
      about the bone is the parent's (swing only), except that the hips and shoulders take
      the twist that makes the knee / elbow a pure rotation about its natural hinge axis
      (knees +x, left elbow -y, right elbow +y in the rest frame; fading to swing only below
      20 degrees of bend, where the bend plane is unreliable), the knees and elbows then
      bend about that axis, and spine1 / spine2 take one and two thirds of the twist
      between the pelvis and the chest;
    - leaves (feet, head, wrists): identity local rotation.

    Bones with one child therefore point exactly at their targets; positions differ from the
    targets only by bone-length differences and, for the pelvis's and chest's children, by
    how far their target configuration differs from the rest one.

    Args:
        joints: ``(T, 22, 3)`` target positions, ``smpl22`` order, any unit, y-up world.
        rest_joints: ``(22, 3)`` (or ``(24, 3)``; the first 22 are used) rest positions of
            the skeleton, same unit, T-pose-like, frames aligned with the world.
        present: ``(22,)`` bool, which target joints are usable (default all). A bone whose
            target child is absent keeps its parent's orientation.
        root_rotation: ``(T, 3, 3)`` global pelvis rotation to use instead of the Kabsch one.

    Returns:
        ``(T, 22, 3, 3)`` float64 local rotations (joint 0: the pelvis's global rotation).

    Raises:
        ValueError: wrong shapes or non-finite values among the present joints.
    """
    targets = np.asarray(joints, dtype=np.float64)
    rest = np.asarray(rest_joints, dtype=np.float64)
    if targets.ndim != 3 or targets.shape[1:] != (NUM_SMPL22, 3):
        raise ValueError(f"joints must have shape (T, 22, 3), got {targets.shape}")
    if rest.ndim != 2 or rest.shape[0] < NUM_SMPL22 or rest.shape[1] != 3:
        raise ValueError(f"rest_joints must have shape (22, 3), got {rest.shape}")
    rest = rest[:NUM_SMPL22]
    mask = np.ones(NUM_SMPL22, dtype=bool) if present is None else np.asarray(present, bool)
    if mask.shape != (NUM_SMPL22,):
        raise ValueError(f"present must have shape (22,), got {mask.shape}")
    if not np.all(np.isfinite(targets[:, mask])):
        raise ValueError("joints has non-finite values among the present joints")
    num_frames = targets.shape[0]
    rest_bones = rest - rest[np.maximum(_PARENTS, 0)]
    global_rot = np.zeros((num_frames, NUM_SMPL22, 3, 3))
    identity = np.broadcast_to(np.eye(3), (num_frames, 3, 3))

    # Reconstructed positions: each bone is aimed from where its joint actually lands, so
    # direction errors do not accumulate along a chain.
    positions = np.zeros((num_frames, NUM_SMPL22, 3))
    positions[:, 0] = targets[:, 0]

    def kabsch_of_children(joint: int, origin: np.ndarray) -> np.ndarray | None:
        kids = [c for c in _CHILDREN[joint] if mask[c]]
        if len(kids) < 2:
            return None
        weights = np.linalg.norm(rest_bones[kids], axis=-1)
        return weighted_kabsch(rest_bones[kids], targets[:, kids] - origin[:, None], weights)

    def place_children(joint: int) -> None:
        for child in _CHILDREN[joint]:
            positions[:, child] = positions[:, joint] + global_rot[:, joint] @ rest_bones[child]

    if root_rotation is not None:
        root = np.asarray(root_rotation, dtype=np.float64)
        if root.shape != (num_frames, 3, 3):
            raise ValueError(
                f"root_rotation must have shape ({num_frames}, 3, 3), got {root.shape}"
            )
    else:
        kabsch_root = kabsch_of_children(0, positions[:, 0]) if mask[0] else None
        root = identity.copy() if kabsch_root is None else kabsch_root
    global_rot[:, 0] = root
    place_children(0)
    # The chest's frame from the targets alone, for sharing the torso's twist along the spine.
    chest = kabsch_of_children(_CHEST, targets[:, _CHEST]) if mask[_CHEST] else None

    for joint in range(1, NUM_SMPL22):  # smpl22 lists parents before children
        parent_rot = global_rot[:, _PARENTS[joint]]
        kids = [c for c in _CHILDREN[joint] if mask[c]]
        if joint == _CHEST and chest is not None:
            global_rot[:, joint] = kabsch_of_children(joint, positions[:, joint])
        elif not kids:
            global_rot[:, joint] = parent_rot
        else:
            child = kids[0]  # one child except the chest, handled above
            bone_rest = rest_bones[child]
            bone_target = targets[:, child] - positions[:, joint]
            degenerate = np.linalg.norm(bone_target, axis=-1) < 1e-9
            bone_target[degenerate] = parent_rot[degenerate] @ bone_rest
            start_rot = parent_rot
            if joint in _HINGE_MIDDLES:
                # A knee / elbow first bends about its hinge, then corrects any remainder.
                start_rot = _bend_about(
                    parent_rot, np.asarray(_HINGE_MIDDLES[joint]), bone_rest, bone_target
                )
            swing = rotation_between_vectors(start_rot @ bone_rest, bone_target) @ start_rot
            global_rot[:, joint] = swing
            if joint in _HINGES and mask[_HINGES[joint][0]] and mask[_HINGES[joint][1]]:
                middle, end, hinge_axis = _HINGES[joint]
                global_rot[:, joint] = _hinge_twist(
                    swing,
                    bone_rest,
                    rest_bones[end],
                    np.asarray(hinge_axis),
                    bone_target,
                    targets[:, end] - targets[:, middle],
                )
            elif joint in _SPINE_TWIST_SHARE and chest is not None:
                share = _SPINE_TWIST_SHARE[joint]
                # The lateral (x) axes of the pelvis and chest frames, mixed in proportion.
                lateral = (1.0 - share) * global_rot[:, 0, :, 0] + share * chest[:, :, 0]
                target_frame, norm = _frame(bone_target, lateral)
                rest_frame, _ = _frame(bone_rest, np.array([1.0, 0.0, 0.0]))
                global_rot[:, joint] = np.where(
                    (norm > 1e-9)[:, None, None], target_frame @ rest_frame.T, swing
                )
        place_children(joint)

    local = np.empty_like(global_rot)
    local[:, 0] = global_rot[:, 0]
    local[:, 1:] = np.swapaxes(global_rot[:, _PARENTS[1:]], -1, -2) @ global_rot[:, 1:]
    return local


def _bend_about(
    parent_rot: np.ndarray, hinge_rest: np.ndarray, bone_rest: np.ndarray, bone_target: np.ndarray
) -> np.ndarray:
    """``Rot(G h, angle) @ G`` with ``G = parent_rot``: the rotation about the hinge ``h``
    (rest frame) that best turns the rest bone towards ``bone_target`` (``(T, 3, 3)``)."""
    axis = _normalise(parent_rot @ _normalise(hinge_rest)[0])[0]
    start = parent_rot @ bone_rest
    start_across = start - np.sum(start * axis, -1, keepdims=True) * axis
    end_across = bone_target - np.sum(bone_target * axis, -1, keepdims=True) * axis
    angle = np.arctan2(
        np.sum(np.cross(start_across, end_across) * axis, -1),
        np.sum(start_across * end_across, -1),
    )
    return axis_angle_to_matrix(axis * angle[:, None]) @ parent_rot


def _hinge_twist(
    swing: np.ndarray,
    bone_rest: np.ndarray,
    next_rest: np.ndarray,
    hinge_rest: np.ndarray,
    bone_target: np.ndarray,
    next_target: np.ndarray,
) -> np.ndarray:
    """Global frames ``(T, 3, 3)`` of a limb root (hip, shoulder) whose twist makes the next
    joint (knee, elbow) a pure hinge about ``hinge_rest``.

    The frames are ``Rot(bone, phi) @ swing``. A rotation about the hinge can carry the rest
    next bone onto the target one only if both make the same angle with the hinge axis, which
    fixes ``phi`` up to two solutions; the one that bends the middle joint the natural way
    (positive angle about the hinge) wins. Nearly straight limbs say little about the twist,
    so ``phi`` fades to 0 (swing only) below 20 degrees of bend.
    """
    bone = _normalise(bone_target)[0]
    next_unit = _normalise(next_target)[0]
    next_rest_unit = _normalise(next_rest)[0]
    hinge = _normalise(hinge_rest)[0]
    along = float(hinge @ next_rest_unit)
    swung_hinge = swing @ hinge
    hinge_along_bone = np.sum(swung_hinge * bone, -1)
    hinge_across = swung_hinge - hinge_along_bone[:, None] * bone
    # (cos phi) a + (sin phi) b = c: the twisted hinge makes the rest angle with the next bone.
    a = np.sum(hinge_across * next_unit, -1)
    b = np.sum(np.cross(bone, hinge_across) * next_unit, -1)
    c = along - hinge_along_bone * np.sum(bone * next_unit, -1)
    radius = np.hypot(a, b)
    base = np.arctan2(b, a)
    spread = np.arccos(np.clip(c / np.maximum(radius, 1e-12), -1.0, 1.0))
    best_phi = np.zeros(len(bone))
    best_bend = np.full(len(bone), -np.inf)
    for phi in (base + spread, base - spread):
        phi = np.angle(np.exp(1j * phi))  # wrap to (-pi, pi]
        frame = axis_angle_to_matrix(bone * phi[:, None]) @ swing
        axis = frame @ hinge
        start = frame @ next_rest_unit
        start_across = start - np.sum(start * axis, -1, keepdims=True) * axis
        end_across = next_unit - np.sum(next_unit * axis, -1, keepdims=True) * axis
        bend = np.arctan2(
            np.sum(np.cross(start_across, end_across) * axis, -1),
            np.sum(start_across * end_across, -1),
        )
        better = bend > best_bend
        best_phi = np.where(better, phi, best_phi)
        best_bend = np.where(better, bend, best_bend)
    weight = np.clip(np.abs(best_bend) / _HINGE_FULL_BEND_RAD, 0.0, 1.0)
    weight = np.where(radius > 1e-9, weight, 0.0)
    return axis_angle_to_matrix(bone * (weight * best_phi)[:, None]) @ swing


# --------------------------------------------------------------------------------------------
# Body-model access (torch)


def _torch() -> Any:
    import torch

    return torch


def _check_body_model(body_model: Any) -> None:
    missing = [
        name
        for name in ("v_template", "shapedirs", "J_regressor", "parents")
        if not hasattr(body_model, name)
    ]
    if missing or not callable(body_model):
        raise TypeError(
            "body_model must be a smplx SMPL/SMPL-H module (buffers v_template, shapedirs, "
            f"J_regressor, parents); {type(body_model).__name__} lacks {missing or ['forward']}"
        )
    parents = [int(p) for p in body_model.parents[:NUM_SMPL22].tolist()]
    if parents:
        parents[0] = -1  # smplx stores the root's parent as -1 or as a large unsigned value
    if tuple(parents) != SMPL22.parents:
        raise ValueError(
            f"body model's kinematic tree does not start with SMPL's 22 body joints: {parents}"
        )


def _model_num_betas(body_model: Any) -> int:
    return int(body_model.shapedirs.shape[-1])


def _body_joints_count(body_model: Any) -> int:
    """Body joints after the root in the module's ``body_pose`` (23 SMPL, 21 SMPL-H/X)."""
    return int(getattr(body_model, "NUM_BODY_JOINTS", 23))


def _shape_basis(body_model: Any, device: Any) -> tuple[Any, Any]:
    """``(22, 3)`` rest joints at zero shape and ``(22, 3, B)`` their shape directions."""
    torch = _torch()
    with torch.no_grad():
        regressor = body_model.J_regressor[:NUM_SMPL22].to(device=device, dtype=torch.float32)
        template = regressor @ body_model.v_template.to(device=device, dtype=torch.float32)
        directions = torch.einsum(
            "jv,vcb->jcb",
            regressor,
            body_model.shapedirs.to(device=device, dtype=torch.float32),
        )
    return template, directions


def smpl_rest_joints(body_model: Any, betas: np.ndarray) -> np.ndarray:
    """Rest-pose (T-pose) joints of the body model with shape ``betas``.

    Args:
        body_model: smplx SMPL/SMPL-H module.
        betas: ``(B,)`` shape coefficients; extra ones beyond the model's count are ignored,
            missing ones are zero.

    Returns:
        ``(J, 3)`` float64 metres in the model's frame (y-up, facing +z), all ``J`` kinematic
        joints of the model (24 for SMPL), pelvis not at the origin in general.
    """
    torch = _torch()
    _check_body_model(body_model)
    count = _model_num_betas(body_model)
    shape = np.zeros(count)
    values = np.asarray(betas, dtype=np.float64).reshape(-1)[:count]
    shape[: len(values)] = values
    with torch.no_grad():
        v_template = body_model.v_template.double()
        shaped = v_template + torch.einsum(
            "vcb,b->vc", body_model.shapedirs.double(), torch.as_tensor(shape).to(v_template)
        )
        rest = body_model.J_regressor.double() @ shaped
    return rest.cpu().numpy()


def _axis_angle_to_matrix(rotvec: Any) -> Any:
    """Rodrigues ``(..., 3) -> (..., 3, 3)`` in torch, smooth (with gradient) at zero."""
    torch = _torch()
    theta2 = (rotvec * rotvec).sum(-1)
    theta = torch.sqrt(theta2 + 1e-16)
    small = theta2 < 1e-6
    safe = torch.where(small, torch.ones_like(theta), theta)
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(safe) / safe)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(safe)) / (safe * safe))
    x, y, z = rotvec.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack(
        [
            torch.stack([zero, -z, y], -1),
            torch.stack([z, zero, -x], -1),
            torch.stack([-y, x, zero], -1),
        ],
        -2,
    )
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return eye + a[..., None, None] * skew + b[..., None, None] * (skew @ skew)


def _forward_joints(rest: Any, global_orient: Any, pose: Any, transl: Any) -> Any:
    """``(T, 22, 3)`` posed joints: ``rest (22, 3)``, ``global_orient (T, 3)``,
    ``pose (T, 21, 3)`` local axis-angles of joints 1..21, ``transl (T, 3)``."""
    torch = _torch()
    root = _axis_angle_to_matrix(global_orient)
    local = _axis_angle_to_matrix(pose)
    rotations = [root]
    positions = [rest[0].expand_as(transl) + transl]
    for joint in range(1, NUM_SMPL22):
        parent = int(_PARENTS[joint])
        bone = rest[joint] - rest[parent]
        positions.append(positions[parent] + rotations[parent] @ bone)
        if _CHILDREN[joint]:
            rotations.append(rotations[parent] @ local[:, joint - 1])
        else:
            rotations.append(rotations[parent])  # leaves move no joint; skip the product
    return torch.stack(positions, dim=1)


# --------------------------------------------------------------------------------------------
# The fit


@dataclass
class _Window:
    targets: Any  # (T, 22, 3)
    weights: Any  # (T, 22)
    transl: Any
    global_orient: Any
    pose: Any  # (T, 21, 3), leaves kept at zero
    context: Any | None  # (C, 22, 3) fixed fitted joints before the window, or None


def _bend_penalty(pose: Any) -> Any:
    torch = _torch()
    total = pose.new_zeros(())
    for joint, component, wrong_sign in _BEND_LIMITS:
        value = wrong_sign * pose[:, joint - 1, component]
        total = total + torch.relu(value - _BEND_TOLERANCE_RAD).pow(2).mean()
    return total


def _optimise(
    window: _Window,
    betas: Any,
    shape_template: Any,
    shape_directions: Any,
    *,
    fit_betas: bool,
    num_iters: int,
    lr: float,
    pose_prior_weight: float,
    smooth_weight: float,
    shape_prior_weight: float,
) -> Any:
    """Fits the window in place (two stages); returns ``betas`` (fitted or as given)."""
    torch = _torch()
    posed_index = torch.as_tensor([j - 1 for j in _POSED_JOINTS], device=window.pose.device)
    torso = torch.zeros(NUM_SMPL22, dtype=window.weights.dtype, device=window.weights.device)
    torso[list(_TORSO)] = 1.0
    pose_free = window.pose[:, posed_index].clone().requires_grad_(True)
    transl = window.transl.clone().requires_grad_(True)
    orient = window.global_orient.clone().requires_grad_(True)
    betas_var = betas.clone().requires_grad_(fit_betas)

    def full_pose() -> Any:
        return window.pose.index_copy(1, posed_index, pose_free)

    def loss_of(torso_only: bool) -> Any:
        rest = shape_template + shape_directions @ betas_var
        pose = full_pose()
        fitted = _forward_joints(rest, orient, pose, transl)
        weights = window.weights * torso if torso_only else window.weights
        squared = ((fitted - window.targets) ** 2).sum(-1)
        data = (weights * squared).sum() / weights.sum().clamp_min(1e-12)
        if torso_only:
            return data * _LOSS_SCALE
        prior = (pose * pose).sum((1, 2)).mean() + _BEND_PENALTY_SCALE * _bend_penalty(pose)
        total = data + pose_prior_weight * prior + shape_prior_weight * (betas_var**2).sum()
        sequence = fitted if window.context is None else torch.cat([window.context, fitted])
        if smooth_weight > 0.0 and sequence.shape[0] >= 3:
            accel = sequence[2:] - 2.0 * sequence[1:-1] + sequence[:-2]
            total = total + smooth_weight * (accel**2).sum(-1).mean()
        return total * _LOSS_SCALE

    def run(params: list[Any], torso_only: bool, iterations: int) -> None:
        optimiser = torch.optim.LBFGS(
            params,
            lr=lr,
            max_iter=iterations,
            tolerance_grad=1e-7,
            tolerance_change=1e-9,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure() -> Any:
            optimiser.zero_grad()
            loss = loss_of(torso_only)
            loss.backward()
            return loss

        optimiser.step(closure)

    run([orient, transl], True, max(5, num_iters // 5))
    run([orient, transl, pose_free] + ([betas_var] if fit_betas else []), False, num_iters)
    with torch.no_grad():
        window.transl = transl.detach()
        window.global_orient = orient.detach()
        window.pose = full_pose().detach()
    return betas_var.detach()


def _fill_missing(targets: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Missing target joints linearly interpolated in time (held at the ends)."""
    filled = targets.copy()
    frames = np.arange(targets.shape[0])
    for joint in range(NUM_SMPL22):
        valid = observed[:, joint]
        if valid.all() or not valid.any():
            continue
        for axis in range(3):
            filled[~valid, joint, axis] = np.interp(
                frames[~valid], frames[valid], targets[valid, joint, axis]
            )
    return filled


def _initial_parameters(
    targets: np.ndarray, observed: np.ndarray, rest: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(transl (T, 3), global_orient (T, 3), pose (T, 21, 3)) from the targets (numpy)."""
    present = observed.any(axis=0)
    filled = _fill_missing(targets, observed)
    filled[:, ~present] = 0.0
    root_children = [c for c in _CHILDREN[0] if present[c]]
    root_rotation = None
    if not (present[0] and len(root_children) >= 2):
        torso = [j for j in _TORSO if present[j]]
        if len(torso) < 3:
            raise ValueError(
                "cannot initialise the SMPL fit: fewer than three torso joints "
                f"({[SMPL22.joint_names[j] for j in _TORSO]}) are ever observed"
            )
        centred_rest = rest[torso] - rest[torso].mean(0)
        centred = filled[:, torso] - filled[:, torso].mean(1, keepdims=True)
        root_rotation = weighted_kabsch(centred_rest, centred, np.ones(len(torso)))
        if not present[0]:
            # The pelvis where the observed torso joints put it under that rotation.
            offsets = np.einsum("tij,kj->tki", root_rotation, rest[torso] - rest[0])
            filled[:, 0] = (filled[:, torso] - offsets).mean(1)
            present[0] = True
    local = smpl22_local_rotations_from_joints(
        filled, rest, present=present, root_rotation=root_rotation
    )
    axis_angles = matrix_to_axis_angle(local)
    axis_angles[:, list(_LEAVES)] = 0.0
    pelvis = filled[:, 0]
    return pelvis - rest[0], axis_angles[:, 0], axis_angles[:, 1:]


# Pairs of joints at a fixed distance in SMPL whatever the pose: every bone, and the siblings
# hanging from the pelvis and from the chest.
_RIGID_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (int(_PARENTS[j]), j) for j in range(1, NUM_SMPL22)
) + tuple(
    (a, b)
    for joint in (0, _CHEST)
    for i, a in enumerate(_CHILDREN[joint])
    for b in _CHILDREN[joint][i + 1 :]
)


def _initial_betas(
    targets: np.ndarray,
    observed: np.ndarray,
    template: np.ndarray,
    directions: np.ndarray,
    ridge: float,
) -> np.ndarray:
    """Shape whose rigid joint distances match the targets' medians (Gauss-Newton, numpy).

    ``template (22, 3)`` and ``directions (22, 3, B)`` give the rest joints
    ``template + directions @ betas``, so each rigid distance is a smooth function of the
    betas; a few Gauss-Newton steps with a ridge (``ridge`` times the number of pairs, in
    m^2, keeps unobservable components at zero) solve the least-squares match.
    """
    pairs = [(a, b) for a, b in _RIGID_PAIRS if (observed[:, a] & observed[:, b]).any()]
    num_betas = directions.shape[-1]
    betas = np.zeros(num_betas)
    if not pairs:
        return betas
    measured = np.array(
        [
            np.median(
                np.linalg.norm(
                    targets[observed[:, a] & observed[:, b], a]
                    - targets[observed[:, a] & observed[:, b], b],
                    axis=-1,
                )
            )
            for a, b in pairs
        ]
    )
    first = np.array([a for a, _ in pairs])
    second = np.array([b for _, b in pairs])
    regulariser = max(ridge, 1e-8) * len(pairs) * np.eye(num_betas)
    for _ in range(5):
        rest = template + directions @ betas
        difference = rest[second] - rest[first]
        length = np.linalg.norm(difference, axis=-1)
        unit = difference / np.maximum(length, 1e-9)[:, None]
        jacobian = np.einsum("pc,pcb->pb", unit, directions[second] - directions[first])
        residual = measured - length
        betas = betas + np.linalg.solve(
            jacobian.T @ jacobian + regulariser, jacobian.T @ residual - regulariser @ betas
        )
    return betas


def _as_numpy(array: Any, name: str) -> np.ndarray:
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    try:
        return np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a numeric array, got {type(array).__name__}") from error


def _model_forward_joints(
    body_model: Any,
    transl: np.ndarray,
    global_orient: np.ndarray,
    body_pose: np.ndarray,
    betas: np.ndarray,
    device: Any,
    batch_frames: int,
) -> np.ndarray:
    """``(T, 22, 3)`` joints from the module's own forward pass (no gradient)."""
    torch = _torch()
    count = _model_num_betas(body_model)
    shape = np.zeros(count, dtype=np.float32)
    shape[: min(count, len(betas))] = betas[:count]
    body_dims = 3 * _body_joints_count(body_model)
    out = []

    def tensor(value: np.ndarray) -> Any:
        return torch.as_tensor(np.ascontiguousarray(value), dtype=torch.float32, device=device)

    with torch.no_grad():
        for start in range(0, transl.shape[0], batch_frames):
            stop = min(start + batch_frames, transl.shape[0])
            n = stop - start
            kwargs: dict[str, Any] = {}
            for hand in ("left_hand_pose", "right_hand_pose"):
                default = getattr(body_model, hand, None)
                if default is not None and hasattr(default, "shape"):
                    kwargs[hand] = torch.zeros((n, default.shape[-1]), device=device)
            result = body_model(
                betas=tensor(np.tile(shape, (n, 1))),
                global_orient=tensor(global_orient[start:stop]),
                body_pose=tensor(body_pose[start:stop, :body_dims]),
                transl=tensor(transl[start:stop]),
                return_verts=True,
                **kwargs,
            )
            out.append(result.joints[:, :NUM_SMPL22].detach().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def fit_smpl(
    body_model: Any,
    joints: np.ndarray,
    *,
    joint_weights: np.ndarray | None = None,
    num_iters: int = 60,
    lr: float = 1.0,
    pose_prior_weight: float = 1.0e-6,
    smooth_weight: float = 0.05,
    shape_prior_weight: float = 1.0e-6,
    chunk_frames: int = 1000,
    shape_frames: int = 200,
    device: str | None = None,
) -> SmplFit:
    """Fit SMPL parameters to a sequence of ``smpl22`` joints (batched over frames).

    Args:
        body_model: smplx ``SMPL`` or ``SMPLH`` module (e.g. ``load_body_model(...)[0].module``);
            only read, never modified.
        joints: ``(T, 22, 3)`` metres, world y-up (the body model's frame; no axis change),
            ``smpl22`` order; NaN marks a missing joint (weight 0). numpy or torch.
        joint_weights: ``(T, 22)`` non-negative confidence per joint and frame (0 = missing);
            default 1 where ``joints`` is finite.
        num_iters: L-BFGS iterations of the main stage (the root-only stage gets a fifth).
        lr: L-BFGS step scale (1 with the strong-Wolfe line search).
        pose_prior_weight: weight of the L2 body-pose prior (rad^2) relative to the data term
            (m^2); wrong-way knee/elbow bends cost 100 times more.
        smooth_weight: weight of the joints' squared second differences (m^2, a mean over
            frames and joints like the data term).
        shape_prior_weight: weight of ``|betas|^2``.
        chunk_frames: most frames optimised in one batch (memory); longer sequences are fitted
            in chunks after fitting the shape on ``shape_frames`` evenly spaced frames.
        shape_frames: frames used to fit the shape of a sequence longer than ``chunk_frames``.
        device: torch device of the optimisation (default: the body model's; the final
            forward pass runs where the model is).

    Returns:
        :class:`SmplFit` (numpy float32 arrays).

    Raises:
        TypeError: ``body_model`` is not a smplx body-model module.
        ValueError: bad shapes, negative weights, non-positive counts, or too few observed
            torso joints to place the body.
    """
    torch = _torch()
    _check_body_model(body_model)
    targets = _as_numpy(joints, "joints")
    if targets.ndim != 3 or targets.shape[1:] != (NUM_SMPL22, 3) or targets.shape[0] < 1:
        raise ValueError(f"joints must have shape (T, 22, 3) with T >= 1, got {targets.shape}")
    finite = np.isfinite(targets).all(-1)
    if joint_weights is None:
        weights = finite.astype(np.float64)
    else:
        weights = _as_numpy(joint_weights, "joint_weights")
        if weights.shape != targets.shape[:2]:
            raise ValueError(
                f"joint_weights must have shape {targets.shape[:2]}, got {weights.shape}"
            )
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("joint_weights must be finite and >= 0")
        weights = np.where(finite, weights, 0.0)
    observed = weights > 0
    if not observed.any():
        raise ValueError("no joint is observed (all weights are zero or joints are NaN)")
    for name, value in (("num_iters", num_iters), ("chunk_frames", chunk_frames)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if shape_frames < 3:
        raise ValueError(f"shape_frames must be >= 3, got {shape_frames}")
    for name, value in (
        ("pose_prior_weight", pose_prior_weight),
        ("smooth_weight", smooth_weight),
        ("shape_prior_weight", shape_prior_weight),
    ):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be finite and >= 0, got {value}")
    if not np.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be finite and > 0, got {lr}")
    targets = np.where(observed[..., None], targets, 0.0)

    run_device = torch.device(device) if device else body_model.v_template.device
    template, directions = _shape_basis(body_model, run_device)
    num_betas = min(NUM_FIT_BETAS, _model_num_betas(body_model))
    directions = directions[..., :num_betas]
    template_np = template.double().cpu().numpy()
    betas0 = _initial_betas(
        targets, observed, template_np, directions.double().cpu().numpy(), shape_prior_weight
    )
    transl0, orient0, pose0 = _initial_parameters(
        targets, observed, template_np + directions.double().cpu().numpy() @ betas0
    )

    def tensor(value: np.ndarray) -> Any:
        return torch.as_tensor(value, dtype=torch.float32, device=run_device)

    settings = {
        "num_iters": int(num_iters),
        "lr": float(lr),
        "pose_prior_weight": float(pose_prior_weight),
        "shape_prior_weight": float(shape_prior_weight),
    }

    def window(frames: np.ndarray | slice, context: Any | None) -> _Window:
        return _Window(
            tensor(targets[frames]),
            tensor(weights[frames]),
            tensor(transl0[frames]),
            tensor(orient0[frames]),
            tensor(pose0[frames]),
            context,
        )

    num_frames = targets.shape[0]
    betas = tensor(betas0)
    if num_frames <= chunk_frames:
        whole = window(slice(None), None)
        betas = _optimise(
            whole,
            betas,
            template,
            directions,
            fit_betas=True,
            smooth_weight=float(smooth_weight),
            **settings,
        )
        parts = [whole]
    else:
        sample = np.unique(np.linspace(0, num_frames - 1, min(shape_frames, num_frames)).round())
        # Sampled frames are not consecutive: no smoothness while fitting the shape.
        betas = _optimise(
            window(sample.astype(np.int64), None),
            betas,
            template,
            directions,
            fit_betas=True,
            smooth_weight=0.0,
            **settings,
        )
        rest = template + directions @ betas
        parts = []
        context = None
        for start in range(0, num_frames, chunk_frames):
            part = window(slice(start, start + chunk_frames), context)
            _optimise(
                part,
                betas,
                template,
                directions,
                fit_betas=False,
                smooth_weight=float(smooth_weight),
                **settings,
            )
            with torch.no_grad():
                fitted = _forward_joints(rest, part.global_orient, part.pose, part.transl)
            context = fitted[-_CONTEXT_FRAMES:]
            parts.append(part)

    transl = torch.cat([p.transl for p in parts]).cpu().numpy().astype(np.float32)
    orient = torch.cat([p.global_orient for p in parts]).cpu().numpy().astype(np.float32)
    pose21 = torch.cat([p.pose for p in parts]).cpu().numpy().astype(np.float32)
    body_pose = np.zeros((num_frames, SMPL_BODY_POSE_DIM), dtype=np.float32)
    body_pose[:, : pose21.shape[1] * 3] = pose21.reshape(num_frames, -1)
    betas_out = np.zeros(NUM_FIT_BETAS, dtype=np.float32)
    betas_out[:num_betas] = betas.cpu().numpy()

    fitted_joints = _model_forward_joints(
        body_model,
        transl,
        orient,
        body_pose,
        betas_out,
        body_model.v_template.device,
        chunk_frames,
    )
    distance = np.linalg.norm(fitted_joints - targets, axis=-1)
    counts = observed.sum(0)
    per_joint = np.where(
        counts > 0, (distance * observed).sum(0) / np.maximum(counts, 1), np.nan
    ).astype(np.float32)
    return SmplFit(transl, orient, body_pose, betas_out, fitted_joints, per_joint)
