"""recover-archive: the bulk-recovery flow, its tasks and ``mocap2to3 recover``.

Models are tiny stage-2 denoisers with random weights (accuracy is meaningless; what is
checked is the archive, the isolation of bad clips, resumption, the side files and the
orchestration). Clips are procedural walks projected by a calibrated camera. The Dask run is
``slow``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from prefect_server import running_prefect_server, use_prefect_api

import data_catalog.checkpoints
import flows.recover
import tasks.recover
from data_catalog.checkpoints import save_checkpoint
from data_catalog.motion_archive import (
    SMPL_FRAME_COLUMNS,
    ArchiveWriter,
    archive_digest,
    frames_schema,
    load_canonical,
    open_archive,
    read_archive_metadata,
)
from data_catalog.paths import REPO_ROOT
from data_catalog.readers.amass import write_synthetic_smpl_model
from data_catalog.readers.bvh import read_bvh
from data_catalog.recovery_inputs import ClipError, discover_clips, load_clip
from flows.cli import main as cli_main
from flows.recover import plan_recovery, recover_archive, run_recover
from mocap_core.cameras import Camera, camera_from_height_pitch_roll, intrinsics_from_fov
from mocap_core.joint_sets import SMPL22, add_pelvis_confidence
from mocap_core.model_config import ModelConfig
from mocap_core.models import MultiViewDenoiser
from mocap_core.procedural import procedural_walk
from mocap_core.recovery import RecoveryConfig
from mocap_core.representation import FeatureStats, encode_global, encode_local
from mocap_core.skeleton_mapping import apply_mapping, get_skeleton_mapping
from mocap_core.training_data import SceneConfig
from tasks.recover import (
    ClipItem,
    fill_nan_in_time,
    output_name,
    prepare_clip,
    recovery_params_hash,
    run_batch,
    split_segments,
)

WIDTH, HEIGHT = 640, 480
MAP = 32  # small pointmaps and a small model keep the runs at about a second
STEPS = 2
FPS = 30.0


# ------------------------------------------------------------------------------ data


def input_camera() -> Camera:
    """1.5 m high, 10 degrees down, 60 degrees horizontal field of view, canonical world."""
    K = intrinsics_from_fov(WIDTH, HEIGHT, 60.0)
    return camera_from_height_pitch_roll(1.5, 10.0, 0.0, K, WIDTH, HEIGHT)


def walk(num_frames: int, seed: int, start_xz=(0.0, -4.0), joint_set: str = "coco17"):
    """``(T, J, 3)`` metres, y-up: a procedural walk in front of :func:`input_camera`."""
    motion = procedural_walk(
        num_frames, fps=FPS, speed_m_s=1.0, turn_deg_per_s=10.0, seed=seed, start_xz=start_xz
    )
    joints, _ = apply_mapping(
        get_skeleton_mapping("bandai_namco", joint_set),
        motion.joint_names,
        motion.positions,
        motion.global_rotations,
    )
    return joints


def keypoints(camera: Camera, joints: np.ndarray, confidence: float = 0.9) -> np.ndarray:
    """``(T, J, 3) float32`` pixels u, v and a constant confidence."""
    pixels, _ = camera.project(joints)
    conf = np.full(joints.shape[:2] + (1,), confidence)
    return np.concatenate([pixels, conf], axis=-1).astype(np.float32)


def save_npz(path: Path, kps: np.ndarray, joint_set: str = "coco17", **extra: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, keypoints=kps, joint_set=joint_set, fps=FPS, **extra)


def tiny_checkpoint(path: Path, model_joint_set: str, window: int = 40) -> Path:
    """A stage-2 checkpoint (docs/TRAINING.md contract) of a tiny random MultiViewDenoiser.

    The statistics are fitted on a walk's encodings in the input view, so that the random
    model's outputs decode to plausible pixels.
    """
    torch.manual_seed(0)
    config = ModelConfig.profile(
        "tiny",
        model_joint_set,
        d_model=32,
        num_layers=2,
        num_heads=4,
        ff_dim=64,
        pointmap_size=MAP,
        pointmap_input_size=MAP,
        pointmap_channels=(4, 8, 8, 16),
        max_frames=48,
    )
    model = MultiViewDenoiser(config)
    camera = input_camera()
    given = "coco17" if model_joint_set == "coco17_pelvis" else "smpl22"
    kps = keypoints(camera, walk(90, seed=7, joint_set=given)).astype(np.float64)
    if model_joint_set == "coco17_pelvis":
        kps = add_pelvis_confidence(kps)
    pixels = kps[..., :2]
    stats_local = FeatureStats.fit(encode_local(pixels, (WIDTH, HEIGHT)))
    stats_global = FeatureStats.fit(encode_global(pixels, (WIDTH, HEIGHT)))
    payload = {
        "stage": "finetune-multiview",
        "model_config": config.to_dict(),
        "model": model.state_dict(),
        "step": 0,
        "stats": {"local": stats_local.to_dict(), "global": stats_global.to_dict()},
        "scene_config": SceneConfig(pointmap_size=MAP).model_dump(mode="json"),
        "train_config": {"window": window, "profile": "tiny", "joint_set": model_joint_set},
        "data": {},
        "history": [],
        "parent": None,
    }
    return save_checkpoint(path, payload)


def write_camera(folder: Path, name: str = "camera.json") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(input_camera().to_dict()))


# Truth of the good clips, for scale checks.
TRUTH: dict[str, np.ndarray] = {}


def write_clips(folder: Path) -> None:
    """The main test folder: good clips, a clip with gaps, two people, and broken clips."""
    camera = input_camera()
    write_camera(folder)
    TRUTH["walk0"] = walk(30, seed=1)
    save_npz(folder / "walk0.npz", keypoints(camera, TRUTH["walk0"]))
    # Frames 0-14 and 20-34 (a 5-frame gap, in-painted), then 70-84 after a 35-frame gap
    # (longer than MAX_GAP_FRAMES: a second segment).
    gappy = walk(85, seed=2)
    frames = np.concatenate([np.arange(0, 15), np.arange(20, 35), np.arange(70, 85)])
    save_npz(folder / "walks" / "gappy.npz", keypoints(camera, gappy[frames]), frame=frames)
    # Two people in the same frames, and a third seen for 4 frames only (too short).
    a = keypoints(camera, walk(25, seed=5, start_xz=(-1.0, -5.0)))
    b = keypoints(camera, walk(25, seed=6, start_xz=(1.0, -4.0)))
    c = keypoints(camera, walk(4, seed=8, start_xz=(0.0, -6.0)))
    save_npz(
        folder / "pair.npz",
        np.concatenate([a, b, c]),
        track_id=np.repeat([0, 1, 2], [25, 25, 4]),
        frame=np.concatenate([np.arange(25), np.arange(25), np.arange(10, 14)]),
    )
    (folder / "broken.npz").write_bytes(b"this is not an npz file")
    save_npz(folder / "short.npz", keypoints(camera, walk(5, seed=9)))
    nan = keypoints(camera, walk(20, seed=10))
    nan[3, 4, 0] = np.nan
    save_npz(folder / "nan.npz", nan)
    save_npz(folder / "wrong_joints.npz", keypoints(camera, walk(20, seed=11))[:, :15])
    save_npz(
        folder / "other_set.npz",
        keypoints(camera, walk(20, seed=12, joint_set="smpl22")),
        joint_set="smpl22",
    )
    (folder / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")


EXPECTED_ROWS = {
    ("broken", -1): "failed",
    ("clip", -1): "failed",
    ("nan", -1): "failed",
    ("other_set", -1): "failed",
    ("pair", 0): "ok",
    ("pair", 1): "ok",
    ("pair", 2): "failed",
    ("short", -1): "failed",
    ("walk0", 0): "ok",
    ("walks/gappy", 0): "ok",
    ("wrong_joints", -1): "failed",
}


@pytest.fixture(scope="module")
def coco_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "coco17.pt", "coco17_pelvis")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inputs") / "clips"
    write_clips(folder)
    return folder


@pytest.fixture(scope="module")
def first_run(
    tmp_path_factory: pytest.TempPathFactory, clips: Path, coco_checkpoint: Path
) -> dict[str, Any]:
    """One flow run over the main folder, with the progress updates it made."""
    archive = tmp_path_factory.mktemp("out") / "archive"
    updates: list[float] = []
    real_update = flows.recover.update_progress_artifact

    def spy(artifact_id: Any, progress: float, **kwargs: Any) -> Any:
        updates.append(progress)
        return real_update(artifact_id, progress, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flows.recover, "update_progress_artifact", spy)
        state = recover_archive(
            input=str(clips),
            output=str(archive),
            checkpoint=str(coco_checkpoint),
            steps=STEPS,
            batch_size=4,
            return_state=True,
        )
    return {
        "archive": archive,
        "summary": state.result(),
        "flow_run_id": state.state_details.flow_run_id,
        "updates": updates,
    }


# ------------------------------------------------------------------------------ the archive


def test_archive_rows_schema_reasons_and_previews(first_run: dict[str, Any]) -> None:
    archive_dir = first_run["archive"]
    summary = first_run["summary"]
    assert {k: summary[k] for k in ("clips", "recovered", "failed", "skipped", "errored")} == {
        "clips": 9,
        "recovered": 3,
        "failed": 6,
        "skipped": 0,
        "errored": 0,
    }
    meta = read_archive_metadata(archive_dir)
    assert meta["joint_set"] == "coco17" and meta["units"] == "m" and meta["up_axis"] == "y"
    archive = open_archive(archive_dir)
    rows = archive.sequences.set_index(["sequence_id", "track_id"])
    assert {key: row.status for key, row in rows.iterrows()} == EXPECTED_ROWS
    # Every frames file has the contract's schema.
    for path in sorted((archive_dir / "frames").glob("part-*.parquet")):
        schema = pq.read_schema(path)
        assert schema.remove_metadata().equals(frames_schema("coco17").remove_metadata())

    reasons = {key[0]: row.error for key, row in rows.iterrows() if row.status == "failed"}
    assert "npz" in reasons["broken"]
    assert "pip install 'mocap2to3[video]'" in reasons["clip"]
    assert "NaN" in reasons["nan"]
    assert "15 joints" in reasons["wrong_joints"]
    assert re.search(
        r"joint set 'smpl22' but the checkpoint models 'coco17_pelvis'", reasons["other_set"]
    )
    assert reasons["short"].startswith("too short: 5 frame(s)")
    assert rows.loc[("pair", 2), "error"].startswith("too short: 4 frame(s)")

    # Rows: frames seen, times, confidences from the input, joints finite, metres.
    assert rows.loc[("walk0", 0), "n_frames"] == 30 and rows.loc[("pair", 1), "n_frames"] == 25
    gappy = archive.result("walks/gappy", 0)
    expected_frames = np.concatenate([np.arange(0, 15), np.arange(20, 35), np.arange(70, 85)])
    np.testing.assert_array_equal(gappy.frames, expected_frames)
    assert gappy.meta["segments"] == [[0, 35], [70, 85]]  # the 5-frame gap in-painted
    frames = archive.frames("walks/gappy", 0)
    np.testing.assert_allclose(frames["time_s"], expected_frames / FPS)
    walk0 = archive.result("walk0", 0)
    np.testing.assert_allclose(walk0.conf, 0.9, rtol=1e-6)
    assert walk0.joints.shape == (30, 17, 3) and np.isfinite(walk0.joints).all()
    assert json.loads(rows.loc[("walk0", 0), "camera"]) == input_camera().to_dict()
    assert rows.loc[("walk0", 0), "checkpoint_sha256"] == summary["checkpoint_sha256"]
    # Random weights: no accuracy, but a person-sized skeleton metres in front of the camera.
    truth = TRUTH["walk0"]

    def leg_length(joints: np.ndarray) -> float:
        return float(np.median(np.linalg.norm(joints[:, 11] - joints[:, 15], axis=-1)))

    assert 0.4 < leg_length(walk0.joints) / leg_length(truth) < 2.5
    depth = np.linalg.norm(walk0.joints.mean(1)[:, [0, 2]] - input_camera().center[[0, 2]], axis=-1)
    true_depth = np.linalg.norm(truth.mean(1)[:, [0, 2]], axis=-1)
    assert 0.3 < np.median(depth) / np.median(true_depth) < 3.0
    # Two people of one clip: separate rows in the same world frame, apart.
    pair0, pair1 = archive.joints("pair", 0), archive.joints("pair", 1)
    assert np.linalg.norm(np.nanmean(pair0 - pair1, axis=(0, 1))) > 0.3

    previews = archive_dir / "previews"
    assert sorted(p.relative_to(previews).as_posix() for p in previews.rglob("*.png")) == [
        "pair.png",
        "walk0.png",
        "walks/gappy.png",
    ]
    assert (previews / "pair.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (archive_dir / "bvh").exists()


def test_progress_summary_and_failures_artifacts(first_run: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    # 9 clips, batches of 4, 4 and 1: one update per completed batch, in completion order.
    assert first_run["updates"][-1] == 100.0 and len(first_run["updates"]) == 3
    assert set(np.round(first_run["updates"], 2)) <= {44.44, 88.89, 55.56, 100.0}
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[first_run["flow_run_id"]])
            )
        )
    found = {a.key: a for a in artifacts}
    assert set(found) == {
        "recover-archive-progress",
        "recover-archive-summary",
        "recover-archive-failures",
    }
    assert float(found["recover-archive-progress"].data) == 100.0

    def table(artifact: Any) -> list[dict[str, Any]]:
        data = artifact.data
        return json.loads(data) if isinstance(data, str) else data

    (summary,) = table(found["recover-archive-summary"])
    assert {k: summary[k] for k in ("clips", "recovered", "failed", "skipped", "tracks")} == {
        "clips": 9,
        "recovered": 3,
        "failed": 6,
        "skipped": 0,
        "tracks": 4,
    }
    assert summary["frames"] == 30 + 45 + 25 + 25
    failures = {row["clip"]: row["reason"] for row in table(found["recover-archive-failures"])}
    # Clips that failed as a whole (pair's short third track is a row, not a failed clip).
    assert set(failures) == {"broken", "clip", "nan", "other_set", "short", "wrong_joints"}
    assert failures["short"].startswith("too short")


def test_rerun_skips_everything_and_only_a_new_clip_is_processed(
    first_run: dict[str, Any], clips: Path, coco_checkpoint: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "clips"
    shutil.copytree(clips, folder)
    archive = tmp_path / "archive"
    shutil.copytree(first_run["archive"], archive)
    index_before = (archive / "sequences.parquet").read_bytes()
    parts_before = sorted((archive / "frames").iterdir())

    again = run_recover(str(folder), str(archive), checkpoint=str(coco_checkpoint), steps=STEPS)
    assert {k: again[k] for k in ("skipped", "recovered", "failed", "errored")} == {
        "skipped": 9,
        "recovered": 0,
        "failed": 0,
        "errored": 0,
    }
    assert (archive / "sequences.parquet").read_bytes() == index_before
    assert sorted((archive / "frames").iterdir()) == parts_before

    save_npz(folder / "later.npz", keypoints(input_camera(), walk(20, seed=21)))
    more = run_recover(str(folder), str(archive), checkpoint=str(coco_checkpoint), steps=STEPS)
    assert {k: more[k] for k in ("clips", "skipped", "recovered", "failed")} == {
        "clips": 10,
        "skipped": 9,
        "recovered": 1,
        "failed": 0,
    }
    reopened = open_archive(archive)
    assert reopened.result("later", 0).joints.shape == (20, 17, 3)
    # Older rows are untouched (same canonical content for them).
    old = load_canonical(first_run["archive"])["frames"]
    new = load_canonical(archive)["frames"]
    assert new.filter(not_equal(new, "sequence_id", "later")).equals(old)


def not_equal(table: Any, column: str, value: str) -> Any:
    import pyarrow.compute as pc

    return pc.not_equal(table[column], value)


# ------------------------------------------------------------------------------ SMPL and BVH


@pytest.fixture(scope="module")
def smpl_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("smpl")
    checkpoint = tiny_checkpoint(root / "smpl22.pt", "smpl22")
    body = root / "body"
    write_synthetic_smpl_model(body)
    folder = root / "clips"
    write_camera(folder)
    camera = input_camera()
    save_npz(folder / "solo.npz", keypoints(camera, walk(24, 3, joint_set="smpl22")), "smpl22")
    a = keypoints(camera, walk(20, 4, start_xz=(-1.0, -5.0), joint_set="smpl22"))
    b = keypoints(camera, walk(20, 5, start_xz=(1.0, -4.0), joint_set="smpl22"))
    save_npz(
        folder / "duo.npz",
        np.concatenate([a, b]),
        "smpl22",
        track_id=np.repeat([0, 3], 20),
        frame=np.tile(np.arange(20), 2),
    )
    return {"checkpoint": checkpoint, "body": body, "clips": folder}


def test_body_model_fills_smpl_columns_and_bvh_files_read_back(
    smpl_setup: dict[str, Path], tmp_path: Path
) -> None:
    archive_dir = tmp_path / "archive"
    summary = run_recover(
        str(smpl_setup["clips"]),
        str(archive_dir),
        checkpoint=str(smpl_setup["checkpoint"]),
        steps=STEPS,
        body_model=str(smpl_setup["body"]),
        bvh=True,
        previews=False,
    )
    assert summary["recovered"] == 2 and summary["failed"] == 0 and summary["tracks"] == 3
    archive = open_archive(archive_dir)
    assert archive.joint_set == "smpl22"
    assert archive.sequences["has_smpl"].all()
    for sequence_id, track_id, frames in (("solo", 0, 24), ("duo", 0, 20), ("duo", 3, 20)):
        result = archive.result(sequence_id, track_id)
        for name, width in SMPL_FRAME_COLUMNS.items():
            values = getattr(result, name)
            assert values.shape == (frames, width) and np.isfinite(values).all()
        assert result.smpl_betas.shape == (10,)
        assert "smpl_error" not in result.meta and result.meta["smpl_mean_error_mm"] >= 0
        expected_name = f"bvh/{sequence_id}" + (f"_t{track_id}" if sequence_id == "duo" else "")
        assert result.meta["bvh"] == expected_name + ".bvh"
        motion = read_bvh(archive_dir / result.meta["bvh"], units="cm")
        assert motion.positions.shape[0] == frames
        assert motion.fps == pytest.approx(FPS)
        assert set(SMPL22.joint_names) <= set(motion.joint_names)
        # The BVH's pelvis follows the SMPL fit's pelvis (rest pelvis + transl), in metres.
        pelvis = motion.positions[:, motion.joint_names.index("pelvis")]
        offset = pelvis - result.smpl_transl
        np.testing.assert_allclose(offset, np.broadcast_to(offset[0], offset.shape), atol=1e-3)
    assert sorted(p.name for p in (archive_dir / "bvh").iterdir()) == [
        "duo_t0.bvh",
        "duo_t3.bvh",
        "solo.bvh",
    ]
    assert not (archive_dir / "previews").exists()

    # BVH without a body model: a fixed skeleton that follows the recovered joints.
    joints_only = run_recover(
        str(smpl_setup["clips"]),
        str(tmp_path / "joints-only"),
        checkpoint=str(smpl_setup["checkpoint"]),
        steps=STEPS,
        bvh=True,
        previews=False,
    )
    assert joints_only["recovered"] == 2
    plain = open_archive(tmp_path / "joints-only")
    assert not plain.sequences["has_smpl"].any()
    solo = plain.result("solo", 0)
    motion = read_bvh(tmp_path / "joints-only" / "bvh" / "solo.bvh", units="cm")
    names = list(motion.joint_names)
    root = motion.positions[:, names.index("pelvis")]
    np.testing.assert_allclose(root, solo.joints[:, 0], atol=1e-4)  # the root is exact


# ------------------------------------------------------------------------------ CLI


def test_cli_exit_codes_progress_and_release_checkpoint(
    clips: Path,
    coco_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(data_catalog.checkpoints, "RELEASE_DIR", tmp_path / "release")
    archive = str(tmp_path / "archive")
    good = tmp_path / "good"
    write_camera(good)
    save_npz(good / "a.npz", keypoints(input_camera(), walk(20, seed=30)))

    # Argument errors: a message on stderr, exit 2, no archive.
    cases = [
        (["--input", str(tmp_path / "nowhere")], "does not exist"),
        (["--input", str(good)], "no release checkpoint for coco17 clips"),
        (["--input", str(good), "--checkpoint", str(coco_checkpoint), "--bvh"], "needs smpl22"),
        (
            ["--input", str(good), "--checkpoint", str(tmp_path / "missing.pt")],
            "no checkpoint at",
        ),
        (
            ["--input", str(good), "--checkpoint", str(coco_checkpoint), "--steps", "0"],
            "steps must be a positive integer",
        ),
    ]
    other = tmp_path / "smpl-archive"
    ArchiveWriter(other, "smpl22").close()
    cases.append(
        (
            ["--input", str(good), "--checkpoint", str(coco_checkpoint), "--output", str(other)],
            "holds smpl22 motion, this checkpoint recovers coco17",
        )
    )
    for extra, message in cases:
        assert cli_main(["recover", "--output", archive, *extra]) == 2, message
        captured = capsys.readouterr()
        assert message in captured.err and captured.out == ""
    assert not Path(archive).exists()

    # Nothing succeeded (a clip without any camera): exit 1, the reason printed.
    lonely = tmp_path / "lonely"
    save_npz(lonely / "b.npz", keypoints(input_camera(), walk(20, seed=31)))
    code = cli_main(
        [
            "recover",
            "--input",
            str(lonely),
            "--output",
            archive,
            "--checkpoint",
            str(coco_checkpoint),
        ]
        + ["--steps", str(STEPS), "--no-previews"]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert "failed b: no camera" in captured.out and "0 recovered" in captured.out

    # The release checkpoint of the clips' joint set is the default; the bar on stderr.
    (tmp_path / "release").mkdir()
    shutil.copy(coco_checkpoint, tmp_path / "release" / "coco17.pt")
    code = cli_main(["recover", "--input", str(good), "--output", archive, "--steps", str(STEPS)])
    captured = capsys.readouterr()
    assert code == 0
    assert re.search(r"recover \[#{30}\] 1/1 clips", captured.err)
    assert "1 recovered" in captured.out and str(tmp_path / "release" / "coco17.pt") in captured.out
    # A re-run that has nothing left to do succeeds.
    rerun = ["recover", "--input", str(good), "--output", archive, "--steps", str(STEPS)]
    assert cli_main(rerun) == 0
    assert "1 already done" in capsys.readouterr().out


# ------------------------------------------------------------------------------ crashes


def test_a_crashed_batch_loses_only_itself_and_the_next_run_finishes(
    clips: Path, coco_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "clips"
    write_camera(folder)
    for i in range(4):
        save_npz(folder / f"c{i}.npz", keypoints(input_camera(), walk(16, seed=40 + i)))
    real = tasks.recover.run_batch

    def crash_on_c2(plan: Any, items: list[ClipItem]) -> Any:
        if any(item.ref.clip_id == "c2" for item in items):
            raise RuntimeError("simulated crash")
        return real(plan, items)

    monkeypatch.setattr(tasks.recover, "run_batch", crash_on_c2)
    options = dict(checkpoint=str(coco_checkpoint), steps=STEPS, batch_size=2, previews=False)
    first = run_recover(str(folder), str(tmp_path / "archive"), **options)
    assert first["recovered"] == 2 and first["errored"] == 2
    assert sorted(open_archive(tmp_path / "archive").sequences["sequence_id"]) == ["c0", "c1"]
    monkeypatch.setattr(tasks.recover, "run_batch", real)
    second = run_recover(str(folder), str(tmp_path / "archive"), **options)
    assert second["skipped"] == 2 and second["recovered"] == 2
    assert sorted(open_archive(tmp_path / "archive").sequences["sequence_id"]) == [
        "c0",
        "c1",
        "c2",
        "c3",
    ]


def test_a_clip_that_breaks_recovery_fails_alone(
    clips: Path, coco_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = plan_recovery(
        str(clips), str(tmp_path / "archive"), checkpoint=str(coco_checkpoint), steps=STEPS
    )
    ArchiveWriter(setup.plan.archive, "coco17").close()
    refs = [r for r in setup.refs if r.clip_id in ("walk0", "pair")]
    items = [ClipItem(ref, "f" * 64) for ref in refs]
    real = tasks.recover.recover_clips

    def explode_on_pair(model: Any, sl: Any, sg: Any, inputs: Any, *args: Any) -> Any:
        if any(clip.key.startswith("pair#") for clip in inputs):
            raise FloatingPointError("simulated blow-up")
        return real(model, sl, sg, inputs, *args)

    monkeypatch.setattr(tasks.recover, "recover_clips", explode_on_pair)
    outcome = run_batch(setup.plan, items)
    by_clip = {c.clip_id: c for c in outcome.clips}
    assert by_clip["walk0"].status == "ok" and by_clip["walk0"].frames == 30
    assert by_clip["pair"].status == "failed"
    assert by_clip["pair"].error == "recovery failed: FloatingPointError: simulated blow-up"
    rows = {(r["sequence_id"], r["track_id"]): r["status"] for r in outcome.part.rows}
    assert rows == {("pair", -1): "failed", ("walk0", 0): "ok"}


def test_checkpoint_post_processing_applies_unless_turned_off(
    clips: Path, coco_checkpoint: Path, tmp_path: Path
) -> None:
    from data_catalog.checkpoints import load_checkpoint, save_checkpoint

    payload = load_checkpoint(coco_checkpoint)
    payload["recovery"] = {"ground_anchor_frames": 9, "smooth_frames": 5, "num_samples": 2}
    anchored = save_checkpoint(tmp_path / "anchored.pt", payload)
    out = str(tmp_path / "archive")

    kept = plan_recovery(str(clips), out, checkpoint=str(anchored)).plan
    raw = plan_recovery(str(clips), out, checkpoint=str(anchored), post_process=False).plan

    assert (kept.recovery["ground_anchor_frames"], kept.recovery["smooth_frames"]) == (9, 5)
    assert (raw.recovery["ground_anchor_frames"], raw.recovery["smooth_frames"]) == (0, 0)
    assert kept.params_hash != raw.params_hash  # a re-run with the other setting recovers again
    # The checkpoint's number of samples, unless --samples says otherwise.
    assert kept.recovery["num_samples"] == raw.recovery["num_samples"] == 2
    one = plan_recovery(str(clips), out, checkpoint=str(anchored), samples=1).plan
    assert one.recovery["num_samples"] == 1 and one.params_hash != kept.params_hash
    with pytest.raises(ValueError, match="samples"):
        plan_recovery(str(clips), out, checkpoint=str(anchored), samples=0)
    # The input's ankle convention reaches the anchor (and the hash); not without the anchor.
    own = plan_recovery(str(clips), out, checkpoint=str(anchored), ankle_height_m=0.075).plan
    assert own.recovery["ankle_height_m"] == 0.075 and own.params_hash != kept.params_hash
    assert kept.recovery["ankle_height_m"] is None
    unanchored = plan_recovery(
        str(clips), out, checkpoint=str(anchored), ankle_height_m=0.075, post_process=False
    ).plan
    assert unanchored.params_hash == raw.params_hash
    with pytest.raises(ValueError, match="ankle_height_m"):
        plan_recovery(str(clips), out, checkpoint=str(anchored), ankle_height_m=-0.1)


def test_video_clips_keep_their_2d_tracks_beside_the_motion(
    coco_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in detector (the video extra's place) turns the video into COCO-17 tracks."""
    from data_catalog.types import Tracks2D

    folder = tmp_path / "videos"
    write_camera(folder)
    (folder / "hall.mp4").write_bytes(b"pretend video")
    kps = keypoints(input_camera(), walk(20, seed=70))
    kps[5, :, 2] = 0.0  # a frame without a detection: not written

    def detector(data: bytes, name: str) -> Tracks2D:
        assert data == b"pretend video" and name == "hall"
        return Tracks2D(
            keypoints=kps,
            frame_index=np.arange(20, dtype=np.int32),
            track_id=np.zeros(20, np.int32),
            joint_set="coco17",
            fps=25.0,
            width=WIDTH,
            height=HEIGHT,
            meta={"detector": "stand-in"},
        )

    monkeypatch.setattr(tasks.recover, "_video_reader", lambda refs: detector)
    setup = plan_recovery(
        str(folder), str(tmp_path / "archive"), checkpoint=str(coco_checkpoint), steps=STEPS
    )
    (ref,) = setup.refs
    assert ref.kind == "video"
    with ArchiveWriter(setup.plan.archive, "coco17") as writer:
        outcome = run_batch(setup.plan, [ClipItem(ref, "f" * 64)])
        writer.commit([outcome.part])
    result = open_archive(tmp_path / "archive").result("hall", 0)
    expected_frames = np.delete(np.arange(20), 5)
    np.testing.assert_array_equal(result.frames, expected_frames)
    assert result.fps == 25.0 and result.meta["detector"] == "stand-in"
    assert result.tracks2d_joint_set == "coco17"
    np.testing.assert_array_equal(result.tracks2d, kps[expected_frames])


