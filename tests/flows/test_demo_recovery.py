"""The recovery demo (``make demo``), its example input, and the whole-pipeline demo.

The example generator's properties are checked directly (two tracks, both people in view
most of the time, feet on the ground, a valid camera file, a detector that behaves like one).
The demo flow runs end to end without ``../shared`` on a stand-in checkpoint: a tiny
random-weights ``coco17_pelvis`` stage-2 model (its accuracy is meaningless; the archive,
previews, picture, scores and summary are what is checked). ``demo-full`` is ``slow``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

import flows.demo
import flows.demo_full
from data_catalog.catalog import load_catalog
from data_catalog.checkpoints import save_checkpoint
from data_catalog.example_data import (
    BUNDLED_EXAMPLE_DIR,
    camera_json,
    example_files,
    procedural_bvh_text,
    read_example_truth,
    walk_clips,
    write_example,
    write_walk_catalog,
)
from data_catalog.motion_archive import open_archive
from data_catalog.paths import REPO_ROOT
from data_catalog.readers.mocap import read_bvh_motion
from flows.cli import main as cli_main
from flows.demo import DEMO_CHECKPOINT_ENV, demo, resolve_demo_checkpoint
from mocap_core.cameras import Camera, camera_from_height_pitch_roll, intrinsics_from_fov
from mocap_core.evaluation import CONTACT_TOLERANCE_M, FOOT_KEYPOINT_HEIGHT_M, feet_on_ground
from mocap_core.examples import (
    TWO_WALKERS,
    Walker,
    example_camera,
    example_errors,
    in_view,
    make_example_scene,
    simulate_detector,
    track_rows,
    walker_joints,
)
from mocap_core.joint_sets import COCO17, add_pelvis_confidence
from mocap_core.model_config import ModelConfig
from mocap_core.models import MultiViewDenoiser
from mocap_core.procedural import PLANTED_ANKLE_HEIGHT_M, procedural_walk
from mocap_core.representation import FeatureStats, encode_global, encode_local
from mocap_core.skeleton_mapping import apply_mapping, get_skeleton_mapping
from mocap_core.training_data import SceneConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scene():
    return make_example_scene()


@pytest.fixture(autouse=True)
def no_shared_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every demo test runs as on a fresh clone: no ../shared, no demo checkpoint variable."""
    monkeypatch.setenv("MOCAP2TO3_SHARED_DATA", "/nonexistent")
    monkeypatch.delenv(DEMO_CHECKPOINT_ENV, raising=False)


# ------------------------------------------------------------------- the example scene


def test_example_has_two_people_in_view_most_of_the_time(scene) -> None:
    assert scene.truth.shape == (2, 240, 17, 3) and scene.keypoints.shape == (2, 240, 17, 3)
    assert scene.fps == 30.0 and scene.joint_set == "coco17"
    fully_in_view = in_view(scene.camera, scene.truth).all(-1)  # (P, T)
    assert (fully_in_view.mean(axis=1) >= 0.85).all()
    assert (scene.detected.mean(axis=1) >= 0.9).all()
    # Both subjects 3-6 m from the camera (pelvis, horizontally), never on top of each other,
    # and their paths cross (at different times).
    pelvis = scene.truth[:, :, list(COCO17.hip_pair)].mean(axis=2)[..., [0, 2]]  # (P, T, 2)
    camera_xz = scene.camera.center[[0, 2]]
    distance = np.linalg.norm(pelvis - camera_xz, axis=-1)
    assert distance.min() >= 3.0 and distance.max() <= 6.0
    assert np.linalg.norm(pelvis[0] - pelvis[1], axis=-1).min() > 0.5
    paths = np.linalg.norm(pelvis[0][:, None] - pelvis[1][None], axis=-1)
    assert paths.min() < 0.1
    # Different people: seeds, headings, speeds and sizes all differ.
    a, b = TWO_WALKERS
    assert a.seed != b.seed and a.heading_deg != b.heading_deg
    assert a.speed_m_s != b.speed_m_s and a.body_scale != b.body_scale
    heights = scene.truth[..., 1].max(axis=(1, 2))
    assert heights[0] > heights[1] + 0.05  # body scale 1.04 against 0.93


def test_example_feet_are_on_the_ground(scene) -> None:
    feet = list(COCO17.foot_joints)
    for person in scene.truth:
        lowest = person[:, feet, 1].min(axis=1)  # (T,) the lower ankle per frame
        assert lowest.min() > 0.0  # nothing below the floor
        valid = np.ones(person.shape[:2], dtype=bool)
        height = FOOT_KEYPOINT_HEIGHT_M["coco17_pelvis"] + CONTACT_TOLERANCE_M
        assert feet_on_ground(person, valid, feet, height)
        # A planted foot's ankle sits a few centimetres up; a walker always has one down.
        assert np.percentile(lowest, 95) < 0.12


