"""BVH export of a recovered sequence: from an SMPL fit, or from ``smpl22`` joints alone.

Both exports write SMPL's 22 body joints with their ``smpl22`` names, in depth-first order
from the pelvis (children in ``smpl22`` index order), so :func:`data_catalog.readers.bvh.read_bvh`
reads them back by name. Conventions of the written files:

- World frame y-up, as the recovered joints (no axis change); the rest pose faces +z with
  the body's left on +x, and every joint's rest frame is aligned with the world (a T-pose),
  as in SMPL.
- Units: centimetres by default (``units="cm"``; most BVH tools expect them), or metres
  (``units="m"``). Read back with ``read_bvh(..., units=...)`` naming the same unit.
- The root (``pelvis``) has 6 channels ``Xposition Yposition Zposition Zrotation Xrotation
  Yrotation``; the other joints 3 rotation channels ``Zrotation Xrotation Yrotation``:
  intrinsic Euler angles in degrees, ``R_local = Rz @ Rx @ Ry`` (the project's BVH
  convention, :mod:`mocap_core.rotations`). Local rotations are relative to the parent joint,
  which is what SMPL's pose parameters are.
- The root's position channels are the pelvis's world position; its ``OFFSET`` is the rest
  pelvis (channels replace it every frame).
- ``End Site`` leaves (feet, head, wrists) are for display and carry no data: a wrist's is
  the body model's hand joint when there is one; otherwise fixed rest offsets of 6 cm forward
  at the feet (toes), 12 cm up at the head (crown) and 8 cm along the forearm at the wrists.

:func:`bvh_from_joints` (no body model) builds a fixed skeleton from the sequence:

- bone lengths are the sequence's median lengths, and the rest pose is the synthetic SMPL
  T-pose (:func:`mocap_core.synthetic_smpl.synthetic_rest_joints`: standing, arms out
  sideways, facing +z) with those lengths, except for the two joints with several children:
  the hips and spine1 offsets from the pelvis, and the neck and collar offsets from spine3,
  are the medians of the measured offsets in the pelvis's (chest's) own frame (x from the
  right to the left child, y towards the spine (neck)), placed as that frame sits in the
  template T-pose, so that these rigid groups fit;
- per-frame rotations come from
  :func:`mocap_core.smpl_fit.smpl22_local_rotations_from_joints`: every single-child bone
  points exactly at its target; twists make the knees and elbows hinges and share the
  torso's twist along the spine. Joint positions then differ from the input only by
  bone-length changes along the chains (zero for a rigid skeleton).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mocap_core.joint_sets import SMPL22
from mocap_core.rotations import axis_angle_to_matrix, matrix_to_euler
from mocap_core.smpl_fit import (
    NUM_SMPL22,
    SmplFit,
    smpl22_local_rotations_from_joints,
    smpl_rest_joints,
)
from mocap_core.synthetic_smpl import synthetic_rest_joints

BvhUnits = Literal["cm", "m"]
EULER_ORDER = "ZXY"
_UNIT_SCALE = {"cm": 100.0, "m": 1.0}
_ROOT_CHANNELS = "Xposition Yposition Zposition Zrotation Xrotation Yrotation"
_JOINT_CHANNELS = "Zrotation Xrotation Yrotation"
_PARENTS = np.asarray(SMPL22.parents, dtype=np.int64)
_CHILDREN = tuple(
    tuple(c for c in range(NUM_SMPL22) if _PARENTS[c] == j) for j in range(NUM_SMPL22)
)
# Display End Sites in the rest frame (metres, y-up, facing +z, left = +x).
_END_SITES: dict[int, tuple[float, float, float]] = {
    10: (0.0, 0.0, 0.06),
    11: (0.0, 0.0, 0.06),
    15: (0.0, 0.12, 0.0),
    20: (0.08, 0.0, 0.0),
    21: (-0.08, 0.0, 0.0),
}
# Multi-child joints whose children's rest offsets are measured: joint -> (left child, right
# child, the child giving the frame's y axis).
_MEASURED_GROUPS: dict[int, tuple[int, int, int]] = {0: (1, 2, 3), 9: (13, 14, 12)}


def _depth_first_order() -> list[int]:
    order: list[int] = []
    stack = [0]
    while stack:
        joint = stack.pop()
        order.append(joint)
        stack.extend(reversed(_CHILDREN[joint]))
    return order


def _check_units(units: str) -> float:
    if units not in _UNIT_SCALE:
        raise ValueError(f"units must be 'cm' or 'm', got {units!r}")
    return _UNIT_SCALE[units]


def _check_fps(fps: float) -> float:
    value = float(fps)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return value


def bvh_text(
    offsets: np.ndarray,
    end_sites: dict[int, np.ndarray],
    root_positions: np.ndarray,
    local_rotations: np.ndarray,
    fps: float,
    *,
    units: BvhUnits = "cm",
) -> str:
    """BVH text of an ``smpl22`` skeleton and its motion.

    Args:
        offsets: ``(22, 3)`` metres: each joint's rest offset in its parent's frame (the
            root's: its rest position, written as its OFFSET).
        end_sites: leaf joint index -> ``(3,)`` End Site offset, metres, in the leaf's frame.
        root_positions: ``(T, 3)`` metres, world y-up: the pelvis per frame.
        local_rotations: ``(T, 22, 3, 3)`` rotations relative to the parent (the root's
            relative to the world).
        fps: frames per second (``Frame Time`` is ``1 / fps``).
        units: ``"cm"`` or ``"m"`` for the written lengths.

    Returns:
        The BVH file's text (joints in depth-first order, channels as in the module docstring).
    """
    scale = _check_units(units)
    frame_time = 1.0 / _check_fps(fps)
    offsets = np.asarray(offsets, dtype=np.float64)
    root_positions = np.asarray(root_positions, dtype=np.float64)
    rotations = np.asarray(local_rotations, dtype=np.float64)
    num_frames = root_positions.shape[0] if root_positions.ndim == 2 else -1
    if offsets.shape != (NUM_SMPL22, 3):
        raise ValueError(f"offsets must have shape (22, 3), got {offsets.shape}")
    if root_positions.ndim != 2 or root_positions.shape[1] != 3 or num_frames < 1:
        raise ValueError(
            f"root_positions must have shape (T, 3), T >= 1, got {root_positions.shape}"
        )
    if rotations.shape != (num_frames, NUM_SMPL22, 3, 3):
        raise ValueError(
            f"local_rotations must have shape ({num_frames}, 22, 3, 3), got {rotations.shape}"
        )
    if not (np.isfinite(root_positions).all() and np.isfinite(rotations).all()):
        raise ValueError("root_positions and local_rotations must be finite")

    order = _depth_first_order()
    lines = ["HIERARCHY"]

    def number(values: np.ndarray) -> str:
        return " ".join(f"{v * scale:.6f}" for v in values)

    def write_joint(joint: int, depth: int) -> None:
        pad = "  " * depth
        keyword = "ROOT" if joint == 0 else "JOINT"
        lines.append(f"{pad}{keyword} {SMPL22.joint_names[joint]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  OFFSET {number(offsets[joint])}")
        if joint == 0:
            lines.append(f"{pad}  CHANNELS 6 {_ROOT_CHANNELS}")
        else:
            lines.append(f"{pad}  CHANNELS 3 {_JOINT_CHANNELS}")
        for child in _CHILDREN[joint]:
            write_joint(child, depth + 1)
        if not _CHILDREN[joint]:
            site = np.asarray(end_sites.get(joint, np.zeros(3)), dtype=np.float64)
            lines.append(f"{pad}  End Site")
            lines.append(f"{pad}  {{")
            lines.append(f"{pad}    OFFSET {number(site)}")
            lines.append(f"{pad}  }}")
        lines.append(f"{pad}}}")

    write_joint(0, 0)
    angles = matrix_to_euler(rotations[:, order], EULER_ORDER, degrees=True)  # (T, 22, 3)
    values = np.concatenate([root_positions * scale, angles.reshape(num_frames, -1)], axis=1)
    lines += ["MOTION", f"Frames: {num_frames}", f"Frame Time: {frame_time:.10g}"]
    buffer = io.StringIO()
    np.savetxt(buffer, values, fmt="%.6f", delimiter=" ")
    return "\n".join(lines) + "\n" + buffer.getvalue()


def _check_fit(fit: SmplFit) -> int:
    if not isinstance(fit, SmplFit):
        raise TypeError(f"fit must be a SmplFit, got {type(fit).__name__}")
    num_frames = fit.transl.shape[0]
    expected = {
        "transl": (num_frames, 3),
        "global_orient": (num_frames, 3),
        "body_pose": (num_frames, 69),
        "betas": (10,),
    }
    for name, shape in expected.items():
        if np.shape(getattr(fit, name)) != shape:
            raise ValueError(
                f"fit.{name} must have shape {shape}, got {np.shape(getattr(fit, name))}"
            )
    if num_frames < 1:
        raise ValueError("fit has no frames")
    return num_frames


def bvh_from_smpl(fit: SmplFit, body_model: Any, fps: float, *, units: BvhUnits = "cm") -> str:
    """BVH text of an SMPL fit: SMPL's 22 body joints with the fitted shape's rest skeleton.

    Args:
        fit: the fit (``transl (T, 3)``, ``global_orient (T, 3)``, ``body_pose (T, 69)``,
            ``betas (10,)``), world y-up metres.
        body_model: the smplx SMPL/SMPL-H module the fit was made with (its rest joints under
            ``fit.betas`` give the offsets; it is only read).
        fps: frames per second.
        units: ``"cm"`` (default) or ``"m"``.

    Returns:
        BVH text; forward kinematics of it gives the fit's joints (the module's joints).
    """
    num_frames = _check_fit(fit)
    rest = smpl_rest_joints(body_model, np.asarray(fit.betas, dtype=np.float64))
    offsets = rest[:NUM_SMPL22] - rest[np.maximum(_PARENTS, 0)]
    offsets[0] = rest[0]
    model_parents = [int(p) for p in body_model.parents.tolist()]
    end_sites: dict[int, np.ndarray] = {}
    for leaf, display in _END_SITES.items():
        model_children = [
            c for c in range(NUM_SMPL22, len(model_parents)) if model_parents[c] == leaf
        ]
        end_sites[leaf] = (
            rest[model_children[0]] - rest[leaf] if model_children else np.asarray(display)
        )
    rotvecs = np.concatenate(
        [
            np.asarray(fit.global_orient, dtype=np.float64)[:, None],
            np.asarray(fit.body_pose, dtype=np.float64)[:, : 3 * (NUM_SMPL22 - 1)].reshape(
                num_frames, NUM_SMPL22 - 1, 3
            ),
        ],
        axis=1,
    )
    pelvis = rest[0] + np.asarray(fit.transl, dtype=np.float64)
    return bvh_text(offsets, end_sites, pelvis, axis_angle_to_matrix(rotvecs), fps, units=units)


def _check_joints(joints: np.ndarray) -> np.ndarray:
    array = np.asarray(joints, dtype=np.float64)
    if array.ndim != 3 or array.shape[1:] != (NUM_SMPL22, 3) or array.shape[0] < 1:
        raise ValueError(
            f"joints must have shape (T, 22, 3) (smpl22) with T >= 1, got {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError("joints must be finite (fill missing joints before exporting)")
    return array


def _group_frames(joints: np.ndarray, joint: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``(T, 3, 3)`` of a multi-child joint from its children, and which are usable."""
    left, right, up = _MEASURED_GROUPS[joint]
    lateral = joints[:, left] - joints[:, right]
    upward = joints[:, up] - joints[:, joint]
    x_norm = np.linalg.norm(lateral, axis=-1)
    x_axis = lateral / np.maximum(x_norm, 1e-12)[:, None]
    y_raw = upward - np.sum(upward * x_axis, -1, keepdims=True) * x_axis
    y_norm = np.linalg.norm(y_raw, axis=-1)
    y_axis = y_raw / np.maximum(y_norm, 1e-12)[:, None]
    frames = np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)], axis=-1)
    usable = (x_norm > 1e-6) & (y_norm > 1e-6)
    return frames, usable


