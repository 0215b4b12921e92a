"""Tests for the Parquet motion archive (DESIGN 4.2): round trips, schema, crash safety,
replacement, failed rows, format versions, locking and run-to-run comparison."""

from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_catalog.motion_archive import (
    CLIP_TRACK_ID,
    FORMAT_NAME,
    FORMAT_VERSION,
    SEQUENCES_FILE,
    ArchiveFormatError,
    ArchiveLocked,
    ArchiveWriter,
    SequenceResult,
    archive_digest,
    load_canonical,
    open_archive,
    read_archive_metadata,
    write_part,
)
from mocap_core.joint_sets import JOINT_SETS

CAMERA = {
    "width": 1920,
    "height": 1080,
    "K": [[1000.0, 0.0, 960.0], [0.0, 1000.0, 540.0], [0.0, 0.0, 1.0]],
    "height_m": 1.5,
    "pitch_deg": 10.0,
    "roll_deg": 0.0,
}


def make_result(
    rng: np.random.Generator,
    sequence_id: str,
    track_id: int = 0,
    *,
    num_frames: int = 6,
    joint_set: str = "smpl22",
    smpl: bool = False,
    tracks2d: bool = False,
    first_frame: int = 0,
    fps: float = 30.0,
    seconds: float | None = 1.25,
) -> SequenceResult:
    num_joints = JOINT_SETS[joint_set].num_joints
    extra = {}
    if smpl:
        extra = {
            "smpl_transl": rng.normal(size=(num_frames, 3)).astype(np.float32),
            "smpl_global_orient": rng.normal(size=(num_frames, 3)).astype(np.float32),
            "smpl_body_pose": rng.normal(size=(num_frames, 69)).astype(np.float32),
            "smpl_betas": rng.normal(size=10).astype(np.float32),
        }
    if tracks2d:
        extra["tracks2d"] = rng.uniform(0, 1000, size=(num_frames, 17, 3)).astype(np.float32)
        extra["tracks2d_joint_set"] = "coco17"
    return SequenceResult(
        sequence_id=sequence_id,
        track_id=track_id,
        source_path=f"/data/{sequence_id}.npz",
        input_sha256=f"in-{sequence_id}",
        checkpoint_sha256="ckpt",
        params_hash="params",
        joint_set=joint_set,
        fps=fps,
        camera=CAMERA,
        joints=rng.normal(size=(num_frames, num_joints, 3)).astype(np.float32),
        conf=rng.uniform(size=(num_frames, num_joints)).astype(np.float32),
        # Gaps in the frame numbers, as when a person leaves the image for a while.
        frames=first_frame + np.cumsum(rng.integers(1, 3, size=num_frames)) - 1,
        source_sha256=f"src-{sequence_id}",
        seconds=seconds,
        meta={"num_tracks": 1},
        **extra,
    )


def failed_result(sequence_id: str, error: str = "no camera") -> SequenceResult:
    return SequenceResult.failed(
        sequence_id=sequence_id,
        error=error,
        source_path=f"/data/{sequence_id}.json",
        input_sha256=f"in-{sequence_id}",
        checkpoint_sha256="ckpt",
        params_hash="params",
        joint_set="smpl22",
    )


def assert_same_result(read: SequenceResult, written: SequenceResult) -> None:
    for name in ("joints", "conf", "smpl_transl", "smpl_global_orient", "smpl_body_pose"):
        expected, actual = getattr(written, name), getattr(read, name)
        if expected is None:
            assert actual is None, name
        else:
            np.testing.assert_array_equal(actual, expected, err_msg=name)
            assert actual.dtype == np.float32
    np.testing.assert_array_equal(read.frames, written.frames)
    for name in ("smpl_betas", "tracks2d"):
        expected = getattr(written, name)
        if expected is None:
            assert getattr(read, name) is None
        else:
            np.testing.assert_array_equal(getattr(read, name), expected)
    for name in (
        "sequence_id",
        "track_id",
        "source_path",
        "input_sha256",
        "checkpoint_sha256",
        "params_hash",
        "joint_set",
        "fps",
        "source_sha256",
        "seconds",
        "tracks2d_joint_set",
    ):
        assert getattr(read, name) == getattr(written, name), name
    assert read.camera == written.camera
    assert dict(read.meta) == dict(written.meta)


# ---------------------------------------------------------------- round trips and schema


