"""Where a dataset's source items are and how to read their bytes.

A *source* is one of:

- a **folder**, walked recursively;
- a **glob** of files (``/data/**/*.bvh``; ``**`` crosses folders);
- an **archive** file: ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.xz``/``.txz``,
  ``.tar.bz2``/``.tbz2`` or ``.zip``, read in place: members are streamed from the archive,
  never unpacked to disk.

An *item* is one main file (a BVH clip, an AMASS ``.npz``, a track file) plus its
*sidecars*: files beside it with the same stem and another suffix (Bandai-Namco keeps the
labels of ``X.bvh`` in ``X.json``). Items are named by a *key*: the main file's path relative
to the folder (or to the glob's fixed prefix), or the member name inside the archive, always
with ``/`` separators. ``member_glob`` selects main files by key with :func:`fnmatch.fnmatchcase`
(``*`` also matches ``/``, so ``*.bvh`` selects BVH files at any depth); a file that is a
sidecar of a selected main file is never an item itself. Hidden files (a name component
starting with ``.``, e.g. macOS ``._X.bvh``) and ``__MACOSX/`` are ignored.

Reading:

- :func:`list_items` lists the items (sorted by key) with sizes.
- :func:`iter_item_bytes` streams items with their sidecars' bytes, for the items asked for, in
  archive order (one sequential pass over a tar; it stops as soon as every requested item was
  yielded). Memory holds one main file plus the small sidecars, and at most
  ``max_buffer_bytes`` of main files whose sidecar comes later in a tar.
- :func:`iter_members` streams raw member files (main files and sidecars alike) as file
  objects; :mod:`data_catalog.manifest` hashes them in chunks in one pass.

Errors: a source that does not exist raises :class:`SourceMissing` (the preparation flow
reports the dataset and skips it). An archive that cannot be read as a whole (truncated,
corrupt compressed stream, not an archive) raises :class:`SourceError` naming the archive and
the member being read; a single unreadable member of an archive that can go on (a zip member
with a bad CRC, an unreadable file in a folder) is reported on its own item
(:attr:`ItemBytes.error`) and the other items are still read.
"""

from __future__ import annotations

import bz2
import fnmatch
import glob as globlib
import gzip
import hashlib
import io
import lzma
import os
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Literal

SourceKind = Literal["folder", "glob", "archive"]

#: Archive suffixes understood, longest first so that ``.tar.gz`` wins over ``.gz``.
ARCHIVE_SUFFIXES: tuple[str, ...] = (
    ".tar.gz",
    ".tar.xz",
    ".tar.bz2",
    ".tgz",
    ".txz",
    ".tbz2",
    ".tar",
    ".zip",
)

#: Bytes read at a time when hashing or copying a member.
CHUNK_BYTES = 1 << 20

#: Errors a damaged compressed stream or archive member raises while being read.
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    tarfile.TarError,
    zipfile.BadZipFile,
)


class SourceError(OSError):
    """A source cannot be read as a whole; the message names the source and the member."""


class SourceMissing(SourceError):
    """A source (folder, glob base folder or archive) does not exist.

    The preparation flow catches it, reports the dataset as skipped and goes on (a fresh
    clone has no ``../shared/data``).
    """


@dataclass(frozen=True)
class Source:
    """A resolved source: what to read and which members are items.

    Attributes:
        kind: ``"folder"``, ``"glob"`` or ``"archive"``.
        path: absolute folder path, glob pattern, or archive file path (local files).
        member_glob: :func:`fnmatch.fnmatchcase` pattern on item keys selecting main files;
            ``None`` selects every file.
        sidecars: suffixes of sidecar files, e.g. ``(".json",)``: ``X.json`` beside ``X.bvh``.
    """

    kind: SourceKind
    path: str
    member_glob: str | None = None
    sidecars: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("folder", "glob", "archive"):
            raise ValueError(f"source kind must be folder, glob or archive, not {self.kind!r}")
        if not self.path:
            raise ValueError("source path is empty")
        for suffix in self.sidecars:
            if not suffix.startswith(".") or "/" in suffix:
                raise ValueError(f"sidecar suffix must look like '.json', got {suffix!r}")
        if self.kind == "archive":
            archive_format(self.path)  # raises on an unknown suffix

    def describe(self) -> str:
        """One line for reports, e.g. ``archive /data/x.tar.xz members */data/*.bvh``."""
        text = f"{self.kind} {self.path}"
        if self.member_glob:
            text += f" members {self.member_glob}"
        return text


