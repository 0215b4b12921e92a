"""Readers for 2D keypoint tracks: COCO-style results JSON, OpenPose JSON folders, ``.npz``.

Each returns a :class:`data_catalog.types.Tracks2D`: one row per (track, frame), rows sorted
by track id then frame, keypoints ``(T, J, 3) float32`` pixel u, v and confidence in [0, 1]
(0 = missing; u, v of a missing keypoint are set to 0).

Confidence conventions:

- **COCO results**: the third value of each keypoint triple is either a detector score or,
  in ground-truth-style files, COCO's visibility flag ``v`` (0 not labelled, 1 labelled but
  occluded, 2 labelled and visible). ``confidence_mode="auto"`` treats the file as flags
  when every third value is exactly 0, 1 or 2 and at least one is 2; flags map to
  ``visibility_confidence`` (default 0 -> 0.0, 1 -> 0.5, 2 -> 1.0: an occluded but labelled
  point is a guess, so it counts half). Scores are clipped to [0, 1] (some detectors report
  heatmap maxima slightly above 1). The per-detection ``score`` is not folded into the
  keypoint confidences; it orders detections (see track ids) and can filter them
  (``min_detection_score``).
- **OpenPose**: confidences are already in [0, 1] and kept (clipped); (0, 0, 0) is missing.
- **npz** (DESIGN 4.3, the project's own format): confidences must already lie in [0, 1].

Track ids: an explicit ``track_id`` (COCO/PoseTrack) or OpenPose ``person_id`` (when every
person in the frame has one >= 0) is kept. Otherwise detections are numbered per frame in
order (COCO: by descending detection score; OpenPose: the file's order), which is only an
identity when there is one person; a tracker must link them otherwise.

OpenPose to COCO-17 (index tables from OpenPose's documented output order):

- BODY_25: 0 Nose, 1 Neck, 2 RShoulder, 3 RElbow, 4 RWrist, 5 LShoulder, 6 LElbow, 7 LWrist,
  8 MidHip, 9 RHip, 10 RKnee, 11 RAnkle, 12 LHip, 13 LKnee, 14 LAnkle, 15 REye, 16 LEye,
  17 REar, 18 LEar, 19-24 feet (LBigToe, LSmallToe, LHeel, RBigToe, RSmallToe, RHeel).
- COCO-18: 0 Nose, 1 Neck, 2 RShoulder, 3 RElbow, 4 RWrist, 5 LShoulder, 6 LElbow, 7 LWrist,
  8 RHip, 9 RKnee, 10 RAnkle, 11 LHip, 12 LKnee, 13 LAnkle, 14 REye, 15 LEye, 16 REar, 17 LEar.
- The neck, mid-hip and feet have no COCO-17 counterpart and are dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from data_catalog.readers.arrays import (
    load_npz,
    numeric_array,
    require_keys,
    scalar_float,
    scalar_string,
    source_bytes,
)
from data_catalog.types import ReaderError, Tracks2D
from mocap_core.joint_sets import COCO17, JOINT_SETS

# Source index of each COCO-17 keypoint (COCO order: nose, l/r eye, l/r ear, l/r shoulder,
# l/r elbow, l/r wrist, l/r hip, l/r knee, l/r ankle). Note OpenPose lists right before left.
BODY25_TO_COCO17: tuple[int, ...] = (0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11)
COCO18_TO_COCO17: tuple[int, ...] = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)
_OPENPOSE_LAYOUTS = {"body25": (25, BODY25_TO_COCO17), "coco18": (18, COCO18_TO_COCO17)}

_DIGITS = re.compile(r"\d+")


def frame_number_from_name(file_name: str) -> int | None:
    """Frame number in a file name: its last run of digits, or None when it has none.

    ``"clip3_000000000012_keypoints.json"`` -> 12; ``"000123.jpg"`` -> 123.
    """
    runs = _DIGITS.findall(Path(file_name).name)
    return int(runs[-1]) if runs else None


def _intrinsics(
    K: Any, width: Any, height: Any, *, name: str
) -> tuple[np.ndarray | None, int | None, int | None]:
    K_out = None
    if K is not None:
        K_out = np.asarray(K, dtype=np.float64)
        if K_out.shape != (3, 3) or not np.all(np.isfinite(K_out)):
            raise ReaderError(f"{name}: K must be a finite 3x3 matrix, got shape {K_out.shape}")
    sizes = []
    for label, value in (("width", width), ("height", height)):
        if value is None:
            sizes.append(None)
            continue
        number = float(np.asarray(value).reshape(()))
        if not np.isfinite(number) or number <= 0 or number != int(number):
            raise ReaderError(
                f"{name}: {label} must be a positive whole number of pixels, got {value}"
            )
        sizes.append(int(number))
    return K_out, sizes[0], sizes[1]


def _check_fps(fps: float, *, name: str) -> float:
    if fps is None or not np.isfinite(fps) or fps <= 0:
        raise ReaderError(f"{name}: fps must be a positive number, got {fps!r}")
    return float(fps)


def _assemble(
    rows: list[tuple[int, int, np.ndarray]],
    *,
    name: str,
    joint_set: str,
    fps: float,
    K: np.ndarray | None,
    width: int | None,
    height: int | None,
    meta: dict[str, Any],
) -> Tracks2D:
    """Rows (track id, frame, (J, 3) keypoints) -> Tracks2D sorted by (track, frame)."""
    if not rows:
        raise ReaderError(f"{name}: empty sequence (no detections in any frame)")
    track = np.array([r[0] for r in rows], dtype=np.int64)
    frame = np.array([r[1] for r in rows], dtype=np.int64)
    keypoints = np.stack([r[2] for r in rows]).astype(np.float64)
    order = np.lexsort((frame, track))
    track, frame, keypoints = track[order], frame[order], keypoints[order]
    duplicate = (np.diff(track) == 0) & (np.diff(frame) == 0)
    if duplicate.any():
        i = int(np.flatnonzero(duplicate)[0])
        raise ReaderError(f"{name}: track {track[i]} has two detections in frame {frame[i]}")
    missing = keypoints[..., 2] <= 0
    keypoints[missing] = 0.0
    return Tracks2D(
        keypoints=keypoints.astype(np.float32),
        frame_index=frame.astype(np.int32),
        track_id=track.astype(np.int32),
        joint_set=joint_set,
        fps=fps,
        width=width,
        height=height,
        K=K,
        meta=meta,
    )


def _finite_or_raise(values: np.ndarray, *, name: str, where: str) -> None:
    if not np.all(np.isfinite(values)):
        raise ReaderError(f"{name}: NaN or infinite keypoint values in {where}")


def read_coco_json(
    data: bytes | str | Path,
    *,
    name: str,
    fps: float,
    width: int | None = None,
    height: int | None = None,
    K: np.ndarray | None = None,
    joint_set: str = "coco17",
    confidence_mode: Literal["auto", "score", "visibility"] = "auto",
    visibility_confidence: tuple[float, float, float] = (0.0, 0.5, 1.0),
    min_detection_score: float = 0.0,
) -> Tracks2D:
    """Read a COCO-style keypoint results JSON covering one clip.

    The JSON is a list of detections (or ``{"annotations": [...]}``), each with
    ``keypoints`` (51 numbers: u, v, c per COCO-17 keypoint), a frame given by ``frame``,
    ``frame_id`` or ``image_id`` (an int, or a file name whose last digits are the frame),
    optional ``score``, ``track_id`` and ``category_id`` (only 1 = person is kept).

    Args:
        data: JSON bytes or a file path.
        name: the item's name for error messages.
        fps: frame rate of the clip.
        width, height, K: image size and ``(3, 3)`` intrinsics when known (stored as given).
        joint_set: must be ``"coco17"`` (the only layout of COCO keypoint results).
        confidence_mode: how to read the third value per keypoint (module docstring).
        visibility_confidence: confidences for COCO flags v = 0, 1, 2.
        min_detection_score: detections whose ``score`` is below are dropped.

    Returns:
        ``Tracks2D`` in ``coco17`` layout; ``meta`` records the confidence mode used and how
        many detections were dropped.

    Raises:
        ReaderError: malformed JSON, wrong keypoint counts, NaN/inf, missing frame numbers,
            no detections, or two detections of one track in one frame.
    """
    fps = _check_fps(fps, name=name)
    if joint_set != "coco17":
        raise ReaderError(f"{name}: COCO keypoint results are coco17, not {joint_set!r}")
    K_out, width, height = _intrinsics(K, width, height, name=name)
    raw = source_bytes(data, name=name)
    try:
        # parse_constant turns the non-standard NaN/Infinity literals into floats we can flag.
        document = json.loads(raw.decode("utf-8"), parse_constant=float)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReaderError(f"{name}: malformed or truncated JSON ({error})") from error
    if isinstance(document, dict) and isinstance(document.get("annotations"), list):
        detections = document["annotations"]
    elif isinstance(document, list):
        detections = document
    else:
        raise ReaderError(f"{name}: expected a list of detections or {{'annotations': [...]}}")

    parsed: list[tuple[int, int | None, float, np.ndarray]] = []  # frame, track, score, kps
    dropped = {"not_person": 0, "low_score": 0}
    for i, det in enumerate(detections):
        where = f"detection {i}"
        if not isinstance(det, dict):
            raise ReaderError(f"{name}: {where} is not an object")
        if det.get("category_id", 1) != 1:
            dropped["not_person"] += 1
            continue
        if "keypoints" not in det:
            raise ReaderError(f"{name}: {where} has no 'keypoints'; keys {sorted(det)}")
        try:
            kps = np.asarray(det["keypoints"], dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ReaderError(f"{name}: {where}: keypoints are not numbers") from error
        if kps.shape != (3 * COCO17.num_joints,):
            raise ReaderError(
                f"{name}: {where}: expected {3 * COCO17.num_joints} keypoint numbers (COCO-17), "
                f"got shape {kps.shape}"
            )
        _finite_or_raise(kps, name=name, where=where)
        frame = _coco_frame(det, name=name, where=where)
        score = det.get("score", 1.0)
        if not isinstance(score, int | float) or not np.isfinite(score):
            raise ReaderError(f"{name}: {where}: score must be a finite number, got {score!r}")
        if score < min_detection_score:
            dropped["low_score"] += 1
            continue
        track = det.get("track_id")
        if track is not None and (not isinstance(track, int) or isinstance(track, bool)):
            raise ReaderError(f"{name}: {where}: track_id must be an integer, got {track!r}")
        parsed.append((frame, track, float(score), kps.reshape(COCO17.num_joints, 3)))

    if not parsed:
        raise ReaderError(f"{name}: empty sequence (no person detections)")
    third = np.stack([p[3][:, 2] for p in parsed])
    mode = confidence_mode
    if mode == "auto":
        flags = np.isin(third, (0.0, 1.0, 2.0)).all() and (third == 2.0).any()
        mode = "visibility" if flags else "score"
    if mode == "visibility":
        if not np.isin(third, (0.0, 1.0, 2.0)).all():
            raise ReaderError(f"{name}: visibility flags must be 0, 1 or 2")
        lookup = np.asarray(visibility_confidence, dtype=np.float64)
        confidences = lookup[third.astype(np.int64)]
    elif mode == "score":
        confidences = np.clip(third, 0.0, 1.0)
    else:
        raise ReaderError(f"{name}: unknown confidence_mode {confidence_mode!r}")

    with_ids = [p[1] is not None for p in parsed]
    if any(with_ids) and not all(with_ids):
        raise ReaderError(f"{name}: some detections have a track_id and others do not")
    rows: list[tuple[int, int, np.ndarray]] = []
    if all(with_ids):
        for (frame, track, _, kps), conf in zip(parsed, confidences, strict=True):
            rows.append((int(track), frame, np.column_stack([kps[:, :2], conf])))
        track_source = "track_id"
    else:
        # Number the detections of each frame by descending score (stable for ties).
        order = sorted(range(len(parsed)), key=lambda k: (parsed[k][0], -parsed[k][2], k))
        rank: dict[int, int] = {}
        for k in order:
            frame = parsed[k][0]
            track = rank.get(frame, 0)
            rank[frame] = track + 1
            kps = parsed[k][3]
            rows.append((track, frame, np.column_stack([kps[:, :2], confidences[k]])))
        track_source = "rank_by_score_per_frame"
    return _assemble(
        rows,
        name=name,
        joint_set="coco17",
        fps=fps,
        K=K_out,
        width=width,
        height=height,
        meta={
            "source_format": "coco_json",
            "confidence_mode": mode,
            "track_id_source": track_source,
            "dropped_detections": dropped,
        },
    )


def _coco_frame(det: dict[str, Any], *, name: str, where: str) -> int:
    for key in ("frame", "frame_id", "image_id"):
        if key not in det:
            continue
        value = det[key]
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 0:
                raise ReaderError(f"{name}: {where}: negative {key} {value}")
            return value
        if isinstance(value, str):
            number = frame_number_from_name(value)
            if number is None:
                raise ReaderError(f"{name}: {where}: {key} {value!r} holds no frame number")
            return number
        raise ReaderError(f"{name}: {where}: {key} must be an int or a file name, got {value!r}")
    raise ReaderError(f"{name}: {where} has no frame, frame_id or image_id")


def _openpose_files(files: Mapping[str, bytes] | str | Path, *, name: str) -> dict[str, bytes]:
    if isinstance(files, Mapping):
        return {k: v for k, v in files.items() if k.lower().endswith(".json")}
    folder = Path(files)
    if not folder.is_dir():
        raise ReaderError(f"{name}: {folder} is not a folder")
    out = {}
    for path in sorted(folder.glob("*.json")):
        try:
            out[path.name] = path.read_bytes()
        except OSError as error:
            raise ReaderError(f"{name}: cannot read {path.name} ({error})") from error
    return out


def read_openpose_folder(
    files: Mapping[str, bytes] | str | Path,
    *,
    name: str,
    fps: float,
    width: int | None = None,
    height: int | None = None,
    K: np.ndarray | None = None,
    layout: Literal["auto", "body25", "coco18"] = "auto",
) -> Tracks2D:
    """Read OpenPose ``--write_json`` output: one JSON file per frame.

    Args:
        files: a folder path, or a mapping ``{member name: bytes}`` (archive members read
            without unpacking). Only ``*.json`` entries are read; the frame number is the last
            run of digits in each file name.
        name: the item's name (folder or archive) for error messages.
        fps: frame rate of the clip.
        width, height, K: image size and ``(3, 3)`` intrinsics when known.
        layout: ``"body25"`` (75 numbers per person), ``"coco18"`` (54), or ``"auto"`` from
            the length.

    Returns:
        ``Tracks2D`` in ``coco17`` layout (index tables in the module docstring).

    Raises:
        ReaderError: no JSON files, malformed JSON (naming the file), a file name without a
            frame number, two files for one frame, unknown layout, NaN/inf, no people at all.
    """
    fps = _check_fps(fps, name=name)
    K_out, width, height = _intrinsics(K, width, height, name=name)
    members = _openpose_files(files, name=name)
    if not members:
        raise ReaderError(f"{name}: no OpenPose .json files")
    frames_seen: dict[int, str] = {}
    rows: list[tuple[int, int, np.ndarray]] = []
    layouts_seen: set[str] = set()
    track_sources: set[str] = set()
    for member, payload in sorted(members.items()):
        item = f"{name}/{member}" if not member.startswith(name) else member
        frame = frame_number_from_name(member)
        if frame is None:
            raise ReaderError(f"{item}: file name holds no frame number")
        if frame in frames_seen:
            raise ReaderError(f"{item}: frame {frame} already read from {frames_seen[frame]}")
        frames_seen[frame] = member
        try:
            document = json.loads(payload.decode("utf-8"), parse_constant=float)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ReaderError(f"{item}: malformed or truncated JSON ({error})") from error
        if not isinstance(document, dict) or not isinstance(document.get("people"), list):
            raise ReaderError(f"{item}: not an OpenPose frame (no 'people' list)")
        people = []
        for p, person in enumerate(document["people"]):
            if not isinstance(person, dict) or "pose_keypoints_2d" not in person:
                raise ReaderError(f"{item}: person {p} has no 'pose_keypoints_2d'")
            try:
                values = np.asarray(person["pose_keypoints_2d"], dtype=np.float64)
            except (TypeError, ValueError) as error:
                raise ReaderError(f"{item}: person {p}: keypoints are not numbers") from error
            if values.size == 0:
                continue  # OpenPose writes an empty list when the body model was off
            person_layout = _openpose_layout(values.size, layout, item=item, person=p)
            layouts_seen.add(person_layout)
            _finite_or_raise(values, name=item, where=f"person {p}")
            source = values.reshape(-1, 3)[list(_OPENPOSE_LAYOUTS[person_layout][1])]
            source[:, 2] = np.clip(source[:, 2], 0.0, 1.0)
            people.append((_person_id(person.get("person_id")), source))
        ids = [pid for pid, _ in people]
        if people and all(pid is not None for pid in ids):
            if len(set(ids)) != len(ids):
                raise ReaderError(f"{item}: repeated person_id in one frame: {ids}")
            track_sources.add("person_id")
            rows += [(int(pid), frame, kps) for pid, kps in people]
        else:
            if people:
                track_sources.add("order_in_frame")
            rows += [(k, frame, kps) for k, (_, kps) in enumerate(people)]
    if len(layouts_seen) > 1:
        raise ReaderError(f"{name}: frames mix OpenPose layouts {sorted(layouts_seen)}")
    return _assemble(
        rows,
        name=name,
        joint_set="coco17",
        fps=fps,
        K=K_out,
        width=width,
        height=height,
        meta={
            "source_format": "openpose_json",
            "openpose_layout": next(iter(layouts_seen), None),
            "track_id_source": sorted(track_sources),
            "num_files": len(members),
        },
    )


def _openpose_layout(size: int, layout: str, *, item: str, person: int) -> str:
    if layout == "auto":
        for candidate, (num_points, _) in _OPENPOSE_LAYOUTS.items():
            if size == 3 * num_points:
                return candidate
        raise ReaderError(
            f"{item}: person {person}: {size} keypoint numbers match neither BODY_25 (75) "
            "nor COCO-18 (54)"
        )
    if layout not in _OPENPOSE_LAYOUTS:
        raise ReaderError(f"{item}: unknown OpenPose layout {layout!r}; use body25 or coco18")
    expected = 3 * _OPENPOSE_LAYOUTS[layout][0]
    if size != expected:
        raise ReaderError(f"{item}: person {person}: {size} numbers, {layout} needs {expected}")
    return layout


def _person_id(value: Any) -> int | None:
    """OpenPose's person_id (a list like [-1], or an int); None when untracked (-1)."""
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return int(value)
    return None