def fixed_skeleton_rest_joints(joints: np.ndarray) -> np.ndarray:
    """Rest joints of the fixed skeleton :func:`bvh_from_joints` writes for a sequence.

    Args:
        joints: ``(T, 22, 3)`` ``smpl22`` joints, metres, world y-up, finite.

    Returns:
        ``(22, 3)`` float64 metres, pelvis at the origin, T-pose facing +z (see the module
        docstring for how lengths and offsets are chosen).

    Raises:
        ValueError: bad shape, non-finite values, or a pelvis / chest whose children coincide
            in every frame.
    """
    array = _check_joints(joints)
    template = synthetic_rest_joints("smpl")[:NUM_SMPL22]
    template_bones = template - template[np.maximum(_PARENTS, 0)]
    lengths = np.median(np.linalg.norm(array - array[:, np.maximum(_PARENTS, 0)], axis=-1), 0)
    offsets = np.zeros((NUM_SMPL22, 3))
    for joint in range(1, NUM_SMPL22):
        direction = template_bones[joint] / np.linalg.norm(template_bones[joint])
        offsets[joint] = direction * lengths[joint]
    for joint in _MEASURED_GROUPS:
        frames, usable = _group_frames(array, joint)
        if not usable.any():
            raise ValueError(
                f"cannot build a skeleton: the children of {SMPL22.joint_names[joint]!r} "
                "coincide in every frame"
            )
        # Offsets measured in the group's own frame, then placed as that frame sits in the
        # template T-pose: a T-posed input gets the template's frame back, not a tilted one.
        template_frame = _group_frames(template[None], joint)[0][0]
        for child in _CHILDREN[joint]:
            local = np.einsum(
                "tji,tj->ti", frames[usable], array[usable, child] - array[usable, joint]
            )
            offsets[child] = template_frame @ np.median(local, axis=0)
    rest = np.zeros((NUM_SMPL22, 3))
    for joint in range(1, NUM_SMPL22):  # parents precede children in smpl22
        rest[joint] = rest[_PARENTS[joint]] + offsets[joint]
    return rest


