"""Tests for the video reader (MediaPipe BlazePose -> COCO-17 / BlazePose-33 tracks).

The mapping and argument checks are pure numpy and always run. The detector tests need the
``video`` extra (mediapipe, OpenCV) and are skipped without it; they write their videos with
OpenCV. The person-detection test uses the Grace Hopper portrait that matplotlib ships as
sample data: a real photograph, so BlazePose finds a real person offline.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from data_catalog.readers import READERS, check_reader_options
from data_catalog.readers.video import (
    BlazePoseVideo,
    blazepose_keypoints,
    blazepose_to_coco17,
    blazepose_tracks,
    read_video,
    read_video_blazepose,
    video_reader,
)
from data_catalog.types import ReaderError
from mocap_core.joint_sets import BLAZEPOSE33, COCO17

# ---------------------------------------------------------------- pure mapping (always run)


def landmark_array(num_frames: int, visibility: float = 0.9) -> np.ndarray:
    """(T, 33, 4) landmarks whose x encodes the landmark index and y the frame."""
    landmarks = np.zeros((num_frames, 33, 4), dtype=np.float32)
    landmarks[..., 0] = (np.arange(33) / 100.0)[None, :]
    landmarks[..., 1] = (np.arange(num_frames) / 10.0)[:, None]
    landmarks[..., 2] = -0.3
    landmarks[..., 3] = visibility
    return landmarks


def test_coco17_picks_the_landmarks_of_the_same_name() -> None:
    # x = index / 100, so u / width * 100 recovers which BlazePose landmark was taken.
    keypoints = blazepose_to_coco17(landmark_array(2), width=640, height=480)
    assert keypoints.shape == (2, 17, 3) and keypoints.dtype == np.float32
    taken = np.rint(keypoints[0, :, 0] / 640 * 100).astype(int)
    for coco_index, coco_name in enumerate(COCO17.joint_names):
        assert BLAZEPOSE33.joint_names[taken[coco_index]] == coco_name


def test_pixels_are_normalised_coordinates_times_image_size() -> None:
    landmarks = np.zeros((1, 33, 4))
    landmarks[0, 0] = (0.25, 0.5, -1.2, 0.8)  # nose
    landmarks[0, 11] = (0.75, 0.125, 0.1, 1.0)  # left shoulder -> COCO 5
    landmarks[0, 28] = (1.1, -0.05, 0.0, 0.3)  # right ankle outside the image -> COCO 16
    keypoints = blazepose_to_coco17(landmarks, width=640, height=480)
    np.testing.assert_allclose(keypoints[0, 0], (160.0, 240.0, 0.8), rtol=1e-6)
    np.testing.assert_allclose(keypoints[0, 5], (480.0, 60.0, 1.0), rtol=1e-6)
    np.testing.assert_allclose(keypoints[0, 16], (704.0, -24.0, 0.3), rtol=1e-6)


def test_confidence_is_clipped_visibility_and_missing_points_are_zeroed() -> None:
    landmarks = np.full((1, 33, 4), 0.5)
    landmarks[0, :, 3] = 0.6
    landmarks[0, 0, 3] = 1.3  # above 1: clipped
    landmarks[0, 1, 3] = -0.2  # below 0: missing
    landmarks[0, 2, 0] = np.nan  # no x: missing
    landmarks[0, 3, 3] = np.inf  # non-finite visibility: missing
    landmarks[0, 4, 2] = np.nan  # no depth only: the 2D point is still good
    keypoints = blazepose_keypoints(landmarks, width=100, height=200)
    assert keypoints.shape == (1, 33, 3)
    assert keypoints[0, 0, 2] == 1.0
    for missing in (1, 2, 3):
        np.testing.assert_array_equal(keypoints[0, missing], (0.0, 0.0, 0.0))
    np.testing.assert_allclose(keypoints[0, 4], (50.0, 100.0, 0.6), rtol=1e-6)
    assert np.isfinite(keypoints).all()


def test_frame_without_detection_has_zero_confidence() -> None:
    landmarks = landmark_array(3)
    landmarks[1] = 0.0  # the reader's all-zero row for a frame without a person
    keypoints = blazepose_to_coco17(landmarks, width=320, height=240)
    np.testing.assert_array_equal(keypoints[1], np.zeros((17, 3)))
    assert (keypoints[[0, 2], :, 2] > 0).all()


@settings(max_examples=50, deadline=None)
@given(
    landmarks=arrays(
        np.float32,
        st.tuples(st.integers(1, 4), st.just(33), st.just(4)),
        elements=st.floats(-0.5, 1.5, width=32),
    ),
    width=st.integers(1, 4000),
    height=st.integers(1, 4000),
)
def test_mapping_properties(landmarks: np.ndarray, width: int, height: int) -> None:
    keypoints = blazepose_keypoints(landmarks, width, height)
    visibility = landmarks[..., 3].astype(np.float64)
    np.testing.assert_allclose(keypoints[..., 2], np.clip(visibility, 0, 1), rtol=1e-6)
    present = visibility > 0
    np.testing.assert_allclose(
        keypoints[..., 0][present], landmarks[..., 0][present] * width, rtol=1e-5, atol=1e-3
    )
    np.testing.assert_allclose(
        keypoints[..., 1][present], landmarks[..., 1][present] * height, rtol=1e-5, atol=1e-3
    )
    assert (keypoints[..., :2][~present] == 0).all()
    coco = blazepose_to_coco17(landmarks, width, height)
    np.testing.assert_array_equal(coco[:, 0], keypoints[:, 0])  # nose is landmark 0
    np.testing.assert_array_equal(coco[:, 16], keypoints[:, 28])  # right ankle


@pytest.mark.parametrize(
    ("landmarks", "width", "height", "message"),
    [
        (np.zeros((5, 33, 3)), 10, 10, r"\(T, 33, 4\)"),
        (np.zeros((33, 4)), 10, 10, r"\(T, 33, 4\)"),
        (np.zeros((2, 17, 4)), 10, 10, r"\(T, 33, 4\)"),
        (np.zeros((2, 33, 4), dtype=complex), 10, 10, "real numbers"),
        (np.zeros((2, 33, 4)), 0, 10, "width"),
        (np.zeros((2, 33, 4)), 10, 12.5, "height"),
    ],
)
def test_mapping_rejects_bad_input(landmarks, width, height, message) -> None:
    with pytest.raises(ValueError, match=message):
        blazepose_keypoints(landmarks, width, height)


def test_blazepose_tracks_builds_one_track_per_frame() -> None:
    landmarks = landmark_array(4)
    landmarks[2] = 0.0
    video = BlazePoseVideo(
        landmarks=landmarks,
        detected=np.array([True, True, False, True]),
        width=640,
        height=480,
        fps=25.0,
        meta={"detector": "mediapipe-blazepose"},
    )
    tracks = blazepose_tracks(video)
    assert tracks.joint_set == "coco17" and tracks.keypoints.shape == (4, 17, 3)
    np.testing.assert_array_equal(tracks.frame_index, np.arange(4))
    np.testing.assert_array_equal(tracks.track_id, np.zeros(4))
    assert tracks.frame_index.dtype == np.int32 and tracks.track_id.dtype == np.int32
    assert (tracks.fps, tracks.width, tracks.height, tracks.K) == (25.0, 640, 480, None)
    assert tracks.meta["frames_detected"] == 3
    assert tracks.meta["source_joint_set"] == "blazepose33"
    assert tracks.meta["detector"] == "mediapipe-blazepose"
    raw = blazepose_tracks(video, joint_set="blazepose33")
    assert raw.joint_set == "blazepose33" and raw.keypoints.shape == (4, 33, 3)
    np.testing.assert_array_equal(raw.keypoints[:, [0, 28]], tracks.keypoints[:, [0, 16]])
    with pytest.raises(ValueError, match="joint_set"):
        blazepose_tracks(video, joint_set="smpl22")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_people": 2}, "max_people must be 1"),
        ({"joint_set": "smpl22"}, "joint_set"),
        ({"fps": 0}, "fps"),
        ({"fps": float("nan")}, "fps"),
        ({"fps": "fast"}, "fps"),
        ({"model_complexity": 3}, "model_complexity"),
        ({"model_complexity": True}, "model_complexity"),
        ({"min_detection_confidence": 1.5}, "min_detection_confidence"),
        ({"min_tracking_confidence": -0.1}, "min_tracking_confidence"),
    ],
)
def test_read_video_rejects_bad_arguments_before_reading(kwargs, message) -> None:
    # Checked before mediapipe is imported, so these hold without the extra too.
    with pytest.raises(ValueError, match=message):
        read_video(b"not read", name="clip.mp4", **kwargs)


def test_video_reader_factory_checks_settings_early() -> None:
    with pytest.raises(ValueError, match="model_complexity"):
        video_reader(model_complexity=5)
    with pytest.raises(ValueError, match="fps"):
        video_reader(fps=-1)


def test_missing_extra_names_the_install_command(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` fail
    with pytest.raises(ImportError, match=r"mocap2to3\[video\]"):
        read_video_blazepose(b"\x00" * 16, name="clip.mp4")


def test_registry_has_the_video_reader() -> None:
    spec = READERS["video"]
    assert spec.kind == "2d"
    assert spec.options == {"fps", "model_complexity", "min_detection_confidence"}
    check_reader_options("video", {"fps": 25, "model_complexity": 1})
    with pytest.raises(ValueError, match="does not take"):
        check_reader_options("video", {"min_tracking_confidence": 0.5})
    with pytest.raises(ValueError, match="model_complexity"):
        spec.read(b"x", {}, {"model_complexity": 7}, ("coco17",), "clip.mp4")


# ---------------------------------------------------------------- detector (video extra)


@pytest.fixture(scope="module")
def detector():
    """(mediapipe, cv2), or skip: the detector tests need the video extra."""
    mediapipe = pytest.importorskip("mediapipe", reason="the video extra is not installed")
    cv2 = pytest.importorskip("cv2", reason="the video extra is not installed")
    return mediapipe, cv2


def write_video(cv2, path: Path, frames_rgb: list[np.ndarray], fps: float) -> bytes:
    """Encode RGB uint8 frames with OpenCV's MPEG-4 Part 2 encoder; the file's bytes."""
    height, width = frames_rgb[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for frame in frames_rgb:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path.read_bytes()


def moving_shapes(num_frames: int, width: int, height: int) -> list[np.ndarray]:
    """Frames with a bright disc and bar moving across a dark background: no person."""
    frames = []
    for t in range(num_frames):
        frame = np.full((height, width, 3), 30, dtype=np.uint8)
        yy, xx = np.mgrid[0:height, 0:width]
        centre = (20 + 5 * t, height // 2)
        frame[(xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 < 15**2] = (220, 180, 40)
        frame[10:20, 10 + 3 * t : 60 + 3 * t] = (40, 200, 220)
        frames.append(frame)
    return frames


def test_synthetic_video_without_a_person(detector, tmp_path: Path) -> None:
    _, cv2 = detector
    data = write_video(cv2, tmp_path / "shapes.mp4", moving_shapes(20, 160, 120), fps=24.0)
    tracks = read_video(data, name="clips/shapes.mp4")
    assert tracks.joint_set == "coco17"
    assert tracks.keypoints.shape == (20, 17, 3)
    assert (tracks.keypoints == 0).all()  # no detection: confidence 0 and u, v zeroed
    np.testing.assert_array_equal(tracks.frame_index, np.arange(20))
    assert (tracks.width, tracks.height) == (160, 120)
    assert tracks.fps == pytest.approx(24.0)
    assert tracks.meta["frames_detected"] == 0
    assert tracks.meta["model_complexity"] == 1

    from_path = read_video(tmp_path / "shapes.mp4", name="shapes.mp4", fps=12.5)
    assert from_path.fps == 12.5 and from_path.keypoints.shape == (20, 17, 3)
    assert from_path.meta["container_fps"] == pytest.approx(24.0)


@pytest.fixture(scope="module")
def portrait_rgb() -> np.ndarray:
    """matplotlib's Grace Hopper photograph, (600, 512, 3) uint8 RGB."""
    import matplotlib.cbook
    import matplotlib.image

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    image = np.ascontiguousarray(matplotlib.image.imread(path)[..., :3])
    assert image.shape == (600, 512, 3) and image.dtype == np.uint8
    return image


