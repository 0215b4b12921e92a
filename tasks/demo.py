"""Tasks of the demos.

- The recovery demo (``flows/demo.py:demo``, ``make demo``): :func:`stage_example` finds the
  example input (the bundled ``examples/two_walkers``, else generated), :func:`resolve_demo_checkpoint`
  picks the checkpoint, :func:`score_example` measures the recovered archive against the
  example's ground truth (and the ground-contact baseline on the same 2D input), and
  :func:`render_demo_picture` draws the recovered scene.
- The whole pipeline (``flows/demo_full.py``, ``make demo-full``): :func:`write_demo_catalog`
  writes the small procedural BVH catalog.
- The geometric demo (``flows/demo.py:geometry_demo``, ``mocap2to3 demo --geometry``): a
  motion before a camera, a rig, pointmaps, triangulation.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task

from data_catalog.example_data import (
    BUNDLED_EXAMPLE_DIR,
    ExampleFiles,
    example_files,
    read_example_truth,
    walk_clips,
    write_example,
    write_walk_catalog,
)
from data_catalog.motion_archive import open_archive
from data_catalog.paths import shared_data_dir
from data_catalog.readers.mocap import read_bvh_motion
from mocap_core.cameras import Camera, camera_from_height_pitch_roll, intrinsics_from_fov
from mocap_core.evaluation import FOOT_KEYPOINT_HEIGHT_M, ground_contact_baseline
from mocap_core.examples import example_errors, make_example_scene
from mocap_core.joint_sets import SMPL22, get_joint_set
from mocap_core.metrics import abs_mpjpe
from mocap_core.normalize import ground
from mocap_core.plotting import scene_figure
from mocap_core.pointmaps import ground_pointmaps
from mocap_core.procedural import procedural_walk
from mocap_core.rig import RigConfig, sample_rig_arrays
from mocap_core.scene import place_motion, project_to_views
from mocap_core.skeleton_mapping import apply_mapping, get_skeleton_mapping
from mocap_core.triangulation import triangulate, triangulate_robust

DEMO_CLIP = "bandai-namco-motion/dataset-1/data/dataset-1_walk_normal_001.bvh"
DEMO_FRAMES = 60  # 2 s at 30 fps: the walk stays inside the rig's activity area.
# SMPL's "foot" joints (balls of the feet) sit about this high above the floor.
TOE_JOINT_HEIGHT_M = 0.04


def default_input_camera() -> Camera:
    """The demo's input camera: 1920x1080, 65 deg horizontal FOV, 1.5 m high, pitched 10 deg
    down, in the y-up world below it (DESIGN 2.1)."""
    return camera_from_height_pitch_roll(
        1.5, 10.0, 0.0, intrinsics_from_fov(1920, 1080, 65.0), 1920, 1080
    )


@dataclass(frozen=True)
class DemoMotion:
    path: str
    source: str
    num_frames: int
    fps: float


@task
def load_demo_motion(output_dir: str, force_procedural: bool = False) -> DemoMotion:
    """Write the demo motion, ``joints (T, 22, 3)`` smpl22 metres y-up grounded, to an npz:
    a real Bandai-Namco walk when ../shared/data is present, else a procedural walk."""
    clip = shared_data_dir() / DEMO_CLIP
    if clip.is_file() and not force_procedural:
        motion = read_bvh_motion(clip, name=clip.name, joint_sets=("smpl22",))
        joints, fps, source = motion.joints["smpl22"][:DEMO_FRAMES], motion.fps, str(clip)
        source_note = f"{clip.name} (Bandai-Namco Research Motion Dataset, CC BY-NC 4.0)"
    else:
        walk = procedural_walk(DEMO_FRAMES, fps=30.0, speed_m_s=1.2, seed=0)
        mapping = get_skeleton_mapping("bandai_namco", "smpl22")
        joints, _ = apply_mapping(mapping, walk.joint_names, walk.positions, walk.global_rotations)
        fps, source = walk.fps, "procedural walk (mocap_core.procedural, seed 0)"
        source_note = source
    joints, _ = ground(joints, SMPL22.foot_joints, foot_height=TOE_JOINT_HEIGHT_M)
    path = Path(output_dir) / "motion.npz"
    np.savez(path, joints=joints.astype(np.float32), fps=fps, source=source_note)
    return DemoMotion(str(path), source_note, int(joints.shape[0]), float(fps))


@task
def stage_scene(motion_path: str, output_dir: str, seed: int, pixel_noise_px: float) -> str:
    """Place the motion before the input camera, sample a rig around it, render the rig's
    ground pointmaps and project the motion into every view (clean and noisy pixels)."""
    rng = np.random.default_rng(seed)
    joints = np.load(motion_path)["joints"].astype(np.float64)
    camera = default_input_camera()
    # 4.5 m in front of the camera, walking diagonally across its view.
    centre = camera.center + 4.5 * np.array([0.0, 0.0, -1.0])
    heading = np.arctan2(*(joints[-1, 0, [0, 2]] - joints[0, 0, [0, 2]]))
    placed = place_motion(joints, centre_xz=centre[[0, 2]], yaw_rad=np.deg2rad(120) - heading)
    # Virtual cameras a little farther out than the default so that none stands in the path.
    rig_config = RigConfig(distance_m=(3.5, 5.5))
    rig = sample_rig_arrays(
        camera, rig_config, rng, area_centre=np.array([centre[0], 0, centre[2]])
    )
    pointmaps = ground_pointmaps(rig["K"], rig["R"], rig["t"], rig["dist"], rig["sizes"])
    pixels, depth = project_to_views(placed, rig["K"], rig["R"], rig["t"], rig["dist"])
    noisy = pixels + rng.normal(scale=pixel_noise_px, size=pixels.shape)
    path = Path(output_dir) / "scene.npz"
    np.savez(path, joints=placed, pixels=pixels, noisy_pixels=noisy, depth=depth,
             pointmaps=pointmaps, pixel_noise_px=pixel_noise_px, **rig)  # fmt: skip
    (Path(output_dir) / "input_camera.json").write_text(json.dumps(camera.to_dict(), indent=2))
    return str(path)


@task
def triangulate_scene(scene_path: str) -> dict[str, float]:
    """Triangulate the views back and measure the error against the placed motion (mm)."""
    s = np.load(scene_path)
    proj = s["K"] @ np.concatenate([s["R"], s["t"][..., None]], axis=-1)
    truth = s["joints"]
    clean = triangulate(s["pixels"], proj)
    noisy = triangulate(s["noisy_pixels"], proj)
    # A detector-style gross error: one view's wrists off by 80 px on every frame.
    corrupted = s["noisy_pixels"].copy()
    corrupted[1, :, [20, 21]] += 80.0
    plain = triangulate(corrupted, proj)
    robust = triangulate_robust(corrupted, proj)
    np.savez(Path(scene_path).with_name("triangulated.npz"), clean=clean, noisy=noisy)
    return {
        "clean_mm": abs_mpjpe(clean, truth),
        "noisy_mm": abs_mpjpe(noisy, truth),
        "outlier_dlt_mm": abs_mpjpe(plain, truth),
        "outlier_robust_mm": abs_mpjpe(robust, truth),
        "pixel_noise_px": float(s["pixel_noise_px"]),
        "views": int(proj.shape[0]),
        "frames": int(truth.shape[0]),
    }


@task
def render_scene(scene_path: str, png_path: str, title: str) -> str:
    """Save the picture of the rig, the ground pointmaps and the motion as PNG."""
    s = np.load(scene_path)
    recovered = np.load(Path(scene_path).with_name("triangulated.npz"))["noisy"]
    fig = scene_figure(
        s["joints"], SMPL22, s["K"], s["R"], s["t"], s["sizes"], s["pointmaps"], s["pixels"],
        recovered=recovered, title=title,
    )  # fmt: skip
    fig.savefig(png_path)
    return png_path


def summary_json(motion: DemoMotion, errors: dict[str, float], png: str) -> str:
    return json.dumps({"motion": asdict(motion), "errors": errors, "picture": png}, indent=2)


# ---------------------------------------------------------------------------------------------
# The recovery demo


#: Where a generated example goes inside the demo's output folder (no bundled copy).
GENERATED_EXAMPLE_DIR = "example"
#: The 2D joint set of a recovery input -> the model joint set whose planted-foot height the
#: ground-contact baseline uses (mocap_core.evaluation.FOOT_KEYPOINT_HEIGHT_M).
_BASELINE_FOOT_KEY = {"coco17": "coco17_pelvis", "smpl22": "smpl22"}


@dataclass(frozen=True)
class DemoExample:
    """The example input a demo run recovers.

    Attributes:
        folder, input_dir, scene, camera, truth: paths (:class:`data_catalog.example_data.
            ExampleFiles`).
        source: ``"bundled"`` (the repository's ``examples/two_walkers``), ``"generated"``
            (written into the demo's output folder) or ``"given"`` (``--example``).
        people: tracks in ``scene.npz``.
        frames: frames of the scene (ground truth length).
        detections: rows of ``scene.npz`` (one per person and detected frame).
        fps: frames per second.
        joint_set: the 2D joint set of the input (and of the truth).
    """

    folder: str
    input_dir: str
    scene: str
    camera: str
    truth: str
    source: str
    people: int
    frames: int
    detections: int
    fps: float
    joint_set: str

    def load_camera(self) -> Camera:
        """The input camera, parsed from ``camera.json`` (its world: y-up, ground y = 0)."""
        return Camera.from_dict(json.loads(Path(self.camera).read_text(encoding="utf-8")))


def _describe_example(files: ExampleFiles, source: str) -> DemoExample:
    truth = read_example_truth(files.truth)
    with np.load(files.scene, allow_pickle=False) as scene:
        track_ids = np.asarray(scene["track_id"])
        rows = int(scene["keypoints"].shape[0])
    return DemoExample(
        **asdict(files),
        source=source,
        people=int(np.unique(track_ids).size),
        frames=int(truth.joints.shape[1]),
        detections=rows,
        fps=truth.fps,
        joint_set=truth.joint_set,
    )


@task
def stage_example(output_dir: str, example_dir: str | None = None) -> DemoExample:
    """The example input of the recovery demo.

    ``example_dir`` when given; else the bundled ``examples/two_walkers`` of the repository;
    else (an installed package without the repository's examples) the example generated by
    :func:`mocap_core.examples.make_example_scene` into ``OUTPUT_DIR/example`` (kept for
    the next run).

    Raises:
        FileNotFoundError: ``example_dir`` lacks a file of the example layout.
    """
    if example_dir is not None:
        return _describe_example(example_files(example_dir), "given")
    try:
        return _describe_example(example_files(BUNDLED_EXAMPLE_DIR), "bundled")
    except FileNotFoundError:
        pass
    folder = Path(output_dir) / GENERATED_EXAMPLE_DIR
    try:
        files = example_files(folder)
    except FileNotFoundError:
        files = write_example(folder, make_example_scene())
    return _describe_example(files, "generated")


def _nan_to_none(value: float) -> float | None:
    """Millimetres rounded to 0.1 for the summary JSON; None for NaN (JSON has no NaN)."""
    return None if not math.isfinite(value) else round(float(value), 1)


@task
def score_example(
    archive: str, sequence_id: str, example: DemoExample, ankle_height_m: float | None = None
) -> list[dict[str, Any]]:
    """Errors of the recovered people against the example's ground truth, and of the
    monocular ground-contact baseline (:func:`mocap_core.evaluation.ground_contact_baseline`)
    on the same 2D input.

    ``ankle_height_m``: the height of a planted ankle keypoint the baseline assumes (coco17;
    the recovery's ground anchor should be given the same), default the joint set's
    (:data:`mocap_core.evaluation.FOOT_KEYPOINT_HEIGHT_M`).

    Each track is scored on its own frames: the model on the frames the archive holds, the
    baseline on the frames the input has a row for; frames with a joint that is not finite
    are left out (``frames`` / ``baseline_frames`` count the scored ones).

    Returns:
        One row per person (track id order): ``track_id``, ``status`` (``ok``/``failed``/
        ``missing``), ``error``, ``frames``, ``abs_mpjpe_mm``, ``pa_mpjpe_mm``,
        ``baseline_frames``, ``baseline_abs_mpjpe_mm``, ``baseline_pa_mpjpe_mm``
        (millimetres, None where not computable).
    """
    truth = read_example_truth(example.truth)
    camera = example.load_camera()
    joint_set = get_joint_set(truth.joint_set)
    foot_height = FOOT_KEYPOINT_HEIGHT_M[_BASELINE_FOOT_KEY[truth.joint_set]]
    if ankle_height_m is not None and truth.joint_set == "coco17":  # its foot keypoints: ankles
        foot_height = ankle_height_m
    motion = open_archive(archive)
    with np.load(example.scene, allow_pickle=False) as scene:
        keypoints = np.asarray(scene["keypoints"], dtype=np.float64)
        track_of_row = np.asarray(scene["track_id"], dtype=np.int64)
        frame_of_row = np.asarray(scene["frame"], dtype=np.int64)
    rows = []
    for track_id in truth.track_ids.tolist():
        gt = truth.person(track_id)
        row: dict[str, Any] = {"track_id": int(track_id), "status": "ok", "error": None}
        try:
            result = motion.result(sequence_id, track_id, with_tracks2d=False)
        except KeyError:
            row.update(status="missing", error="no row in the archive")
            result = None
        except ValueError as error:  # the track failed; the message says why
            row.update(status="failed", error=str(error))
            result = None
        if result is not None and result.joints is not None and result.frames is not None:
            model = example_errors(result.joints, gt[result.frames])
        else:
            model = {"abs_mpjpe_mm": math.nan, "pa_mpjpe_mm": math.nan, "frames_scored": 0}
        mine = track_of_row == track_id
        if mine.any():
            baseline_joints = ground_contact_baseline(
                camera, keypoints[mine], joint_set, foot_height_m=foot_height
            )
            baseline = example_errors(baseline_joints, gt[frame_of_row[mine]])
        else:
            baseline = {"abs_mpjpe_mm": math.nan, "pa_mpjpe_mm": math.nan, "frames_scored": 0}
        row.update(
            frames=int(model["frames_scored"]),
            abs_mpjpe_mm=_nan_to_none(model["abs_mpjpe_mm"]),
            pa_mpjpe_mm=_nan_to_none(model["pa_mpjpe_mm"]),
            baseline_frames=int(baseline["frames_scored"]),
            baseline_abs_mpjpe_mm=_nan_to_none(baseline["abs_mpjpe_mm"]),
            baseline_pa_mpjpe_mm=_nan_to_none(baseline["pa_mpjpe_mm"]),
        )
        rows.append(row)
    return rows


def _grown(
    limits: tuple[float, float], values: np.ndarray, margin: float = 0.3
) -> tuple[float, float]:
    """Axis limits ``(low, high)`` widened to hold ``values`` with ``margin`` (metres)."""
    low, high = sorted(limits)
    return min(low, float(values.min()) - margin), max(high, float(values.max()) + margin)


@task
def render_demo_picture(
    archive: str,
    sequence_id: str,
    example: DemoExample,
    png_path: str,
    title: str,
    copy_to: str | None = None,
) -> str:
    """Save the picture of the recovered scene: top and side views of every recovered person
    over time with the camera and the ground (:func:`mocap_core.previews.
    motion_preview_figure`), and each person's true path dashed in the same colour.

    Args:
        archive, sequence_id: the recovered clip.
        example: the example (camera, ground truth).
        png_path: the PNG to write (its folder is created).
        title: the figure's title.
        copy_to: also write the PNG here (e.g. ``docs/images/demo.png``), or None.

    Returns:
        ``png_path``.

    Raises:
        ValueError: no track of the clip was recovered.
    """
    from mocap_core.previews import (
        TRACK_COLOURS,
        motion_preview_figure,
        side_view_coordinates,
        top_view_coordinates,
    )

    truth = read_example_truth(example.truth)
    camera = example.load_camera()
    motion = open_archive(archive)
    ok = motion.sequences.query("sequence_id == @sequence_id and status == 'ok'")
    tracks, times = {}, {}
    for track_id in sorted(int(t) for t in ok["track_id"]):
        result = motion.result(sequence_id, track_id, with_tracks2d=False)
        tracks[track_id] = result.joints
        times[track_id] = result.frames / truth.fps
    if not tracks:
        raise ValueError(f"{archive}: no track of {sequence_id!r} was recovered; nothing to draw")
    figure = motion_preview_figure(
        tracks, get_joint_set(truth.joint_set), camera, times_s=times, title=title
    )
    top, side = figure.axes[0], figure.axes[1]
    x_top, z_top = top.get_xlim(), top.get_ylim()
    x_side, y_side = side.get_xlim(), side.get_ylim()
    for index, track_id in enumerate(sorted(tracks)):
        path = truth.person(track_id).mean(axis=1)  # the preview draws mean-joint paths too
        colour = TRACK_COLOURS[index % len(TRACK_COLOURS)]
        path_top = top_view_coordinates(path)
        path_side = side_view_coordinates(path, camera)
        top.plot(*path_top.T, color=colour, lw=1.2, ls="--", label=f"track {track_id} truth")
        side.plot(*path_side.T, color=colour, lw=1.0, ls="--", alpha=0.8)
        # A recovery far off the truth must not push the true path out of the picture.
        x_top, z_top = _grown(x_top, path_top[:, 0]), _grown(z_top, path_top[:, 1])
        x_side, y_side = _grown(x_side, path_side[:, 0]), _grown(y_side, path_side[:, 1])
    top.set_xlim(*x_top)
    top.set_ylim(z_top[1], z_top[0])  # inverted, as the preview draws it: z grows downwards
    side.set_xlim(*x_side)
    side.set_ylim(*y_side)
    top.legend(loc="upper right", fontsize=8)
    out = Path(png_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    if copy_to:
        Path(copy_to).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out, copy_to)
    return str(out)


# ---------------------------------------------------------------------------------------------
# The whole pipeline


@task
def write_demo_catalog(
    data_dir: str, num_clips: int, num_frames: int, seed: int, dataset: str
) -> str:
    """Write ``num_clips`` procedural walks as BVH files and their catalog YAML into
    ``data_dir`` (:func:`data_catalog.example_data.write_walk_catalog`; the store goes to
    ``DATA_DIR/stores/<dataset>``). Returns the catalog's path."""
    clips = walk_clips(num_clips, seed=seed)
    path = write_walk_catalog(data_dir, clips, num_frames=num_frames, dataset=dataset)
    return str(path)


def remove_tree(path: str) -> None:
    """Delete a folder the demo made (training runs start fresh each run)."""
    if os.path.isdir(path):
        shutil.rmtree(path)