# ------------------------------------------------------------------------------ units


def test_split_segments_hand_cases() -> None:
    assert split_segments(np.array([0, 1, 2, 10, 11]), 6) == [(0, 3), (3, 5)]
    assert split_segments(np.array([0, 1, 2, 10, 11]), 7) == [(0, 5)]
    assert split_segments(np.array([5]), 0) == [(0, 1)]
    assert split_segments(np.array([0, 2, 4]), 0) == [(0, 1), (1, 2), (2, 3)]
    with pytest.raises(ValueError, match="non-empty"):
        split_segments(np.array([], dtype=int), 3)


def test_fill_nan_in_time_interpolates_and_holds_the_ends() -> None:
    joints = np.zeros((5, 2, 3))
    joints[:, 0, 0] = [np.nan, 1.0, np.nan, 3.0, np.nan]
    joints[:, 1] = np.arange(5)[:, None]
    filled = fill_nan_in_time(joints)
    np.testing.assert_allclose(filled[:, 0, 0], [1.0, 1.0, 2.0, 3.0, 3.0])
    np.testing.assert_array_equal(filled[:, 1], joints[:, 1])
    joints[:, 1, 2] = np.nan
    with pytest.raises(ValueError, match="joint 1 was not recovered"):
        fill_nan_in_time(joints)


