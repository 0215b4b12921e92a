"""The demos: what a newcomer runs first.

**The recovery demo** (flow ``demo``; ``make demo``, ``mocap2to3 demo``): the main job on
built-in defaults, with no data and no network. The bundled example input
(``examples/two_walkers``: COCO-17 2D tracks of two procedurally generated people walking
across each other's path, and the calibrated camera that saw them;
:mod:`mocap_core.examples`) is recovered with the release checkpoint
(``checkpoints/coco17.pt``) into a Parquet motion archive by the ``recover-archive`` flow
(previews included); the recovered people are scored against the example's ground truth
(Abs-MPJPE and PA-MPJPE, beside the monocular ground-contact baseline on the same 2D input);
a picture of the recovered scene is drawn; a short summary says where everything is.
Outputs under ``WORK/demo`` (``MOCAP2TO3_HOME``, default ``./work``)::

    motion.archive/          the Parquet motion archive (docs/ARCHIVE_FORMAT.md)
      previews/scene.png     the archive's own preview of the clip
    demo.png                 the picture: recovered people (solid) and truth (dashed)
    summary.json             everything the printed summary says, and the scores

The checkpoint is ``--checkpoint`` when given, else the file named by the environment
variable ``MOCAP2TO3_DEMO_CHECKPOINT``, else the release checkpoint. Running the demo again
reuses the archive: a clip already recovered with the same input, checkpoint and parameters
is skipped (the summary reads the archive).

**The geometric demo** (flow ``geometry-demo``; ``mocap2to3 demo --geometry``): a motion
(a real Bandai-Namco clip from ../shared/data when present, else a procedural walk) is placed
before a calibrated input camera; a rig of virtual cameras is sampled around it; the ground
pointmap of every view is rendered; the motion is projected into all views and triangulated
back (plain DLT, and the robust variant against an outlier view); the errors are printed and
a picture of the rig, the ground and the motion is saved as PNG.

The whole pipeline (``make demo-full``) is ``flows/demo_full.py``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from data_catalog.checkpoints import (
    CheckpointError,
    checkpoint_sha256,
    load_checkpoint,
    release_checkpoint,
)
from data_catalog.motion_archive import open_archive
from data_catalog.paths import work_dir
from flows.recover import run_recover
from mocap_core.cameras import height_pitch_roll
from mocap_core.procedural import PLANTED_ANKLE_HEIGHT_M
from tasks.demo import (
    DemoExample,
    load_demo_motion,
    render_demo_picture,
    render_scene,
    score_example,
    stage_example,
    stage_scene,
    summary_json,
    triangulate_scene,
)

#: Environment variable naming the demo's checkpoint when ``--checkpoint`` is not given.
DEMO_CHECKPOINT_ENV = "MOCAP2TO3_DEMO_CHECKPOINT"
#: The example's 2D joint set, hence the release checkpoint the demo uses.
DEMO_JOINT_SET = "coco17"
#: The clip id of the example's ``scene.npz`` in the archive.
DEMO_SEQUENCE_ID = "scene"
#: The ankle keypoints' height above a planted foot in the example: its procedural skeleton's
#: (0.075 m, not the Bandai-Namco 0.115 m the release checkpoints assume), the same for the
#: recovery's ground anchor and the ground-contact baseline — a property of the input's
#: keypoint convention, like its camera, not of any one person.
DEMO_ANKLE_HEIGHT_M = PLANTED_ANKLE_HEIGHT_M
ARCHIVE_NAME = "motion.archive"
PICTURE_NAME = "demo.png"


def resolve_demo_checkpoint(checkpoint: str | None = None) -> tuple[Path, str]:
    """The checkpoint the demo recovers with, and where the choice came from.

    ``checkpoint`` (``"argument"``), else ``$MOCAP2TO3_DEMO_CHECKPOINT`` (``"environment"``),
    else the release checkpoint ``checkpoints/coco17.pt`` (``"release"``).

    Raises:
        FileNotFoundError: the chosen file does not exist; for the release checkpoint the
            message says how to get one.
        ValueError: the file is not a finetune-multiview (stage 2) checkpoint.
    """
    if checkpoint:
        path, source = Path(checkpoint), "argument"
    elif os.environ.get(DEMO_CHECKPOINT_ENV):
        path, source = Path(os.environ[DEMO_CHECKPOINT_ENV]), "environment"
    else:
        path, source = release_checkpoint(DEMO_JOINT_SET), "release"
    if not path.is_file():
        if source == "release":
            raise FileNotFoundError(
                f"the release checkpoint {path} is not in this checkout (not published yet?); "
                f"pass --checkpoint FILE or set {DEMO_CHECKPOINT_ENV} to a coco17 "
                "finetune-multiview checkpoint, or train one with `make demo-full`"
            )
        where = "--checkpoint" if source == "argument" else f"${DEMO_CHECKPOINT_ENV}"
        raise FileNotFoundError(f"{where}: checkpoint {path} does not exist")
    try:
        payload = load_checkpoint(path)
    except CheckpointError as error:
        raise ValueError(f"checkpoint {path}: {error}") from error
    if payload["stage"] != "finetune-multiview":
        raise ValueError(
            f"{path} is a {payload['stage']} checkpoint; the demo recovers with a "
            "finetune-multiview (stage 2) checkpoint"
        )
    return path.absolute(), source


def _display(path: str | Path) -> str:
    """A path relative to the current folder when it lies below it (shorter to read)."""
    try:
        return str(Path(path).absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _mm(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_demo_report(summary: dict[str, Any]) -> str:
    """The printed summary of a recovery demo run (see :func:`demo`)."""
    example, ckpt, archive = summary["example"], summary["checkpoint"], summary["archive"]
    camera = summary["camera"]
    recovered = archive["recovered_now"]
    how = (
        f"recovered in {summary['recover_seconds']:.1f} s"
        if recovered
        else "already in the archive (same input, checkpoint and parameters)"
    )
    lines = [
        f"mocap2to3 demo: {example['people']} people recovered from one camera "
        f"({summary['seconds']:.0f} s in all)",
        f"  input:      {_display(example['input_dir'])} ({example['source']} example: "
        f"{example['people']} tracks, {example['detections']} detections over "
        f"{example['frames']} frames at {example['fps']:g} fps; camera.json "
        f"{camera['width']}x{camera['height']}, {camera['height_m']:.2f} m high, "
        f"{camera['pitch_deg']:.0f} deg down)",
        f"  checkpoint: {_display(ckpt['path'])} ({ckpt['source']}, sha256 {ckpt['sha256'][:12]})",
        f"  archive:    {_display(archive['path'])} ({archive['sequences']} sequence, "
        f"{archive['tracks']} tracks, {archive['frames']} frames of {archive['joint_set']} "
        f"world joints; {how})",
        f"  previews:   {_display(archive['previews'])}",
        f"  picture:    {_display(summary['picture'])}"
        + (f" (also {_display(summary['picture_copy'])})" if summary["picture_copy"] else ""),
        f"  ankles:     {summary['ankle_height_m']:.3f} m above a planted foot (the example's "
        "procedural skeleton; ground anchor and baseline alike; recover --ankle-height)",
        "  accuracy against the example's ground truth (mm; Abs-MPJPE: no alignment, "
        "PA-MPJPE: per-frame Procrustes):",
        "    track  frames  model Abs  model PA  ground-contact Abs  ground-contact PA",
    ]
    for row in summary["scores"]:
        lines.append(
            f"    {row['track_id']:>5}  {row['frames']:>6}  {_mm(row['abs_mpjpe_mm']):>9}  "
            f"{_mm(row['pa_mpjpe_mm']):>8}  {_mm(row['baseline_abs_mpjpe_mm']):>18}  "
            f"{_mm(row['baseline_pa_mpjpe_mm']):>17}"
            + (f"  ({row['status']}: {row['error']})" if row["status"] != "ok" else "")
        )
    lines.append(f"  summary:    {_display(summary['summary_json'])}")
    return "\n".join(lines)


def _archive_counts(archive_path: str, sequence_id: str) -> dict[str, Any]:
    """Rows of one clip in the archive: tracks and frames recovered, tracks failed."""
    archive = open_archive(archive_path)
    rows = archive.sequences[archive.sequences["sequence_id"] == sequence_id]
    ok = rows[rows["status"] == "ok"]
    return {
        "path": str(archive.path),
        "joint_set": archive.joint_set,
        "sequences": int(rows["sequence_id"].nunique()),
        "tracks": len(ok),
        "frames": int(ok["n_frames"].sum()),
        "failed_tracks": int((rows["status"] != "ok").sum()),
        "previews": str(archive.path / "previews"),
    }


@flow(name="demo", log_prints=True)
def demo(
    output_dir: str | None = None,
    checkpoint: str | None = None,
    example_dir: str | None = None,
    steps: int | None = None,
    seed: int = 42,
    picture_copy: str | None = None,
) -> dict[str, Any]:
    """Recover the bundled two-person example with the release checkpoint (module docstring).

    Args:
        output_dir: the demo's folder (default ``WORK/demo``).
        checkpoint: a coco17 finetune-multiview checkpoint (default:
            ``$MOCAP2TO3_DEMO_CHECKPOINT``, else ``checkpoints/coco17.pt``).
        example_dir: an example folder of the ``data_catalog.example_data`` layout (default:
            the bundled ``examples/two_walkers``, else one generated into the output folder).
        steps: sampling steps (default DDIM 10).
        seed: the recovery's seed.
        picture_copy: also save the picture here (the README's ``docs/images/demo.png``).

    Returns:
        ``example``, ``camera``, ``checkpoint``, ``archive`` (path, counts), ``scores`` (per
        person, model and baseline, mm), ``picture``, ``summary_json``, ``seconds``,
        ``report`` (the printed text).
    """
    start = time.perf_counter()
    out = Path(output_dir) if output_dir else work_dir() / "demo"
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path, checkpoint_source = resolve_demo_checkpoint(checkpoint)
    example: DemoExample = stage_example(str(out), example_dir)
    archive_path = out / ARCHIVE_NAME
    recovered = run_recover(
        example.input_dir,
        str(archive_path),
        checkpoint=str(checkpoint_path),
        steps=steps,
        seed=seed,
        ankle_height_m=DEMO_ANKLE_HEIGHT_M,
        previews=True,
    )
    scores = score_example(str(archive_path), DEMO_SEQUENCE_ID, example, DEMO_ANKLE_HEIGHT_M)
    sha = checkpoint_sha256(checkpoint_path)
    picture = render_demo_picture(
        str(archive_path),
        DEMO_SEQUENCE_ID,
        example,
        str(out / PICTURE_NAME),
        f"mocap2to3 demo: {example.people} people recovered from one camera "
        f"(solid: recovered, dashed: truth; checkpoint {sha[:8]})",
        copy_to=picture_copy,
    )
    camera = example.load_camera()
    height_m, pitch_deg, _ = height_pitch_roll(camera)
    summary: dict[str, Any] = {
        "example": {
            "folder": example.folder,
            "input_dir": example.input_dir,
            "source": example.source,
            "people": example.people,
            "frames": example.frames,
            "detections": example.detections,
            "fps": example.fps,
            "joint_set": example.joint_set,
        },
        "camera": {
            "width": camera.width,
            "height": camera.height,
            "height_m": height_m,
            "pitch_deg": pitch_deg,
        },
        "checkpoint": {"path": str(checkpoint_path), "source": checkpoint_source, "sha256": sha},
        "ankle_height_m": DEMO_ANKLE_HEIGHT_M,
        "archive": {
            **_archive_counts(str(archive_path), DEMO_SEQUENCE_ID),
            "recovered_now": recovered["recovered"],
        },
        "recover_seconds": recovered["seconds"],
        "scores": scores,
        "picture": picture,
        "picture_copy": picture_copy,
        "summary_json": str(out / "summary.json"),
    }
    summary["seconds"] = round(time.perf_counter() - start, 1)
    summary["report"] = format_demo_report(summary)
    Path(summary["summary_json"]).write_text(
        json.dumps({k: v for k, v in summary.items() if k != "report"}, indent=2) + "\n"
    )
    get_run_logger().info("%s", summary["report"])
    return summary


@flow(name="geometry-demo", log_prints=True)
def geometry_demo(
    output_dir: str | None = None,
    seed: int = 0,
    pixel_noise_px: float = 2.0,
    force_procedural: bool = False,
) -> dict:
    out = Path(output_dir) if output_dir else work_dir() / "geometry-demo"
    out.mkdir(parents=True, exist_ok=True)
    motion = load_demo_motion(str(out), force_procedural)
    scene = stage_scene(motion.path, str(out), seed, pixel_noise_px)
    errors = triangulate_scene(scene)
    png = render_scene(scene, str(out / "geometry_demo.png"), f"{motion.source}: 4-view rig")
    (out / "summary.json").write_text(summary_json(motion, errors, png))
    report = "\n".join(
        [
            f"motion: {motion.source}, {motion.num_frames} frames at {motion.fps:g} fps",
            f"rig: {errors['views']} views (view 0 = input camera), ground pointmaps 224x224",
            "triangulation error against the placed motion (mean per joint, no alignment):",
            f"  exact projections:                 {errors['clean_mm']:.2e} mm",
            f"  {errors['pixel_noise_px']:g} px noise:                       {errors['noisy_mm']:.1f} mm",
            f"  + one view 80 px off on the wrists: {errors['outlier_dlt_mm']:.1f} mm plain DLT, "
            f"{errors['outlier_robust_mm']:.1f} mm robust",
            f"picture: {png}",
            f"summary: {out / 'summary.json'}",
        ]
    )
    return {"report": report, "errors": errors, "picture": png, "output_dir": str(out)}
