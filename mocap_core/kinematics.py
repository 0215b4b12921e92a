"""Forward kinematics and bone-length operations on joint trees (numpy).

A skeleton is given by ``parents (S,)`` (int, ``-1`` for a root) and per-joint
``offsets (S, 3)``: the joint's position in its parent's local frame when the skeleton is at
rest, in the skeleton's length unit (metres once a reader has converted it). Joint ``j``'s
local frame is placed at ``p_j = p_parent + G_parent @ t_j`` and oriented
``G_j = G_parent @ L_j`` where ``L_j`` is its local rotation and ``t_j`` its local
translation (the offset, or a per-frame translation for joints with position channels).
"""

from __future__ import annotations

import numpy as np


def topological_order(parents: np.ndarray | list[int] | tuple[int, ...]) -> np.ndarray:
    """Joint indices ordered so that every parent comes before its children.

    Args:
        parents: ``(S,)`` parent index per joint, ``-1`` for roots.

    Returns:
        ``(S,)`` int64 permutation. Raises ``ValueError`` if ``parents`` has an index out of
        range or a cycle.
    """
    parents_arr = np.asarray(parents)
    if parents_arr.ndim != 1 or not np.issubdtype(parents_arr.dtype, np.integer):
        raise ValueError(f"parents must be a 1-D integer array, got shape {parents_arr.shape}")
    num_joints = parents_arr.shape[0]
    if np.any(parents_arr < -1) or np.any(parents_arr >= num_joints):
        raise ValueError(
            f"parents has indices outside [-1, {num_joints - 1}]: {parents_arr.tolist()}"
        )
    if np.any(parents_arr == np.arange(num_joints)):
        raise ValueError("parents: a joint cannot be its own parent")
    if np.all(parents_arr < np.arange(num_joints)):
        return np.arange(num_joints)
    children: list[list[int]] = [[] for _ in range(num_joints)]
    for joint, parent in enumerate(parents_arr.tolist()):
        if parent >= 0:
            children[parent].append(joint)
    order: list[int] = []
    stack = [j for j in range(num_joints) if parents_arr[j] < 0][::-1]
    while stack:
        joint = stack.pop()
        order.append(joint)
        stack.extend(children[joint][::-1])
    if len(order) != num_joints:
        raise ValueError(
            "parents do not form a forest (a cycle leaves joints unreachable from a root)"
        )
    return np.asarray(order, dtype=np.int64)