def test_example_detector_is_noisy_sparse_and_confident(scene) -> None:
    conf = scene.keypoints[..., 2]
    assert conf.min() >= 0.0 and conf.max() <= 0.98
    seen = conf > 0
    assert (conf[seen] >= 0.55).all()
    assert np.all(scene.keypoints[~seen] == 0.0)  # not seen: pixels and confidence 0
    # A few joints of detected frames are missing, most are seen.
    missing = (~seen)[scene.detected].mean()
    assert 0.02 < missing < 0.2
    # The pixel noise has the documented size.
    pixels, _ = scene.camera.project(scene.truth)
    residual = scene.keypoints[..., :2][seen] - pixels[seen]
    assert np.std(residual) == pytest.approx(1.5, rel=0.15)
    assert np.all(np.abs(residual) < 10.0)
    # Everything seen is inside the image.
    uv = scene.keypoints[..., :2][seen]
    assert (uv[:, 0] > -10).all() and (uv[:, 0] < 1930).all()
    assert (uv[:, 1] > -10).all() and (uv[:, 1] < 1090).all()


def test_example_is_deterministic_and_seeded() -> None:
    first, again = make_example_scene(seed=5), make_example_scene(seed=5)
    other = make_example_scene(seed=6)
    np.testing.assert_array_equal(first.keypoints, again.keypoints)
    np.testing.assert_array_equal(first.truth, other.truth)  # the motion does not depend on it
    assert not np.array_equal(first.keypoints, other.keypoints)


def test_nearer_person_hides_the_one_behind() -> None:
    camera = example_camera()
    front = walker_joints(Walker(1, (0.0, -3.5), 90.0, 0.2, 0.0, 1.0), 10, 30.0)
    # A bigger copy 2 m farther on the same rays: it projects exactly onto the front person.
    behind = camera.center + (front - camera.center) * (5.5 / 3.5)
    beside = behind + np.array([1.5, 0.0, 0.0])  # the same, 1.5 m to the side
    for other, hidden in ((behind, True), (beside, False)):
        people = np.stack([front, other])
        kps, detected = simulate_detector(
            camera, people, COCO17, np.random.default_rng(0), drop_rate=0.0
        )
        clear, _ = simulate_detector(
            camera, people, COCO17, np.random.default_rng(0), drop_rate=0.0, occlusion_radius_m=0
        )
        assert detected[0].all() and (kps[0, ..., 2] > 0).all()  # the front one: all seen
        assert (clear[1, ..., 2] > 0).all()  # without occlusion the other one too
        assert detected[1].any() != hidden  # behind: never reported; beside: reported


def test_track_rows_round_trip(scene) -> None:
    keypoints, track_id, frame = track_rows(scene.keypoints, scene.detected)
    assert len(keypoints) == scene.detected.sum()
    assert np.all(np.diff(track_id) >= 0)  # ordered by track, then frame
    for person in range(2):
        mine = track_id == person
        assert np.all(np.diff(frame[mine]) > 0)
        np.testing.assert_array_equal(frame[mine], np.flatnonzero(scene.detected[person]))
        np.testing.assert_array_equal(keypoints[mine], scene.keypoints[person][frame[mine]])
    with pytest.raises(ValueError, match="detected"):
        track_rows(scene.keypoints, scene.detected.astype(int))


def test_detector_rejects_bad_input(scene) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="joints"):
        simulate_detector(scene.camera, scene.truth[..., :5, :], COCO17, rng)
    with pytest.raises(ValueError, match="drop_rate"):
        simulate_detector(scene.camera, scene.truth, COCO17, rng, drop_rate=1.0)
    with pytest.raises(ValueError, match="confidence"):
        simulate_detector(scene.camera, scene.truth, COCO17, rng, confidence=(0.9, 0.5))
    with pytest.raises(TypeError, match="rng"):
        simulate_detector(scene.camera, scene.truth, COCO17, 0)
    with pytest.raises(ValueError, match="walker"):
        make_example_scene(walkers=())