@dataclass(frozen=True)
class ItemRef:
    """One item of a source.

    Attributes:
        key: main file's key (relative path or archive member name, ``/`` separators).
        size: main file's size in bytes.
        sidecars: sidecar suffix -> sidecar key, for the sidecars that exist.
        sidecar_sizes: sidecar suffix -> size in bytes.
    """

    key: str
    size: int
    sidecars: Mapping[str, str] = field(default_factory=dict)
    sidecar_sizes: Mapping[str, int] = field(default_factory=dict)

    @property
    def member_keys(self) -> tuple[str, ...]:
        """The main key then the sidecar keys (sorted by suffix)."""
        return (self.key, *(self.sidecars[s] for s in sorted(self.sidecars)))


@dataclass
class ItemBytes:
    """An item's content as read from the source.

    Attributes:
        ref: the item.
        data: the main file's bytes, or None when it could not be read.
        sidecars: sidecar suffix -> bytes, for the sidecars that could be read.
        error: why the item could not be read (names the member), else None.
    """

    ref: ItemRef
    data: bytes | None
    sidecars: dict[str, bytes] = field(default_factory=dict)
    error: str | None = None

    @property
    def key(self) -> str:
        return self.ref.key

    @property
    def ok(self) -> bool:
        return self.error is None and self.data is not None

    def digest(self) -> str:
        """The item's content hash, equal to its manifest ``digest`` (see :func:`item_digest`)."""
        if self.data is None:
            raise ValueError(f"item {self.key!r} has no data: {self.error}")
        side = {s: hashlib.sha256(b).hexdigest() for s, b in self.sidecars.items()}
        return item_digest(hashlib.sha256(self.data).hexdigest(), side)


def item_digest(main_sha256: str, sidecar_sha256: Mapping[str, str]) -> str:
    """Content hash of an item: its main file's sha256 with the sidecars' hashes folded in.

    Without sidecars it is the main file's sha256 itself; with sidecars it is the sha256 of
    the lines ``main:<sha>`` then ``<suffix>:<sha>`` per sidecar, sorted by suffix. A change
    to a sidecar (new labels) therefore changes the item.
    """
    if not sidecar_sha256:
        return main_sha256
    lines = [f"main:{main_sha256}"] + [f"{s}:{sidecar_sha256[s]}" for s in sorted(sidecar_sha256)]
    return hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()


def archive_format(path: str | os.PathLike[str]) -> Literal["tar", "zip"]:
    """``"tar"`` or ``"zip"`` from an archive file name; ValueError for other suffixes."""
    name = str(path).lower()
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return "zip" if suffix == ".zip" else "tar"
    raise ValueError(
        f"{path}: not a supported archive (expected one of {', '.join(ARCHIVE_SUFFIXES)})"
    )


def check_source(source: Source) -> None:
    """Raise :class:`SourceMissing` when the source's folder, glob base or archive is absent."""
    if source.kind == "folder":
        if not Path(source.path).is_dir():
            raise SourceMissing(f"source folder {source.path} does not exist")
    elif source.kind == "glob":
        base = _glob_base(source.path)
        if not base.is_dir():
            raise SourceMissing(f"source glob {source.path}: folder {base} does not exist")
    elif not Path(source.path).is_file():
        raise SourceMissing(f"source archive {source.path} does not exist")


