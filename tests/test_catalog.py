"""The dataset catalog: validation, path resolution, the shipped catalog, reading stores."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from factories import random_sequences, write_tiny_store

from data_catalog.catalog import (
    DEFAULT_CATALOG,
    CatalogError,
    load_catalog,
    parse_catalog,
)
from data_catalog.paths import shared_data_dir
from data_catalog.sources import SourceMissing
from data_catalog.store import StoreNotFound


def entry(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "demo",
        "source": {"folder": "data", "member_glob": "*.bvh"},
        "reader": "bvh",
        "joint_sets": ["smpl22"],
    }
    base.update(overrides)
    return base


def catalog_of(*entries: dict[str, Any], tmp_path: Path | None = None) -> Any:
    return parse_catalog(
        {"version": 1, "datasets": list(entries)},
        base_dir=tmp_path,
        work_dir=tmp_path / "work" if tmp_path else None,
    )


def test_shipped_catalog_loads(tmp_path: Path) -> None:
    catalog = load_catalog(work_dir=tmp_path)
    assert catalog.path == DEFAULT_CATALOG
    assert [d.name for d in catalog.datasets(enabled_only=True)] == ["bandai1", "bandai2"]
    names = catalog.names()
    assert "amass_example" in names and "tracks2d_coco_example" in names
    bandai1, bandai2 = catalog.get("bandai1"), catalog.get("bandai2")
    assert bandai1.kind == bandai2.kind == "3d"
    assert bandai1.source.kind == "folder" and bandai2.source.kind == "archive"
    assert bandai2.source.member_glob == "*/data/*.bvh" and bandai2.source.sidecars == [".json"]
    assert bandai1.joint_sets == ["smpl22", "coco17"] and bandai1.fps == 30
    assert catalog.get("amass_example").reader == "amass"
    assert catalog.get("tracks2d_coco_example").kind == "2d"
    assert catalog.store_url("bandai1") == str(tmp_path.resolve() / "stores" / "bandai1")
    source = catalog.source("bandai2", check=False)
    assert source.path == str(shared_data_dir() / "bandai-namco-motion/dataset-2/data.tar.xz")
    config = catalog.conversion_config("bandai1")
    assert config["reader"] == "bvh" and config["options"]["units"] == "cm"


def test_shared_data_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOCAP2TO3_SHARED_DATA", str(tmp_path / "elsewhere"))
    catalog = load_catalog(work_dir=tmp_path)
    source = catalog.source("bandai1", check=False)
    assert source.path == str(tmp_path / "elsewhere" / "bandai-namco-motion/dataset-1/data")
    with pytest.raises(
        SourceMissing, match=r"dataset bandai1: .*does not exist.*MOCAP2TO3_SHARED_DATA"
    ):
        catalog.source("bandai1")


def test_example_entries_resolve_defaults_without_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AMASS_DIR", "BODY_MODELS", "TRACKS_DIR"):
        monkeypatch.delenv(name, raising=False)
    catalog = load_catalog(work_dir=tmp_path)
    assert catalog.source("amass_example", check=False).path == "/data/amass"
    assert catalog.reader_options("amass_example")["body_model_dir"] == "/data/body_models"
    assert catalog.source("tracks2d_coco_example", check=False).path == "/data/tracks/clips.zip"
    monkeypatch.setenv("AMASS_DIR", str(tmp_path))
    assert catalog.source("amass_example").path == str(tmp_path)


def test_get_unknown_dataset_lists_names(tmp_path: Path) -> None:
    catalog = load_catalog(work_dir=tmp_path)
    with pytest.raises(KeyError, match=r"no dataset 'nope'.*bandai1"):
        catalog.get("nope")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"joint_sets": ["smpl22", "smpl99"]}, "unknown joint sets"),
        ({"joint_sets": []}, "joint_sets"),
        ({"joint_sets": ["smpl22", "smpl22"]}, "duplicate joint sets"),
        ({"split": {"test_fraction": 0.8, "val_fraction": 0.4}}, "> 1"),
        ({"split": {"kind": "hash"}}, "kind"),
        ({"split": {"test": {"style": [1]}}}, "style"),
        ({"split": {"test_fraction": 1.5}}, "test_fraction"),
        ({"source": {"folder": "a", "archive": "b.zip"}}, "exactly one of folder, glob, archive"),
        ({"source": {"member_glob": "*.bvh"}}, "exactly one"),
        ({"source": {"archive": "data.rar"}}, "expected one of"),
        ({"source": {"folder": "a", "sidecars": ["json"]}}, "sidecar suffix"),
        ({"reader": "mystery"}, "give kind"),
        ({"name": "Has Spaces"}, "name"),
        ({"fps": 0}, "fps"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_entries_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        catalog_of(entry(**overrides))


def test_unknown_reader_with_kind_is_left_to_the_flow() -> None:
    catalog = catalog_of(entry(reader="my_reader", kind="2d", joint_sets=["coco17"]))
    assert catalog.get("demo").kind == "2d"


def test_duplicate_names_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="duplicate dataset names"):
        catalog_of(entry(), entry())
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("datasets: [unclosed")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(bad_yaml)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_catalog(tmp_path / "absent.yaml")
    with pytest.raises(CatalogError, match="version"):
        parse_catalog({"version": 2, "datasets": []})


def test_paths_resolve_against_catalog_folder_and_variables_expand_on_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UNSET_FOR_TEST", raising=False)
    monkeypatch.setenv("MY_STORES", "memory://mystores")
    file = tmp_path / "cat" / "catalog.yaml"
    file.parent.mkdir()
    file.write_text(
        textwrap.dedent(
            """
            datasets:
              - name: local
                source: {folder: ../data, member_glob: "*.bvh"}
                reader: bvh
                joint_sets: [smpl22]
                store: stores/local
              - name: remote
                source: {archive: "${CATALOG_DIR}/x.tar.gz"}
                reader: bvh
                joint_sets: [smpl22]
                store: ${MY_STORES}/remote
              - name: unset
                enabled: false
                source: {folder: "${UNSET_FOR_TEST}/data"}
                reader: bvh
                joint_sets: [smpl22]
                store: ${WORK_DIR}/custom
            """
        )
    )
    catalog = load_catalog(file, work_dir=tmp_path / "w")
    assert catalog.source("local", check=False).path == str(tmp_path / "data")
    assert catalog.store_url("local") == str(tmp_path / "cat" / "stores" / "local")
    assert catalog.source("remote", check=False).path == str(tmp_path / "cat" / "x.tar.gz")
    assert catalog.store_url("remote") == "memory://mystores/remote"
    assert catalog.store_url("unset") == str(tmp_path / "w" / "custom")
    # The unset variable only matters when the entry is used.
    with pytest.raises(CatalogError, match="UNSET_FOR_TEST is not set"):
        catalog.source("unset", check=False)


def test_catalog_reads_prepared_store(tmp_path: Path) -> None:
    catalog = catalog_of(entry(), tmp_path=tmp_path)
    with pytest.raises(StoreNotFound):
        catalog.open_store("demo")
    sequences = random_sequences(0, [9, 4])
    info = write_tiny_store(catalog.store_url("demo"), sequences)
    store = catalog.open_store("demo")
    assert store.version == info.version
    assert list(catalog.sequences("demo")["sequence_id"]) == ["item000.bvh#0", "item001.bvh#0"]
    assert catalog.manifest("demo").fingerprint == info.manifest_fingerprint
    assert catalog.quarantine("demo") == []


BANDAI = shared_data_dir() / "bandai-namco-motion"


@pytest.mark.skipif(not BANDAI.is_dir(), reason="../shared/data (Bandai-Namco) absent")
def test_shipped_split_ids_name_the_intended_labels(tmp_path: Path) -> None:
    """The label ids in catalog.yaml are the styles/contents its comments name."""
    catalog = load_catalog(work_dir=tmp_path)
    cfg1 = BANDAI / "dataset-1" / "cfg"
    styles1 = (cfg1 / "style_label.txt").read_text().split()
    contents1 = (cfg1 / "content_label.txt").read_text().split()
    held1 = catalog.get("bandai1").split.test.labels
    assert [styles1[i] for i in held1["style"]] == ["dataset-1_giant"]
    assert [contents1[i] for i in held1["content"]] == ["dataset-1_guide"]
    cfg2 = BANDAI / "dataset-2" / "cfg"
    styles2 = (cfg2 / "style_label.txt").read_text().split()
    held2 = catalog.get("bandai2").split.test.labels
    assert [styles2[i] for i in held2["style"]] == ["dataset-2_elderly"]
    assert "content" not in held2
    # On the real sidecars, the rule holds out exactly the giant-style and guide clips.
    rule = catalog.get("bandai1").split
    held_out = 0
    for label_file in sorted((BANDAI / "dataset-1" / "data").glob("*.json")):
        labels = json.loads(label_file.read_text())
        _, content, style, _ = label_file.stem.split("_")
        if style == "giant" or content == "guide":
            assert rule.assign(label_file.name, labels) == "test", label_file.name
            held_out += 1
    assert held_out == 11 + 15 - 1  # 11 giant clips, 15 guide clips, one of them both