def bvh_from_joints(
    joints: np.ndarray,
    fps: float,
    skeleton: Literal["fixed"] = "fixed",
    *,
    units: BvhUnits = "cm",
) -> str:
    """BVH text of a joint sequence without a body model (fixed skeleton, solved rotations).

    Args:
        joints: ``(T, 22, 3)`` ``smpl22`` joints, metres, world y-up, finite.
        fps: frames per second.
        skeleton: ``"fixed"``: one skeleton for the whole sequence (module docstring).
        units: ``"cm"`` (default) or ``"m"``.

    Returns:
        BVH text whose forward kinematics reproduces ``joints`` up to bone-length changes.
    """
    if skeleton != "fixed":
        raise ValueError(f"skeleton must be 'fixed', got {skeleton!r}")
    array = _check_joints(joints)
    rest = fixed_skeleton_rest_joints(array)
    local = smpl22_local_rotations_from_joints(array, rest)
    offsets = rest - rest[np.maximum(_PARENTS, 0)]
    offsets[0] = rest[0]
    end_sites = {leaf: np.asarray(site) for leaf, site in _END_SITES.items()}
    return bvh_text(offsets, end_sites, array[:, 0], local, fps, units=units)


def write_bvh(path: str | os.PathLike[str], text: str) -> Path:
    """Write BVH ``text`` to ``path`` atomically (temporary file, fsync, ``os.replace``).

    The parent folder is created. A crash or error mid-write leaves any previous file at
    ``path`` untouched and no partial file under its name.

    Returns:
        The written path.

    Raises:
        TypeError: ``text`` is not a string.
        ValueError: ``text`` does not start with ``HIERARCHY``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if not text.lstrip().upper().startswith("HIERARCHY"):
        raise ValueError("text is not BVH: it must start with 'HIERARCHY'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path