def read_tracks_npz(
    data: bytes | str | Path,
    *,
    name: str,
    fps: float | None = None,
    width: int | None = None,
    height: int | None = None,
    K: np.ndarray | None = None,
    allow_nan: bool = False,
) -> Tracks2D:
    """Read the project's 2D keypoints ``.npz`` (DESIGN 4.3).

    Keys: ``keypoints (T, J, 3)`` pixel u, v and confidence in [0, 1] (0 = missing);
    ``joint_set`` (a registered set, normally "coco17" or "smpl22"; ``J`` must match);
    ``fps``; optional ``track_id (T,)`` int, ``frame (T,)`` int, ``K (3, 3)``, ``width``,
    ``height``. Without ``frame``, each track's rows are taken as consecutive frames from 0
    (with one track: row i is frame i).

    Args:
        data: ``.npz`` bytes or a file path.
        name: the item's name for error messages.
        fps: used when the file has no ``fps``.
        width, height, K: override the file's values when given (camera file known better).
        allow_nan: treat NaN u/v/confidence as a missing keypoint instead of rejecting the
            file; infinities are always rejected.

    Returns:
        ``Tracks2D`` in the file's joint set.

    Raises:
        ReaderError: naming ``name`` and the problem.
    """
    arrays = load_npz(data, name=name)
    require_keys(arrays, ("keypoints", "joint_set"), name=name, what="2D keypoints .npz")
    set_name = scalar_string(arrays["joint_set"], key="joint_set", name=name)
    if set_name not in JOINT_SETS:
        raise ReaderError(f"{name}: unknown joint set {set_name!r}; known: {sorted(JOINT_SETS)}")
    if "fps" in arrays:
        fps = scalar_float(arrays["fps"], key="fps", name=name, positive=True)
    elif fps is None:
        raise ReaderError(f"{name}: no 'fps' in the file and none given as an option")
    fps = _check_fps(fps, name=name)
    keypoints = numeric_array(
        arrays["keypoints"], key="keypoints", name=name, shape=(None, None, 3)
    )
    num_rows, num_joints = keypoints.shape[:2]
    if num_rows == 0:
        raise ReaderError(f"{name}: empty sequence (0 rows)")
    if num_joints != JOINT_SETS[set_name].num_joints:
        raise ReaderError(
            f"{name}: keypoints have {num_joints} joints but {set_name!r} has "
            f"{JOINT_SETS[set_name].num_joints}"
        )
    if np.isinf(keypoints).any():
        raise ReaderError(f"{name}: keypoints contain infinite values")
    nan = np.isnan(keypoints).any(axis=-1)
    if nan.any():
        if not allow_nan:
            raise ReaderError(
                f"{name}: keypoints contain NaN in {int(nan.any(axis=1).sum())} row(s); "
                "pass allow_nan=True to read them as missing"
            )
        keypoints[nan] = 0.0
    conf = keypoints[..., 2]
    if conf.min() < 0.0 or conf.max() > 1.0:
        raise ReaderError(
            f"{name}: confidences must lie in [0, 1], found [{conf.min():.3g}, {conf.max():.3g}]"
        )

    track = _int_vector(arrays, "track_id", num_rows, name=name)
    if track is None:
        track = np.zeros(num_rows, dtype=np.int64)
    frame = _int_vector(arrays, "frame", num_rows, name=name)
    frame_source = "frame"
    if frame is None:
        frame = np.zeros(num_rows, dtype=np.int64)
        for tid in np.unique(track):
            rows = np.flatnonzero(track == tid)
            frame[rows] = np.arange(len(rows))
        frame_source = "row_order_within_track"
    if frame.min() < 0:
        raise ReaderError(f"{name}: negative frame numbers")

    file_K = arrays.get("K")
    file_width = arrays.get("width")
    file_height = arrays.get("height")
    K_out, width_out, height_out = _intrinsics(
        K if K is not None else file_K,
        width if width is not None else file_width,
        height if height is not None else file_height,
        name=name,
    )
    rows = [
        (int(t), int(f), keypoints[i]) for i, (t, f) in enumerate(zip(track, frame, strict=True))
    ]
    return _assemble(
        rows,
        name=name,
        joint_set=set_name,
        fps=fps,
        K=K_out,
        width=width_out,
        height=height_out,
        meta={"source_format": "tracks_npz", "frame_source": frame_source},
    )


def _int_vector(
    arrays: dict[str, np.ndarray], key: str, length: int, *, name: str
) -> np.ndarray | None:
    if key not in arrays:
        return None
    values = np.asarray(arrays[key])
    if values.shape != (length,):
        raise ReaderError(f"{name}: {key!r} must have shape ({length},), got {values.shape}")
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if (
        values.dtype.kind == "f"
        and np.all(np.isfinite(values))
        and np.all(values == np.round(values))
    ):
        return values.astype(np.int64)
    raise ReaderError(f"{name}: {key!r} must hold integers, got {values.dtype}")
