"""Finding and loading the clips of a bulk recovery run (DESIGN 4.3).

An *input* is a folder (walked recursively), a glob (``/data/**/*.npz``; a plain file path is
a glob matching itself), or an archive (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.xz``/``.txz``,
``.tar.bz2``, ``.zip``) read in place, never unpacked to disk (:mod:`data_catalog.sources`).

Clips (:func:`discover_clips`), by file name:

- ``*.npz``: the project's 2D keypoints file (``read_tracks_npz``);
- ``*_keypoints.json``: OpenPose per-frame output; every folder holding such files is **one**
  clip made of those files (``read_openpose_folder``);
- any other ``*.json`` that is not a camera file: a COCO-style keypoint results file
  (``read_coco_json``);
- ``*.mp4``, ``*.mov``, ``*.avi``, ``*.mkv`` (any case): a video, kind ``"video"``, read by
  a 2D detector passed to :func:`load_clip` (the ``video`` extra);
- anything else (and hidden files, ``__MACOSX/``) is ignored.

Clip ids are the clip's path relative to the input root without its extension
(``walks/a.npz`` -> ``walks/a``; an OpenPose folder -> its path, or the root folder's own name
when the frames sit at the root). When two clips would share an id (``a.npz`` and ``a.json``),
those clips keep their extension in the id (``a.npz``, ``a.json``). Clips are sorted by id.

Camera files (DESIGN 4.3 JSON, parsed by :meth:`mocap_core.cameras.Camera.from_dict`), in
order of precedence:

1. **per clip**, beside it: ``<stem>.camera.json`` or ``<stem>_camera.json``, where
   ``<stem>`` is the clip file's name without its last extension (``a.npz`` ->
   ``a.camera.json``) or the OpenPose folder's name (``op1/`` -> ``op1.camera.json`` beside
   the folder). Both present is an error for that clip.
2. **per folder**: ``camera.json`` in the clip's folder (for an OpenPose clip, the clip folder
   itself), else in the nearest parent folder up to the input root.
3. **the run's** camera (the CLI's ``--camera CAMERA.json``), passed to :func:`load_clip`.

No camera at all is not an error here: :attr:`ClipInput.camera` is None and the flow records
the clip as failed ("no camera", :meth:`ClipInput.require_camera`).

Hashes: :attr:`ClipInput.input_sha256` (= :func:`clip_fingerprint`) covers the keypoints
bytes and the camera the clip is recovered with, so a resumed run can skip finished clips by
hashing bytes without parsing them. The frame rate of JSON inputs is not in a file: it is
``default_fps``, a run parameter the flow folds into its ``params_hash``.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

import numpy as np

from data_catalog.readers.tracks2d import read_coco_json, read_openpose_folder, read_tracks_npz
from data_catalog.sources import (
    ARCHIVE_SUFFIXES,
    CHUNK_BYTES,
    READ_ERRORS,
    Source,
    SourceError,
    SourceMissing,
    _glob_base,
    iter_members,
    list_items,
)
from data_catalog.store import canonical_json
from data_catalog.types import Tracks2D
from mocap_core.cameras import Camera

ClipKind = Literal["npz", "coco_json", "openpose", "video"]
CameraScope = Literal["clip", "folder", "run"]

VIDEO_SUFFIXES: tuple[str, ...] = (".mp4", ".mov", ".avi", ".mkv")
#: Joint sets a recovery input may be in (DESIGN 4.3).
RECOVERY_JOINT_SETS: tuple[str, ...] = ("coco17", "smpl22")
#: Name of the per-folder camera file.
FOLDER_CAMERA_NAME = "camera.json"
#: Per-clip camera file suffixes appended to the clip's stem.
CLIP_CAMERA_SUFFIXES: tuple[str, ...] = (".camera.json", "_camera.json")
OPENPOSE_SUFFIX = "_keypoints.json"
#: Frame rate of clips whose file does not say (COCO and OpenPose JSON).
DEFAULT_FPS = 30.0
#: Reason recorded for a clip without any camera.
NO_CAMERA_REASON = (
    "no camera: put camera.json in the clip's folder, <clip>.camera.json beside it, "
    "or pass --camera"
)

_HASH_TAG = "mocap2to3.recovery_input/1"

#: A video detector: ``(video bytes, clip name) -> Tracks2D`` (the ``video`` extra).
VideoReader = Callable[[bytes, str], Tracks2D]


class ClipError(ValueError):
    """A clip cannot be recovered. The message names the clip and the problem.

    Attributes:
        clip_id: the clip's id.
        reason: the problem alone (what the flow writes into the ``error`` column).
        location: where the clip is, or None.
    """

    def __init__(self, clip_id: str, reason: str, location: str | None = None) -> None:
        where = f"clip {clip_id!r}" + (f" ({location})" if location else "")
        super().__init__(f"{where}: {reason}")
        self.clip_id = clip_id
        self.reason = reason
        self.location = location

    def __reduce__(self):  # keep the attributes across pickling (Dask workers)
        return (ClipError, (self.clip_id, self.reason, self.location))


@dataclass(frozen=True)
class ClipRef:
    """One clip found in an input, not yet read. Small and picklable.

    Attributes:
        clip_id: stable id (relative path without extension, see module docstring).
        kind: ``"npz"``, ``"coco_json"``, ``"openpose"`` or ``"video"``.
        source: the folder or archive the keys are relative to (a glob's fixed base folder).
        keys: member keys of the clip's bytes: one file, or an OpenPose folder's frame files
            (sorted).
        camera_key: key of the camera file that applies (per clip or per folder), or None.
        camera_scope: ``"clip"`` or ``"folder"`` for ``camera_key``, else None.
        problem: a problem found while discovering (two per-clip camera files); loading the
            clip raises it as a :class:`ClipError`.
    """

    clip_id: str
    kind: ClipKind
    source: Source
    keys: tuple[str, ...]
    camera_key: str | None = None
    camera_scope: Literal["clip", "folder"] | None = None
    problem: str | None = None

    @property
    def location(self) -> str:
        """Where the clip is, for reports: a path, or ``<archive>!/<member>``."""
        key = self.keys[0] if self.kind != "openpose" else posixpath.dirname(self.keys[0])
        return _location(self.source, key)


def _location(source: Source, key: str) -> str:
    if source.kind == "archive":
        return f"{source.path}!/{key}"
    return os.path.join(source.path, key) if key else source.path


@dataclass
class ClipInput:
    """A clip read and checked, ready for recovery.

    Attributes:
        clip_id, kind: as in :class:`ClipRef`.
        source: where the clip was read (``ClipRef.location``).
        source_sha256: sha256 of the keypoints bytes alone (for OpenPose, of the sorted
            ``name:sha256`` lines of its frame files).
        input_sha256: sha256 of the keypoints bytes and the camera (:func:`clip_fingerprint`).
        tracks: the 2D tracks, ``keypoints (T, J, 3) float32`` pixel u, v, confidence;
            K, width and height taken from the camera when there is one.
        camera: the camera JSON (a dict) the clip is recovered with, or None.
        camera_model: ``camera`` parsed, or None.
        camera_source: where the camera came from: a path / ``archive!/member``, ``"run"``,
            or None.
        camera_scope: ``"clip"``, ``"folder"``, ``"run"`` or None.
        fps: the clip's frame rate (the file's for ``.npz``, else the run's default).
    """

    clip_id: str
    kind: ClipKind
    source: str
    source_sha256: str
    input_sha256: str
    tracks: Tracks2D
    camera: dict[str, Any] | None
    camera_model: Camera | None
    camera_source: str | None
    camera_scope: CameraScope | None
    fps: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def has_camera(self) -> bool:
        return self.camera_model is not None

    def require_camera(self) -> Camera:
        """The parsed camera; :class:`ClipError` (:data:`NO_CAMERA_REASON`) when there is none."""
        if self.camera_model is None:
            raise ClipError(self.clip_id, NO_CAMERA_REASON, self.source)
        return self.camera_model


# --------------------------------------------------------------------------------------
# Discovery


def resolve_input(input: str | os.PathLike[str]) -> tuple[Source, str | None]:
    """The source an input names, and the glob pattern when it is one (else None).

    A folder -> folder source; an archive file -> archive source; anything else (a glob, or
    a single clip file) -> a folder source at the glob's fixed base plus the pattern.

    Raises:
        SourceMissing: the folder, archive, file or glob base folder does not exist.
        ValueError: a file that is neither an archive nor matched as a glob.
    """
    text = os.fspath(input)
    path = Path(text)
    if path.is_dir():
        return Source("folder", str(path.absolute())), None
    if path.is_file() and text.lower().endswith(ARCHIVE_SUFFIXES):
        return Source("archive", str(path.absolute())), None
    pattern = str(path.absolute())
    if not any(c in text for c in "*?[") and not path.is_file():
        raise SourceMissing(f"input {text} does not exist")
    base = _glob_base(pattern)
    if not base.is_dir():
        raise SourceMissing(f"input {text}: folder {base} does not exist")
    return Source("folder", str(base)), pattern


def discover_clips(input: str | os.PathLike[str]) -> list[ClipRef]:
    """The clips of an input (module docstring: kinds, ids, cameras), sorted by ``clip_id``.

    Lists the input only: nothing is parsed (an archive's listing of a compressed tar
    decompresses it once).

    Args:
        input: a folder, a glob, a single clip file, or an archive file.

    Raises:
        SourceMissing: the input does not exist.
        SourceError: the archive is corrupt or truncated.
    """
    source, pattern = resolve_input(input)
    if pattern is None:
        files = {ref.key: ref.size for ref in list_items(source)}
        candidates = sorted(files)

        def exists(key: str) -> bool:
            return key in files
    else:
        matched = list_items(Source("glob", pattern))
        candidates = sorted(ref.key for ref in matched)
        root = Path(source.path)

        def exists(key: str) -> bool:
            # A glob's camera files need not match the glob: look for them on disk.
            return (root / key).is_file()

    root_name = _root_name(source)
    found: list[tuple[str, ClipKind, tuple[str, ...], str, str]] = []  # id, kind, keys, dir, stem
    openpose: dict[str, list[str]] = {}
    for key in candidates:
        name = posixpath.basename(key)
        lower = name.lower()
        folder = posixpath.dirname(key)
        if _is_camera_name(lower):
            continue
        if lower.endswith(OPENPOSE_SUFFIX):
            openpose.setdefault(folder, []).append(key)
        elif lower.endswith(".npz"):
            found.append((key, "npz", (key,), folder, _stem(name)))
        elif lower.endswith(".json"):
            found.append((key, "coco_json", (key,), folder, _stem(name)))
        elif lower.endswith(VIDEO_SUFFIXES):
            found.append((key, "video", (key,), folder, _stem(name)))
    for folder, keys in openpose.items():
        clip_path = folder or root_name
        found.append(
            (clip_path, "openpose", tuple(sorted(keys)), posixpath.dirname(folder), clip_path)
        )

    ids = [_strip_extension(path, kind) for path, kind, *_ in found]
    repeated = {i for i in ids if ids.count(i) > 1}
    refs = []
    for (path, kind, keys, folder, stem), clip_id in zip(found, ids, strict=True):
        if clip_id in repeated:
            clip_id = path
        if kind == "openpose":
            stem = posixpath.basename(path)
            start_folder = posixpath.dirname(keys[0])
        else:
            start_folder = folder
        camera_key, scope, problem = _find_camera(folder, stem, start_folder, exists)
        refs.append(ClipRef(clip_id, kind, source, keys, camera_key, scope, problem))
    return sorted(refs, key=lambda r: r.clip_id)


def _root_name(source: Source) -> str:
    name = Path(source.path).name
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_camera_name(lower_name: str) -> bool:
    return lower_name == FOLDER_CAMERA_NAME or lower_name.endswith(CLIP_CAMERA_SUFFIXES)


def _stem(name: str) -> str:
    return PurePosixPath(name).stem


def _strip_extension(path: str, kind: ClipKind) -> str:
    if kind == "openpose":
        return path
    posix = PurePosixPath(path)
    return str(posix.with_suffix("")) if posix.suffix else path


def _find_camera(
    clip_folder: str, stem: str, start_folder: str, exists: Callable[[str], bool]
) -> tuple[str | None, Literal["clip", "folder"] | None, str | None]:
    """(camera key, scope, problem) by the precedence of the module docstring."""
    per_clip = [posixpath.join(clip_folder, stem + s) for s in CLIP_CAMERA_SUFFIXES]
    present = [key for key in per_clip if exists(key)]
    if len(present) > 1:
        return present[0], "clip", f"two per-clip camera files: {present[0]} and {present[1]}"
    if present:
        return present[0], "clip", None
    folder = start_folder
    while True:
        key = posixpath.join(folder, FOLDER_CAMERA_NAME) if folder else FOLDER_CAMERA_NAME
        if exists(key):
            return key, "folder", None
        if not folder:
            return None, None, None
        folder = posixpath.dirname(folder)


def batch_clips(refs: Sequence[ClipRef], batch_size: int) -> list[list[ClipRef]]:
    """Consecutive batches of at most ``batch_size`` clips, in the given order (one task each).

    Raises:
        ValueError: ``batch_size`` < 1.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return [list(refs[i : i + batch_size]) for i in range(0, len(refs), batch_size)]


# --------------------------------------------------------------------------------------
# Reading bytes


def _iter_streams(
    source: Source, keys: Sequence[str]
) -> Iterator[tuple[str, IO[bytes] | None, str | None]]:
    """``(key, stream, error)`` for each key once: a stream to read now, or why there is none.

    Folders are read file by file (no walk of the whole tree); archives in one pass
    (:func:`iter_members`, which stops at the last wanted member of a tar).
    """
    wanted = sorted(set(keys))
    if source.kind == "folder":
        root = Path(source.path)
        for key in wanted:
            try:
                handle = open(root / key, "rb")  # noqa: SIM115 - closed right after use
            except OSError as error:
                yield key, None, f"{key}: cannot read ({error})"
                continue
            with handle:
                yield key, handle, None
        return
    seen: set[str] = set()
    try:
        for key, _size, stream in iter_members(source, wanted):
            seen.add(key)
            yield key, stream, None
    except SourceError as error:
        for key in wanted:
            if key not in seen:
                seen.add(key)
                yield key, None, str(error)
    for key in wanted:
        if key not in seen:
            yield key, None, f"{key}: not found in {source.describe()}"


def _read_all(
    source: Source, keys: Sequence[str], *, keep: set[str] | None = None
) -> tuple[dict[str, bytes], dict[str, str], dict[str, str]]:
    """(bytes of the ``keep`` keys (all when None), sha256 of every key, errors by key)."""
    contents: dict[str, bytes] = {}
    digests: dict[str, str] = {}
    errors: dict[str, str] = {}
    for key, stream, error in _iter_streams(source, keys):
        if stream is None:
            errors[key] = error or f"{key}: unreadable"
            continue
        digest = hashlib.sha256()
        chunks: list[bytes] = []
        hold = keep is None or key in keep
        try:
            while chunk := stream.read(CHUNK_BYTES):
                digest.update(chunk)
                if hold:
                    chunks.append(chunk)
        except READ_ERRORS as read_error:
            errors[key] = f"{key}: {type(read_error).__name__}: {read_error}"
            continue
        digests[key] = digest.hexdigest()
        if hold:
            contents[key] = b"".join(chunks)
    return contents, digests, errors


def _keypoints_digest(ref: ClipRef, digests: Mapping[str, str]) -> str:
    if ref.kind != "openpose":
        return digests[ref.keys[0]]
    folder = posixpath.dirname(ref.keys[0])
    lines = [f"{posixpath.relpath(k, folder or '.')}:{digests[k]}" for k in ref.keys]
    return hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()


def _camera_digest(camera: Mapping[str, Any] | None, raw: bytes | None) -> str:
    """Hash of the camera: of its canonical JSON, or of raw bytes that are not a JSON object."""
    if camera is not None:
        return hashlib.sha256(canonical_json(camera)).hexdigest()
    if raw is not None:
        return hashlib.sha256(raw).hexdigest()
    return "none"


def input_digest(keypoints_sha256: str, camera_sha256: str) -> str:
    """``input_sha256`` from the keypoints digest and the camera digest (``"none"`` if absent)."""
    text = f"{_HASH_TAG}\nkeypoints:{keypoints_sha256}\ncamera:{camera_sha256}\n"
    return hashlib.sha256(text.encode()).hexdigest()


def _parse_camera_json(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _group_by_source(refs: Sequence[ClipRef]) -> dict[Source, list[ClipRef]]:
    groups: dict[Source, list[ClipRef]] = {}
    for ref in refs:
        groups.setdefault(ref.source, []).append(ref)
    return groups


def clip_fingerprints(
    refs: Sequence[ClipRef], camera_default: Mapping[str, Any] | None = None
) -> dict[str, str | ClipError]:
    """``clip_id -> input_sha256`` by hashing bytes, without parsing keypoints.

    One pass per source (one sequential read of a tar for all the refs); bytes are hashed
    in chunks, never held. Equal to :attr:`ClipInput.input_sha256` of the loaded clip.

    Args:
        refs: clips from :func:`discover_clips`.
        camera_default: the run's camera JSON, for clips without a camera file.

    Returns:
        The fingerprint, or a :class:`ClipError` for a clip whose bytes cannot be read.
    """
    out: dict[str, str | ClipError] = {}
    for source, group in _group_by_source(refs).items():
        cameras = {r.camera_key for r in group if r.camera_key}
        keys = [k for r in group for k in r.keys] + sorted(cameras)
        contents, digests, errors = _read_all(source, keys, keep=cameras)
        for ref in group:
            failed = [errors[k] for k in ref.keys if k in errors]
            if failed:
                out[ref.clip_id] = ClipError(ref.clip_id, "; ".join(failed), ref.location)
                continue
            camera, raw = _camera_for(ref, contents, camera_default)
            out[ref.clip_id] = input_digest(
                _keypoints_digest(ref, digests), _camera_digest(camera, raw)
            )
    return out


def clip_fingerprint(ref: ClipRef, camera_default: Mapping[str, Any] | None = None) -> str:
    """:func:`clip_fingerprints` for one clip.

    Raises:
        ClipError: the clip's bytes cannot be read.
    """
    result = clip_fingerprints([ref], camera_default)[ref.clip_id]
    if isinstance(result, ClipError):
        raise result
    return result


def _camera_for(
    ref: ClipRef, contents: Mapping[str, bytes], camera_default: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, bytes | None]:
    """(camera JSON dict or None, raw bytes of a camera file that is not a JSON object)."""
    if ref.camera_key is not None:
        raw = contents.get(ref.camera_key)
        if raw is None:
            return None, b""
        parsed = _parse_camera_json(raw)
        return parsed, None if parsed is not None else raw
    if camera_default is not None:
        return dict(camera_default), None
    return None, None


# --------------------------------------------------------------------------------------
# Loading


def load_clips(
    refs: Sequence[ClipRef],
    camera_default: Mapping[str, Any] | None = None,
    *,
    default_fps: float = DEFAULT_FPS,
    video_reader: VideoReader | None = None,
) -> list[ClipInput | ClipError]:
    """Load a batch of clips, reading each source once; one entry per ref, in order.

    A clip that cannot be loaded gives its :class:`ClipError` in its place (the batch goes
    on); see :func:`load_clip` for what is checked.
    """
    results: dict[str, ClipInput | ClipError] = {}
    for source, group in _group_by_source(refs).items():
        cameras = {r.camera_key for r in group if r.camera_key}
        keys = [k for r in group for k in r.keys] + sorted(cameras)
        contents, digests, errors = _read_all(source, keys)
        for ref in group:
            try:
                results[ref.clip_id] = _load_one(
                    ref, contents, digests, errors, camera_default, default_fps, video_reader
                )
            except ClipError as error:
                results[ref.clip_id] = error
    return [results[ref.clip_id] for ref in refs]


def load_clip(
    ref: ClipRef,
    camera_default: Mapping[str, Any] | None = None,
    *,
    default_fps: float = DEFAULT_FPS,
    video_reader: VideoReader | None = None,
) -> ClipInput:
    """Read, parse and check one clip with its camera.

    Checks: the bytes can be read; the keypoints parse (the readers reject NaN/inf, wrong
    joint counts, empty clips); the joint set is one of :data:`RECOVERY_JOINT_SETS`; some
    keypoint has confidence > 0; a camera file parses as a DESIGN 4.3 camera. A missing
    camera is only flagged (``camera`` None).

    Args:
        ref: the clip.
        camera_default: the run's camera JSON (lowest precedence), or None.
        default_fps: frame rate of JSON clips (``.npz`` files carry theirs).
        video_reader: the 2D detector for ``"video"`` clips.

    Raises:
        ClipError: naming the clip and the problem.
    """
    result = load_clips([ref], camera_default, default_fps=default_fps, video_reader=video_reader)
    if isinstance(result[0], ClipError):
        raise result[0]
    return result[0]


def _load_one(
    ref: ClipRef,
    contents: Mapping[str, bytes],
    digests: Mapping[str, str],
    errors: Mapping[str, str],
    camera_default: Mapping[str, Any] | None,
    default_fps: float,
    video_reader: VideoReader | None,
) -> ClipInput:
    def fail(reason: str) -> ClipError:
        return ClipError(ref.clip_id, reason, ref.location)

    if ref.problem:
        raise fail(ref.problem)
    unreadable = [errors[k] for k in (*ref.keys, ref.camera_key) if k in errors]
    if unreadable:
        raise fail("cannot read: " + "; ".join(unreadable))

    camera, raw = _camera_for(ref, contents, camera_default)
    camera_model = None
    camera_source = None
    camera_scope: CameraScope | None = None
    if ref.camera_key is not None:
        camera_source = _location(ref.source, ref.camera_key)
        camera_scope = ref.camera_scope
        if camera is None:
            raise fail(f"camera file {ref.camera_key} is not a JSON object")
    elif camera is not None:
        camera_source, camera_scope = "run", "run"
    if camera is not None:
        try:
            camera_model = Camera.from_dict(camera)
        except (TypeError, ValueError) as error:
            raise fail(f"bad camera ({camera_source}): {error}") from error

    intrinsics: dict[str, Any] = {}
    if camera_model is not None:
        intrinsics = {
            "width": camera_model.width,
            "height": camera_model.height,
            "K": camera_model.K,
        }
    tracks = _read_tracks(ref, contents, default_fps, intrinsics, video_reader, fail)
    if tracks.joint_set not in RECOVERY_JOINT_SETS:
        raise fail(
            f"keypoints are in joint set {tracks.joint_set!r}; recovery takes "
            f"{' or '.join(RECOVERY_JOINT_SETS)}"
        )
    if not np.any(tracks.keypoints[..., 2] > 0):
        raise fail("no keypoint has a confidence above 0")
    keypoints_sha = _keypoints_digest(ref, digests)
    return ClipInput(
        clip_id=ref.clip_id,
        kind=ref.kind,
        source=ref.location,
        source_sha256=keypoints_sha,
        input_sha256=input_digest(keypoints_sha, _camera_digest(camera, raw)),
        tracks=tracks,
        camera=camera,
        camera_model=camera_model,
        camera_source=camera_source,
        camera_scope=camera_scope,
        fps=float(tracks.fps),
        meta={"num_tracks": int(np.unique(tracks.track_id).size)},
    )


def _read_tracks(
    ref: ClipRef,
    contents: Mapping[str, bytes],
    default_fps: float,
    intrinsics: Mapping[str, Any],
    video_reader: VideoReader | None,
    fail: Callable[[str], ClipError],
) -> Tracks2D:
    name = ref.clip_id
    try:
        if ref.kind == "npz":
            return read_tracks_npz(contents[ref.keys[0]], name=name, fps=default_fps, **intrinsics)
        if ref.kind == "coco_json":
            return read_coco_json(contents[ref.keys[0]], name=name, fps=default_fps, **intrinsics)
        if ref.kind == "openpose":
            files = {posixpath.basename(k): contents[k] for k in ref.keys}
            return read_openpose_folder(files, name=name, fps=default_fps, **intrinsics)
        if video_reader is None:
            raise fail(
                "video clips need the 2D detector of the video extra "
                "(pip install 'mocap2to3[video]')"
            )
        return video_reader(contents[ref.keys[0]], name)
    except ClipError:
        raise
    except ValueError as error:  # ReaderError and the detector's bad-input errors
        raise fail(str(error).removeprefix(f"{name}: ")) from error
