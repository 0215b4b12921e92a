"""The prepare-datasets flow end to end on tiny synthetic sources built in tmp_path.

Covers the flow requirements of the dataset-preparation issue: incremental runs (skip,
re-read changed, convert added, drop removed), atomic publishing under crashes, the
quarantine of each kind of bad input, absent sources, Prefect artifacts, the CLI, the
deployment in ``prefect.yaml``, a Dask cluster (slow) and windows over a real store (slow).

Conversions are counted by wrapping ``tasks.prepare.convert_item`` (the tasks run in threads
of this process, so the wrapper sees every item read).
"""

from __future__ import annotations

import importlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from factories import corrupt_zip_member, make_tar, make_zip
from prefect_server import running_prefect_server, use_prefect_api
from test_convert import BVH_OPTIONS, npz_bytes, walk_bvh_text, walk_joints, walk_keypoints

import tasks.prepare
from data_catalog.paths import REPO_ROOT
from data_catalog.store import ItemCache, cache_key, open_store, read_current, read_quarantine
from flows.cli import main as cli_main
from flows.prepare import plan_shards, prepare_datasets, run_prepare

# ------------------------------------------------------------------------- helpers


def write_catalog(path: Path, datasets: list[dict[str, Any]]) -> str:
    """Write a catalog YAML with ``datasets``; returns its path as a string."""
    path.write_text(yaml.safe_dump({"version": 1, "datasets": datasets}, sort_keys=False))
    return str(path)


def bvh_dataset(name: str, source: dict[str, Any], store: Path, **extra: Any) -> dict[str, Any]:
    """A catalog entry reading Bandai-Namco-named BVH into smpl22 and coco17."""
    return {
        "name": name,
        "source": source,
        "reader": "bvh",
        "options": dict(BVH_OPTIONS, **extra.pop("options", {})),
        "joint_sets": ["smpl22", "coco17"],
        "fps": 30,
        "store": str(store),
        **extra,
    }


def walk(seed: int, frames: int = 30) -> bytes:
    return walk_bvh_text(frames, seed=seed).encode()


def snapshot(store_dir: Path) -> dict[str, Any]:
    """Everything a reader sees of the current store version."""
    store = open_store(store_dir)
    return {
        "version": store.version,
        "table": store.sequences.copy(),
        "arrays": {
            js: (np.asarray(store.array(js)[:]), np.asarray(store.valid_array(js)[:]))
            for js in store.joint_sets
        },
    }


def assert_same_store(a: dict[str, Any], b: dict[str, Any], *, same_version: bool = True) -> None:
    if same_version:
        assert a["version"] == b["version"]
    pd.testing.assert_frame_equal(a["table"], b["table"])
    assert a["arrays"].keys() == b["arrays"].keys()
    for js, (joints, valid) in a["arrays"].items():
        np.testing.assert_array_equal(joints, b["arrays"][js][0])
        np.testing.assert_array_equal(valid, b["arrays"][js][1])


def stored_keys(store_dir: Path) -> set[str]:
    return set(open_store(store_dir).sequences["source_key"])


def by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["dataset"]: row for row in rows}


