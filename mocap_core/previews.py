"""Preview figures of recovered motion: side and top views over time, with camera and ground.

Pure: :func:`motion_preview_figure` returns a matplotlib :class:`~matplotlib.figure.Figure`
built without ``pyplot`` (no global figure state, so recovery tasks may draw from several
threads at once); the caller saves it (``fig.savefig(buffer, format="png")``).

Views (world frame y-up, metres, ground y = 0):

- **Top view** (left): looking down the world's -y axis: ``x`` to the right, ``z`` towards
  the bottom of the picture (the right-handed view from above, :func:`top_view_coordinates`).
  The camera is a marker with its horizontal field of view drawn as two rays on the ground;
  each track's root path is a line, and poses at a few frames are drawn coloured by time.
- **Side view** (right): the vertical plane through the camera's horizontal line of sight:
  horizontal = distance in front of the camera along that line (metres), vertical = height
  above the ground (:func:`side_view_coordinates`). The ground is the line y = 0, the camera
  sits at its height with its vertical field of view drawn as two rays; depth errors of the
  recovery show up here as poses sliding along the line of sight.

Poses are coloured by time (viridis, with a colour bar in seconds); tracks are told apart by
their root-path colour and a label ``track <id>``. Joints that are NaN (not recovered) are
left out of the drawing.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mocap_core.cameras import Camera  # noqa: E402
from mocap_core.joint_sets import JointSet  # noqa: E402

__all__ = [
    "camera_ground_heading",
    "motion_preview_figure",
    "side_view_coordinates",
    "top_view_coordinates",
]

TRACK_COLOURS = ("black", "tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple")
# Length (metres) of the field-of-view rays drawn from the camera.
_RAY_LENGTH_M = 3.0
_MARGIN_M = 0.5


def camera_ground_heading(camera: Camera) -> np.ndarray:
    """``(2,) float64`` unit ``(x, z)`` direction of the camera's line of sight on the ground.

    The optical axis projected onto the ground plane; a camera looking straight down (no
    horizontal component) takes the direction of its image's "up" edge instead, so the
    side view stays defined.
    """
    axis = np.asarray(camera.optical_axis, dtype=np.float64)
    flat = axis[[0, 2]]
    if np.linalg.norm(flat) < 1e-6:
        # Straight down: image "up" (-y of the camera) is the forward direction on the ground.
        up_in_world = -np.asarray(camera.R, dtype=np.float64)[1]
        flat = up_in_world[[0, 2]]
    return flat / np.linalg.norm(flat)


def top_view_coordinates(points: np.ndarray) -> np.ndarray:
    """World points seen from above.

    Args:
        points: ``(..., 3)`` metres, world y-up.

    Returns:
        ``(..., 2)`` ``(x, z)`` metres; the figure flips the vertical axis so that the view
        is the right-handed view from above (``z`` grows towards the bottom).
    """
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-1:] != (3,):
        raise ValueError(f"points: expected (..., 3), got {points.shape}")
    return points[..., [0, 2]]


def side_view_coordinates(points: np.ndarray, camera: Camera) -> np.ndarray:
    """World points in the camera's vertical plane of sight.

    Args:
        points: ``(..., 3)`` metres, world y-up.
        camera: the input camera (its centre and :func:`camera_ground_heading`).

    Returns:
        ``(..., 2)`` metres: ``(distance in front of the camera along its horizontal line of
        sight, height above the ground y)``. E.g. a camera at ``(0, 1.6, 0)`` looking along
        -z sees the point ``(0.3, 1, -5)`` at ``(5, 1)``.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-1:] != (3,):
        raise ValueError(f"points: expected (..., 3), got {points.shape}")
    heading = camera_ground_heading(camera)
    centre = np.asarray(camera.center, dtype=np.float64)
    forward = (points[..., [0, 2]] - centre[[0, 2]]) @ heading
    return np.stack([forward, points[..., 1]], axis=-1)