def test_example_errors_by_hand() -> None:
    truth = np.random.default_rng(0).normal(size=(5, 17, 3))
    shifted = truth + np.array([0.1, 0.0, 0.0])  # 10 cm off everywhere
    errors = example_errors(shifted, truth)
    assert errors["abs_mpjpe_mm"] == pytest.approx(100.0)
    assert errors["pa_mpjpe_mm"] == pytest.approx(0.0, abs=1e-6)
    assert errors["frames_scored"] == 5
    shifted[2, 4] = np.nan  # a joint not recovered: its frame is left out
    assert example_errors(shifted, truth)["frames_scored"] == 4
    empty = example_errors(np.full_like(truth, np.nan), truth)
    assert empty["frames_scored"] == 0 and np.isnan(empty["abs_mpjpe_mm"])
    with pytest.raises(ValueError, match="shapes"):
        example_errors(truth[:3], truth)


# --------------------------------------------------------------------- files on disk


def test_example_files_round_trip_and_camera_json(tmp_path: Path, scene) -> None:
    files = write_example(tmp_path / "ex", scene)
    first = {name: Path(getattr(files, name)).read_bytes() for name in ("scene", "truth")}
    write_example(tmp_path / "ex", scene)  # byte for byte reproducible
    assert {name: Path(getattr(files, name)).read_bytes() for name in first} == first
    camera = Camera.from_dict(json.loads(Path(files.camera).read_text()))
    assert camera.is_close(scene.camera, atol=1e-9)
    assert camera.width == 1920 and camera.height == 1080
    assert camera.center[1] == pytest.approx(1.6)
    truth = read_example_truth(files.truth)
    np.testing.assert_allclose(truth.joints, scene.truth, atol=1e-6)  # float32 metres
    np.testing.assert_array_equal(truth.track_ids, [0, 1])
    assert truth.walkers[1]["seed"] == TWO_WALKERS[1].seed
    with np.load(files.scene) as data:
        assert str(data["joint_set"]) == "coco17" and float(data["fps"]) == 30.0
        assert data["keypoints"].dtype == np.float32
    # The recovery input folder holds the clip and its camera only.
    assert sorted(p.name for p in Path(files.input_dir).iterdir()) == [
        "camera.json",
        "scene.npz",
    ]
    with pytest.raises(FileNotFoundError, match="truth.npz"):
        Path(files.truth).unlink()
        example_files(tmp_path / "ex")


def test_camera_json_refuses_a_camera_it_cannot_write() -> None:
    K = intrinsics_from_fov(640, 480, 60.0)
    camera = camera_from_height_pitch_roll(1.5, 10.0, 2.0, K, 640, 480)
    assert Camera.from_dict(camera_json(camera)).is_close(camera, atol=1e-6)
    quarter_turn = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    yawed = Camera(K=K, R=camera.R @ quarter_turn, t=camera.t, width=640, height=480)
    with pytest.raises(ValueError, match="yaw"):
        camera_json(yawed)


def test_bundled_example_is_what_the_generator_makes(scene) -> None:
    files = example_files(BUNDLED_EXAMPLE_DIR)
    with np.load(files.scene) as data:
        keypoints, track_id, frame = track_rows(scene.keypoints, scene.detected)
        np.testing.assert_allclose(data["keypoints"], keypoints, atol=1e-3)
        np.testing.assert_array_equal(data["track_id"], track_id)
        np.testing.assert_array_equal(data["frame"], frame)
    truth = read_example_truth(files.truth)
    np.testing.assert_allclose(truth.joints, scene.truth, atol=1e-5)
    assert Path(files.scene).stat().st_size < 200_000  # small enough to commit


def test_procedural_bvh_reads_back_as_the_walk() -> None:
    walk = procedural_walk(20, seed=4, turn_deg_per_s=20.0, initial_heading_deg=30.0)
    text = procedural_bvh_text(walk)
    motion = read_bvh_motion(
        text.encode(), name="w.bvh", joint_sets=("coco17",), skeleton="bandai_namco", units="cm"
    )
    mapping = get_skeleton_mapping("bandai_namco", "coco17")
    expected, _ = apply_mapping(mapping, walk.joint_names, walk.positions, walk.global_rotations)
    np.testing.assert_allclose(motion.joints["coco17"], expected, atol=1e-3)
    assert motion.fps == pytest.approx(30.0)


def test_walk_catalog_holds_out_test_and_val_clips(tmp_path: Path) -> None:
    clips = walk_clips(5, seed=1)
    assert len({c.walker.seed for c in clips}) == 5
    path = write_walk_catalog(tmp_path / "data", clips, num_frames=12)
    catalog = load_catalog(path)
    (entry,) = catalog.datasets()
    assert entry.name == "demo_walks"
    split = entry.split
    assert split.assign(clips[-1].name) == "test" and split.assign(clips[-2].name) == "val"
    assert split.assign(clips[0].name) == "train"
    assert sorted(p.name for p in (tmp_path / "data" / "bvh").iterdir()) == [c.name for c in clips]
    with pytest.raises(ValueError, match="at least 3"):
        walk_clips(2)


