"""The Zarr motion store: round trips, attributes, versions, atomic swap, cache, split rule."""

from __future__ import annotations

import json
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from factories import manifest_of_sequences, random_sequence, random_sequences, write_tiny_store
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from data_catalog.store import (
    CONVERSION_VERSION,
    FORMAT_NAME,
    FORMAT_VERSION,
    ItemCache,
    PreparedSequence,
    QuarantineEntry,
    SplitRule,
    StoreFormatError,
    StoreNotFound,
    cache_key,
    conversion_config,
    open_store,
    read_current,
    read_quarantine,
    store_is_current,
    write_quarantine,
    write_store_version,
)
from mocap_core.joint_sets import JOINT_SETS

LENGTHS = [50, 130, 7, 64, 200]


def expected_frames(seq: PreparedSequence, joint_set: str) -> np.ndarray:
    valid = seq.valid[joint_set]
    return np.where(valid[..., None], seq.joints[joint_set], 0.0).astype(np.float32)


def assert_store_holds(store_dir: str | Path, sequences: list[PreparedSequence]) -> None:
    store = open_store(store_dir)
    assert list(store.sequences["sequence_id"]) == [s.sequence_id for s in sequences]
    for row, seq in enumerate(sequences):
        for js in seq.joints:
            np.testing.assert_array_equal(store.joints(js, row), expected_frames(seq, js))
            np.testing.assert_array_equal(store.valid(js, seq.sequence_id), seq.valid[js])


def test_round_trip_3d_two_joint_sets(tmp_path: Path) -> None:
    sequences = random_sequences(0, LENGTHS, joint_sets=("smpl22", "coco17"))
    info = write_tiny_store(tmp_path / "ds", sequences, joint_sets=("smpl22", "coco17"))
    assert info.num_sequences == 5 and info.num_frames == sum(LENGTHS)
    assert_store_holds(tmp_path / "ds", sequences)
    store = open_store(tmp_path / "ds")
    table = store.sequences
    starts = np.concatenate([[0], np.cumsum(LENGTHS)[:-1]])
    np.testing.assert_array_equal(table["start"], starts)
    np.testing.assert_array_equal(table["stop"], np.cumsum(LENGTHS))
    np.testing.assert_array_equal(table["length"], LENGTHS)
    assert list(table["source_key"]) == [s.source_key for s in sequences]
    assert list(table["source_sha256"]) == [s.source_sha256 for s in sequences]
    assert json.loads(table["labels"].iloc[1]) == {"style": 1}
    assert set(table["split"]) <= {"train", "val", "test"}
    assert table["original_fps"].iloc[0] == 120.0
    # A frame slice reads across sequence boundaries as plain store frames.
    both = np.concatenate([expected_frames(s, "coco17") for s in sequences[:2]])
    np.testing.assert_array_equal(store.joints("coco17", slice(0, 180)), both)
    assert store.array("smpl22").shape == (sum(LENGTHS), 22, 3)
    assert store.manifest().fingerprint == store.manifest_fingerprint == info.manifest_fingerprint


def test_attributes(tmp_path: Path) -> None:
    sequences = random_sequences(1, [10, 20], joint_sets=("smpl22", "coco17"))
    config = conversion_config("bvh", {"units": "cm"}, ["smpl22", "coco17"], 30)
    info = write_tiny_store(
        tmp_path / "ds", sequences, joint_sets=("smpl22", "coco17"), config=config, source="x"
    )
    attrs = open_store(tmp_path / "ds").attrs
    assert attrs["format"] == FORMAT_NAME == "mocap2to3.motion_store"
    assert attrs["format_version"] == FORMAT_VERSION == 1
    assert attrs["kind"] == "3d" and attrs["units"] == "m" and attrs["up_axis"] == "y"
    assert attrs["fps"] == 30.0
    assert attrs["joint_sets"] == {
        "smpl22": list(JOINT_SETS["smpl22"].joint_names),
        "coco17": list(JOINT_SETS["coco17"].joint_names),
    }
    assert attrs["manifest_fingerprint"] == manifest_of_sequences("tiny", sequences).fingerprint
    assert attrs["config"] == config and attrs["config"]["conversion_version"] == CONVERSION_VERSION
    assert attrs["config_hash"] == info.config_hash
    assert attrs["package_version"] and attrs["created"].endswith("+00:00")
    assert attrs["num_frames"] == 30 and attrs["num_sequences"] == 2