class Conversions:
    """Keys of the items read and converted (or rejected by their reader), recorded by a
    wrapper around ``convert_item``; ``fail_after`` makes it crash after that many."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.lock = threading.Lock()
        self.fail_after: int | None = None  # raise an unexpected error after this many

    def take(self) -> set[str]:
        """The keys converted since the last call (each item at most once)."""
        with self.lock:
            keys, self.keys = self.keys, []
        assert len(keys) == len(set(keys)), f"an item was converted twice: {sorted(keys)}"
        return set(keys)


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> Conversions:
    record = Conversions()
    real = tasks.prepare.convert_item

    def counting(item: Any, **kwargs: Any) -> Any:
        with record.lock:
            if record.fail_after is not None and len(record.keys) >= record.fail_after:
                raise RuntimeError(f"simulated crash while converting {item.key}")
            record.keys.append(item.key)
        return real(item, **kwargs)

    monkeypatch.setattr(tasks.prepare, "convert_item", counting)
    return record


# ------------------------------------------------------------------ incremental runs


def test_incremental_runs_on_folder_and_archives(
    tmp_path: Path, conversions: Conversions, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed: list[str] = []  # datasets whose source was listed and hashed item by item
    real_build_manifest = tasks.prepare.build_manifest

    def recording_build_manifest(source: Any, dataset: str) -> Any:
        listed.append(dataset)
        return real_build_manifest(source, dataset)

    monkeypatch.setattr(tasks.prepare, "build_manifest", recording_build_manifest)
    folder = tmp_path / "walks"
    folder.mkdir()
    for i in range(4):
        (folder / f"w{i}.bvh").write_bytes(walk(i))
        (folder / f"w{i}.json").write_text(json.dumps({"style": i}))
    tar_members = {f"take/c{i}.bvh": walk(10 + i) for i in range(3)}
    make_tar(tmp_path / "clips.tar.gz", tar_members, compression="gz")
    make_zip(tmp_path / "clips.zip", {f"z{i}.bvh": walk(20 + i) for i in range(3)})
    stores = tmp_path / "stores"
    catalog = write_catalog(
        tmp_path / "catalog.yaml",
        [
            bvh_dataset(
                "walks",
                {"folder": str(folder), "member_glob": "*.bvh", "sidecars": [".json"]},
                stores / "walks",
                options={"labels_sidecar": "json"},
            ),
            bvh_dataset(
                "tgz",
                {"archive": str(tmp_path / "clips.tar.gz"), "member_glob": "*.bvh"},
                stores / "tgz",
            ),
            bvh_dataset("zipped", {"archive": str(tmp_path / "clips.zip")}, stores / "zipped"),
        ],
    )

    # First run: everything is converted and stored.
    rows = by_name(run_prepare(catalog, shard_size=2))
    assert {n: (r["status"], r["stored"], r["skipped"]) for n, r in rows.items()} == {
        "walks": ("prepared", 4, 0),
        "tgz": ("prepared", 3, 0),
        "zipped": ("prepared", 3, 0),
    }
    assert conversions.take() == {f"w{i}.bvh" for i in range(4)} | set(tar_members) | {
        f"z{i}.bvh" for i in range(3)
    }
    assert stored_keys(stores / "tgz") == set(tar_members)
    table = open_store(stores / "walks").sequences.set_index("source_key")
    assert json.loads(table.loc["w2.bvh", "labels"]) == {"style": 2}
    assert rows["walks"]["frames"] == 4 * 30
    before = {name: snapshot(stores / name) for name in rows}

    # Nothing changed: every store is current, no item is read, and an archive identical
    # to the last one (same file sha256) is not even listed.
    listed.clear()
    rows = by_name(run_prepare(catalog, shard_size=2))
    assert listed == ["walks"]
    assert {r["status"] for r in rows.values()} == {"current"}
    assert [r["stored"] for r in rows.values()] == [0, 0, 0]
    assert [r["skipped"] for r in rows.values()] == [4, 3, 3]
    assert conversions.take() == set()
    for name in rows:
        assert_same_store(before[name], snapshot(stores / name))

    # One BVH and one labels sidecar of the folder change, one member of the tar: only those
    # items are read again.
    (folder / "w1.bvh").write_bytes(walk(99))
    (folder / "w2.json").write_text(json.dumps({"style": 12}))
    make_tar(tmp_path / "clips.tar.gz", {**tar_members, "take/c1.bvh": walk(98)}, compression="gz")
    rows = by_name(run_prepare(catalog, shard_size=2))
    assert {n: (r["status"], r["stored"], r["skipped"]) for n, r in rows.items()} == {
        "walks": ("prepared", 2, 2),
        "tgz": ("prepared", 1, 2),
        "zipped": ("current", 0, 3),
    }
    assert conversions.take() == {"w1.bvh", "w2.bvh", "take/c1.bvh"}
    after = snapshot(stores / "walks")
    old_table, new_table = before["walks"]["table"], after["table"]
    assert json.loads(new_table.set_index("source_key").loc["w2.bvh", "labels"]) == {"style": 12}
    smpl_old, smpl_new = before["walks"]["arrays"]["smpl22"][0], after["arrays"]["smpl22"][0]
    for key, changed in (("w0.bvh", False), ("w1.bvh", True), ("w3.bvh", False)):
        a = old_table.set_index("source_key").loc[key]
        b = new_table.set_index("source_key").loc[key]
        same = np.array_equal(smpl_old[a.start : a.stop], smpl_new[b.start : b.stop])
        assert same != changed, key
    assert len(ItemCache(stores / "walks").keys()) == 4  # the replaced entries were pruned

    # An item added is converted alone; an item removed leaves the store and the cache.
    store = open_store(stores / "walks")
    removed_key = cache_key(store.manifest().get("w3.bvh").digest, store.attrs["config"])
    assert removed_key in ItemCache(stores / "walks").keys()
    (folder / "w4.bvh").write_bytes(walk(4))
    (folder / "w3.bvh").unlink()
    (folder / "w3.json").unlink()
    rows = by_name(run_prepare(catalog, only=["walks"], shard_size=2))
    assert list(rows) == ["walks"]
    assert (rows["walks"]["stored"], rows["walks"]["skipped"], rows["walks"]["items"]) == (1, 3, 4)
    assert conversions.take() == {"w4.bvh"}
    assert stored_keys(stores / "walks") == {"w0.bvh", "w1.bvh", "w2.bvh", "w4.bvh"}
    cache_keys = ItemCache(stores / "walks").keys()
    assert len(cache_keys) == 4 and removed_key not in cache_keys


# --------------------------------------------------------------------------- atomic


def test_crash_mid_run_keeps_previous_version_and_next_run_completes(
    tmp_path: Path, conversions: Conversions, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "walks"
    folder.mkdir()
    for i in range(6):
        (folder / f"w{i}.bvh").write_bytes(walk(i))
    store_dir = tmp_path / "stores" / "walks"
    catalog = write_catalog(
        tmp_path / "catalog.yaml", [bvh_dataset("walks", {"folder": str(folder)}, store_dir)]
    )
    run_prepare(catalog, shard_size=1)
    conversions.take()
    previous = snapshot(store_dir)

    # Every item changes; the run crashes (an unexpected error, not bad data) after two
    # conversions: the published version is untouched and readable as before.
    for i in range(6):
        (folder / f"w{i}.bvh").write_bytes(walk(50 + i))
    conversions.fail_after = 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_prepare(catalog, shard_size=1, workers=1)
    done_before_crash = conversions.take()
    assert len(done_before_crash) == 2
    assert read_current(store_dir).version == previous["version"]
    assert_same_store(previous, snapshot(store_dir))

    # The next run converts only what the crashed run did not finish.
    conversions.fail_after = None
    (row,) = run_prepare(catalog, shard_size=1)
    assert conversions.take() == {f"w{i}.bvh" for i in range(6)} - done_before_crash
    assert (row["status"], row["stored"], row["skipped"]) == ("prepared", 4, 2)
    completed = snapshot(store_dir)
    assert completed["version"] != previous["version"]
    assert (
        open_store(store_dir).manifest_fingerprint
        != open_store(store_dir, version=previous["version"]).manifest_fingerprint
    )

    # A crash while the new version is being written, killed before any clean-up (the
    # partial folder stays): readers still get the current version.
    (folder / "w0.bvh").write_bytes(walk(77))

    def crash_after_one(cache: ItemCache, keys: list[str]) -> Iterator[Any]:
        yield from ItemCache.get(cache, keys[0])
        raise RuntimeError("simulated crash while publishing")

    monkeypatch.setattr(tasks.prepare, "iter_cached_sequences", crash_after_one)
    monkeypatch.setattr("data_catalog.store._Location.remove", lambda self, *parts: None)
    with pytest.raises(RuntimeError, match="while publishing"):
        run_prepare(catalog, shard_size=1)
    assert_same_store(completed, snapshot(store_dir))
    leftovers = [
        p.name for p in (store_dir / "versions").iterdir() if not (p / "manifest.json").exists()
    ]
    assert len(leftovers) == 1
    monkeypatch.undo()  # real conversion, publishing and clean-up again
    monkeypatch.setattr(tasks.prepare, "convert_item", conversions_counting(conversions))
    conversions.take()

    (row,) = run_prepare(catalog, shard_size=1)
    assert conversions.take() == set()  # w0 was converted and cached before the crash
    assert (row["status"], row["stored"], row["skipped"]) == ("prepared", 0, 6)
    assert not (store_dir / "versions" / leftovers[0]).exists()
    assert read_current(store_dir).version == row["version"]


def conversions_counting(record: Conversions) -> Callable[..., Any]:
    """A counting wrapper like the ``conversions`` fixture's, after ``monkeypatch.undo``."""
    real = tasks.prepare.convert_item

    def counting(item: Any, **kwargs: Any) -> Any:
        with record.lock:
            record.keys.append(item.key)
        return real(item, **kwargs)

    return counting