def list_items(source: Source) -> list[ItemRef]:
    """The source's items, sorted by key, with their sidecars.

    Reads a zip's central directory or walks a whole tar stream (a compressed tar has no
    index: listing it decompresses it once and checks that the stream is complete).

    Raises:
        SourceMissing: the source does not exist.
        SourceError: the archive is truncated or corrupt (names archive and member).
    """
    check_source(source)
    sizes: dict[str, int] = {}
    for name, size, _stream in _iter_raw(source, _candidate_filter(source), read=False):
        sizes[name] = size
    return group_items(sizes, source.member_glob, source.sidecars)


def group_items(
    sizes: Mapping[str, int], member_glob: str | None, sidecars: Sequence[str]
) -> list[ItemRef]:
    """Group member files into items: main files selected by ``member_glob`` plus sidecars.

    Args:
        sizes: every member key -> size in bytes.
        member_glob: fnmatch pattern selecting main files, None for all.
        sidecars: sidecar suffixes.

    Returns:
        Items sorted by key. A file that is a sidecar of a selected main file is not an item.
    """
    selected = sorted(
        k for k in sizes if member_glob is None or fnmatch.fnmatchcase(k, member_glob)
    )
    sidecar_of: dict[str, dict[str, str]] = {}
    taken: set[str] = set()
    for key in selected:
        stem = _stem(key)
        found = {s: stem + s for s in sidecars if stem + s in sizes and stem + s != key}
        sidecar_of[key] = found
        taken.update(found.values())
    items = []
    for key in selected:
        if key in taken:
            continue
        side = sidecar_of[key]
        items.append(
            ItemRef(key, int(sizes[key]), dict(side), {s: int(sizes[k]) for s, k in side.items()})
        )
    return items


def iter_members(
    source: Source, keys: Collection[str] | None = None
) -> Iterator[tuple[str, int, IO[bytes]]]:
    """Stream raw member files ``(key, size, file object)`` in archive (or sorted) order.

    Each file object is valid only until the next member is requested; read it fully (in
    chunks) before advancing. Reading a damaged member raises from the file object
    (OSError, EOFError, zlib/lzma errors, ``zipfile.BadZipFile``); the caller decides
    whether to go on. For a tar, the next step then usually raises :class:`SourceError`.

    Args:
        source: the source.
        keys: member keys wanted (main files and sidecars); None for every candidate member
            (files selected by ``member_glob`` and files with a sidecar suffix). A tar stream
            stops once every wanted key was yielded.

    Raises:
        SourceMissing, SourceError: as :func:`list_items`.
    """
    check_source(source)
    if keys is None:
        yield from _iter_raw(source, _candidate_filter(source), read=True)
        return
    wanted = set(keys)
    if not wanted:
        return
    remaining = set(wanted)
    for name, size, stream in _iter_raw(source, wanted.__contains__, read=True, check_end=False):
        yield name, size, stream
        remaining.discard(name)
        if not remaining:
            return


def iter_item_bytes(
    source: Source,
    keys: Collection[str] | None = None,
    *,
    listing: Sequence[ItemRef] | None = None,
    max_buffer_bytes: int = 64 << 20,
) -> Iterator[ItemBytes]:
    """Stream items with their sidecars' bytes, one :class:`ItemBytes` per requested item.

    Folders, globs and zips are read item by item. A tar is read in one sequential pass in
    archive order, stopping once every requested item was yielded; a main file whose sidecar
    comes later in the tar is kept in memory until the sidecar arrives, up to
    ``max_buffer_bytes`` in all, beyond which it is skipped and read again in a second pass
    (which also stops early).

    Args:
        source: the source.
        keys: main-file keys of the items wanted; None for every item.
        listing: the source's items as from :func:`list_items` (or a manifest); listed when
            None (for a tar that is one extra pass).
        max_buffer_bytes: bound on main-file bytes held while waiting for sidecars.

    Yields:
        One :class:`ItemBytes` per requested item (``error`` set and ``data`` None when the
        item could not be read; also when it is not in the source).

    Raises:
        SourceMissing: the source does not exist.
        SourceError: a tar stream broke (truncated or corrupt); items read before were
            yielded, and the item being read is named in the message.
    """
    check_source(source)
    refs = list(listing) if listing is not None else list_items(source)
    by_key = {r.key: r for r in refs}
    if keys is None:
        wanted = list(refs)
    else:
        wanted = [by_key[k] for k in sorted(keys) if k in by_key]
        for missing in sorted(set(keys) - set(by_key)):
            yield ItemBytes(
                ItemRef(missing, 0), None, error=f"{missing}: not in {source.describe()}"
            )
    if not wanted:
        return
    if source.kind == "archive" and archive_format(source.path) == "tar":
        yield from _iter_tar_items(source, wanted, max_buffer_bytes)
    else:
        yield from _iter_random_access_items(source, wanted)