def test_round_trip_2d_store(tmp_path: Path) -> None:
    sequences = random_sequences(2, [12, 30], joint_sets=("coco17",), kind="2d")
    write_tiny_store(tmp_path / "ds", sequences, kind="2d", joint_sets=("coco17",))
    store = open_store(tmp_path / "ds")
    assert store.kind == "2d" and store.attrs["units"] == "px" and store.array_name == "keypoints2d"
    assert_store_holds(tmp_path / "ds", sequences)
    row = store.sequences.iloc[0]
    assert (row["width"], row["height"], row["track_id"]) == (640, 480, 0)
    np.testing.assert_array_equal(np.array(json.loads(row["K"])), sequences[0].K)
    assert row["sequence_id"] == "item000.bvh#t0#0"


@settings(max_examples=12, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 90), min_size=0, max_size=6),
    chunk=st.integers(1, 70),
)
def test_chunked_along_time_only_and_exact(
    tmp_path_factory, lengths: list[int], chunk: int
) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("ds")
    sequences = random_sequences(3, lengths)
    write_tiny_store(folder, sequences, chunk_frames=chunk)
    store = open_store(folder)
    assert store.array("smpl22").chunks == (chunk, 22, 3)
    assert store.valid_array("smpl22").chunks == (chunk, 22)
    assert store.num_frames == sum(lengths)
    assert_store_holds(folder, sequences)


def test_writing_streams_whole_chunks_before_the_input_ends(tmp_path: Path) -> None:
    sequences = random_sequences(4, [40] * 6)
    seen_sizes: list[int] = []

    def produce() -> Iterator[PreparedSequence]:
        for i, seq in enumerate(sequences):
            if i == 5:
                versions = list((tmp_path / "ds" / "versions").iterdir())
                array = zarr.open_group(versions[0] / "store.zarr", mode="r")["smpl22/joints3d"]
                seen_sizes.append(array.shape[0])
            yield seq

    write_store_version(
        tmp_path / "ds",
        produce(),
        kind="3d",
        joint_sets=["smpl22"],
        fps=30,
        manifest=manifest_of_sequences("tiny", sequences),
        chunk_frames=64,
    )
    # 200 frames were handed over before sequence 5: three whole chunks of 64 are on disk.
    assert seen_sizes == [192]
    assert_store_holds(tmp_path / "ds", sequences)


def test_memory_filesystem_round_trip() -> None:
    url = f"memory://stores-{uuid.uuid4().hex}/ds"
    sequences = random_sequences(5, [33, 17])
    info = write_tiny_store(url, sequences)
    assert info.version_url.startswith("memory://")
    assert_store_holds(url, sequences)
    assert read_current(url).version == info.version
    second = write_tiny_store(url, sequences[:1])
    assert len(open_store(url).sequences) == 1
    assert second.version != info.version


def test_empty_store(tmp_path: Path) -> None:
    info = write_tiny_store(tmp_path / "ds", [])
    store = open_store(tmp_path / "ds")
    assert info.num_frames == 0 and len(store.sequences) == 0
    assert store.array("smpl22").shape == (0, 22, 3)
    assert list(store.sequences.columns)[:3] == ["sequence_id", "start", "stop"]


