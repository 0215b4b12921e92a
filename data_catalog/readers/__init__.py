"""Readers for source motion formats, and the registry the catalog's ``reader:`` names.

Registered readers (the catalog's ``reader:``): ``bvh``, ``amass``, ``coco_json``,
``openpose`` (an item is one clip: a ``.zip`` or ``.tar`` of its per-frame OpenPose JSON
files), ``tracks_npz``, ``joints_array`` and ``video`` (MediaPipe BlazePose on a video
file, the ``video`` extra).

Each registered reader takes one item's bytes (plus sidecar bytes), the catalog options and
the target joint sets, and returns a :class:`~data_catalog.types.Motion3D` (mocap) or a
:class:`~data_catalog.types.Tracks2D` (2D keypoints). Readers raise
:class:`~data_catalog.types.ReaderError` naming the item for bad input.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from data_catalog.readers.bvh import BvhError, BvhMotion, EndSite, read_bvh
from data_catalog.types import Motion3D, ReaderError, Tracks2D

ReaderFn = Callable[..., Motion3D | Tracks2D]


@dataclass(frozen=True)
class ReaderSpec:
    """A registered reader: what it produces and the options it accepts."""

    name: str
    kind: Literal["3d", "2d"]
    read: Callable[[bytes, Mapping[str, bytes], Mapping[str, Any], tuple[str, ...], str], Any]
    options: frozenset[str]


def _bvh(data, sidecars, options, joint_sets, name):
    from data_catalog.readers.mocap import read_bvh_motion

    labels = None
    suffix = options.get("labels_sidecar")
    if suffix:
        labels = sidecars.get(suffix if suffix.startswith(".") else "." + suffix)
    return read_bvh_motion(
        data,
        name=name,
        joint_sets=joint_sets,
        skeleton=options.get("skeleton", "auto"),
        units=options.get("units", "auto"),
        up_axis=options.get("up_axis", "y"),
        labels=labels,
    )


def _amass(data, sidecars, options, joint_sets, name):
    from data_catalog.readers.amass import read_amass_npz

    gender = options.get("gender", "from_file")
    return read_amass_npz(
        data,
        name=name,
        body_model_dir=options["body_model_dir"],
        target_joint_sets=joint_sets,
        gender_override=None if gender == "from_file" else gender,
        model_type=options.get("model_type", "auto"),
    )


def _camera_options(options: Mapping[str, Any]) -> dict[str, Any]:
    K = options.get("K")
    return {
        "width": options.get("width"),
        "height": options.get("height"),
        "K": None if K is None else np.asarray(K, dtype=np.float64),
    }


def _coco_json(data, sidecars, options, joint_sets, name):
    from data_catalog.readers.tracks2d import read_coco_json

    return read_coco_json(
        data,
        name=name,
        fps=float(options.get("fps", 30.0)),
        min_detection_score=float(options.get("min_detection_score", 0.0)),
        confidence_mode=options.get("confidence_mode", "auto"),
        **_camera_options(options),
    )


def _archive_members(data: bytes, name: str) -> dict[str, bytes]:
    """Files of an in-memory ``.zip`` or (compressed) ``.tar``: member name -> bytes."""
    import tarfile
    import zipfile

    from data_catalog.sources import READ_ERRORS

    buffer = io.BytesIO(data)
    try:
        if zipfile.is_zipfile(buffer):
            with zipfile.ZipFile(buffer) as archive:
                return {
                    info.filename: archive.read(info)
                    for info in archive.infolist()
                    if not info.is_dir()
                }
        buffer.seek(0)
        with tarfile.open(fileobj=buffer, mode="r:*") as archive:
            members = {}
            for info in archive.getmembers():
                handle = archive.extractfile(info) if info.isfile() else None
                if handle is not None:
                    members[info.name] = handle.read()
            return members
    except READ_ERRORS as error:
        raise ReaderError(
            f"{name}: not a readable .zip or .tar of OpenPose frames "
            f"({type(error).__name__}: {error})"
        ) from error


def _openpose(data, sidecars, options, joint_sets, name):
    from data_catalog.readers.tracks2d import read_openpose_folder

    # An item is one clip: an archive holding the clip's per-frame JSON files (OpenPose
    # writes a folder per clip; packed as one file, it travels as one item of a source).
    # Hidden files (macOS "._X.json") are not frames.
    members = {
        key: value
        for key, value in _archive_members(data, name).items()
        if not any(part.startswith(".") for part in key.split("/"))
    }
    return read_openpose_folder(
        members,
        name=name,
        fps=float(options.get("fps", 30.0)),
        layout=options.get("layout", "auto"),
        **_camera_options(options),
    )


def _tracks_npz(data, sidecars, options, joint_sets, name):
    from data_catalog.readers.tracks2d import read_tracks_npz

    fps = options.get("fps")
    return read_tracks_npz(
        data,
        name=name,
        fps=None if fps is None else float(fps),
        allow_nan=bool(options.get("allow_nan", False)),
        **_camera_options(options),
    )


def _joints_array(data, sidecars, options, joint_sets, name):
    from data_catalog.readers.arrays import read_joints_array

    return read_joints_array(
        data,
        name=name,
        joint_set=options.get("joint_set"),
        fps=options.get("fps"),
        units=options.get("units"),
        up_axis=options.get("up_axis"),
        target_joint_sets=joint_sets,
        allow_nan=bool(options.get("allow_nan", False)),
    )


def _video(data, sidecars, options, joint_sets, name):
    from data_catalog.readers.video import read_video_item

    return read_video_item(data, options, joint_sets, name)


READERS: dict[str, ReaderSpec] = {
    spec.name: spec
    for spec in (
        ReaderSpec(
            "bvh", "3d", _bvh, frozenset({"skeleton", "units", "up_axis", "labels_sidecar"})
        ),
        ReaderSpec("amass", "3d", _amass, frozenset({"body_model_dir", "model_type", "gender"})),
        ReaderSpec(
            "coco_json",
            "2d",
            _coco_json,
            frozenset({"fps", "min_detection_score", "confidence_mode", "width", "height", "K"}),
        ),
        ReaderSpec(
            "openpose",
            "2d",
            _openpose,
            frozenset({"fps", "layout", "width", "height", "K"}),
        ),
        ReaderSpec(
            "tracks_npz", "2d", _tracks_npz, frozenset({"fps", "allow_nan", "width", "height", "K"})
        ),
        ReaderSpec(
            "joints_array",
            "3d",
            _joints_array,
            frozenset({"joint_set", "fps", "units", "up_axis", "allow_nan"}),
        ),
        ReaderSpec(
            "video",
            "2d",
            _video,
            frozenset({"fps", "model_complexity", "min_detection_confidence"}),
        ),
    )
}


def get_reader(name: str) -> ReaderSpec:
    """The registered reader ``name``; a ``KeyError`` lists the known readers."""
    try:
        return READERS[name]
    except KeyError:
        raise KeyError(f"unknown reader {name!r}; known: {sorted(READERS)}") from None


def check_reader_options(reader: str, options: Mapping[str, Any]) -> None:
    """Raise ValueError for options the reader does not accept (typos in a catalog)."""
    spec = get_reader(reader)
    unknown = sorted(set(options) - spec.options)
    if unknown:
        raise ValueError(
            f"reader {reader!r} does not take option(s) {unknown}; it takes {sorted(spec.options)}"
        )
    if reader == "amass" and "body_model_dir" not in options:
        raise ValueError("reader 'amass' needs option 'body_model_dir' (the SMPL model folder)")


__all__ = [
    "READERS",
    "BvhError",
    "BvhMotion",
    "EndSite",
    "ReaderError",
    "ReaderSpec",
    "check_reader_options",
    "get_reader",
    "read_bvh",
]