# --------------------------------------------------------------------------------------
# Implementation


def _stem(key: str) -> str:
    posix = PurePosixPath(key)
    return str(posix.with_suffix("")) if posix.suffix else key


def _is_hidden(key: str) -> bool:
    parts = key.split("/")
    return any(p.startswith(".") for p in parts) or parts[0] == "__MACOSX"


def _candidate_filter(source: Source) -> Callable[[str], bool]:
    """Members that may matter: main files by ``member_glob``, and files with a sidecar suffix."""

    def wanted(key: str) -> bool:
        if source.member_glob is None or fnmatch.fnmatchcase(key, source.member_glob):
            return True
        return any(key.endswith(s) for s in source.sidecars)

    return wanted


def _glob_base(pattern: str) -> Path:
    """The longest leading folder of a glob pattern without wildcards."""
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _local_files(source: Source) -> dict[str, Path]:
    """Key -> file path for a folder or a glob, hidden files left out."""
    files: dict[str, Path] = {}
    if source.kind == "folder":
        root = Path(source.path)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                path = Path(dirpath) / name
                key = path.relative_to(root).as_posix()
                if not _is_hidden(key):
                    files[key] = path
    else:
        base = _glob_base(source.path)
        for match in globlib.glob(source.path, recursive=True):
            path = Path(match)
            if path.is_file():
                key = path.relative_to(base).as_posix()
                if _is_hidden(key):
                    continue
                files[key] = path
                # Sidecars sit beside a matched file whether or not the glob matches them.
                for suffix in source.sidecars:
                    sidecar = path.with_suffix(suffix)
                    if sidecar != path and sidecar.is_file():
                        files[sidecar.relative_to(base).as_posix()] = sidecar
    return files


def _iter_raw(
    source: Source,
    wanted: Callable[[str], bool],
    *,
    read: bool,
    check_end: bool = True,
) -> Iterator[tuple[str, int, IO[bytes]]]:
    """Yield ``(key, size, stream)`` for wanted members; ``stream`` is empty when not ``read``."""
    empty = io.BytesIO(b"")
    if source.kind in ("folder", "glob"):
        for key, path in sorted(_local_files(source).items()):
            if not wanted(key):
                continue
            try:
                size = path.stat().st_size
            except OSError as error:
                raise SourceError(f"{path}: cannot stat: {error}") from error
            if not read:
                yield key, size, empty
                continue
            try:
                handle = open(path, "rb")  # noqa: SIM115 - closed below, after the caller read it
            except OSError as error:
                yield key, size, _FailingStream(f"{path}: {error}")
                continue
            with handle:
                yield key, size, handle
        return
    if archive_format(source.path) == "zip":
        yield from _iter_zip(source.path, wanted, read=read)
    else:
        yield from _iter_tar(source.path, wanted, read=read, check_end=check_end)


class _FailingStream(io.RawIOBase):
    """A stream whose first read raises: an unreadable member reported where it is read."""

    def __init__(self, message: str) -> None:
        self._message = message

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        raise OSError(self._message)


