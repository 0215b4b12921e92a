"""Tasks of the geometric demo: a motion before a camera, a rig, pointmaps, triangulation."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from prefect import task

from data_catalog.paths import shared_data_dir
from data_catalog.readers.mocap import read_bvh_motion
from mocap_core.cameras import Camera, camera_from_height_pitch_roll, intrinsics_from_fov
from mocap_core.joint_sets import SMPL22
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
