"""Preview figures of recovered motion (mocap_core.previews)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from mocap_core.cameras import (
    camera_from_height_pitch_roll,
    intrinsics_from_fov,
    transform_camera,
    transform_points,
)
from mocap_core.joint_sets import COCO17, SMPL22
from mocap_core.previews import (
    camera_ground_heading,
    motion_preview_figure,
    side_view_coordinates,
    top_view_coordinates,
)
from mocap_core.scene import yaw_matrix

WIDTH, HEIGHT = 640, 480


def camera(height_m: float = 1.6, pitch_deg: float = 12.0, roll_deg: float = 0.0):
    """Canonical camera: on the y axis at ``height_m``, looking along -z."""
    K = intrinsics_from_fov(WIDTH, HEIGHT, 60.0)
    return camera_from_height_pitch_roll(height_m, pitch_deg, roll_deg, K, WIDTH, HEIGHT)


def standing(num_frames: int, joint_set=COCO17, start=(0.0, -4.0), step=(0.0, 0.02)):
    """``(T, J, 3)``: a rigid stick figure sliding along the ground (x, z) by ``step`` a frame."""
    rng = np.random.default_rng(0)
    pose = np.column_stack(
        [rng.uniform(-0.2, 0.2, joint_set.num_joints), rng.uniform(0.0, 1.7, joint_set.num_joints)]
    )
    pose = np.column_stack([pose[:, 0], pose[:, 1], rng.uniform(-0.1, 0.1, joint_set.num_joints)])
    offsets = np.arange(num_frames)[:, None] * np.array([step[0], 0.0, step[1]])
    return pose[None] + offsets[:, None] + np.array([start[0], 0.0, start[1]])


@pytest.mark.parametrize("pitch_deg", [0.0, 12.0, 40.0])
def test_side_view_hand_computed(pitch_deg: float) -> None:
    cam = camera(1.6, pitch_deg, 0.0)
    np.testing.assert_allclose(cam.center, [0.0, 1.6, 0.0], atol=1e-12)
    np.testing.assert_allclose(camera_ground_heading(cam), [0.0, -1.0], atol=1e-12)
    points = np.array([[0.3, 1.0, -5.0], [-2.0, 0.0, 1.0]])
    np.testing.assert_allclose(
        side_view_coordinates(points, cam), [[5.0, 1.0], [-1.0, 0.0]], atol=1e-12
    )
    np.testing.assert_allclose(top_view_coordinates(points), [[0.3, -5.0], [-2.0, 1.0]])


def test_heading_of_a_camera_looking_straight_down_is_its_image_up() -> None:
    down = camera(3.0, 90.0, 0.0)
    heading = camera_ground_heading(down)
    assert np.isfinite(heading).all() and np.linalg.norm(heading) == pytest.approx(1.0)
    # The top edge of the image points where a slightly less tilted camera looks: -z.
    np.testing.assert_allclose(heading, [0.0, -1.0], atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(
    yaw=st.floats(-np.pi, np.pi),
    offset_x=st.floats(-20.0, 20.0),
    offset_z=st.floats(-20.0, 20.0),
)
def test_side_view_does_not_depend_on_where_the_world_is(
    yaw: float, offset_x: float, offset_z: float
) -> None:
    """Moving camera and points together (yaw about y, a ground offset) leaves the side view
    unchanged and moves the top view rigidly."""
    cam = camera(1.4, 15.0, 3.0)
    points = standing(5).reshape(-1, 3)
    R, t = yaw_matrix(yaw), np.array([offset_x, 0.0, offset_z])
    moved_cam = transform_camera(cam, R, t)
    moved = transform_points(points, R, t)
    np.testing.assert_allclose(
        side_view_coordinates(moved, moved_cam), side_view_coordinates(points, cam), atol=1e-9
    )
    before, after = top_view_coordinates(points), top_view_coordinates(moved)
    distances = np.linalg.norm(before[:, None] - before[None], axis=-1)
    np.testing.assert_allclose(
        np.linalg.norm(after[:, None] - after[None], axis=-1), distances, atol=1e-9
    )


def _collections(ax) -> list[LineCollection]:
    return [c for c in ax.collections if isinstance(c, LineCollection)]


def test_figure_draws_every_pose_camera_and_ground() -> None:
    cam = camera(1.6, 12.0, 0.0)
    first, second = standing(40), standing(40, start=(1.0, -6.0), step=(0.01, 0.0))
    second[10:20, 3] = np.nan  # a joint not recovered in some frames
    times = {0: np.arange(40) / 30.0, 4: 1.0 + np.arange(40) / 30.0}
    fig = motion_preview_figure(
        {0: first, 4: second}, COCO17, cam, times_s=times, title="clip", num_poses=5
    )
    assert isinstance(fig, Figure)
    top, side, colour_bar = fig.axes
    assert top.yaxis_inverted() and not side.yaxis_inverted()
    assert colour_bar.get_ylabel() == "time (s)"
    assert fig.get_suptitle() == "clip"
    # One bone collection per track and view: 5 poses x the joint set's edges, less the bones
    # of the pose whose joint 3 is missing (pose frames 0, 10, 20, 29, 39: frame 10).
    edges = len(COCO17.edges)
    with_joint_3 = sum(3 in edge for edge in COCO17.edges)
    for ax in (top, side):
        counts = sorted(len(c.get_segments()) for c in _collections(ax))
        assert counts == sorted([5 * edges, 5 * edges - with_joint_3])
    # The camera marker sits at its place in both views.
    markers = {line.get_label(): line for line in top.get_lines() + side.get_lines()}
    camera_lines = [line for line in top.get_lines() if line.get_label() == "camera"]
    np.testing.assert_allclose(np.ravel(camera_lines[0].get_xydata()), [0.0, 0.0], atol=1e-12)
    side_camera = [line for line in side.get_lines() if line.get_label() == "camera"][0]
    np.testing.assert_allclose(np.ravel(side_camera.get_xydata()), [0.0, 1.6], atol=1e-12)
    assert "ground (y = 0)" in markers and "track 0" in markers and "track 4" in markers
    # The views show the camera and all the motion.
    x_lo, x_hi = sorted(top.get_xlim())
    z_lo, z_hi = sorted(top.get_ylim())
    everything = np.concatenate([first.reshape(-1, 3), second.reshape(-1, 3)])
    everything = everything[np.isfinite(everything).all(-1)]
    assert x_lo < everything[:, 0].min() and everything[:, 0].max() < x_hi
    assert z_lo < everything[:, 2].min() and max(everything[:, 2].max(), 0.0) < z_hi
    d_lo, d_hi = side.get_xlim()
    assert d_lo < 0.0 < 4.0 < 6.0 < d_hi and side.get_ylim()[0] < 0.0
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_single_frame_and_default_times() -> None:
    fig = motion_preview_figure({0: standing(1, SMPL22)}, SMPL22, camera())
    (collection,) = _collections(fig.axes[0])
    assert len(collection.get_segments()) == len(SMPL22.edges)


def test_bad_inputs_raise_clear_errors() -> None:
    cam = camera()
    good = standing(5)
    with pytest.raises(ValueError, match="non-empty mapping"):
        motion_preview_figure({}, COCO17, cam)
    with pytest.raises(ValueError, match=r"tracks\[0\]: expected \(T, 17, 3\)"):
        motion_preview_figure({0: good[:, :5]}, COCO17, cam)
    with pytest.raises(ValueError, match="with T >= 1"):
        motion_preview_figure({0: good[:0]}, COCO17, cam)
    bad = good.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        motion_preview_figure({0: bad}, COCO17, cam)
    with pytest.raises(ValueError, match=r"times_s\[0\]: expected \(5,\)"):
        motion_preview_figure({0: good}, COCO17, cam, times_s={0: np.zeros(4)})
    with pytest.raises(ValueError, match="num_poses"):
        motion_preview_figure({0: good}, COCO17, cam, num_poses=0)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        side_view_coordinates(np.zeros((2, 2)), cam)