def _iter_zip(
    path: str, wanted: Callable[[str], bool], *, read: bool
) -> Iterator[tuple[str, int, IO[bytes]]]:
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise SourceError(f"archive {path}: cannot open as zip: {error}") from error
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            key = info.filename.removeprefix("./")
            if _is_hidden(key) or not wanted(key):
                continue
            if not read:
                yield key, info.file_size, io.BytesIO(b"")
                continue
            try:
                member = archive.open(info)
            except READ_ERRORS as error:
                # A damaged local header is the member's problem; the others can still be read.
                yield key, info.file_size, _FailingStream(f"archive {path}, member {key}: {error}")
                continue
            with member:
                yield key, info.file_size, member


def _open_decompressed(path: str, raw: IO[bytes]) -> IO[bytes]:
    """The tar byte stream of an archive file, by the compression's magic bytes."""
    head = raw.read(6)
    raw.seek(0)
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw, mode="rb")  # type: ignore[return-value]
    if head.startswith(b"BZh"):
        return bz2.BZ2File(raw, mode="rb")  # type: ignore[return-value]
    return raw


def _iter_tar(
    path: str, wanted: Callable[[str], bool], *, read: bool, check_end: bool
) -> Iterator[tuple[str, int, IO[bytes]]]:
    """Stream a tar (any compression) sequentially.

    The decompressor is opened here rather than by ``tarfile`` because ``tarfile``'s own
    stream mode stops silently at a truncation point; ``gzip``/``lzma``/``bz2`` file objects
    raise ``EOFError`` instead, and draining the stream after the last member (``check_end``)
    catches a truncated archive even when the cut falls between members.
    """
    current = "the first member"
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed in finally
    except OSError as error:
        raise SourceError(f"archive {path}: cannot open: {error}") from error
    try:
        stream = _open_decompressed(path, raw)
        archive = tarfile.open(fileobj=stream, mode="r|")
        for info in archive:
            current = f"member {info.name}"
            if not info.isfile():
                continue
            key = info.name.removeprefix("./")
            if _is_hidden(key) or not wanted(key):
                continue
            if not read:
                yield key, info.size, io.BytesIO(b"")
                continue
            member = archive.extractfile(info)
            if member is None:
                continue
            yield key, info.size, member
            current = f"the member after {info.name}"
        if check_end:
            current = "the end of the archive"
            while stream.read(CHUNK_BYTES):
                pass
    except READ_ERRORS as error:
        raise SourceError(
            f"archive {path} is corrupt or truncated (reading {current}): "
            f"{type(error).__name__}: {error}"
        ) from error
    finally:
        raw.close()


def _read_all(stream: IO[bytes]) -> bytes:
    chunks = []
    while chunk := stream.read(CHUNK_BYTES):
        chunks.append(chunk)
    return b"".join(chunks)


def _iter_random_access_items(source: Source, wanted: Sequence[ItemRef]) -> Iterator[ItemBytes]:
    """Folder, glob and zip: read each requested item and its sidecars in listing order."""
    member_keys = {k for ref in wanted for k in ref.member_keys}
    contents: dict[str, bytes] = {}
    errors: dict[str, str] = {}
    owner = {k: ref.key for ref in wanted for k in ref.member_keys}
    pending = {ref.key: ref for ref in wanted}
    # Sidecars are small; main files are read lazily in the order the source yields them,
    # and a group is emitted as soon as all of its members were read.
    for key, _size, stream in _iter_raw(source, member_keys.__contains__, read=True):
        try:
            contents[key] = _read_all(stream)
        except READ_ERRORS as error:
            errors[key] = _member_error(source, key, error)
        ref = pending.get(owner[key])
        if ref is not None and all(k in contents or k in errors for k in ref.member_keys):
            del pending[ref.key]
            yield _assemble(ref, contents, errors)
            for k in ref.member_keys:
                contents.pop(k, None)
    for ref in pending.values():
        yield _assemble(ref, contents, errors, not_found=source.describe())