def _ray_directions(camera: Camera, pixels: np.ndarray) -> np.ndarray:
    """``(N, 3)`` unit world directions of the rays through ``pixels (N, 2)`` (no distortion)."""
    homogeneous = np.concatenate([pixels, np.ones((len(pixels), 1))], axis=1)
    rays = homogeneous @ np.linalg.inv(camera.K).T @ camera.R  # camera -> world: R.T @ ray
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)


def _check_tracks(tracks: Mapping[int, np.ndarray], joint_set: JointSet) -> None:
    if not isinstance(tracks, Mapping) or not tracks:
        raise ValueError("tracks: expected a non-empty mapping track id -> (T, J, 3) joints")
    for track_id, joints in tracks.items():
        array = np.asarray(joints)
        if array.ndim != 3 or array.shape[1:] != (joint_set.num_joints, 3) or len(array) == 0:
            raise ValueError(
                f"tracks[{track_id}]: expected (T, {joint_set.num_joints}, 3) joints "
                f"({joint_set.name}) with T >= 1, got {array.shape}"
            )
        if np.isinf(array).any():
            raise ValueError(f"tracks[{track_id}]: joints contain infinite values")


def _bones(poses: np.ndarray, edges: np.ndarray, colours: list) -> LineCollection:
    """One LineCollection of the bones of ``poses (P, J, 2)``, pose ``p`` in ``colours[p]``;
    bones with a missing (NaN) end are left out."""
    segments = poses[:, edges]  # (P, E, 2, 2)
    colour = np.repeat(np.asarray(colours), len(edges), axis=0)
    segments = segments.reshape(-1, 2, 2)
    keep = np.isfinite(segments).all(axis=(1, 2))
    return LineCollection(segments[keep], colors=colour[keep], linewidths=1.4)


def _pose_frames(num_frames: int, num_poses: int) -> np.ndarray:
    return np.unique(np.linspace(0, num_frames - 1, min(num_poses, num_frames)).round()).astype(int)