def test_output_names_stay_inside_the_archive() -> None:
    assert output_name("walks/a") == "walks/a"
    assert output_name("../../etc/x") == "etc/x"
    assert output_name("a\\..\\b") == "a/b"
    with pytest.raises(ValueError):
        output_name("../..")


def test_params_hash_covers_what_changes_the_motion() -> None:
    base = RecoveryConfig(window=40)
    reference = recovery_params_hash(base, body_model=False, default_fps=30.0, bvh=False)
    changed = [
        recovery_params_hash(
            base.model_copy(update=u), body_model=False, default_fps=30.0, bvh=False
        )
        for u in (
            {"steps": 11},
            {"sampler": "ddpm"},
            {"seed": 1},
            {"window": 41},
            {"overlap": 5},
            {"init": "ground_contact"},
            {"smooth_frames": 5},
            {"ground_anchor_frames": 9},
            {"ground_anchor_frames": 9, "ground_anchor_tolerance_m": 0.04},
            {"num_samples": 2},
            {"ground_anchor_frames": 9, "ankle_height_m": 0.075},
        )
    ]
    changed += [
        recovery_params_hash(base, body_model=True, default_fps=30.0, bvh=False),
        recovery_params_hash(base, body_model=False, default_fps=25.0, bvh=False),
        recovery_params_hash(base, body_model=False, default_fps=30.0, bvh=True),
    ]
    assert len({reference, *changed}) == len(changed) + 1
    # Batching changes float rounding only: same work.
    same = base.model_copy(update={"batch_windows": 3})
    assert recovery_params_hash(same, body_model=False, default_fps=30.0, bvh=False) == reference
    # The ankle height matters only to the anchor, and an unset one keeps older hashes.
    unanchored = base.model_copy(update={"ankle_height_m": 0.075})
    assert (
        recovery_params_hash(unanchored, body_model=False, default_fps=30.0, bvh=False) == reference
    )
    # overlap None resolves to window // 4.
    explicit = base.model_copy(update={"overlap": 10})
    assert (
        recovery_params_hash(explicit, body_model=False, default_fps=30.0, bvh=False) == reference
    )