# --------------------------------------------------------------- shards and retries


def test_plan_shards_hand_cases() -> None:
    keys = [f"k{i}" for i in range(10)]
    assert plan_shards(keys, shard_size=4, streamed=False, workers=2) == [
        keys[0:4],
        keys[4:8],
        keys[8:10],
    ]
    # A tar stream: at most `workers` shards, as even as possible, in order.
    assert plan_shards(keys, shard_size=4, streamed=True, workers=2) == [keys[0:5], keys[5:10]]
    assert plan_shards(keys, shard_size=20, streamed=True, workers=2) == [keys]
    assert plan_shards(keys[:3], shard_size=1, streamed=True, workers=8) == [["k0"], ["k1"], ["k2"]]
    assert plan_shards([], shard_size=4, streamed=True, workers=2) == []


def test_shard_is_retried_on_io_error_only(
    tmp_path: Path, conversions: Conversions, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.prepare

    folder = tmp_path / "walks"
    folder.mkdir()
    for name in ("a", "b", "c"):
        (folder / f"{name}.bvh").write_bytes(walk(ord(name)))
    store_dir = tmp_path / "stores" / "walks"
    catalog = write_catalog(
        tmp_path / "catalog.yaml", [bvh_dataset("walks", {"folder": str(folder)}, store_dir)]
    )
    # The task's own retry policy, without the 5 s pause between attempts.
    monkeypatch.setattr(
        flows.prepare,
        "convert_shard",
        tasks.prepare.convert_shard.with_options(retry_delay_seconds=0),
    )
    counting = tasks.prepare.convert_item
    failures = {"c.bvh": OSError("disk went away while reading c.bvh")}

    def flaky(item: Any, **kwargs: Any) -> Any:
        error = failures.pop(item.key, None)
        if error is not None:
            raise error
        return counting(item, **kwargs)

    monkeypatch.setattr(tasks.prepare, "convert_item", flaky)
    (row,) = run_prepare(catalog, shard_size=3)
    assert (row["status"], row["stored"], row["quarantined"]) == ("prepared", 3, 0)
    # The retry converted only what the failed attempt had not cached.
    assert sorted(conversions.keys) == ["a.bvh", "b.bvh", "c.bvh"]
    conversions.take()

    # Any other unexpected error is not retried: the run fails, the store stays.
    (folder / "a.bvh").write_bytes(walk(5))
    failures["a.bvh"] = RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        run_prepare(catalog, shard_size=3)
    assert conversions.take() == set()
    assert read_current(store_dir).version == row["version"]


# ------------------------------------------------------------------------ quarantine


def bad_bvh_files() -> dict[str, tuple[bytes, str]]:
    """Bad BVH items -> (content, pattern the quarantine reason must match)."""
    good = walk_bvh_text(30)
    lines = good.splitlines()
    motion = lines.index("MOTION") + 3

    def with_value(value: str) -> bytes:
        changed = list(lines)
        numbers = changed[motion + 3].split()
        numbers[7] = value
        changed[motion + 3] = " ".join(numbers)
        return ("\n".join(changed) + "\n").encode()

    return {
        "truncated.bvh": (good[: len(good) // 2].encode(), r"truncated|values, expected"),
        "malformed.bvh": (b"HIERARCHY\nROOT {\n garbage", r"line \d+"),
        "binary.bvh": (bytes(range(256)) * 4, r"."),
        "nan.bvh": (with_value("nan"), r"non-finite"),
        "inf.bvh": (with_value("-inf"), r"non-finite"),
        "unknown_joints.bvh": (
            walk_bvh_text(30, rename={"UpperLeg_L": "Thigh_L"}).encode(),
            r"UpperLeg_L",
        ),
        "empty.bvh": (walk_bvh_text(30, frames_declared=0).encode(), r"zero frames"),
        "short.bvh": (walk_bvh_text(8).encode(), r"no clean run"),
    }


def test_bad_inputs_are_quarantined_and_the_rest_stored(
    tmp_path: Path, conversions: Conversions
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    bad = bad_bvh_files()
    for key, (data, _) in bad.items():
        (folder / key).write_bytes(data)
    for i in range(2):
        (folder / f"good{i}.bvh").write_bytes(walk(i))
    # A zip whose member z1.bvh is corrupt (bad CRC); the others read fine.
    zip_path = make_zip(
        tmp_path / "clips.zip", {f"z{i}.bvh": walk(30 + i) for i in range(3)}, compress=False
    )
    corrupt_zip_member(zip_path, "z1.bvh")
    # Joints arrays and 2D tracks with the wrong keys.
    arrays = tmp_path / "arrays"
    arrays.mkdir()
    (arrays / "a0.npz").write_bytes(
        npz_bytes(joints=walk_joints("coco17", 30), joint_set="coco17", fps=30.0)
    )
    (arrays / "a1.npz").write_bytes(
        npz_bytes(positions=walk_joints("coco17", 30), joint_set="coco17", fps=30.0)
    )
    tracks = tmp_path / "tracks"
    tracks.mkdir()
    (tracks / "t0.npz").write_bytes(
        npz_bytes(keypoints=walk_keypoints(30), joint_set="coco17", fps=30.0)
    )
    (tracks / "t1.npz").write_bytes(npz_bytes(kps=walk_keypoints(30), fps=30.0))
    stores = tmp_path / "stores"
    catalog = write_catalog(
        tmp_path / "catalog.yaml",
        [
            bvh_dataset("mixed", {"folder": str(folder)}, stores / "mixed"),
            bvh_dataset("zipped", {"archive": str(zip_path)}, stores / "zipped"),
            {
                "name": "arrays",
                "source": {"folder": str(arrays), "member_glob": "*.npz"},
                "reader": "joints_array",
                "joint_sets": ["coco17"],
                "store": str(stores / "arrays"),
            },
            {
                "name": "tracks",
                "source": {"glob": f"{tracks}/*.npz"},
                "reader": "tracks_npz",
                "joint_sets": ["coco17"],
                "store": str(stores / "tracks"),
            },
        ],
    )
    expected = {
        "mixed": ({"good0.bvh", "good1.bvh"}, {k: p for k, (_, p) in bad.items()}),
        "zipped": ({"z0.bvh", "z2.bvh"}, {"z1.bvh": r"clips\.zip.*(CRC|BadZipFile)"}),
        "arrays": ({"a0.npz"}, {"a1.npz": r"missing key\(s\) \['joints'\]"}),
        "tracks": ({"t0.npz"}, {"t1.npz": r"missing key\(s\) \['keypoints', 'joint_set'\]"}),
    }

    def check_report(rows: dict[str, dict[str, Any]]) -> None:
        for name, (good_keys, bad_patterns) in expected.items():
            assert stored_keys(stores / name) == good_keys, name
            report = {q.key: q.reason for q in read_quarantine(stores / name)}
            assert set(report) == set(bad_patterns), name
            for key, pattern in bad_patterns.items():
                assert key in report[key], report[key]  # the reason names the item
                assert re.search(pattern, report[key]), (key, report[key])
            assert rows[name]["quarantined"] == len(bad_patterns)
            assert {r["item"] for r in rows[name]["rejected"]} == set(bad_patterns)

    rows = by_name(run_prepare(catalog, shard_size=3))
    assert {r["status"] for r in rows.values()} == {"prepared"}
    check_report(rows)
    # Everything readable was read once; the corrupt zip member never reached a reader.
    assert conversions.take() == (set(bad) | {"good0.bvh", "good1.bvh", "z0.bvh", "z2.bvh"}) | {
        "a0.npz",
        "a1.npz",
        "t0.npz",
        "t1.npz",
    }

    # Unchanged: no item is read again, quarantined ones included; the report stays.
    rows = by_name(run_prepare(catalog, shard_size=3))
    assert {r["status"] for r in rows.values()} == {"current"}
    assert conversions.take() == set()
    check_report(rows)

    # A good item changes: only it is read; the unchanged bad items stay in the report.
    (folder / "good1.bvh").write_bytes(walk(41))
    rows = by_name(run_prepare(catalog, only=["mixed"], shard_size=3))
    assert (rows["mixed"]["status"], rows["mixed"]["stored"]) == ("prepared", 1)
    assert conversions.take() == {"good1.bvh"}
    assert {q.key for q in read_quarantine(stores / "mixed")} == set(bad)


# --------------------------------------------------------- absent sources and the CLI


def test_cli_reports_absent_source_progress_and_rejections(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "walks"
    folder.mkdir()
    (folder / "a.bvh").write_bytes(walk(1))
    (folder / "b.bvh").write_bytes(walk(2))
    (folder / "broken.bvh").write_bytes(walk(3)[:1500])
    catalog = write_catalog(
        tmp_path / "catalog.yaml",
        [
            bvh_dataset("walks", {"folder": str(folder)}, tmp_path / "stores" / "walks"),
            bvh_dataset(
                "gone", {"folder": str(tmp_path / "nowhere")}, tmp_path / "stores" / "gone"
            ),
        ],
    )
    assert cli_main(["prepare", "--catalog", catalog, "--shard-size", "1"]) == 0
    captured = capsys.readouterr()
    assert re.search(r"walks\s+\[#{30}\] 3/3 items", captured.err)  # the progress bar
    assert "prepare-datasets summary:" in captured.out
    assert re.search(
        r"walks: prepared; 3 items, 2 stored, 0 unchanged, 1 quarantined", captured.out
    )
    assert re.search(r"gone: absent; .*nowhere does not exist", captured.out)
    # What was rejected and why, and where the report is.
    assert re.search(r"broken\.bvh: line \d+", captured.out)
    assert f"report: {tmp_path / 'stores' / 'walks' / 'quarantine.json'}" in captured.out
    assert not (tmp_path / "stores" / "gone").exists()

    assert cli_main(["prepare", "--catalog", catalog, "--only", "gone"]) == 0
    out = capsys.readouterr().out
    assert "gone: absent" in out and "walks:" not in out

    assert cli_main(["prepare", "--catalog", catalog, "--only", "walks", "nope"]) == 2
    captured = capsys.readouterr()
    assert "unknown dataset(s) ['nope']" in captured.err and "walks" in captured.err
    assert captured.out == ""
    with pytest.raises(ValueError, match="unknown dataset"):
        run_prepare(catalog, only=["nope"])
    assert cli_main(["prepare", "--catalog", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_fresh_clone_without_shared_data_skips_the_packaged_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MOCAP2TO3_SHARED_DATA", str(tmp_path / "no-shared-data"))
    monkeypatch.setenv("MOCAP2TO3_HOME", str(tmp_path / "work"))
    assert cli_main(["prepare"]) == 0
    out = capsys.readouterr().out
    for name in ("bandai1", "bandai2"):
        assert re.search(rf"{name}: absent; .*shared data folder is absent", out)
    assert not (tmp_path / "work" / "stores").exists()


# -------------------------------------------------------------------------- artifacts


def test_progress_quarantine_and_summary_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    import flows.prepare

    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(3):
        (folder / f"c{i}.bvh").write_bytes(walk(i))
    (folder / "c3.bvh").write_bytes(b"not a bvh file\n")
    catalog = write_catalog(
        tmp_path / "catalog.yaml",
        [bvh_dataset("art_set", {"folder": str(folder)}, tmp_path / "stores" / "art_set")],
    )
    updates: list[float] = []
    real_update = flows.prepare.update_progress_artifact

    def spy(artifact_id: Any, progress: float, **kwargs: Any) -> Any:
        updates.append(progress)
        return real_update(artifact_id, progress, **kwargs)

    monkeypatch.setattr(flows.prepare, "update_progress_artifact", spy)
    state = prepare_datasets(catalog_path=catalog, shard_size=1, return_state=True)
    (row,) = state.result()
    flow_run_id = state.state_details.flow_run_id
    # The progress artifact moved while the shards finished, one update per shard.
    assert updates == [25.0, 50.0, 75.0, 100.0]

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    found = {a.key: a for a in artifacts}
    assert set(found) == {
        "prepare-art-set-progress",
        "prepare-art-set-quarantine",
        "prepare-datasets-summary",
    }
    assert found["prepare-art-set-progress"].type == "progress"
    assert float(found["prepare-art-set-progress"].data) == 100.0

    def table(artifact: Any) -> list[dict[str, Any]]:
        data = artifact.data
        return json.loads(data) if isinstance(data, str) else data

    assert found["prepare-datasets-summary"].type == "table"
    (summary,) = table(found["prepare-datasets-summary"])
    assert {k: summary[k] for k in ("dataset", "status", "stored", "skipped", "quarantined")} == {
        "dataset": "art_set",
        "status": "prepared",
        "stored": 3,
        "skipped": 0,
        "quarantined": 1,
    }
    assert summary["frames"] == row["frames"] == 90 and summary["seconds"] > 0
    (rejected,) = table(found["prepare-art-set-quarantine"])
    assert rejected["item"] == "c3.bvh" and rejected["reason"].startswith("c3.bvh")


# ----------------------------------------------------------------------- deployment


def test_prefect_yaml_deployments_point_at_flows() -> None:
    from prefect import Flow
    from prefect.client.schemas.schedules import CronSchedule

    config = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in config["deployments"]}
    assert {"geometry-demo", "prepare-datasets"} <= set(deployments)
    for deployment in deployments.values():
        path, function = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        assert isinstance(getattr(module, function), Flow), deployment["entrypoint"]
        assert deployment["work_pool"]["name"] == "mocap2to3-process"
    prepare = deployments["prepare-datasets"]
    assert prepare["entrypoint"] == "flows/prepare.py:prepare_datasets"
    assert prepare_datasets.name == "prepare-datasets"
    (schedule,) = prepare["schedules"]
    CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))  # a valid cron
    # Parameters name real parameters of the flow.
    assert set(prepare["parameters"]) <= set(prepare_datasets.parameters.properties)


# ----------------------------------------------------------------------- slow: Dask


@pytest.fixture(scope="module")
def prefect_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect API server for the module (Dask workers are other processes)."""
    with running_prefect_server(tmp_path_factory.mktemp("prefect-server")) as url:
        yield url


def completed_task_runs(
    prefix: str, expected: dict[str, int], timeout_s: float = 60.0
) -> dict[str, int]:
    """Completed task runs named ``<prefix><dataset>`` on the current API: dataset -> count.

    The server records task runs from the events clients send, a moment after they finish,
    so this polls until the counts equal ``expected`` or ``timeout_s`` passes.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    deadline = time.monotonic() + timeout_s
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=prefix))
            )
        counts: dict[str, int] = {}
        for run in runs:
            if run.name.startswith(prefix) and run.state is not None and run.state.is_completed():
                dataset = run.name[len(prefix) :]
                counts[dataset] = counts.get(dataset, 0) + 1
        if counts == expected or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


@pytest.mark.slow
def test_dask_cluster_store_equals_local_store(tmp_path: Path, prefect_server_url: str) -> None:
    from distributed import LocalCluster

    folder = tmp_path / "walks"
    folder.mkdir()
    for i in range(6):
        (folder / f"w{i}.bvh").write_bytes(walk(i, frames=40))
        (folder / f"w{i}.json").write_text(json.dumps({"style": i % 3}))
    (folder / "bad.bvh").write_bytes(b"HIERARCHY\n")
    make_zip(tmp_path / "more.zip", {f"m{i}.bvh": walk(60 + i, frames=40) for i in range(3)})

    def catalog_for(tag: str) -> str:
        return write_catalog(
            tmp_path / f"catalog-{tag}.yaml",
            [
                bvh_dataset(
                    "walks",
                    {"folder": str(folder), "member_glob": "*.bvh", "sidecars": [".json"]},
                    tmp_path / tag / "walks",
                    options={"labels_sidecar": "json"},
                ),
                bvh_dataset(
                    "more", {"archive": str(tmp_path / "more.zip")}, tmp_path / tag / "more"
                ),
            ],
        )

    local_rows = run_prepare(catalog_for("local"), shard_size=2)
    with use_prefect_api(prefect_server_url):
        with LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address="127.0.0.1:0",
            host="127.0.0.1",
            local_directory=str(tmp_path / "dask-scratch"),
        ) as cluster:
            dask_rows = run_prepare(
                catalog_for("dask"), shard_size=2, dask_address=cluster.scheduler_address
            )
        # The workers reported their task runs to this server (not to servers of their own).
        shards = {"walks": 4, "more": 2}  # 7 and 3 items, 2 per shard
        assert completed_task_runs("convert-", shards) == shards
    keys = ("dataset", "status", "items", "stored", "quarantined", "sequences", "frames")
    assert [{k: r[k] for k in keys} for r in dask_rows] == [
        {k: r[k] for k in keys} for r in local_rows
    ]
    assert by_name(dask_rows)["walks"]["stored"] == 6
    for name in ("walks", "more"):
        assert_same_store(
            snapshot(tmp_path / "local" / name),
            snapshot(tmp_path / "dask" / name),
            same_version=False,
        )
        assert read_quarantine(tmp_path / "local" / name) == read_quarantine(
            tmp_path / "dask" / name
        )