def test_a_person_is_found_and_mapped_onto_coco17(detector, portrait_rgb, tmp_path) -> None:
    _, cv2 = detector
    blank = np.full_like(portrait_rgb, 128)
    frames = [portrait_rgb] * 6 + [blank] * 2 + [portrait_rgb] * 4
    data = write_video(cv2, tmp_path / "portrait.mp4", frames, fps=25.0)

    video = read_video_blazepose(data, name="portrait.mp4")
    assert (video.width, video.height, video.num_frames) == (512, 600, 12)
    np.testing.assert_array_equal(video.detected, [True] * 6 + [False] * 2 + [True] * 4)

    tracks = read_video(data, name="portrait.mp4")
    keypoints = tracks.keypoints
    assert keypoints.shape == (12, 17, 3) and tracks.meta["frames_detected"] == 10
    assert (keypoints[6:8] == 0).all()
    # Positions read off the photograph by eye (u right, v down, pixels): the nose at about
    # (270, 225); the subject faces the camera, so her left shoulder is on the image's right.
    seen = keypoints[[0, 1, 2, 3, 4, 5, 8, 9, 10, 11]]
    nose, left_shoulder, right_shoulder = seen[:, 0], seen[:, 5], seen[:, 6]
    assert (np.abs(nose[:, 0] - 270) < 30).all() and (np.abs(nose[:, 1] - 225) < 30).all()
    assert (left_shoulder[:, 0] > 380).all() and (right_shoulder[:, 0] < 150).all()
    assert (np.abs(left_shoulder[:, 1] - 425) < 50).all()
    assert (np.abs(right_shoulder[:, 1] - 425) < 50).all()
    # The face and shoulders are in view; the hips and legs are below the frame.
    assert (seen[:, :7, 2] > 0.8).all()
    assert (seen[:, 11:, 2] < 0.2).all()