def test_prepare_clip_rules(tmp_path: Path) -> None:
    camera = input_camera()
    folder = tmp_path / "c"
    write_camera(folder)
    kps = keypoints(camera, walk(12, seed=50))
    kps[3:5, :, 2] = 0.0  # frames without any keypoint do not count as seen
    save_npz(folder / "a.npz", kps, frame=np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 60, 61, 62]))
    save_npz(folder / "dup.npz", kps, frame=np.array([0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]))
    refs = {r.clip_id: r for r in discover_clips(folder)}
    # Rows 0-8 minus the two empty ones: 7 seen frames, then a 51-frame gap and 3 more.
    with pytest.raises(ClipError, match=r"too short: no run of 8 frames"):
        prepare_clip(load_clip(refs["a"]), "coco17_pelvis", min_frames=8, max_gap_frames=30)
    prepared = prepare_clip(load_clip(refs["a"]), "coco17_pelvis", min_frames=6)
    (track,) = prepared.tracks
    assert track.segments == [(0, 7)] and track.dropped == 3
    np.testing.assert_array_equal(track.frames[track.kept_rows], [0, 1, 2, 5, 6, 7, 8])
    # The readers refuse two rows of one track in one frame; other sources are checked too.
    with pytest.raises(ClipError, match="two detections in frame 1"):
        load_clip(refs["dup"])
    clip = load_clip(refs["a"])
    doubled = dataclasses.replace(
        clip, tracks=dataclasses.replace(clip.tracks, frame_index=np.zeros(12, np.int32))
    )
    with pytest.raises(ClipError, match="repeated frame numbers"):
        prepare_clip(doubled, "coco17_pelvis")
    with pytest.raises(ClipError, match="checkpoint models 'smpl22'"):
        prepare_clip(load_clip(refs["a"]), "smpl22", min_frames=6)
    lonely = tmp_path / "nocam"
    lonely.mkdir()
    shutil.copy(folder / "a.npz", lonely / "a.npz")
    with pytest.raises(ClipError, match="no camera"):
        prepare_clip(load_clip(discover_clips(lonely)[0]), "coco17_pelvis")