# ------------------------------------------------------------- slow: real Bandai-Namco


@pytest.mark.slow
def test_windows_never_cross_sequences_on_real_bandai1(
    tmp_path: Path, bandai_dir: Path, conversions: Conversions
) -> None:
    from data_catalog.catalog import DEFAULT_CATALOG
    from data_catalog.windows import MotionWindows

    packaged = yaml.safe_load(DEFAULT_CATALOG.read_text())
    (entry,) = [d for d in packaged["datasets"] if d["name"] == "bandai1"]
    store_dir = tmp_path / "bandai1"
    catalog = write_catalog(tmp_path / "catalog.yaml", [{**entry, "store": str(store_dir)}])
    (row,) = run_prepare(catalog)
    assert row["status"] == "prepared" and row["items"] == 174
    store = open_store(store_dir)
    quarantined = {q.key for q in read_quarantine(store_dir)}
    assert set(store.sequences["source_key"]) | quarantined == set(store.manifest().keys)
    conversions.take()
    (again,) = run_prepare(catalog)
    assert again["status"] == "current" and conversions.take() == set()

    table = store.sequences
    starts, stops = table["start"].to_numpy(), table["stop"].to_numpy()
    assert starts[0] == 0 and (starts[1:] == stops[:-1]).all() and stops[-1] == store.num_frames
    windows = MotionWindows(store_dir, "smpl22", window=64, stride=24)
    assert len(windows) > 500
    for i in range(len(windows)):
        row_index, start, length = (int(v) for v in windows.index[i])
        sequence_length = int(stops[row_index] - starts[row_index])
        assert 0 <= start and start + length <= sequence_length
        window = windows[i]
        assert window["sequence_id"] == table["sequence_id"].iloc[row_index]
        expected = store.joints("smpl22", row_index)[start : start + length]
        np.testing.assert_array_equal(window["joints"][:length], expected)
        assert not window["valid"][length:].any()