# ------------------------------------------------------------------------ the demo flow


def stand_in_checkpoint(path: Path) -> Path:
    """A tiny random-weights ``coco17_pelvis`` finetune-multiview checkpoint (docs/TRAINING.md
    contract) with feature statistics fitted on the example's 2D tracks."""
    torch.manual_seed(0)
    config = ModelConfig.profile(
        "tiny",
        "coco17_pelvis",
        d_model=32,
        num_layers=2,
        num_heads=4,
        ff_dim=64,
        pointmap_size=32,
        pointmap_input_size=32,
        pointmap_channels=(4, 8, 8, 16),
        max_frames=48,
    )
    scene = make_example_scene(num_frames=60)
    pixels = add_pelvis_confidence(scene.keypoints[0].astype(np.float64))[..., :2]
    size = (scene.camera.width, scene.camera.height)
    payload = {
        "stage": "finetune-multiview",
        "model_config": config.to_dict(),
        "model": MultiViewDenoiser(config).state_dict(),
        "step": 0,
        "stats": {
            "local": FeatureStats.fit(encode_local(pixels, size)).to_dict(),
            "global": FeatureStats.fit(encode_global(pixels, size)).to_dict(),
        },
        "scene_config": SceneConfig(pointmap_size=32).model_dump(mode="json"),
        "train_config": {"window": 40, "profile": "tiny", "joint_set": "coco17_pelvis"},
        "data": {},
        "history": [],
        "parent": None,
    }
    return save_checkpoint(path, payload)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return stand_in_checkpoint(tmp_path_factory.mktemp("ckpt") / "stand_in.pt")