def test_catalog_reader_reads_archive_bytes(detector, portrait_rgb, tmp_path) -> None:
    _, cv2 = detector
    data = write_video(cv2, tmp_path / "p.mp4", [portrait_rgb] * 3, fps=30.0)
    spec = READERS["video"]
    coco = spec.read(data, {}, {"min_detection_confidence": 0.5}, ("coco17",), "a/p.mp4")
    assert coco.joint_set == "coco17" and coco.keypoints.shape == (3, 17, 3)
    raw = spec.read(data, {}, {"fps": 10}, ("blazepose33",), "a/p.mp4")
    assert raw.joint_set == "blazepose33" and raw.keypoints.shape == (3, 33, 3)
    assert raw.fps == 10.0 and coco.fps == pytest.approx(30.0)
    assert (raw.keypoints[:, 0, 2] > 0.8).all()


def test_bad_video_bytes_are_a_reader_error(detector, tmp_path: Path) -> None:
    with pytest.raises(ReaderError, match="clip.mp4"):
        read_video(b"this is not a video container at all" * 50, name="clip.mp4")
    with pytest.raises(ReaderError, match="empty"):
        read_video(b"", name="clip.mp4")
    with pytest.raises(ReaderError, match="no such video"):
        read_video(tmp_path / "absent.mp4", name="absent.mp4")


def test_unshipped_landmark_models_are_refused(detector) -> None:
    mediapipe, _ = detector
    lite = Path(mediapipe.__file__).parent / "modules/pose_landmark/pose_landmark_lite.tflite"
    if lite.is_file():
        pytest.skip("this mediapipe install carries the lite model")
    with pytest.raises(ValueError, match="does not ship"):
        read_video(b"\x00" * 64, name="clip.mp4", model_complexity=0)