def motion_preview_figure(
    tracks: Mapping[int, np.ndarray],
    joint_set: JointSet,
    camera: Camera,
    *,
    times_s: Mapping[int, np.ndarray] | None = None,
    title: str = "",
    num_poses: int = 6,
) -> Figure:
    """Side and top views of a clip's recovered motion with its camera and the ground.

    Args:
        tracks: track id -> ``joints (T, J, 3)`` metres, world frame of ``camera``, y-up,
            ground y = 0, in ``joint_set`` order; NaN where not recovered. All tracks share
            the world frame.
        joint_set: the joints' layout (for the bones).
        camera: the input camera (world y-up).
        times_s: track id -> ``(T,)`` seconds of each row (colours poses by time); default the
            row index at 30 fps.
        title: figure title (e.g. the sequence id).
        num_poses: poses drawn per track, evenly spaced in time.

    Returns:
        A Figure with two axes (top view, side view) and a time colour bar.

    Raises:
        ValueError: no tracks, bad shapes, infinite joints, ``num_poses`` < 1.
    """
    _check_tracks(tracks, joint_set)
    if num_poses < 1:
        raise ValueError(f"num_poses must be >= 1, got {num_poses}")
    times = {}
    for track_id, joints in tracks.items():
        t = (
            np.arange(len(joints)) / 30.0
            if times_s is None or track_id not in times_s
            else np.asarray(times_s[track_id], dtype=np.float64)
        )
        if t.shape != (len(joints),):
            raise ValueError(f"times_s[{track_id}]: expected ({len(joints)},), got {t.shape}")
        times[track_id] = t
    t_min = min(float(t.min()) for t in times.values())
    t_max = max(float(t.max()) for t in times.values())
    norm = Normalize(vmin=t_min, vmax=t_max if t_max > t_min else t_min + 1.0)
    cmap = colormaps["viridis"]

    edges = np.asarray(joint_set.edges, dtype=np.int64)
    fig = Figure(figsize=(13, 5.5), dpi=80)
    top, side = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.25]})
    centre = np.asarray(camera.center, dtype=np.float64)

    # Field-of-view rays: horizontal (left/right image edges at the principal row) on the
    # top view, vertical (top/bottom edges at the principal column) on the side view.
    cx, cy = camera.K[0, 2], camera.K[1, 2]
    edge_pixels = np.array(
        [[0.0, cy], [camera.width, cy], [cx, 0.0], [cx, camera.height], [cx, cy]]
    )
    rays = _ray_directions(camera, edge_pixels)
    ray_ends = centre + _RAY_LENGTH_M * rays

    # Top view.
    cam_top = top_view_coordinates(centre)
    for end in top_view_coordinates(ray_ends[:2]):
        top.plot(*zip(cam_top, end, strict=True), color="0.4", lw=1, ls="--")
    top.plot(*cam_top, marker="s", color="tab:gray", ms=9, ls="none", label="camera")
    # Side view: ground, camera and its vertical field of view.
    cam_side = side_view_coordinates(centre, camera)
    for end in side_view_coordinates(ray_ends[2:4], camera):
        side.plot(*zip(cam_side, end, strict=True), color="0.4", lw=1, ls="--")
    side.plot(*cam_side, marker="s", color="tab:gray", ms=9, ls="none", label="camera")

    everything_top = [cam_top[None]]
    everything_side = [cam_side[None], np.array([[cam_side[0], 0.0]])]
    for index, (track_id, joints) in enumerate(sorted(tracks.items())):
        joints = np.asarray(joints, dtype=np.float64)
        colour = TRACK_COLOURS[index % len(TRACK_COLOURS)]
        finite = np.isfinite(joints).all(-1)
        with np.errstate(invalid="ignore"):
            # The path follows the mean of the recovered joints (the root may be missing).
            counts = finite.sum(1)
            path = np.where(
                (counts > 0)[:, None],
                np.nansum(np.where(finite[..., None], joints, 0.0), 1)
                / np.maximum(counts, 1)[:, None],
                np.nan,
            )
        path_top = top_view_coordinates(path)
        path_side = side_view_coordinates(path, camera)
        top.plot(path_top[:, 0], path_top[:, 1], color=colour, lw=1.2, label=f"track {track_id}")
        side.plot(path_side[:, 0], path_side[:, 1], color=colour, lw=1.0, alpha=0.6)
        # All poses of the track as one collection (one artist per view: fast to draw).
        pose_frames = _pose_frames(len(joints), num_poses)
        colours = [cmap(norm(times[track_id][frame])) for frame in pose_frames]
        top.add_collection(_bones(top_view_coordinates(joints[pose_frames]), edges, colours))
        side.add_collection(
            _bones(side_view_coordinates(joints[pose_frames], camera), edges, colours)
        )
        seen = joints[finite]
        if len(seen):
            everything_top.append(top_view_coordinates(seen))
            everything_side.append(side_view_coordinates(seen, camera))

    limits = {}
    for name, points in (("top", everything_top), ("side", everything_side)):
        stacked = np.concatenate(points)
        limits[name] = (stacked.min(0) - _MARGIN_M, stacked.max(0) + _MARGIN_M)
    side_lo, side_hi = limits["side"]
    side_lo[1] = min(side_lo[1], -0.2)  # always show some ground
    side.axhline(0.0, color="saddlebrown", lw=1.5, label="ground (y = 0)")
    side.fill_between(
        [side_lo[0], side_hi[0]], [side_lo[1], side_lo[1]], 0.0, color="0.92", zorder=0
    )
    for ax, (lo, hi) in ((top, limits["top"]), (side, (side_lo, side_hi))):
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal", adjustable="box")  # metres equal on both axes
        ax.grid(True, color="0.9", lw=0.6)
    top.invert_yaxis()  # z grows towards the bottom: the right-handed view from above

    top.set_title("top view (from above)", fontsize=10)
    top.set_xlabel("x (m)")
    top.set_ylabel("z (m)")
    side.set_title("side view (along the camera's line of sight)", fontsize=10)
    side.set_xlabel("distance in front of the camera (m)")
    side.set_ylabel("height y (m)")
    # Fixed corners: loc="best" searches the data and costs more than the drawing.
    top.legend(loc="upper right", fontsize=8)
    side.legend(loc="upper right", fontsize=8)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=[top, side], shrink=0.8)
    bar.set_label("time (s)")
    if title:
        fig.suptitle(title)
    return fig
