"""Sources: folders, globs and archives listed and streamed, sidecars, corrupt input."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from factories import corrupt_zip_member, make_tar, make_tree, make_zip, truncate_file

from data_catalog import sources
from data_catalog.paths import shared_data_dir
from data_catalog.sources import (
    ItemRef,
    Source,
    SourceError,
    SourceMissing,
    item_digest,
    iter_item_bytes,
    iter_members,
    list_items,
)

# Main files, sidecars, an unrelated file, a lone json and hidden junk.
FILES: dict[str, bytes] = {
    "a/clip1.bvh": b"HIERARCHY clip1 " * 40,
    "a/clip1.json": b'{"style": 1}',
    "a/clip2.bvh": b"HIERARCHY clip2 " * 70,
    "b/deep/clip3.bvh": b"HIERARCHY clip3",
    "b/deep/clip3.json": b'{"style": 2}',
    "b/notes.txt": b"not an item",
    "lonely.json": b"{}",
    "a/._clip1.bvh": b"AppleDouble junk",
}
EXPECTED_KEYS = ["a/clip1.bvh", "a/clip2.bvh", "b/deep/clip3.bvh"]


def archive_of(tmp_path: Path, kind: str, files: dict[str, bytes] = FILES) -> Path:
    if kind == "zip":
        return make_zip(tmp_path / "src.zip", files)
    suffix = {"": ".tar", "gz": ".tar.gz", "xz": ".tar.xz", "bz2": ".tar.bz2"}[kind]
    return make_tar(tmp_path / f"src{suffix}", files, compression=kind)


def check_listing(items: list[ItemRef]) -> None:
    assert [i.key for i in items] == EXPECTED_KEYS
    by_key = {i.key: i for i in items}
    assert by_key["a/clip1.bvh"].size == len(FILES["a/clip1.bvh"])
    assert dict(by_key["a/clip1.bvh"].sidecars) == {".json": "a/clip1.json"}
    assert dict(by_key["a/clip1.bvh"].sidecar_sizes) == {".json": len(FILES["a/clip1.json"])}
    assert dict(by_key["a/clip2.bvh"].sidecars) == {}
    assert dict(by_key["b/deep/clip3.bvh"].sidecars) == {".json": "b/deep/clip3.json"}


def check_item_bytes(source: Source) -> None:
    got = {item.key: item for item in iter_item_bytes(source)}
    assert sorted(got) == EXPECTED_KEYS
    for key, item in got.items():
        assert item.ok, item.error
        assert item.data == FILES[key]
        json_key = key[: -len(".bvh")] + ".json"
        if json_key in FILES:
            assert item.sidecars == {".json": FILES[json_key]}
        else:
            assert item.sidecars == {}


def test_folder_lists_items_with_sidecars_and_reads_them(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data", FILES)
    source = Source("folder", str(root), member_glob="*.bvh", sidecars=(".json",))
    check_listing(list_items(source))
    check_item_bytes(source)


def test_folder_without_member_glob_takes_every_non_sidecar_file(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data", FILES)
    keys = [i.key for i in list_items(Source("folder", str(root), sidecars=(".json",)))]
    # clip1.json and clip3.json travel as sidecars; the lone json and notes are items.
    assert keys == sorted([*EXPECTED_KEYS, "b/notes.txt", "lonely.json"])


def test_glob_source_keys_are_relative_to_the_fixed_prefix(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data", FILES)
    source = Source("glob", f"{root}/**/*.bvh", sidecars=(".json",))
    items = list_items(source)
    assert [i.key for i in items] == EXPECTED_KEYS
    # The sidecar is found beside the main file even though the glob selects only *.bvh.
    assert dict(items[0].sidecars) == {".json": "a/clip1.json"}
    check_item_bytes(source)


@pytest.mark.parametrize("kind", ["", "gz", "xz", "bz2", "zip"])
def test_archives_list_and_stream_like_a_folder(tmp_path: Path, kind: str) -> None:
    path = archive_of(tmp_path, kind)
    source = Source("archive", str(path), member_glob="*.bvh", sidecars=(".json",))
    check_listing(list_items(source))
    check_item_bytes(source)


def test_tar_members_with_leading_dot_slash_get_clean_keys(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "x.tar", {"./d/m.bvh": b"m", "./d/m.json": b"j"})
    source = Source("archive", str(path), member_glob="*.bvh", sidecars=(".json",))
    assert [(i.key, dict(i.sidecars)) for i in list_items(source)] == [
        ("d/m.bvh", {".json": "d/m.json"})
    ]


@pytest.mark.parametrize("max_buffer_bytes", [0, 1 << 20])
def test_tar_sidecar_after_main_is_paired_with_bounded_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_buffer_bytes: int
) -> None:
    # Every main file comes before its sidecar, as in a randomly ordered real archive.
    files = {
        "m1.bvh": os.urandom(3000),
        "m2.bvh": os.urandom(3000),
        "m1.json": b"1",
        "m2.json": b"2",
        "m3.bvh": os.urandom(10),
    }
    path = make_tar(tmp_path / "x.tar.gz", files, compression="gz")
    source = Source("archive", str(path), member_glob="*.bvh", sidecars=(".json",))
    listing = list_items(source)
    passes = []
    real = sources.iter_members

    def counting(src: Source, keys: object = None):  # type: ignore[no-untyped-def]
        passes.append(sorted(keys) if keys is not None else None)  # type: ignore[arg-type]
        return real(src, keys)  # type: ignore[arg-type]

    monkeypatch.setattr(sources, "iter_members", counting)
    got = {
        i.key: i
        for i in iter_item_bytes(source, listing=listing, max_buffer_bytes=max_buffer_bytes)
    }
    assert got["m1.bvh"].data == files["m1.bvh"] and got["m1.bvh"].sidecars == {".json": b"1"}
    assert got["m2.bvh"].data == files["m2.bvh"] and got["m2.bvh"].sidecars == {".json": b"2"}
    assert got["m3.bvh"].data == files["m3.bvh"] and got["m3.bvh"].sidecars == {}
    if max_buffer_bytes == 0:
        # Nothing may wait in memory: the two mains are read again in a second pass, alone.
        assert passes[1:] == [["m1.bvh", "m2.bvh"]]
    else:
        assert len(passes) == 1


def test_tar_stream_stops_once_requested_items_are_read(tmp_path: Path) -> None:
    # Random (incompressible) members so that cutting the file cuts the last members' data.
    files = {f"m{i}.bin": os.urandom(40_000) for i in range(5)}
    path = make_tar(tmp_path / "x.tar.gz", files, compression="gz")
    source = Source("archive", str(path))
    listing = list_items(source)
    truncate_file(path, 0.6)
    # The first member lies before the cut: reading it alone must not touch the broken end.
    items = list(iter_item_bytes(source, ["m0.bin"], listing=listing))
    assert [(i.key, i.data) for i in items] == [("m0.bin", files["m0.bin"])]
    # iter_members stops early the same way.
    assert [k for k, _s, _f in iter_members(source, ["m1.bin"])] == ["m1.bin"]


@pytest.mark.parametrize("kind", ["gz", "xz"])
def test_truncated_tar_raises_source_error_naming_archive_and_member(
    tmp_path: Path, kind: str
) -> None:
    files = {f"m{i}.bin": os.urandom(40_000) for i in range(5)}
    path = make_tar(tmp_path / f"x.tar.{kind}", files, compression=kind)
    listing = list_items(Source("archive", str(path)))
    truncate_file(path, 0.6)
    source = Source("archive", str(path))
    with pytest.raises(
        SourceError, match=r"x\.tar\.\w+ is corrupt or truncated \(reading .*member.* m\d\.bin"
    ):
        list_items(source)
    read: list[str] = []
    with pytest.raises(SourceError, match=r"truncated \(reading .*member.* m\d\.bin"):
        for item in iter_item_bytes(source, listing=listing):
            read.append(item.key)
            if item.ok:
                assert item.data == files[item.key]
    # Members before the cut were yielded before the error.
    assert read[:2] == ["m0.bin", "m1.bin"]


def test_truncated_tar_cut_between_members_is_detected(tmp_path: Path) -> None:
    # Cut the compressed stream at a point where the tar stream still parses: only the
    # end-of-stream check can tell.
    files = {f"m{i}.bin": os.urandom(20_000) for i in range(3)}
    path = make_tar(tmp_path / "x.tar.xz", files, compression="xz")
    truncate_file(path, 0.995)
    with pytest.raises(SourceError, match="x.tar.xz"):
        list_items(Source("archive", str(path)))


def test_corrupt_zip_member_is_reported_on_its_item_and_others_are_read(tmp_path: Path) -> None:
    files = {"a.bvh": b"A" * 500, "b.bvh": b"B" * 500, "b.json": b"{}", "c.bvh": b"C" * 500}
    path = make_zip(tmp_path / "x.zip", files, compress=False)
    corrupt_zip_member(path, "b.bvh")
    source = Source("archive", str(path), member_glob="*.bvh", sidecars=(".json",))
    assert [i.key for i in list_items(source)] == ["a.bvh", "b.bvh", "c.bvh"]
    got = {i.key: i for i in iter_item_bytes(source)}
    assert got["a.bvh"].ok and got["a.bvh"].data == files["a.bvh"]
    assert got["c.bvh"].ok and got["c.bvh"].data == files["c.bvh"]
    assert not got["b.bvh"].ok and got["b.bvh"].data is None
    assert "x.zip" in got["b.bvh"].error and "b.bvh" in got["b.bvh"].error
    assert "CRC" in got["b.bvh"].error


def test_not_a_zip_raises_source_error(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(b"this is not a zip file at all")
    with pytest.raises(SourceError, match="x.zip"):
        list_items(Source("archive", str(path)))


def test_missing_sources_raise_source_missing(tmp_path: Path) -> None:
    for source in (
        Source("folder", str(tmp_path / "nope")),
        Source("archive", str(tmp_path / "nope.tar.xz")),
        Source("glob", str(tmp_path / "nope" / "*.bvh")),
    ):
        with pytest.raises(SourceMissing, match="does not exist"):
            list_items(source)
        with pytest.raises(SourceMissing):
            list(iter_item_bytes(source))


def test_bad_source_definitions_raise_value_error() -> None:
    with pytest.raises(ValueError, match="not a supported archive"):
        Source("archive", "/x/data.rar")
    with pytest.raises(ValueError, match="folder, glob or archive"):
        Source("bucket", "/x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sidecar suffix"):
        Source("folder", "/x", sidecars=("json",))


def test_requested_key_absent_from_source_is_reported(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data", {"a.bvh": b"a"})
    source = Source("folder", str(root))
    items = list(iter_item_bytes(source, ["a.bvh", "gone.bvh"]))
    assert {i.key: i.ok for i in items} == {"a.bvh": True, "gone.bvh": False}
    assert "gone.bvh" in next(i.error for i in items if not i.ok)


def test_item_deleted_after_listing_is_reported_not_raised(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data", {"a.bvh": b"a", "b.bvh": b"b"})
    source = Source("folder", str(root))
    listing = list_items(source)
    (root / "b.bvh").unlink()
    items = {i.key: i for i in iter_item_bytes(source, listing=listing)}
    assert items["a.bvh"].ok
    assert not items["b.bvh"].ok and "not found" in items["b.bvh"].error


def test_item_digest_folds_sidecars() -> None:
    main = hashlib.sha256(b"main").hexdigest()
    side = hashlib.sha256(b"side").hexdigest()
    other = hashlib.sha256(b"other").hexdigest()
    assert item_digest(main, {}) == main
    with_side = item_digest(main, {".json": side})
    assert with_side != main
    assert with_side != item_digest(main, {".json": other})
    assert with_side == hashlib.sha256(f"main:{main}\n.json:{side}\n".encode()).hexdigest()


def test_item_bytes_digest_matches_item_digest(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data", FILES)
    source = Source("folder", str(root), member_glob="*.bvh", sidecars=(".json",))
    item = next(iter(iter_item_bytes(source, ["a/clip1.bvh"])))
    expected = item_digest(
        hashlib.sha256(FILES["a/clip1.bvh"]).hexdigest(),
        {".json": hashlib.sha256(FILES["a/clip1.json"]).hexdigest()},
    )
    assert item.digest() == expected


BANDAI1 = shared_data_dir() / "bandai-namco-motion" / "dataset-1" / "data"


@pytest.mark.skipif(not BANDAI1.is_dir(), reason="../shared/data (Bandai-Namco dataset-1) absent")
def test_real_bandai1_folder_pairs_every_clip_with_its_labels() -> None:
    items = list_items(Source("folder", str(BANDAI1), member_glob="*.bvh", sidecars=(".json",)))
    assert len(items) == 174
    assert all(dict(i.sidecars) == {".json": i.key[:-4] + ".json"} for i in items)
