"""Factories for tiny motion stores, manifests and source trees/archives used by the tests.

Import as ``from factories import ...`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_catalog.manifest import Manifest, ManifestItem
from data_catalog.store import (
    PreparedSequence,
    SplitRule,
    StoreInfo,
    write_store_version,
)
from mocap_core.joint_sets import JOINT_SETS


def random_sequence(
    rng: np.random.Generator,
    source_key: str,
    num_frames: int,
    *,
    joint_sets: Sequence[str] = ("smpl22",),
    kind: str = "3d",
    part: int = 0,
    labels: Mapping[str, Any] | None = None,
    track_id: int | None = None,
    invalid_fraction: float = 0.1,
) -> PreparedSequence:
    """A random :class:`PreparedSequence` with ``num_frames`` frames per joint set.

    3D joints are metres-ish values around y = 1; 2D keypoints are pixels in a 640x480 image
    with confidences. About ``invalid_fraction`` of (frame, joint) entries are not valid.
    """
    joints: dict[str, np.ndarray] = {}
    valid: dict[str, np.ndarray] = {}
    for name in joint_sets:
        num_joints = len(JOINT_SETS[name])
        if kind == "3d":
            data = rng.normal([0.0, 1.0, 0.0], 0.3, size=(num_frames, num_joints, 3))
        else:
            uv = rng.uniform([0, 0], [640, 480], size=(num_frames, num_joints, 2))
            conf = rng.uniform(0.2, 1.0, size=(num_frames, num_joints, 1))
            data = np.concatenate([uv, conf], axis=-1)
        is_valid = rng.random((num_frames, num_joints)) >= invalid_fraction
        data = np.where(is_valid[..., None], data, 0.0)
        joints[name] = data.astype(np.float32)
        valid[name] = is_valid
    return PreparedSequence(
        source_key=source_key,
        source_sha256=hashlib.sha256(source_key.encode()).hexdigest(),
        joints=joints,
        valid=valid,
        original_fps=120.0 if kind == "3d" else 25.0,
        part=part,
        subject=f"subject-{source_key[:1]}",
        labels=dict(labels or {}),
        track_id=track_id,
        width=640 if kind == "2d" else None,
        height=480 if kind == "2d" else None,
        K=np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]]) if kind == "2d" else None,
    )


def random_sequences(
    seed: int,
    lengths: Sequence[int],
    *,
    joint_sets: Sequence[str] = ("smpl22",),
    kind: str = "3d",
) -> list[PreparedSequence]:
    """One random sequence per length, keys ``item000.bvh``, ``item001.bvh``, ..."""
    rng = np.random.default_rng(seed)
    return [
        random_sequence(
            rng,
            f"item{i:03d}.bvh",
            n,
            joint_sets=joint_sets,
            kind=kind,
            labels={"style": i % 3},
            track_id=0 if kind == "2d" else None,
        )
        for i, n in enumerate(lengths)
    ]


def manifest_for(dataset: str, contents: Mapping[str, bytes]) -> Manifest:
    """A manifest over in-memory item contents (key -> bytes), no sidecars."""
    items = tuple(
        ManifestItem(key, len(data), hashlib.sha256(data).hexdigest())
        for key, data in contents.items()
    )
    return Manifest(dataset, items)


def manifest_of_sequences(dataset: str, sequences: Sequence[PreparedSequence]) -> Manifest:
    """A manifest whose items are the sequences' source keys."""
    return manifest_for(dataset, {s.source_key: s.source_key.encode() for s in sequences})


def write_tiny_store(
    dataset_dir: str | Path,
    sequences: Sequence[PreparedSequence],
    *,
    kind: str = "3d",
    joint_sets: Sequence[str] = ("smpl22",),
    fps: float = 30.0,
    chunk_frames: int = 64,
    split_rule: SplitRule | None = None,
    **kwargs: Any,
) -> StoreInfo:
    """Write ``sequences`` as a store version in ``dataset_dir`` with small chunks."""
    return write_store_version(
        dataset_dir,
        iter(sequences),
        kind=kind,  # type: ignore[arg-type]
        joint_sets=joint_sets,
        fps=fps,
        manifest=manifest_of_sequences("tiny", sequences),
        split_rule=split_rule,
        chunk_frames=chunk_frames,
        dataset="tiny",
        **kwargs,
    )


# -- source trees and archives ------------------------------------------------------------


def make_tree(root: Path, files: Mapping[str, bytes]) -> Path:
    """Write ``files`` (relative posix path -> bytes) under ``root``; returns ``root``."""
    for key, data in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def make_tar(path: Path, files: Mapping[str, bytes], *, compression: str = "") -> Path:
    """A tar archive of ``files`` in the given insertion order; compression ``""|gz|xz|bz2``."""
    mode = f"w:{compression}" if compression else "w"
    with tarfile.open(path, mode) as archive:
        for key, data in files.items():
            info = tarfile.TarInfo(key)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def make_zip(path: Path, files: Mapping[str, bytes], *, compress: bool = True) -> Path:
    """A zip archive of ``files`` in insertion order (deflated unless ``compress`` is False)."""
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for key, data in files.items():
            archive.writestr(key, data)
    return path


def corrupt_zip_member(path: Path, key: str) -> None:
    """Flip bytes inside the stored data of one member (stored, not deflated) in place.

    The central directory stays intact, so the zip opens and lists; reading that member
    fails its CRC check while the other members read fine.
    """
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(key)
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError("corrupt_zip_member needs a stored (uncompressed) member")
        header_offset = info.header_offset
    raw = bytearray(path.read_bytes())
    # Local header: 30 fixed bytes + file name + extra field, then the data.
    name_len = int.from_bytes(raw[header_offset + 26 : header_offset + 28], "little")
    extra_len = int.from_bytes(raw[header_offset + 28 : header_offset + 30], "little")
    data_start = header_offset + 30 + name_len + extra_len
    for i in range(data_start, data_start + min(8, info.file_size)):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def truncate_file(path: Path, fraction: float) -> None:
    """Cut a file to ``fraction`` of its size, in place."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