def test_prefect_yaml_has_the_recover_archive_deployment() -> None:
    config = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in config["deployments"]}
    deployment = deployments["recover-archive"]
    assert deployment["entrypoint"] == "flows/recover.py:recover_archive"
    assert recover_archive.name == "recover-archive"
    assert set(deployment["parameters"]) <= set(recover_archive.parameters.properties)
    assert {"input", "output"} <= set(deployment["parameters"])


@pytest.mark.skipif(
    not tasks.recover.rerun_available(), reason="the viz extra (rerun-sdk) is not installed"
)
def test_rrd_recordings_next_to_the_previews(
    clips: Path, coco_checkpoint: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "clips"
    write_camera(folder)
    save_npz(folder / "a.npz", keypoints(input_camera(), walk(12, seed=60)))
    run_recover(
        str(folder),
        str(tmp_path / "archive"),
        checkpoint=str(coco_checkpoint),
        steps=STEPS,
        rrd=True,
    )
    rrd = tmp_path / "archive" / "previews" / "a.rrd"
    assert rrd.is_file() and rrd.stat().st_size > 100


# ------------------------------------------------------------------------------ slow: Dask


@pytest.fixture(scope="module")
def prefect_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect API server for the module (Dask workers are other processes)."""
    with running_prefect_server(tmp_path_factory.mktemp("prefect-server")) as url:
        yield url


@pytest.mark.slow
def test_dask_cluster_archive_equals_local_archive(
    clips: Path, coco_checkpoint: Path, tmp_path: Path, prefect_server_url: str
) -> None:
    from distributed import LocalCluster

    options = dict(checkpoint=str(coco_checkpoint), steps=STEPS, batch_size=3)
    local = run_recover(str(clips), str(tmp_path / "local"), workers=2, **options)
    with use_prefect_api(prefect_server_url):
        with LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            local_directory=str(tmp_path / "dask-scratch"),
        ) as cluster:
            remote = run_recover(
                str(clips),
                str(tmp_path / "dask"),
                dask_address=cluster.scheduler_address,
                **options,
            )
    keys = ("clips", "recovered", "failed", "tracks", "frames")
    assert {k: remote[k] for k in keys} == {k: local[k] for k in keys}
    assert remote["recovered"] == 3
    assert archive_digest(tmp_path / "dask") == archive_digest(tmp_path / "local")
    local_tables, dask_tables = (
        load_canonical(tmp_path / "local"),
        load_canonical(tmp_path / "dask"),
    )
    assert set(local_tables) == set(dask_tables)
    for name, table in local_tables.items():
        assert dask_tables[name].equals(table), name
    previews = tmp_path / "dask" / "previews"
    assert sorted(p.relative_to(previews).as_posix() for p in previews.rglob("*.png")) == [
        "pair.png",
        "walk0.png",
        "walks/gappy.png",
    ]