def test_resolve_demo_checkpoint_order(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing_release = tmp_path / "checkpoints" / "coco17.pt"
    monkeypatch.setattr(flows.demo, "release_checkpoint", lambda joint_set: missing_release)
    with pytest.raises(FileNotFoundError, match="--checkpoint FILE or set"):
        resolve_demo_checkpoint(None)
    monkeypatch.setenv(DEMO_CHECKPOINT_ENV, str(checkpoint))
    assert resolve_demo_checkpoint(None) == (checkpoint.absolute(), "environment")
    assert resolve_demo_checkpoint(str(checkpoint))[1] == "argument"
    with pytest.raises(FileNotFoundError, match="--checkpoint"):
        resolve_demo_checkpoint(str(tmp_path / "nope.pt"))
    stage1 = torch.load(checkpoint, weights_only=False)
    stage1["stage"] = "pretrain-2d"
    save_checkpoint(tmp_path / "stage1.pt", stage1)
    with pytest.raises(ValueError, match="stage 2"):
        resolve_demo_checkpoint(str(tmp_path / "stage1.pt"))


def test_demo_recovers_the_example_into_an_archive(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    copy = tmp_path / "docs" / "demo.png"
    summary = demo(output_dir=str(out), checkpoint=str(checkpoint), steps=2, picture_copy=str(copy))

    archive = open_archive(out / "motion.archive")
    assert archive.joint_set == "coco17"
    rows = archive.sequences.set_index("track_id")
    assert list(rows.index) == [0, 1] and (rows["status"] == "ok").all()
    truth = read_example_truth(BUNDLED_EXAMPLE_DIR / "truth.npz")
    for track in (0, 1):
        result = archive.result("scene", track)
        # Every detected frame is recovered, in the camera's world, at metric scale.
        np.testing.assert_array_equal(result.frames, np.flatnonzero(truth.detected[track]))
        assert result.joints.shape == (truth.detected[track].sum(), 17, 3)
        assert np.isfinite(result.joints).all()
    assert (out / "motion.archive" / "previews" / "scene.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "demo.png").read_bytes()[:8] == PNG_MAGIC
    assert copy.read_bytes() == (out / "demo.png").read_bytes()

    assert summary["example"]["source"] == "bundled"
    assert summary["example"]["people"] == 2 and summary["example"]["frames"] == 240
    assert summary["checkpoint"]["source"] == "argument"
    assert summary["ankle_height_m"] == PLANTED_ANKLE_HEIGHT_M  # the example's skeleton
    assert summary["archive"]["tracks"] == 2 and summary["archive"]["recovered_now"] == 1
    assert summary["archive"]["frames"] == int(truth.detected.sum())
    scores = summary["scores"]
    assert [s["track_id"] for s in scores] == [0, 1]
    for score in scores:
        assert score["status"] == "ok" and score["frames"] > 200
        assert score["abs_mpjpe_mm"] > 0 and score["pa_mpjpe_mm"] > 0  # a random model
        # The heuristic, on these planted-foot walks, is within a few decimetres.
        assert 20.0 < score["baseline_abs_mpjpe_mm"] < 400.0
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["scores"] == scores
    report = summary["report"]
    for text in (
        "input:",
        "checkpoint:",
        "archive:",
        "previews:",
        "picture:",
        "ankles:",
        "Abs-MPJPE",
    ):
        assert text in report
    assert checkpoint.name in report and summary["checkpoint"]["sha256"][:12] in report

    # Again: the clip is already in the archive; the summary reads the same results.
    again = demo(output_dir=str(out), checkpoint=str(checkpoint), steps=2)
    assert again["archive"]["recovered_now"] == 0 and again["scores"] == scores
    assert "already in the archive" in again["report"]


def test_cli_demo_modes(
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(flows.demo, "release_checkpoint", lambda joint_set: tmp_path / "missing.pt")
    assert cli_main(["demo"]) == 2
    assert "release checkpoint" in capsys.readouterr().err
    assert cli_main(["demo", "--geometry", "--checkpoint", str(checkpoint)]) == 2
    assert "does not apply to --geometry" in capsys.readouterr().err
    assert cli_main(["demo", "--stage1-minutes", "1"]) == 2
    assert "needs --full" in capsys.readouterr().err

    calls: dict[str, dict[str, Any]] = {}

    def fake(name: str):
        def run(**kwargs: Any) -> dict[str, Any]:
            calls[name] = kwargs
            return {"report": f"{name} report"}

        return run

    monkeypatch.setattr(flows.demo, "geometry_demo", fake("geometry"))
    monkeypatch.setattr(flows.demo_full, "demo_full", fake("full"))
    assert cli_main(["demo", "--geometry", "--pixel-noise", "3"]) == 0
    assert calls["geometry"]["pixel_noise_px"] == 3.0 and calls["geometry"]["seed"] == 0
    assert cli_main(["demo", "--full", "--clips", "5", "--stage2-minutes", "0.5"]) == 0
    assert calls["full"]["num_clips"] == 5 and calls["full"]["stage2_minutes"] == 0.5
    assert calls["full"]["stage1_minutes"] == flows.demo_full.DEFAULT_STAGE1_MINUTES
    assert "full report" in capsys.readouterr().out

    monkeypatch.setenv(DEMO_CHECKPOINT_ENV, str(checkpoint))
    out = tmp_path / "cli-demo"
    assert cli_main(["demo", "--output", str(out), "--steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "mocap2to3 demo: 2 people recovered" in printed
    assert "(environment, sha256" in printed
    assert (out / "demo.png").is_file()


def test_prefect_yaml_has_the_demo_deployments() -> None:
    config = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in config["deployments"]}
    for name, entrypoint, flow in (
        ("demo", "flows/demo.py:demo", flows.demo.demo),
        ("demo-full", "flows/demo_full.py:demo_full", flows.demo_full.demo_full),
        ("geometry-demo", "flows/demo.py:geometry_demo", flows.demo.geometry_demo),
    ):
        deployment = deployments[name]
        assert deployment["entrypoint"] == entrypoint and flow.name == name
        assert set(deployment["parameters"]) <= set(flow.parameters.properties)


# ------------------------------------------------------------------------- slow: all of it


@pytest.mark.slow
def test_demo_full_runs_the_whole_pipeline(tmp_path: Path) -> None:
    summary = flows.demo_full.demo_full(
        output_dir=str(tmp_path / "full"),
        num_clips=4,
        clip_frames=150,
        stage1_steps=2,
        stage2_steps=2,
        sampling_steps=2,
        device="cpu",
    )
    store = Path(summary["store"])
    assert (store / "zarr.json").exists() or any(store.iterdir())
    assert summary["stage1"]["steps"] == 2 and summary["stage2"]["steps"] == 2
    assert Path(summary["checkpoint"]).is_file()
    archive = open_archive(summary["archive"])
    assert (archive.sequences["status"] == "ok").sum() == 2
    assert Path(summary["evaluate_report"]).is_file()
    methods = {row["method"] for row in summary["evaluate_overall"]}
    assert {"model", "upper_bound", "ground_contact"} <= methods
    assert Path(summary["picture"]).read_bytes()[:8] == PNG_MAGIC
    for text in ("prepare:", "stage 1:", "stage 2:", "recover:", "evaluate:", "summary:"):
        assert text in summary["report"]