def test_open_refuses_unknown_format_and_newer_versions(tmp_path: Path) -> None:
    write_tiny_store(tmp_path / "ds", random_sequences(6, [5]))
    version = read_current(tmp_path / "ds").version
    group_path = tmp_path / "ds" / "versions" / version / "store.zarr"
    group = zarr.open_group(group_path, mode="r+")
    group.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(StoreFormatError, match="newer than this package"):
        open_store(tmp_path / "ds")
    group.attrs["format_version"] = FORMAT_VERSION
    group.attrs["format"] = "somebody.elses_store"
    with pytest.raises(StoreFormatError, match="not a motion store"):
        open_store(tmp_path / "ds")
    group.attrs["format"] = FORMAT_NAME
    open_store(tmp_path / "ds")
    current = json.loads((tmp_path / "ds" / "CURRENT").read_text())
    (tmp_path / "ds" / "CURRENT").write_text(json.dumps(dict(current, format_version=7)))
    with pytest.raises(StoreFormatError, match="format_version 7 is newer"):
        open_store(tmp_path / "ds")


def test_missing_store_raises_store_not_found(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFound, match="no CURRENT"):
        open_store(tmp_path / "nothing")
    with pytest.raises(StoreNotFound):
        open_store(tmp_path / "nothing", version="v1")


