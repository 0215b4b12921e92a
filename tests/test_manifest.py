"""Manifests: hashing sources, canonical JSON and fingerprint, diffs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from factories import corrupt_zip_member, make_tar, make_tree, make_zip, manifest_for
from hypothesis import given
from hypothesis import strategies as st

from data_catalog.manifest import Manifest, ManifestItem, build_manifest, diff
from data_catalog.sources import Source, SourceError, item_digest, iter_item_bytes

FILES = {
    "x/a.bvh": b"alpha" * 100,
    "x/a.json": b'{"style": 3}',
    "x/b.bvh": b"beta" * 50,
    "c.bvh": b"gamma",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_build_manifest_hashes_items_and_sidecars(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "d", FILES)
    scan = build_manifest(Source("folder", str(root), "*.bvh", (".json",)), "demo")
    assert scan.unreadable == {}
    manifest = scan.manifest
    assert manifest.keys == ["c.bvh", "x/a.bvh", "x/b.bvh"]
    a = manifest.get("x/a.bvh")
    assert (a.size, a.sha256) == (len(FILES["x/a.bvh"]), sha(FILES["x/a.bvh"]))
    assert a.sidecars[".json"].sha256 == sha(FILES["x/a.json"])
    assert a.digest == item_digest(sha(FILES["x/a.bvh"]), {".json": sha(FILES["x/a.json"])})
    assert manifest.get("c.bvh").digest == sha(FILES["c.bvh"])
    assert manifest.total_bytes == sum(len(v) for v in FILES.values())


def test_manifest_digest_matches_streamed_item_bytes(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "d.tar.xz", FILES, compression="xz")
    source = Source("archive", str(path), "*.bvh", (".json",))
    manifest = build_manifest(source, "demo").manifest
    for item in iter_item_bytes(source, listing=manifest.refs()):
        assert item.digest() == manifest.get(item.key).digest


def test_fingerprint_depends_on_content_not_location(tmp_path: Path) -> None:
    folder = build_manifest(
        Source("folder", str(make_tree(tmp_path / "d", FILES)), "*.bvh", (".json",)), "demo"
    ).manifest
    zipped = build_manifest(
        Source("archive", str(make_zip(tmp_path / "d.zip", FILES)), "*.bvh", (".json",)), "demo"
    ).manifest
    assert folder.fingerprint == zipped.fingerprint
    changed = dict(FILES, **{"x/a.json": b'{"style": 4}'})
    other = build_manifest(
        Source("folder", str(make_tree(tmp_path / "e", changed)), "*.bvh", (".json",)), "demo"
    ).manifest
    assert other.fingerprint != folder.fingerprint
    assert diff(folder, other).changed == ("x/a.bvh",)


def test_canonical_json_round_trip_and_fingerprint() -> None:
    manifest = manifest_for("demo", {"b": b"2", "a": b"1"})
    data = manifest.to_json()
    # Canonical: sorted keys, no whitespace, items sorted by key.
    assert b" " not in data
    parsed = json.loads(data)
    assert [i["key"] for i in parsed["items"]] == ["a", "b"]
    assert data == json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()
    assert manifest.fingerprint == hashlib.sha256(data).hexdigest()
    again = Manifest.from_json(data)
    assert again == manifest and again.fingerprint == manifest.fingerprint


def test_from_json_refuses_other_formats_and_newer_versions() -> None:
    with pytest.raises(ValueError, match="not a mocap2to3 manifest"):
        Manifest.from_json(b'{"items": []}')
    newer = json.loads(manifest_for("d", {"a": b"1"}).to_json())
    newer["format_version"] = 99
    with pytest.raises(ValueError, match="newer"):
        Manifest.from_json(json.dumps(newer))


def test_duplicate_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Manifest("d", (ManifestItem("a", 1, "0" * 64), ManifestItem("a", 2, "1" * 64)))


def test_diff_added_changed_removed_unchanged() -> None:
    old = manifest_for("d", {"keep": b"1", "edit": b"2", "drop": b"3"})
    new = manifest_for("d", {"keep": b"1", "edit": b"2!", "new": b"4"})
    result = diff(old, new)
    assert result.added == ("new",)
    assert result.changed == ("edit",)
    assert result.removed == ("drop",)
    assert result.unchanged == ("keep",)
    assert not result.is_empty
    assert diff(new, new).is_empty
    assert diff(None, new).added == ("edit", "keep", "new")


@given(
    old=st.dictionaries(st.sampled_from("abcdefgh"), st.binary(max_size=3), max_size=8),
    new=st.dictionaries(st.sampled_from("abcdefgh"), st.binary(max_size=3), max_size=8),
)
def test_diff_partitions_keys(old: dict[str, bytes], new: dict[str, bytes]) -> None:
    result = diff(manifest_for("d", old), manifest_for("d", new))
    assert set(result.added) | set(result.changed) | set(result.unchanged) == set(new)
    assert set(result.removed) == set(old) - set(new)
    assert set(result.changed) == {k for k in set(old) & set(new) if old[k] != new[k]}
    parts = [result.added, result.changed, result.removed, result.unchanged]
    assert sum(len(p) for p in parts) == len(set(old) | set(new))


def test_unreadable_zip_member_is_left_out_with_reason(tmp_path: Path) -> None:
    files = {"a.bvh": b"A" * 300, "b.bvh": b"B" * 300, "b.json": b"{}"}
    path = make_zip(tmp_path / "x.zip", files, compress=False)
    corrupt_zip_member(path, "b.json")
    scan = build_manifest(Source("archive", str(path), "*.bvh", (".json",)), "demo")
    assert scan.manifest.keys == ["a.bvh"]
    assert list(scan.unreadable) == ["b.bvh"]
    assert "x.zip" in scan.unreadable["b.bvh"] and "b.json" in scan.unreadable["b.bvh"]


def test_truncated_archive_fails_the_scan(tmp_path: Path) -> None:
    import os

    path = make_tar(
        tmp_path / "x.tar.gz", {f"m{i}": os.urandom(30_000) for i in range(4)}, compression="gz"
    )
    path.write_bytes(path.read_bytes()[:50_000])
    with pytest.raises(SourceError, match="x.tar.gz"):
        build_manifest(Source("archive", str(path)), "demo")