def _member_error(source: Source, key: str, error: BaseException) -> str:
    where = f"archive {source.path}, member {key}" if source.kind == "archive" else key
    return f"{where}: {type(error).__name__}: {error}"


def _assemble(
    ref: ItemRef,
    contents: Mapping[str, bytes],
    errors: Mapping[str, str],
    not_found: str | None = None,
) -> ItemBytes:
    """Build an :class:`ItemBytes` from members read (or failed, or never found)."""
    problems = [errors[k] for k in ref.member_keys if k in errors]
    if not_found is not None:
        problems += [
            f"{k}: listed but not found in {not_found}"
            for k in ref.member_keys
            if k not in contents and k not in errors
        ]
    sidecars = {s: contents[k] for s, k in ref.sidecars.items() if k in contents}
    data = contents.get(ref.key)
    if problems:
        return ItemBytes(ref, None, sidecars, "; ".join(problems))
    return ItemBytes(ref, data, sidecars)


def _iter_tar_items(
    source: Source, wanted: Sequence[ItemRef], max_buffer_bytes: int
) -> Iterator[ItemBytes]:
    """Tar: one sequential pass with bounded buffering; a second pass for deferred mains."""
    owner: dict[str, str] = {}  # member key -> item key
    for ref in wanted:
        for key in ref.member_keys:
            owner[key] = ref.key
    refs = {ref.key: ref for ref in wanted}
    contents: dict[str, bytes] = {}
    errors: dict[str, str] = {}
    deferred: set[str] = set()
    done: set[str] = set()
    buffered = 0

    def complete(ref: ItemRef) -> bool:
        return all(k in contents or k in errors for k in ref.member_keys)

    def emit(ref: ItemRef) -> ItemBytes:
        nonlocal buffered
        done.add(ref.key)
        buffered -= len(contents.get(ref.key, b""))
        item = _assemble(ref, contents, errors)
        for k in ref.member_keys:
            contents.pop(k, None)
        return item

    def read_pass(keys: Collection[str], first: bool) -> Iterator[ItemBytes]:
        nonlocal buffered
        for key, _size, stream in iter_members(source, keys):
            ref = refs[owner[key]]
            if ref.key in done:
                continue
            is_main = key == ref.key
            if first and is_main:
                sidecars_seen = all(k in contents or k in errors for k in ref.member_keys[1:])
                if not sidecars_seen and buffered + ref.size > max_buffer_bytes:
                    deferred.add(ref.key)  # read again in the second pass, once sidecars are in
                    continue
            try:
                data = _read_all(stream)
            except READ_ERRORS as error:
                errors[key] = _member_error(source, key, error)
                # The tar stream is broken past this point: report this item, then stop.
                yield emit(ref)
                raise SourceError(
                    f"archive {source.path} is corrupt or truncated (reading member {key}): "
                    f"{type(error).__name__}: {error}"
                ) from error
            contents[key] = data
            if is_main:
                buffered += len(data)
            if complete(ref):
                yield emit(ref)

    yield from read_pass(owner.keys(), first=True)
    if deferred:
        needed = {
            k
            for item_key in deferred
            for k in refs[item_key].member_keys
            if k not in contents and k not in errors
        }
        if needed:
            yield from read_pass(needed, first=False)
    for ref in wanted:
        if ref.key not in done:
            done.add(ref.key)
            yield _assemble(ref, contents, errors, not_found=source.describe())


def read_item(source: Source, ref: ItemRef) -> ItemBytes:
    """Read one item (and its sidecars). For a tar this streams up to the item; prefer
    :func:`iter_item_bytes` for many items."""
    for item in iter_item_bytes(source, [ref.key], listing=[ref]):
        return item
    raise SourceError(f"{ref.key}: not read from {source.describe()}")  # pragma: no cover