def test_crash_mid_write_keeps_previous_version_then_next_run_completes(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    first = random_sequences(7, [30, 40])
    info1 = write_tiny_store(folder, first)
    before = open_store(folder)
    snapshot = before.joints("smpl22", slice(0, 70))
    table_before = before.sequences.copy()

    second = random_sequences(8, [100, 100, 100])

    def crashing() -> Iterator[PreparedSequence]:
        yield second[0]
        yield second[1]  # enough frames that whole chunks were already written
        raise RuntimeError("reader crashed")

    with pytest.raises(RuntimeError, match="reader crashed"):
        write_store_version(
            folder,
            crashing(),
            kind="3d",
            joint_sets=["smpl22"],
            fps=30,
            manifest=manifest_of_sequences("tiny", second),
            chunk_frames=64,
        )
    assert read_current(folder).version == info1.version
    after = open_store(folder)
    np.testing.assert_array_equal(after.joints("smpl22", slice(0, 70)), snapshot)
    assert after.sequences.equals(table_before)
    # The partial version was cleaned up.
    assert [p.name for p in (folder / "versions").iterdir()] == [info1.version]

    info2 = write_tiny_store(folder, second)
    assert read_current(folder).version == info2.version
    assert_store_holds(folder, second)
    # The previous version is kept for readers that resolved CURRENT before the swap.
    assert sorted(p.name for p in (folder / "versions").iterdir()) == sorted(
        [info1.version, info2.version]
    )
    open_store(folder, version=info1.version)


def test_leftovers_of_a_killed_run_and_old_versions_are_pruned(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    seqs = random_sequences(9, [10])
    v1 = write_tiny_store(folder, seqs).version
    stale = folder / "versions" / "deadbeef0000-20000101T000000000000Z"
    (stale / "store.zarr").mkdir(parents=True)  # a run killed before it finished
    v2 = write_tiny_store(folder, seqs).version
    assert stale.name not in {p.name for p in (folder / "versions").iterdir()}
    v3 = write_tiny_store(folder, seqs)
    assert v3.pruned == (v1,)
    assert sorted(p.name for p in (folder / "versions").iterdir()) == sorted([v2, v3.version])
    v4 = write_tiny_store(folder, seqs, keep_versions=1)
    assert [p.name for p in (folder / "versions").iterdir()] == [v4.version]


def test_bad_sequences_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    good = random_sequence(rng, "a", 10)
    bad_shape = random_sequence(rng, "b", 10)
    bad_shape.joints["smpl22"] = bad_shape.joints["smpl22"][:, :21]
    with pytest.raises(ValueError, match=r"expected \(T, 22, 3\)"):
        write_tiny_store(tmp_path / "a", [good, bad_shape])
    nan = random_sequence(rng, "c", 10, invalid_fraction=0.0)
    nan.joints["smpl22"][3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        write_tiny_store(tmp_path / "b", [nan])
    with pytest.raises(ValueError, match="duplicate sequence id"):
        write_tiny_store(tmp_path / "c", [good, good])
    with pytest.raises(ValueError, match="unknown joint sets"):
        write_tiny_store(tmp_path / "d", [good], joint_sets=("smpl99",))
    with pytest.raises(ValueError, match="differ from the store"):
        write_tiny_store(tmp_path / "e", [good], joint_sets=("smpl22", "coco17"))
    # Nothing was published by the failed writes.
    assert read_current(tmp_path / "a") is None


def test_motion_store_pickles_without_handles(tmp_path: Path) -> None:
    sequences = random_sequences(10, [15, 25])
    write_tiny_store(tmp_path / "ds", sequences)
    store = open_store(tmp_path / "ds")
    store.joints("smpl22", 0)
    clone = pickle.loads(pickle.dumps(store))
    assert clone._group is None
    np.testing.assert_array_equal(clone.joints("smpl22", 1), store.joints("smpl22", 1))


def test_store_is_current(tmp_path: Path) -> None:
    sequences = random_sequences(11, [15])
    manifest = manifest_of_sequences("tiny", sequences)
    config = conversion_config("bvh", {}, ["smpl22"], 30)
    kwargs = {"kind": "3d", "joint_sets": ["smpl22"], "fps": 30.0}
    assert not store_is_current(tmp_path / "ds", manifest, config, None, **kwargs)
    write_tiny_store(tmp_path / "ds", sequences, config=config)
    assert store_is_current(tmp_path / "ds", manifest, config, None, **kwargs)
    other_rule = SplitRule(test_fraction=0.5)
    assert not store_is_current(tmp_path / "ds", manifest, config, other_rule, **kwargs)
    other_config = conversion_config("bvh", {"units": "mm"}, ["smpl22"], 30)
    assert not store_is_current(tmp_path / "ds", manifest, other_config, None, **kwargs)


# -- split rule ----------------------------------------------------------------------------


def test_hash_split_is_deterministic_and_close_to_fractions() -> None:
    rule = SplitRule(test_fraction=0.2, val_fraction=0.1, seed=3)
    keys = [f"clip{i:05d}.bvh" for i in range(5000)]
    splits = [rule.assign(k) for k in keys]
    assert splits == [rule.assign(k) for k in keys]
    assert abs(splits.count("test") / 5000 - 0.2) < 0.03
    assert abs(splits.count("val") / 5000 - 0.1) < 0.03
    other_seed = [SplitRule(test_fraction=0.2, val_fraction=0.1, seed=4).assign(k) for k in keys]
    assert other_seed != splits


def test_selectors_hold_out_labels_and_keys_before_the_hash() -> None:
    rule = SplitRule(
        test_fraction=0.0,
        val_fraction=0.0,
        test={"labels": {"style": [13], "content": ["8"]}, "keys": ["*_kick_*"]},
        val={"labels": {"style": ["13", 2]}},
    )
    assert rule.assign("a.bvh", {"style": 13, "content": 0}) == "test"  # 13 == "13"
    assert rule.assign("a.bvh", {"style": 0, "content": 8}) == "test"
    assert rule.assign("x/d_kick_normal.bvh", {}) == "test"
    assert rule.assign("a.bvh", {"style": 2}) == "val"
    assert rule.assign("a.bvh", {"style": [5, 2]}) == "val"  # list-valued label
    assert rule.assign("a.bvh", {"style": 0}) == "train"
    assert rule.assign("a.bvh", None) == "train"
    assert SplitRule(test_fraction=1.0, val_fraction=0.0).assign("anything") == "test"


def test_split_rule_validation() -> None:
    with pytest.raises(ValidationError, match="> 1"):
        SplitRule(test_fraction=0.7, val_fraction=0.5)
    with pytest.raises(ValidationError):
        SplitRule(test_fraction=-0.1)
    with pytest.raises(ValidationError):
        SplitRule(kind="hash")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        SplitRule(test={"styles": [1]})


def test_split_column_follows_rule(tmp_path: Path) -> None:
    sequences = random_sequences(12, [5] * 6)  # labels style = i % 3
    rule = SplitRule(test_fraction=0, val_fraction=0, test={"labels": {"style": [1]}})
    info = write_tiny_store(tmp_path / "ds", sequences, split_rule=rule)
    table = open_store(tmp_path / "ds").sequences
    assert list(table["split"]) == ["train", "test", "train", "train", "test", "train"]
    assert info.split_counts == {"train": 4, "val": 0, "test": 2}


# -- item cache and quarantine ----------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "memory"])
def test_item_cache_put_get_prune(tmp_path: Path, where: str) -> None:
    folder = str(tmp_path / "ds") if where == "local" else f"memory://cache-{uuid.uuid4().hex}/ds"
    cache = ItemCache(folder)
    rng = np.random.default_rng(0)
    two = [
        random_sequence(rng, "a.bvh", 12, joint_sets=("smpl22", "coco17"), part=0),
        random_sequence(rng, "a.bvh", 5, joint_sets=("smpl22", "coco17"), part=1),
    ]
    track = [random_sequence(rng, "t.npz", 8, joint_sets=("coco17",), kind="2d", track_id=3)]
    assert not cache.has("k1")
    cache.put("k1", two)
    cache.put("k2", track)
    cache.put("k3", [])
    assert cache.has("k1") and cache.keys() == {"k1", "k2", "k3"}
    got = cache.get("k1")
    assert [s.sequence_id for s in got] == ["a.bvh#0", "a.bvh#1"]
    for a, b in zip(got, two, strict=True):
        assert a.row_meta() == b.row_meta()
        for js in ("smpl22", "coco17"):
            np.testing.assert_array_equal(a.joints[js], b.joints[js])
            np.testing.assert_array_equal(a.valid[js], b.valid[js])
            assert a.joints[js].dtype == np.float32 and a.valid[js].dtype == np.bool_
    (t,) = cache.get("k2")
    np.testing.assert_array_equal(t.K, track[0].K)
    assert (t.track_id, t.width, t.height) == (3, 640, 480)
    assert cache.get("k3") == []
    assert cache.prune({"k2"}) == ["k1", "k3"]
    assert cache.keys() == {"k2"}
    with pytest.raises(KeyError, match="k1"):
        cache.get("k1")
    if where == "local":
        # Atomic writes leave no temporary files behind.
        assert sorted(p.name for p in (tmp_path / "ds" / "items").iterdir()) == ["k2.npz"]


def test_cache_key_changes_with_content_and_config() -> None:
    config = conversion_config("bvh", {"units": "cm"}, ["smpl22"], 30)
    base = cache_key("a" * 64, config)
    assert base == cache_key("a" * 64, dict(reversed(list(config.items()))))
    assert base != cache_key("b" * 64, config)
    assert base != cache_key("a" * 64, conversion_config("bvh", {"units": "m"}, ["smpl22"], 30))
    assert base != cache_key("a" * 64, conversion_config("bvh", {"units": "cm"}, ["coco17"], 30))
    assert base != cache_key("a" * 64, conversion_config("bvh", {"units": "cm"}, ["smpl22"], 60))
    assert base != cache_key("a" * 64, {**config, "conversion_version": CONVERSION_VERSION + 1})
    with pytest.raises(ValueError, match="bad item cache key"):
        ItemCache("/tmp/x").has("../escape")


def test_quarantine_report_round_trip(tmp_path: Path) -> None:
    assert read_quarantine(tmp_path / "ds") == []
    entries = [
        QuarantineEntry("z.bvh", "f" * 64, "ReaderError: bad channels", "k9"),
        QuarantineEntry("a.bvh", "", "archive x.zip, member a.bvh: Bad CRC-32"),
    ]
    write_quarantine(tmp_path / "ds", entries, dataset="demo")
    assert read_quarantine(tmp_path / "ds") == sorted(entries, key=lambda e: e.key)
    report = json.loads((tmp_path / "ds" / "quarantine.json").read_text())
    assert report["dataset"] == "demo" and report["format"] == "mocap2to3.quarantine"
    write_quarantine(tmp_path / "ds", [])
    assert read_quarantine(tmp_path / "ds") == []
