"""Videos to 2D keypoint tracks through MediaPipe BlazePose (the ``video`` extra).

``pip install 'mocap2to3[video]'`` brings ``mediapipe==0.10.14`` and OpenCV. Frames are
decoded with OpenCV and passed to MediaPipe's *legacy* Pose solution
(``mediapipe.solutions.pose.Pose``), whose detector and landmark models ship inside the
mediapipe wheel, so reading runs offline. (The Tasks API ``PoseLandmarker`` needs a ``.task``
model file that the wheel does not carry.) The wheel ships only the ``full`` landmark model,
``model_complexity=1``; 0 (``lite``) and 2 (``heavy``) are fetched from the network by
MediaPipe on first use, so this reader refuses them unless the model file has been put in the
mediapipe package beforehand (it never downloads).

Output conventions:

- :func:`read_video` returns a :class:`~data_catalog.types.Tracks2D` in ``coco17`` (or
  ``blazepose33``): one row per decoded frame, ``frame_index`` 0..T-1, one track (id 0).
- Pixels: ``u = x * width``, ``v = y * height`` from MediaPipe's normalised image
  coordinates, which is the project's continuous pixel convention (pixel (row i, column j)
  centred at ``(j + 0.5, i + 0.5)``, see :mod:`mocap_core.cameras`). Landmarks the model
  places outside the image keep their extrapolated position and their (usually low)
  visibility.
- Confidence: BlazePose's per-landmark ``visibility`` (already a probability), clipped to
  [0, 1]. The legacy solution clears the landmarks' ``presence`` field
  (``Pose.process`` calls ``ClearField('presence')``), so visibility is the only score there
  is. Frames without a detection have confidence 0 everywhere and ``u, v = 0``.
- One person: the legacy solution detects the most prominent person and then tracks that
  one (``static_image_mode=False``); ``max_people`` other than 1 is refused rather than
  silently ignored. Its landmark smoothing assumes 30 fps timestamps whatever the clip's rate
  (MediaPipe's ``SolutionBase`` advances a simulated clock by 33 333 us a frame).
- ``width``/``height`` come from the decoded frames (after OpenCV applies the container's
  rotation), ``fps`` from the container unless given. ``K`` is unknown (None).

:func:`read_video_blazepose` keeps the raw 33 landmarks (with BlazePose's relative depth
``z``), so that the motion archive can keep the detector's own 2D tracks beside the motion.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from data_catalog.types import ReaderError, Tracks2D
from mocap_core.joint_sets import BLAZEPOSE33, BLAZEPOSE33_TO_COCO17

#: The mediapipe release this reader is written and tested against (the ``video`` extra).
MEDIAPIPE_VERSION = "0.10.14"
#: Name of the detector, recorded in :attr:`Tracks2D.meta` (``"detector"``).
DETECTOR_NAME = "mediapipe-blazepose"
#: Joint sets :func:`read_video` can return.
VIDEO_JOINT_SETS: tuple[str, ...] = ("coco17", "blazepose33")
#: Landmark model file of each ``model_complexity``, under ``mediapipe/modules/pose_landmark``.
LANDMARK_MODEL_FILES: dict[int, str] = {
    0: "pose_landmark_lite.tflite",
    1: "pose_landmark_full.tflite",
    2: "pose_landmark_heavy.tflite",
}

_INSTALL_HINT = "reading videos needs the video extra: pip install 'mocap2to3[video]'"
_VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class BlazePoseVideo:
    """BlazePose's raw output for every decoded frame of one video.

    Attributes:
        landmarks: ``(T, 33, 4) float32`` per BlazePose landmark (``blazepose33`` order):
            ``x, y`` normalised image coordinates (0..1 across the width/height; outside
            for landmarks beyond the image), ``z`` BlazePose's relative depth (same scale
            as ``x``, origin at the hips' mid-point, smaller is nearer the camera), and
            ``visibility`` in [0, 1]. All zeros in frames without a detection.
        detected: ``(T,) bool``, True where a person was detected in the frame.
        width, height: frame size in pixels.
        fps: frame rate, frames per second (the container's, or the caller's override).
        meta: small JSON-able metadata (detector, model complexity, container figures).
    """

    landmarks: np.ndarray
    detected: np.ndarray
    width: int
    height: int
    fps: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.landmarks.shape[0])


# ---------------------------------------------------------------- pure mapping


def _check_image_size(width: Any, height: Any) -> tuple[int, int]:
    for label, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
            raise ValueError(f"{label} must be a positive integer (pixels), got {value!r}")
    return int(width), int(height)


def blazepose_keypoints(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """BlazePose landmarks -> pixel keypoints with visibility as confidence, all 33 kept.

    Args:
        landmarks: ``(T, 33, 4)`` float ``x, y`` normalised image coordinates, ``z``,
            ``visibility`` (see :class:`BlazePoseVideo`).
        width, height: image size in pixels.

    Returns:
        ``(T, 33, 3) float32`` pixel ``u = x * width``, ``v = y * height`` and confidence =
        visibility clipped to [0, 1]. A landmark with a non-finite value, or with
        visibility <= 0, is missing: confidence 0 and ``u, v = 0``.

    Raises:
        ValueError: wrong shape, or a non-positive image size.
    """
    landmarks = np.asarray(landmarks)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (BLAZEPOSE33.num_joints, 4):
        raise ValueError(
            f"landmarks must be (T, {BLAZEPOSE33.num_joints}, 4) [x, y, z, visibility], "
            f"got shape {landmarks.shape}"
        )
    if not np.issubdtype(landmarks.dtype, np.number) or np.issubdtype(
        landmarks.dtype, np.complexfloating
    ):
        raise ValueError(f"landmarks must be real numbers, got dtype {landmarks.dtype}")
    width, height = _check_image_size(width, height)
    values = landmarks.astype(np.float64)
    # NaN in z alone does not make the 2D point unusable; only x, y and visibility count.
    finite = np.isfinite(values[..., [0, 1, 3]]).all(axis=-1)
    confidence = np.where(finite, np.clip(np.nan_to_num(values[..., 3]), 0.0, 1.0), 0.0)
    present = confidence > 0.0
    out = np.zeros(landmarks.shape[:2] + (3,), dtype=np.float32)
    out[..., 0] = np.where(present, np.nan_to_num(values[..., 0]) * width, 0.0)
    out[..., 1] = np.where(present, np.nan_to_num(values[..., 1]) * height, 0.0)
    out[..., 2] = confidence
    return out


def blazepose_to_coco17(landmarks: np.ndarray, width: int, height: int) -> np.ndarray:
    """BlazePose-33 landmarks -> COCO-17 pixel keypoints, visibility as confidence.

    Args:
        landmarks: ``(T, 33, 4)`` float ``x, y`` normalised image coordinates, ``z``,
            ``visibility``.
        width, height: image size in pixels.

    Returns:
        ``(T, 17, 3) float32`` pixel u, v, confidence in COCO-17 order (the
        :data:`~mocap_core.joint_sets.BLAZEPOSE33_TO_COCO17` landmarks; BlazePose's inner
        and outer eye corners, mouth, hands and feet are dropped). Missing keypoints as in
        :func:`blazepose_keypoints`.
    """
    return blazepose_keypoints(landmarks, width, height)[:, list(BLAZEPOSE33_TO_COCO17)]


def blazepose_tracks(
    video: BlazePoseVideo, *, joint_set: Literal["coco17", "blazepose33"] = "coco17"
) -> Tracks2D:
    """The 2D tracks of a :class:`BlazePoseVideo`, in ``coco17`` or raw ``blazepose33``.

    Returns:
        :class:`Tracks2D`: ``keypoints (T, J, 3) float32`` pixels + confidence, one row per
        frame (``frame_index`` 0..T-1, ``track_id`` 0), the video's fps and size, ``K``
        None, meta with ``source_joint_set: "blazepose33"`` and ``frames_detected``.
    """
    if joint_set == "coco17":
        keypoints = blazepose_to_coco17(video.landmarks, video.width, video.height)
    elif joint_set == "blazepose33":
        keypoints = blazepose_keypoints(video.landmarks, video.width, video.height)
    else:
        raise ValueError(f"joint_set must be one of {list(VIDEO_JOINT_SETS)}, got {joint_set!r}")
    num_frames = video.num_frames
    return Tracks2D(
        keypoints=keypoints,
        frame_index=np.arange(num_frames, dtype=np.int32),
        track_id=np.zeros(num_frames, dtype=np.int32),
        joint_set=joint_set,
        fps=float(video.fps),
        width=video.width,
        height=video.height,
        K=None,
        meta={
            **video.meta,
            "source_joint_set": BLAZEPOSE33.name,
            "frames_detected": int(np.count_nonzero(video.detected)),
        },
    )


# ---------------------------------------------------------------- decoding and detection


def _check_fraction(label: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{label} must lie in [0, 1], got {value!r}")
    return number


def _check_fps(fps: Any) -> float | None:
    if fps is None:
        return None
    try:
        number = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps must be a positive number, got {fps!r}") from None
    if not math.isfinite(number) or number <= 0.0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return number


def _check_model_complexity(model_complexity: Any) -> int:
    if isinstance(model_complexity, bool) or model_complexity not in LANDMARK_MODEL_FILES:
        raise ValueError(
            f"model_complexity must be one of {sorted(LANDMARK_MODEL_FILES)}, "
            f"got {model_complexity!r}"
        )
    return int(model_complexity)


def _import_mediapipe() -> Any:
    try:
        import mediapipe
    except ImportError as error:
        raise ImportError(f"{_INSTALL_HINT} (mediapipe=={MEDIAPIPE_VERSION})") from error
    return mediapipe


def _import_cv2() -> Any:
    try:
        import cv2
    except ImportError as error:
        raise ImportError(f"{_INSTALL_HINT} (OpenCV)") from error
    return cv2


def _require_landmark_model(mediapipe: Any, model_complexity: int) -> None:
    """Refuse a model the wheel does not carry: MediaPipe would download it from the web."""
    model = (
        Path(mediapipe.__file__).parent
        / "modules"
        / "pose_landmark"
        / LANDMARK_MODEL_FILES[model_complexity]
    )
    if not model.is_file():
        raise ValueError(
            f"model_complexity={model_complexity} needs {model}, which the mediapipe wheel "
            "does not ship (only model_complexity=1, 'full', is bundled); this reader does "
            "not download models: use model_complexity=1 or place the file there"
        )


@contextmanager
def _video_path(data: bytes | bytearray | memoryview | str | Path, name: str) -> Iterator[str]:
    """A file path for OpenCV, which only opens paths: the path itself, or a temporary copy."""
    if isinstance(data, str | Path):
        path = Path(data)
        if not path.is_file():
            raise ReaderError(f"{name}: no such video file: {path}")
        if path.stat().st_size == 0:
            raise ReaderError(f"{name}: empty file (0 bytes)")
        yield str(path)
        return
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{name}: expected video bytes or a path, got {type(data).__name__}")
    if len(data) == 0:
        raise ReaderError(f"{name}: empty file (0 bytes)")
    suffix = Path(name).suffix.lower()
    # The suffix only helps FFmpeg pick a demuxer quickly; it probes the content anyway.
    handle = tempfile.NamedTemporaryFile(
        prefix="mocap2to3-video-",
        suffix=suffix if suffix in _VIDEO_SUFFIXES else "",
        delete=False,  # reopened by name below, which Windows refuses for an open temp file
    )
    try:
        with handle:
            handle.write(data)
        yield handle.name
    finally:
        os.unlink(handle.name)


def read_video_blazepose(
    data: bytes | bytearray | memoryview | str | Path,
    *,
    name: str,
    fps: float | None = None,
    model_complexity: int = 1,
    min_detection_confidence: float = 0.5,
    min_tracking_confidence: float = 0.5,
    smooth_landmarks: bool = True,
) -> BlazePoseVideo:
    """Decode a video and run BlazePose on every frame, keeping the raw 33 landmarks.

    Args:
        data: the video file's bytes (an archive member) or its path.
        name: the item's name for messages (its suffix hints the container format).
        fps: the clip's frame rate; None takes the container's (give it for containers
            that store none or a wrong one).
        model_complexity: BlazePose landmark model, 0 lite, 1 full, 2 heavy; only 1 ships
            in the mediapipe wheel (see the module docstring).
        min_detection_confidence: person-detector score needed to start tracking, [0, 1].
        min_tracking_confidence: landmark score needed to keep tracking rather than detect
            again on the next frame, [0, 1].
        smooth_landmarks: MediaPipe's temporal landmark filter.

    Returns:
        :class:`BlazePoseVideo` with one entry per decoded frame.

    Raises:
        ValueError: a bad argument (including a model the wheel does not ship).
        ReaderError: the data is not a video OpenCV can decode, holds no frame, changes
            frame size mid-stream, or has no frame rate and none was given.
        ImportError: the ``video`` extra is not installed.
    """
    fps_override = _check_fps(fps)
    complexity = _check_model_complexity(model_complexity)
    detection = _check_fraction("min_detection_confidence", min_detection_confidence)
    tracking = _check_fraction("min_tracking_confidence", min_tracking_confidence)
    mediapipe = _import_mediapipe()
    cv2 = _import_cv2()
    _require_landmark_model(mediapipe, complexity)

    num_landmarks = BLAZEPOSE33.num_joints
    per_frame: list[np.ndarray] = []
    detected: list[bool] = []
    size: tuple[int, int] | None = None
    with _video_path(data, name) as path:
        capture = cv2.VideoCapture(path)
        try:
            if not capture.isOpened():
                raise ReaderError(f"{name}: not a readable video (OpenCV cannot open it)")
            container_fps = float(capture.get(cv2.CAP_PROP_FPS))
            container_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            with mediapipe.solutions.pose.Pose(
                static_image_mode=False,
                model_complexity=complexity,
                smooth_landmarks=bool(smooth_landmarks),
                enable_segmentation=False,
                min_detection_confidence=detection,
                min_tracking_confidence=tracking,
            ) as pose:
                while True:
                    ok, frame_bgr = capture.read()
                    if not ok:
                        break
                    frame_size = (int(frame_bgr.shape[1]), int(frame_bgr.shape[0]))
                    if size is None:
                        size = frame_size
                    elif frame_size != size:
                        raise ReaderError(
                            f"{name}: frame {len(per_frame)} is {frame_size[0]}x{frame_size[1]}"
                            f" pixels, the first frame {size[0]}x{size[1]}"
                        )
                    # OpenCV decodes to BGR; MediaPipe expects RGB.
                    result = pose.process(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
                    landmarks = np.zeros((num_landmarks, 4), dtype=np.float32)
                    found = result.pose_landmarks is not None
                    if found:
                        landmarks[:] = [
                            (mark.x, mark.y, mark.z, mark.visibility)
                            for mark in result.pose_landmarks.landmark
                        ]
                    per_frame.append(landmarks)
                    detected.append(found)
        finally:
            capture.release()

    if size is None:
        raise ReaderError(f"{name}: no decodable frame in the video")
    if fps_override is not None:
        clip_fps = fps_override
    elif math.isfinite(container_fps) and container_fps > 0.0:
        clip_fps = container_fps
    else:
        raise ReaderError(
            f"{name}: the container gives no frame rate ({container_fps!r}); pass fps"
        )
    return BlazePoseVideo(
        landmarks=np.stack(per_frame),
        detected=np.asarray(detected, dtype=bool),
        width=size[0],
        height=size[1],
        fps=clip_fps,
        meta={
            "detector": DETECTOR_NAME,
            "mediapipe_version": str(mediapipe.__version__),
            "model_complexity": complexity,
            "min_detection_confidence": detection,
            "min_tracking_confidence": tracking,
            "smooth_landmarks": bool(smooth_landmarks),
            "container_fps": container_fps if math.isfinite(container_fps) else None,
            # OpenCV's count is the container's claim (it can be an estimate); the decoded
            # count is len(frames). A shortfall hints at a truncated file.
            "container_frame_count": container_frames,
        },
    )


def read_video(
    data: bytes | bytearray | memoryview | str | Path,
    *,
    name: str,
    fps: float | None = None,
    max_people: int = 1,
    joint_set: Literal["coco17", "blazepose33"] = "coco17",
    model_complexity: int = 1,
    min_detection_confidence: float = 0.5,
    min_tracking_confidence: float = 0.5,
    smooth_landmarks: bool = True,
) -> Tracks2D:
    """A video's 2D keypoint tracks from MediaPipe BlazePose, as the readers' Tracks2D.

    Args:
        data: the video file's bytes (an archive member) or its path.
        name: the item's name for messages.
        fps: the clip's frame rate; None takes the container's.
        max_people: people to track; the legacy BlazePose solution tracks exactly one (the
            most prominent), so only 1 is accepted.
        joint_set: ``"coco17"`` (default) or the detector's own ``"blazepose33"``.
        model_complexity, min_detection_confidence, min_tracking_confidence,
        smooth_landmarks: as in :func:`read_video_blazepose`.

    Returns:
        :class:`Tracks2D`: ``keypoints (T, J, 3) float32`` pixel u, v and confidence =
        BlazePose visibility (0 in frames without a detection), one row per decoded frame,
        track 0, ``width``/``height`` of the frames, ``fps``, ``K`` None.

    Raises:
        ValueError, ReaderError, ImportError: as :func:`read_video_blazepose`; ValueError
        also for ``max_people != 1`` or an unknown ``joint_set``.
    """
    if isinstance(max_people, bool) or max_people != 1:
        raise ValueError(
            f"max_people must be 1: MediaPipe's BlazePose Pose solution tracks a single "
            f"person, got {max_people!r}"
        )
    if joint_set not in VIDEO_JOINT_SETS:
        raise ValueError(f"joint_set must be one of {list(VIDEO_JOINT_SETS)}, got {joint_set!r}")
    video = read_video_blazepose(
        data,
        name=name,
        fps=fps,
        model_complexity=model_complexity,
        min_detection_confidence=min_detection_confidence,
        min_tracking_confidence=min_tracking_confidence,
        smooth_landmarks=smooth_landmarks,
    )
    return blazepose_tracks(video, joint_set=joint_set)


def video_reader(
    *,
    fps: float | None = None,
    model_complexity: int = 1,
    min_detection_confidence: float = 0.5,
    min_tracking_confidence: float = 0.5,
) -> Callable[[bytes, str], Tracks2D]:
    """A ``(video bytes, clip name) -> Tracks2D`` detector for
    :func:`data_catalog.recovery_inputs.load_clip` (COCO-17 tracks), with these settings.

    The arguments are checked now, so that a bad setting fails before any clip is read.
    """
    checked_fps = _check_fps(fps)
    complexity = _check_model_complexity(model_complexity)
    detection = _check_fraction("min_detection_confidence", min_detection_confidence)
    tracking = _check_fraction("min_tracking_confidence", min_tracking_confidence)

    def read(data: bytes, name: str) -> Tracks2D:
        return read_video(
            data,
            name=name,
            fps=checked_fps,
            model_complexity=complexity,
            min_detection_confidence=detection,
            min_tracking_confidence=tracking,
        )

    return read


def read_video_item(
    data: bytes, options: Mapping[str, Any], joint_sets: tuple[str, ...], name: str
) -> Tracks2D:
    """The catalog's ``video`` reader: one video item -> Tracks2D.

    ``joint_sets == ("blazepose33",)`` keeps the detector's 33 landmarks; anything else
    gives ``coco17`` (a store asking for another set then fails in conversion with a clear
    message). ``options``: ``fps``, ``model_complexity``, ``min_detection_confidence``.
    """
    joint_set: Literal["coco17", "blazepose33"] = "coco17"
    if tuple(joint_sets) == (BLAZEPOSE33.name,):
        joint_set = "blazepose33"
    # Values go through unconverted: read_video's checks name the bad option.
    return read_video(
        data,
        name=name,
        fps=options.get("fps"),
        joint_set=joint_set,
        model_complexity=options.get("model_complexity", 1),
        min_detection_confidence=options.get("min_detection_confidence", 0.5),
    )


__all__ = [
    "DETECTOR_NAME",
    "LANDMARK_MODEL_FILES",
    "MEDIAPIPE_VERSION",
    "VIDEO_JOINT_SETS",
    "BlazePoseVideo",
    "blazepose_keypoints",
    "blazepose_to_coco17",
    "blazepose_tracks",
    "read_video",
    "read_video_blazepose",
    "read_video_item",
    "video_reader",
]