def forward_kinematics(
    parents: np.ndarray | list[int] | tuple[int, ...],
    offsets: np.ndarray,
    local_rotations: np.ndarray,
    root_translation: np.ndarray | None = None,
    local_translations: np.ndarray | None = None,
    *,
    translated_joints: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Global joint positions and orientations from local rotations, all frames at once.

    Args:
        parents: ``(S,)`` parent index per joint, ``-1`` for roots (any order that forms a
            tree; evaluated in topological order).
        offsets: ``(S, 3)`` rest translation of each joint in its parent's frame (a root's
            offset is its world position when ``root_translation`` is not given).
        local_rotations: ``(T, S, 3, 3)`` rotation of each joint relative to its parent
            (a root's is relative to the world).
        root_translation: ``(T, 3)`` world position of the root joint(s) per frame; replaces
            the roots' offsets (as BVH position channels replace OFFSET).
        local_translations: ``(T, S, 3)`` per-frame translation of each joint in its
            parent's frame; replaces the offset of the joints selected by
            ``translated_joints`` (all joints when that is ``None``). Roots take
            ``root_translation`` first if both are given.
        translated_joints: ``(S,)`` bool, which joints read ``local_translations``.

    Returns:
        ``global_positions (T, S, 3)`` in the offsets' unit and world frame, and
        ``global_rotations (T, S, 3, 3)``; dtype follows the inputs (float64 for ints).
    """
    parents_arr = np.asarray(parents)
    order = topological_order(parents_arr)
    num_joints = parents_arr.shape[0]
    offsets_arr = np.asarray(offsets)
    rotations = np.asarray(local_rotations)
    dtype = np.result_type(offsets_arr.dtype, rotations.dtype, np.float32)
    if offsets_arr.shape != (num_joints, 3):
        raise ValueError(f"offsets must have shape ({num_joints}, 3), got {offsets_arr.shape}")
    if rotations.ndim != 4 or rotations.shape[1:] != (num_joints, 3, 3):
        raise ValueError(
            f"local_rotations must have shape (T, {num_joints}, 3, 3), got {rotations.shape}"
        )
    num_frames = rotations.shape[0]

    translations = np.broadcast_to(offsets_arr.astype(dtype), (num_frames, num_joints, 3)).copy()
    if local_translations is not None:
        local_arr = np.asarray(local_translations)
        if local_arr.shape != (num_frames, num_joints, 3):
            raise ValueError(
                f"local_translations must have shape ({num_frames}, {num_joints}, 3), got {local_arr.shape}"
            )
        if translated_joints is None:
            translations[:] = local_arr
        else:
            mask = np.asarray(translated_joints, dtype=bool)
            if mask.shape != (num_joints,):
                raise ValueError(
                    f"translated_joints must have shape ({num_joints},), got {mask.shape}"
                )
            translations[:, mask] = local_arr[:, mask]
    elif translated_joints is not None:
        raise ValueError("translated_joints given without local_translations")
    if root_translation is not None:
        root_arr = np.asarray(root_translation)
        if root_arr.shape != (num_frames, 3):
            raise ValueError(
                f"root_translation must have shape ({num_frames}, 3), got {root_arr.shape}"
            )
        translations[:, parents_arr < 0] = root_arr[:, None, :]

    positions = np.empty((num_frames, num_joints, 3), dtype=dtype)
    global_rotations = np.empty((num_frames, num_joints, 3, 3), dtype=dtype)
    for joint in order.tolist():
        parent = int(parents_arr[joint])
        if parent < 0:
            positions[:, joint] = translations[:, joint]
            global_rotations[:, joint] = rotations[:, joint]
        else:
            parent_rot = global_rotations[:, parent]
            positions[:, joint] = positions[:, parent] + np.einsum(
                "tij,tj->ti", parent_rot, translations[:, joint]
            )
            global_rotations[:, joint] = parent_rot @ rotations[:, joint]
    return positions, global_rotations


def _check_tree_positions(
    parents: np.ndarray | list[int] | tuple[int, ...], positions: np.ndarray
) -> np.ndarray:
    parents_arr = np.asarray(parents)
    topological_order(parents_arr)
    pos = np.asarray(positions)
    if pos.ndim < 2 or pos.shape[-2:] != (parents_arr.shape[0], 3):
        raise ValueError(
            f"positions must have shape (..., {parents_arr.shape[0]}, 3), got {pos.shape}"
        )
    return parents_arr


def bone_lengths(
    parents: np.ndarray | list[int] | tuple[int, ...], positions: np.ndarray
) -> np.ndarray:
    """Length of the bone ending at each joint.

    Args:
        parents: ``(S,)`` parent indices, ``-1`` for roots.
        positions: ``(..., S, 3)`` joint positions (any unit).

    Returns:
        ``(..., S)`` distance from each joint to its parent, in the positions' unit; 0 for
        roots.
    """
    parents_arr = _check_tree_positions(parents, positions)
    pos = np.asarray(positions)
    parent_pos = pos[..., np.maximum(parents_arr, 0), :]
    lengths = np.linalg.norm(pos - parent_pos, axis=-1)
    lengths[..., parents_arr < 0] = 0.0
    return lengths


def scale_bones(
    parents: np.ndarray | list[int] | tuple[int, ...], positions: np.ndarray, factors: np.ndarray
) -> np.ndarray:
    """Scale every bone's length by a factor, keeping bone directions and root positions.

    Each joint is re-placed from its (already re-placed) parent:
    ``p'_j = p'_parent + factors_j * (p_j - p_parent)``; roots stay where they are. Used for
    bone-length augmentation (a factor per bone, applied to all frames).

    Args:
        parents: ``(S,)`` parent indices, ``-1`` for roots.
        positions: ``(..., S, 3)`` joint positions, e.g. ``(T, S, 3)`` metres.
        factors: ``(S,)`` or broadcastable to ``(..., S)``; ``factors[j]`` scales the bone
            from ``parents[j]`` to ``j`` (a root's factor is ignored). Must be >= 0.

    Returns:
        ``(..., S, 3)`` scaled positions, same dtype as ``positions`` (float64 for ints).
    """
    parents_arr = _check_tree_positions(parents, positions)
    pos = np.asarray(positions)
    if not np.issubdtype(pos.dtype, np.floating):
        pos = pos.astype(np.float64)
    factors_arr = np.asarray(factors, dtype=pos.dtype)
    try:
        factors_arr = np.broadcast_to(factors_arr, pos.shape[:-1])
    except ValueError:
        raise ValueError(
            f"factors of shape {factors_arr.shape} do not broadcast to {pos.shape[:-1]}"
        ) from None
    if np.any(factors_arr < 0) or not np.all(np.isfinite(factors_arr)):
        raise ValueError("factors must be finite and >= 0")
    out = pos.copy()
    for joint in topological_order(parents_arr).tolist():
        parent = int(parents_arr[joint])
        if parent >= 0:
            bone = pos[..., joint, :] - pos[..., parent, :]
            out[..., joint, :] = out[..., parent, :] + factors_arr[..., joint, None] * bone
    return out
