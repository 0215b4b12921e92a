"""Figures of scenes and motions (matplotlib, Agg). Functions return figures; callers save.

Kept free of file I/O like the rest of ``mocap_core``: a task saves the returned figure.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mocap_core.joint_sets import JointSet  # noqa: E402

VIEW_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown")


def _view_colour(v: int) -> str:
    return VIEW_COLOURS[v % len(VIEW_COLOURS)]


def _frustum_world(K, R, t, size, depth_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre ``(3,)`` and the four image corners at ``depth_m`` ``(4, 3)``, world."""
    w, h = size
    corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], dtype=float)
    rays = corners @ np.linalg.inv(K).T * depth_m
    centre = -R.T @ t
    return centre, rays @ R + centre


def _to_plot(p: np.ndarray) -> np.ndarray:
    """World y-up ``(..., 3)`` to matplotlib's z-up axes: (x, z, y) with the same handedness
    as seen from above (x right, z towards the viewer)."""
    return np.stack([p[..., 0], -p[..., 2], p[..., 1]], axis=-1)


def draw_skeleton_3d(ax, joints: np.ndarray, joint_set: JointSet, **style) -> None:
    """Draw one pose ``(J, 3)`` (world, y-up) on 3D axes."""
    p = _to_plot(joints)
    for a, b in joint_set.edges:
        ax.plot(*zip(p[a], p[b], strict=True), **style)


def draw_skeleton_2d(ax, pixels: np.ndarray, joint_set: JointSet, **style) -> None:
    """Draw one pose ``(J, 2)`` pixels on image axes."""
    for a, b in joint_set.edges:
        ax.plot(*zip(pixels[a], pixels[b], strict=True), **style)


def scene_figure(
    joints: np.ndarray,
    joint_set: JointSet,
    K: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    sizes: np.ndarray,
    pointmaps: np.ndarray,
    pixels: np.ndarray,
    recovered: np.ndarray | None = None,
    title: str = "",
    pose_frames: Sequence[int] | None = None,
) -> Figure:
    """A picture of a rig, its ground and a motion: 3D overview plus every view.

    Args:
        joints: ``(T, J, 3)`` metres, world, y-up: the motion.
        joint_set: layout of ``joints``.
        K, R, t: ``(V, 3, 3)``, ``(V, 3, 3)``, ``(V, 3)`` the rig; view 0 is the input camera.
        sizes: ``(V, 2)`` image ``(width, height)`` pixels.
        pointmaps: ``(V, P, P, 3)`` ground pointmaps (world XYZ on y = 0, zero = no hit).
        pixels: ``(V, T, J, 2)`` the motion seen by each view.
        recovered: optional ``(T, J, 3)`` triangulated motion, drawn dashed.
        title: figure title.
        pose_frames: frames whose full pose is drawn (default: 6 evenly spaced).
    """
    V, T = pixels.shape[:2]
    if pose_frames is None:
        pose_frames = np.linspace(0, T - 1, min(6, T)).round().astype(int)
    fig = plt.figure(figsize=(15, 7.5), dpi=100)
    grid = fig.add_gridspec(2, 1 + (V + 1) // 2, width_ratios=[2.2] + [1] * ((V + 1) // 2))
    ax = fig.add_subplot(grid[:, 0], projection="3d")

    # Ground: the input camera's pointmap footprint, as a cloud of ground points.
    hits = pointmaps[0].reshape(-1, 3)
    hits = hits[np.any(hits != 0, axis=1)]
    centre = joints[:, 0].mean(axis=0)
    near = hits[np.linalg.norm(hits[:, [0, 2]] - centre[[0, 2]], axis=1) < 5.0][::5]
    g = _to_plot(near)
    ax.scatter(g[:, 0], g[:, 1], g[:, 2], s=0.3, c="0.75", alpha=0.5, label="ground (view 0)")

    for v in range(V):
        c, corners = _frustum_world(K[v], R[v], t[v], sizes[v], depth_m=0.6)
        pc, pk = _to_plot(c), _to_plot(corners)
        for k in range(4):
            ax.plot(*zip(pc, pk[k], strict=True), color=_view_colour(v), lw=1)
            ax.plot(*zip(pk[k], pk[(k + 1) % 4], strict=True), color=_view_colour(v), lw=1)
        ax.text(*pc, f" V{v}" + (" (input)" if v == 0 else ""), color=_view_colour(v))

    root = _to_plot(joints[:, 0])
    ax.plot(root[:, 0], root[:, 1], root[:, 2], color="k", lw=1, label="root path")
    for i, f in enumerate(pose_frames):
        alpha = 0.35 + 0.65 * i / max(1, len(pose_frames) - 1)
        draw_skeleton_3d(ax, joints[f], joint_set, color="k", lw=1.2, alpha=alpha)
        if recovered is not None:
            draw_skeleton_3d(ax, recovered[f], joint_set, color="tab:red", lw=1, ls="--")
    if recovered is not None:
        ax.plot([], [], color="tab:red", ls="--", label="triangulated")

    cameras = _to_plot(-np.einsum("vji,vj->vi", R, t))
    everything = np.concatenate([_to_plot(joints.reshape(-1, 3)), g, cameras])
    lo, hi = everything.min(axis=0), everything.max(axis=0)
    lo[2], hi[2] = 0.0, max(hi[2], 2.0)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_zlim(lo[2], hi[2])
    ax.set_box_aspect(tuple(hi - lo))  # metres equal along every axis
    ax.set_xlabel("x (m)")
    ax.set_ylabel("-z (m)")
    ax.set_zlabel("y, up (m)")
    ax.view_init(elev=28, azim=-60)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("rig, ground and motion (world, metres)")

    for v in range(V):
        sub = fig.add_subplot(grid[v % 2, 1 + v // 2])
        pm = pointmaps[v]
        hit = np.any(pm != 0, axis=-1)
        cam_centre = -R[v].T @ t[v]
        # Near-horizon hits lie hundreds of metres away; clip so the near ground shows.
        dist = np.where(hit, np.minimum(np.linalg.norm(pm - cam_centre, axis=-1), 15.0), np.nan)
        w, h = sizes[v]
        side = max(w, h)
        # The pointmap covers the padded square; place it so that image pixels line up.
        pad_x, pad_y = (side - w) / 2, (side - h) / 2
        sub.imshow(
            dist,
            cmap="viridis_r",
            vmin=0.0,
            vmax=15.0,
            extent=(-pad_x, side - pad_x, side - pad_y, -pad_y),
            alpha=0.6,
        )
        for f in pose_frames:
            draw_skeleton_2d(sub, pixels[v, f], joint_set, color=_view_colour(v), lw=1)
        sub.add_patch(plt.Rectangle((0, 0), w, h, fill=False, ec="k", lw=0.8))
        sub.set_xlim(-pad_x, side - pad_x)
        sub.set_ylim(side - pad_y, -pad_y)
        sub.set_title(
            f"V{v}" + (" input" if v == 0 else " virtual") + ": ground distance (0-15 m)",
            fontsize=9,
        )
        sub.set_xticks([])
        sub.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    return fig