def test_round_trip_without_smpl(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    written = [make_result(rng, "walk/a", 0), make_result(rng, "walk/a", 3, first_frame=10)]
    written.append(make_result(rng, "b", 0, num_frames=1))
    with ArchiveWriter(tmp_path / "arch", "smpl22") as writer:
        part = writer.write_batch(written)
    assert part.frames_file is not None and part.frames_file.startswith("frames/part-")

    archive = open_archive(tmp_path / "arch")
    assert archive.joint_set == "smpl22" and archive.format_version == FORMAT_VERSION
    table = archive.sequences
    assert list(zip(table["sequence_id"], table["track_id"], strict=True)) == [
        ("b", 0),
        ("walk/a", 0),
        ("walk/a", 3),
    ]
    assert (table["status"] == "ok").all() and table["error"].isna().all()
    assert list(table["n_frames"]) == [1, 6, 6]
    assert not table["has_smpl"].any() and table["smpl_betas"].isna().all()
    assert json.loads(table["camera"].iloc[0]) == CAMERA
    for result in written:
        assert_same_result(archive.result(result.sequence_id, result.track_id), result)
        joints = archive.joints(result.sequence_id, result.track_id)
        assert joints.shape == (result.num_frames, 22, 3) and joints.dtype == np.float32

    frames = archive.frames("walk/a")
    assert list(frames["track_id"]) == [0] * 6 + [3] * 6
    one = written[1]
    np.testing.assert_allclose(frames["time_s"].iloc[6:], one.frames / 30.0)
    assert frames["smpl_body_pose"].isna().all()
    everything = archive.to_pandas()
    assert len(everything) == 13
    assert list(everything["sequence_id"]) == ["b"] + ["walk/a"] * 12


def test_round_trip_with_smpl_and_tracks2d(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    with_smpl = make_result(rng, "a", 0, smpl=True, tracks2d=True)
    without = make_result(rng, "a", 1, tracks2d=True)
    plain = make_result(rng, "c", 0, smpl=True)
    with ArchiveWriter(tmp_path / "arch", "smpl22") as writer:
        part = writer.write_batch([plain, without, with_smpl])
    assert len(part.tracks2d_files) == 1 and part.tracks2d_files[0].endswith("-coco17.parquet")

    archive = open_archive(tmp_path / "arch")
    for result in (with_smpl, without, plain):
        assert_same_result(archive.result(result.sequence_id, result.track_id), result)
    rows = archive.sequences.set_index(["sequence_id", "track_id"])
    assert rows.loc[("a", 0), "has_smpl"] and not rows.loc[("a", 1), "has_smpl"]
    np.testing.assert_array_equal(rows.loc[("a", 0), "smpl_betas"], with_smpl.smpl_betas)
    assert pd.isna(rows.loc[("c", 0), "tracks2d_file"])
    tracks = archive.tracks2d_tables()["coco17"]
    assert tracks.num_rows == 12 and tracks["keypoints"].type.list_size == 51
    # Without asking for the 2D tracks, they are not read.
    assert archive.result("a", 0, with_tracks2d=False).tracks2d is None


def test_schema_metadata_and_fixed_size_lists(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    with ArchiveWriter(tmp_path / "arch", "coco17_pelvis") as writer:
        part = writer.write_batch(
            [make_result(rng, "a", joint_set="coco17_pelvis", smpl=True, tracks2d=True)]
        )
    names = list(JOINT_SETS["coco17_pelvis"].joint_names)

    frames = pq.read_schema(tmp_path / "arch" / part.frames_file)
    meta = {k.decode(): v.decode() for k, v in frames.metadata.items()}
    assert meta["format"] == FORMAT_NAME == "mocap2to3.motion_archive"
    assert meta["format_version"] == "1" and meta["table"] == "frames"
    assert meta["joint_set"] == "coco17_pelvis" and json.loads(meta["joint_names"]) == names
    assert meta["up_axis"] == "y" and meta["units"] == "m"
    assert frames.field("sequence_id").type == pa.string()
    assert frames.field("track_id").type == pa.int32()
    assert frames.field("frame").type == pa.int32()
    assert frames.field("time_s").type == pa.float64()
    sizes = {"joints_world": 18 * 3, "joints_conf": 18}
    sizes |= {"smpl_transl": 3, "smpl_global_orient": 3, "smpl_body_pose": 69}
    for name, size in sizes.items():
        kind = frames.field(name).type
        assert pa.types.is_fixed_size_list(kind), name
        assert kind.list_size == size and kind.value_type == pa.float32(), name

    index = pq.read_schema(tmp_path / "arch" / SEQUENCES_FILE)
    assert index.metadata[b"table"] == b"sequences"
    assert index.field("smpl_betas").type.list_size == 10
    tracks = pq.read_schema(tmp_path / "arch" / part.tracks2d_files[0])
    assert tracks.metadata[b"units"] == b"px" and tracks.metadata[b"joint_set"] == b"coco17"
    assert read_archive_metadata(tmp_path / "arch")["joint_names"] == names


@settings(max_examples=12, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    smpl=st.lists(st.booleans(), min_size=4, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_round_trip_property(lengths: list[int], smpl: list[bool], seed: int) -> None:
    rng = np.random.default_rng(seed)
    written = [
        make_result(rng, f"clip{i}", i % 2, num_frames=n, smpl=smpl[i])
        for i, n in enumerate(lengths)
    ]
    with tempfile.TemporaryDirectory() as folder:
        with ArchiveWriter(Path(folder) / "arch", "smpl22") as writer:
            writer.write_batch(written)
        archive = open_archive(Path(folder) / "arch")
        for result in written:
            assert_same_result(archive.result(result.sequence_id, result.track_id), result)
        assert archive.frames_table().num_rows == sum(lengths)


# ---------------------------------------------------------------- crash safety and replacement


def test_crash_between_frames_write_and_index_update(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(3)
    path = tmp_path / "arch"
    kept = make_result(rng, "kept")
    with ArchiveWriter(path, "smpl22") as writer:
        writer.write_batch([kept])

        def crash(self, table):
            raise KeyboardInterrupt("killed")

        monkeypatch.setattr(ArchiveWriter, "_write_index", crash)
        with pytest.raises(KeyboardInterrupt):
            writer.write_batch([make_result(rng, "lost", tracks2d=True)])
        monkeypatch.undo()
    # An interrupted atomic write leaves at most a temporary file behind.
    (path / "frames" / ".tmp-abandoned").write_bytes(b"PAR1 half a file")
    assert len(list((path / "frames").iterdir())) == 3

    archive = open_archive(path)
    assert list(archive.sequences["sequence_id"]) == ["kept"]
    with pytest.raises(KeyError, match="lost"):
        archive.frames("lost")
    assert set(archive.to_pandas()["sequence_id"]) == {"kept"}
    assert_same_result(archive.result("kept", 0), kept)

    with ArchiveWriter(path, "smpl22") as writer:
        counts = writer.compact()
    assert counts == {"files_deleted": 3, "files_rewritten": 0, "rows_dropped": 12}
    assert len(list((path / "frames").iterdir())) == 1
    assert list((path / "tracks2d").iterdir()) == []
    assert_same_result(open_archive(path).result("kept", 0), kept)


def test_uncommitted_part_is_invisible_and_commit_publishes_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    path = tmp_path / "arch"
    result = make_result(rng, "a")
    with ArchiveWriter(path, "smpl22") as writer:
        part = write_part(path, [result])  # as a Dask worker would
        assert open_archive(path).sequences.empty
        part = pickle.loads(pickle.dumps(part))  # travels back to the flow
        writer.commit([part])
    assert_same_result(open_archive(path).result("a", 0), result)


def test_commit_refuses_a_part_whose_file_is_missing(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    path = tmp_path / "arch"
    with ArchiveWriter(path, "smpl22") as writer:
        part = write_part(path, [make_result(rng, "a")])
        (path / part.frames_file).unlink()
        with pytest.raises(FileNotFoundError, match="part file"):
            writer.commit([part])
    assert open_archive(path).sequences.empty


def test_replacing_a_sequence_orphans_its_old_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    path = tmp_path / "arch"
    old_a = [make_result(rng, "a", 0), make_result(rng, "a", 1)]
    b = make_result(rng, "b", 0, smpl=True, tracks2d=True)
    old_a_with_tracks = make_result(rng, "a", 2, tracks2d=True)
    with ArchiveWriter(path, "smpl22") as writer:
        first = writer.write_batch([*old_a, old_a_with_tracks, b])
        new_a = make_result(rng, "a", 0, num_frames=4)
        writer.write_batch([new_a])

        archive = open_archive(path)
        # All tracks of "a" were replaced by the new run's single track.
        assert list(archive.sequences["sequence_id"]) == ["a", "b"]
        assert_same_result(archive.result("a", 0), new_a)
        with pytest.raises(KeyError, match="track 1"):
            archive.result("a", 1)
        assert len(archive.to_pandas()) == 4 + 6
        assert_same_result(archive.result("b", 0), b)

        counts = writer.compact()
    # The first part held "a" (orphaned) and "b" (live): rewritten without "a".
    assert counts == {"files_deleted": 0, "files_rewritten": 2, "rows_dropped": 18 + 6}
    assert not (path / first.frames_file).exists()
    archive = open_archive(path)
    assert_same_result(archive.result("b", 0), b)
    assert_same_result(archive.result("a", 0), new_a)
    assert len(list((path / "frames").iterdir())) == 2


def test_digest_is_unchanged_by_compaction(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    path = tmp_path / "arch"
    with ArchiveWriter(path, "smpl22") as writer:
        writer.write_batch([make_result(rng, "a"), make_result(rng, "b", tracks2d=True)])
        writer.write_batch([make_result(rng, "a", seconds=3.0)])
        before = archive_digest(path)
        writer.compact()
    assert archive_digest(path) == before


# ---------------------------------------------------------------- failed rows and resuming


def test_failed_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    path = tmp_path / "arch"
    with ArchiveWriter(path, "smpl22") as writer:
        part = writer.write_batch([failed_result("broken", "keypoints contain NaN")])
        assert part.frames_file is None and part.files == ()
        writer.write_batch([make_result(rng, "good")])
    archive = open_archive(path)
    row = archive.sequences.set_index("sequence_id").loc["broken"]
    assert row["status"] == "failed" and row["error"] == "keypoints contain NaN"
    assert row["track_id"] == CLIP_TRACK_ID and row["n_frames"] == 0
    assert pd.isna(row["frames_file"])
    assert archive.frames("broken").empty
    with pytest.raises(ValueError, match="failed: keypoints contain NaN"):
        archive.joints("broken", CLIP_TRACK_ID)


def test_finished_keys_for_resuming(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    path = tmp_path / "arch"
    with ArchiveWriter(path, "smpl22") as writer:
        writer.write_batch([make_result(rng, "good"), failed_result("broken")])
        partly = make_result(rng, "partly", 0)
        bad_track = SequenceResult.failed(
            sequence_id="partly",
            track_id=1,
            error="track too short",
            source_path=partly.source_path,
            input_sha256=partly.input_sha256,
            checkpoint_sha256="ckpt",
            params_hash="params",
            joint_set="smpl22",
        )
        writer.write_batch([partly, bad_track])
    archive = open_archive(path)
    assert archive.finished("good", "in-good", "ckpt", "params")
    assert not archive.finished("good", "in-good", "other-ckpt", "params")
    assert not archive.finished("good", "changed-input", "ckpt", "params")
    assert not archive.finished("good", "in-good", "ckpt", "other-params")
    # A clip with the same bytes under another id is other work.
    assert not archive.finished("copy-of-good", "in-good", "ckpt", "params")
    assert archive.finished_keys() == {
        ("good", "in-good", "ckpt", "params"),
        ("broken", "in-broken", "ckpt", "params"),
        ("partly", "in-partly", "ckpt", "params"),
    }
    assert archive.finished_keys(retry_failed=True) == {("good", "in-good", "ckpt", "params")}


# ---------------------------------------------------------------- formats, validation, lock


def _rewrite_index_metadata(path: Path, **changes: str) -> None:
    table = pq.read_table(path / SEQUENCES_FILE)
    meta = dict(table.schema.metadata)
    meta.update({k.encode(): v.encode() for k, v in changes.items()})
    pq.write_table(table.replace_schema_metadata(meta), path / SEQUENCES_FILE)


def test_unknown_and_newer_formats_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "arch"
    ArchiveWriter(path, "smpl22").close()
    assert open_archive(path).sequences.empty

    _rewrite_index_metadata(path, format_version="2")
    with pytest.raises(ArchiveFormatError, match="newer than this package reads"):
        open_archive(path)
    with pytest.raises(ArchiveFormatError, match="newer"):
        ArchiveWriter(path, "smpl22")
    _rewrite_index_metadata(path, format_version="1", format="mocap2to3.motion_store")
    with pytest.raises(ArchiveFormatError, match="not a motion archive"):
        open_archive(path)

    plain = tmp_path / "plain"
    plain.mkdir()
    pq.write_table(pa.table({"x": [1]}), plain / SEQUENCES_FILE)
    with pytest.raises(ArchiveFormatError, match="not a motion archive"):
        open_archive(plain)
    with pytest.raises(ArchiveFormatError, match="no sequences.parquet"):
        open_archive(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_archive(tmp_path / "nowhere")


def test_writer_checks_joint_set_and_lock(tmp_path: Path) -> None:
    path = tmp_path / "arch"
    with ArchiveWriter(path, "smpl22") as writer:
        with pytest.raises(ArchiveLocked, match="one writer at a time"):
            ArchiveWriter(path, "smpl22")
        writer.close()
        with pytest.raises(ValueError, match="closed"):
            writer.commit([])
    with pytest.raises(ValueError, match="holds joint set 'smpl22', not 'coco17'"):
        ArchiveWriter(path, "coco17")
    with pytest.raises(ValueError, match="unknown joint set"):
        ArchiveWriter(tmp_path / "other", "coco18")
    ArchiveWriter(path, "smpl22").close()  # the lock was released each time


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"joints": np.zeros((6, 21, 3), np.float32)}, r"joints must have shape \(T, 22, 3\)"),
        ({"conf": np.zeros((5, 22), np.float32)}, r"conf must have shape \(6, 22\)"),
        ({"frames": np.array([0, 1, 2, 2, 3, 4])}, "strictly increase"),
        ({"frames": np.arange(6.0)}, "integers"),
        ({"joint_set": "coco17"}, "differs from the archive's"),
        ({"status": "done"}, "status must be one of"),
        ({"error": "oops"}, "an ok result has no error"),
        ({"smpl_transl": np.zeros((6, 3))}, "give all of"),
        ({"smpl_betas": np.zeros(10)}, "smpl_betas without"),
        ({"tracks2d": np.zeros((6, 17, 3))}, "tracks2d_joint_set"),
        ({"fps": 0.0}, "fps must be a positive number"),
        ({"camera": {"K": np.eye(3)}}, "camera is not JSON-serialisable"),
        ({"joints": np.full((6, 22, 3), np.inf, np.float32)}, "infinite"),
    ],
)
def test_bad_results_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    result = make_result(np.random.default_rng(10), "clip")
    for name, value in change.items():
        setattr(result, name, value)
    with ArchiveWriter(tmp_path / "arch", "smpl22") as writer:
        with pytest.raises(ValueError, match=message):
            writer.write_batch([result])
    assert not (tmp_path / "arch" / "frames").exists()  # checked before anything is written


def test_batch_rules(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    with ArchiveWriter(tmp_path / "arch", "smpl22") as writer:
        with pytest.raises(ValueError, match="appears twice"):
            writer.write_batch([make_result(rng, "a"), make_result(rng, "a")])
        failed = failed_result("x")
        failed.joints = np.zeros((1, 22, 3))
        with pytest.raises(ValueError, match="a failed result has no arrays"):
            writer.write_batch([failed])
        with pytest.raises(ValueError, match="needs the reason"):
            writer.write_batch([failed_result("y", error="")])
    with pytest.raises(FileNotFoundError):
        write_part(tmp_path / "missing", [make_result(rng, "a")])


# ---------------------------------------------------------------- comparing runs


def test_canonical_equality_across_batching_and_timing(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    results = [make_result(rng, f"c{i}", i % 3, smpl=i % 2 == 0, tracks2d=True) for i in range(6)]
    results.append(failed_result("z"))

    with ArchiveWriter(tmp_path / "local", "smpl22") as writer:
        writer.write_batch(results)
    # Another "run": other batches, another order, other timings, parts committed together.
    with ArchiveWriter(tmp_path / "dask", "smpl22") as writer:
        parts = []
        for batch in (results[4:], results[:2], results[2:4]):
            for result in batch:
                result.seconds = 99.0
            parts.append(write_part(tmp_path / "dask", list(reversed(batch))))
        writer.commit(parts)

    local, dask = load_canonical(tmp_path / "local"), load_canonical(tmp_path / "dask")
    assert set(local) == {"sequences", "frames", "tracks2d/coco17"}
    for name in local:
        assert local[name].equals(dask[name]), name
    assert "seconds" not in local["sequences"].schema.names
    assert archive_digest(tmp_path / "local") == archive_digest(tmp_path / "dask")

    # One float32 ulp in one joint of one frame is a different archive.
    changed = results[3]
    changed.joints = changed.joints.copy()
    changed.joints[2, 5, 1] = np.nextafter(changed.joints[2, 5, 1], np.float32(np.inf))
    with ArchiveWriter(tmp_path / "dask", "smpl22") as writer:
        writer.write_batch([changed])
    assert archive_digest(tmp_path / "local") != archive_digest(tmp_path / "dask")
