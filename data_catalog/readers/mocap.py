"""BVH skeletons mapped onto the project's joint sets: the catalog's ``bvh`` reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import numpy as np

from data_catalog.readers.bvh import read_bvh
from data_catalog.types import Motion3D, ReaderError
from mocap_core.skeleton_mapping import (
    apply_mapping,
    get_skeleton_mapping,
    identify_source_skeleton,
)


def map_skeleton_motion(
    joint_names: tuple[str, ...],
    positions: np.ndarray,
    global_rotations: np.ndarray,
    *,
    skeleton: str,
    joint_sets: tuple[str, ...],
    name: str,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Map a source skeleton's FK result onto target joint sets.

    Args:
        joint_names: ``S`` source joint names.
        positions: ``(T, S, 3)`` metres, y-up.
        global_rotations: ``(T, S, 3, 3)``.
        skeleton: registered source skeleton name (``"bandai_namco"``, ``"cmu"``, ...).
        joint_sets: target joint-set names.
        name: the item's name, for error messages.

    Returns:
        ``joints`` and ``measured`` dicts keyed by joint set (``(T, J, 3)`` / ``(J,)``).
    """
    joints: dict[str, np.ndarray] = {}
    measured: dict[str, np.ndarray] = {}
    for target in joint_sets:
        try:
            mapping = get_skeleton_mapping(skeleton, target)
            joints[target], measured[target] = apply_mapping(
                mapping, joint_names, positions, global_rotations
            )
        except (KeyError, ValueError) as exc:
            raise ReaderError(
                f"{name}: cannot map skeleton {skeleton!r} to {target}: {exc}"
            ) from exc
    return joints, measured


def read_bvh_motion(
    source: str | Path | bytes | IO[Any],
    *,
    name: str,
    joint_sets: tuple[str, ...] = ("smpl22",),
    skeleton: str = "auto",
    units: str = "auto",
    up_axis: str = "y",
    labels: bytes | str | dict | None = None,
) -> Motion3D:
    """Read a BVH file and map it onto ``joint_sets`` (not grounded, not resampled).

    Args:
        source: path, text, bytes or file object of the BVH.
        name: the item's name (file or archive member), used in error messages.
        joint_sets: target joint sets, e.g. ``("smpl22", "coco17")``.
        skeleton: source skeleton name for the joint-name tables, or ``"auto"`` to recognise
            it from the file's joint names.
        units, up_axis: as :func:`data_catalog.readers.bvh.read_bvh`.
        labels: sequence labels: a dict, or the bytes/text of a JSON sidecar (e.g. the
            Bandai-Namco ``{"content": ..., "style": ...}`` files).

    Returns:
        A :class:`Motion3D` at the file's frame rate, metres, y-up.

    Raises:
        ReaderError: unreadable file, unknown skeleton, or a joint the mapping needs is absent.
    """
    try:
        bvh = read_bvh(source, units=units, up_axis=up_axis, name=name)
    except ValueError as exc:
        raise ReaderError(str(exc)) from exc
    if skeleton == "auto":
        found = identify_source_skeleton(bvh.joint_names)
        if found is None:
            raise ReaderError(
                f"{name}: unknown skeleton (joints {list(bvh.joint_names)[:8]}...); pass "
                "reader option 'skeleton' or register a mapping (docs/SKELETONS.md)"
            )
        skeleton = found
    joints, measured = map_skeleton_motion(
        bvh.joint_names,
        bvh.positions,
        bvh.global_rotations,
        skeleton=skeleton,
        joint_sets=tuple(joint_sets),
        name=name,
    )
    meta: dict[str, Any] = {"skeleton": skeleton, "units_detected": bvh.units_detected}
    if labels is not None:
        meta["labels"] = _parse_labels(labels, name)
    return Motion3D(
        joints=joints,
        measured=measured,
        fps=float(bvh.fps),
        local_rotations=bvh.local_rotations,
        meta=meta,
    )


def _parse_labels(labels: bytes | str | dict, name: str) -> dict:
    if isinstance(labels, dict):
        return labels
    try:
        parsed = json.loads(labels)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReaderError(f"{name}: labels sidecar is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ReaderError(
            f"{name}: labels sidecar must hold a JSON object, got {type(parsed).__name__}"
        )
    return parsed
