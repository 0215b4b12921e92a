"""The dataset catalog: ``catalog.yaml`` validated by pydantic, and where each store lives.

A catalog file looks like::

    version: 1
    datasets:
      - name: bandai1
        source:                      # exactly one of folder / glob / archive
          folder: ${SHARED_DATA}/bandai-namco-motion/dataset-1/data
          member_glob: "*.bvh"       # fnmatch on item keys; '*' also matches '/'
          sidecars: [".json"]        # X.json beside X.bvh travels with the item
        reader: bvh
        options: {skeleton: bandai_namco, units: cm}
        joint_sets: [smpl22, coco17]
        fps: 30
        split: {test_fraction: 0.1, val_fraction: 0.05, test: {labels: {style: [13]}}}
        store: null                  # default: <work dir>/stores/<name>; any fsspec URL works

Strings in ``source``, ``options`` and ``store`` may hold ``${VAR}`` or ``${VAR:-default}``,
expanded when the dataset is used (not when the file is loaded, so a disabled example entry
naming an unset variable does not stop the catalog from loading):

- ``${SHARED_DATA}``: the shared development data folder (``MOCAP2TO3_SHARED_DATA``, default
  ``../shared/data`` beside the repository; see :mod:`data_catalog.paths`);
- ``${WORK_DIR}``: the working folder (``MOCAP2TO3_HOME``, default ``./work``);
- ``${CATALOG_DIR}``: the folder of the catalog file;
- any other name: the environment variable (an error naming it when unset and no default).

Relative paths (after expansion) resolve against the catalog file's folder. A dataset's
``kind`` (``3d`` or ``2d``) follows from its reader for the readers this project ships and
must be given for any other reader.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from data_catalog import paths
from data_catalog.manifest import Manifest
from data_catalog.readers import READERS
from data_catalog.sources import ARCHIVE_SUFFIXES, Source, SourceMissing, check_source
from data_catalog.store import (
    MotionStore,
    QuarantineEntry,
    SplitRule,
    StoreKind,
    conversion_config,
    open_store,
    read_quarantine,
)
from mocap_core.joint_sets import JOINT_SETS

#: The catalog shipped with the package.
DEFAULT_CATALOG = Path(__file__).resolve().with_name("catalog.yaml")

#: Kind of store each shipped reader produces; other readers need ``kind`` in the entry.
READER_KINDS: dict[str, StoreKind] = {name: spec.kind for name, spec in READERS.items()}

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class CatalogError(ValueError):
    """A catalog file cannot be read or is invalid; the message names the file and field."""


class SourceSpec(BaseModel):
    """Where a dataset's items are: exactly one of ``folder``, ``glob`` or ``archive``.

    Attributes:
        folder: a folder, walked recursively.
        glob: a glob pattern of files (``**`` crosses folders).
        archive: a ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.xz``/``.txz``, ``.tar.bz2`` or
            ``.zip`` file, read without unpacking.
        member_glob: fnmatch pattern on item keys selecting main files (``*`` matches ``/``).
        sidecars: suffixes of sidecar files read with each item (``[".json"]``).
    """

    model_config = ConfigDict(extra="forbid")

    folder: str | None = None
    glob: str | None = None
    archive: str | None = None
    member_glob: str | None = None
    sidecars: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceSpec:
        given = [k for k in ("folder", "glob", "archive") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                f"source needs exactly one of folder, glob, archive (got {given or 'none'})"
            )
        # A path ending in a ${VAR} is checked once expanded (Source does it).
        if (
            self.archive
            and not self.archive.endswith("}")
            and not self.archive.lower().endswith(ARCHIVE_SUFFIXES)
        ):
            raise ValueError(
                f"archive {self.archive!r}: expected one of {', '.join(ARCHIVE_SUFFIXES)}"
            )
        for suffix in self.sidecars:
            if not re.fullmatch(r"\.[A-Za-z0-9_.-]+", suffix):
                raise ValueError(f"sidecar suffix must look like '.json', got {suffix!r}")
        return self

    @property
    def kind(self) -> Literal["folder", "glob", "archive"]:
        return "folder" if self.folder else "glob" if self.glob else "archive"

    @property
    def location(self) -> str:
        return self.folder or self.glob or self.archive or ""


class DatasetEntry(BaseModel):
    """One dataset of the catalog.

    Attributes:
        name: identifier (lowercase letters, digits, ``_ . -``).
        description: free text.
        enabled: False for documented examples the flow skips.
        source: where the items are.
        reader: reader name (``bvh``, ``amass``, ``coco_json``, ``openpose``, ``tracks_npz``);
            checked by the preparation flow, not here.
        options: reader options.
        kind: ``3d`` or ``2d``; derived from the reader when it is a shipped one.
        joint_sets: target joint sets (registry names), one store subgroup each.
        fps: the store's frame rate; sequences are resampled to it.
        split: the split rule.
        store: the dataset folder (local path or fsspec URL); default
            ``<work dir>/stores/<name>``.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str = ""
    enabled: bool = True
    source: SourceSpec
    reader: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)
    kind: StoreKind | None = None
    joint_sets: list[str] = Field(min_length=1)
    fps: float = Field(30.0, gt=0)
    split: SplitRule = Field(default_factory=SplitRule)
    store: str | None = None

    @field_validator("joint_sets")
    @classmethod
    def _known_joint_sets(cls, value: list[str]) -> list[str]:
        unknown = [j for j in value if j not in JOINT_SETS]
        if unknown:
            raise ValueError(f"unknown joint sets {unknown}; known: {sorted(JOINT_SETS)}")
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate joint sets in {value}")
        return value

    @model_validator(mode="after")
    def _derive_kind(self) -> DatasetEntry:
        if self.kind is None:
            if self.reader not in READER_KINDS:
                raise ValueError(
                    f"dataset {self.name}: reader {self.reader!r} is not a shipped reader; "
                    "give kind: 3d or kind: 2d"
                )
            self.kind = READER_KINDS[self.reader]
        return self


class Catalog(BaseModel):
    """A validated catalog file, with helpers to resolve and open each dataset's store.

    Use :func:`load_catalog` to build one; ``base_dir`` (the file's folder) and ``work_dir``
    are set there.
    """

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    datasets_: list[DatasetEntry] = Field(default_factory=list, alias="datasets")

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _work_dir: Path | None = PrivateAttr(default=None)
    _path: Path | None = PrivateAttr(default=None)

    @field_validator("datasets_")
    @classmethod
    def _unique_names(cls, value: list[DatasetEntry]) -> list[DatasetEntry]:
        names = [d.name for d in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate dataset names: {duplicates}")
        return value

    # -- lookup ----------------------------------------------------------------------

    @property
    def path(self) -> Path | None:
        """The catalog file, when loaded from one."""
        return self._path

    def datasets(self, *, enabled_only: bool = False) -> list[DatasetEntry]:
        """The entries, in file order (only enabled ones with ``enabled_only``)."""
        return [d for d in self.datasets_ if d.enabled or not enabled_only]

    def names(self) -> list[str]:
        return [d.name for d in self.datasets_]

    def get(self, name: str) -> DatasetEntry:
        """The entry named ``name``; KeyError listing the known names otherwise."""
        for entry in self.datasets_:
            if entry.name == name:
                return entry
        raise KeyError(f"no dataset {name!r} in the catalog; known: {self.names()}")

    # -- resolution ------------------------------------------------------------------

    def expand(self, text: str) -> str:
        """Expand ``${VAR}`` / ``${VAR:-default}`` in ``text`` (see the module docstring)."""

        def value(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name == "SHARED_DATA":
                return str(paths.shared_data_dir())
            if name == "WORK_DIR":
                return str(self._resolved_work_dir())
            if name == "CATALOG_DIR":
                return str(self._base_dir)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise CatalogError(f"environment variable {name} is not set (used in {text!r})")

        return _VARIABLE.sub(value, text)

    def resolve_path(self, text: str) -> str:
        """Expand variables; make a relative local path absolute against the catalog folder."""
        expanded = self.expand(text)
        if "://" in expanded:
            return expanded
        path = Path(expanded).expanduser()
        return str(path if path.is_absolute() else (self._base_dir / path).resolve())

    def _resolved_work_dir(self) -> Path:
        return self._work_dir if self._work_dir is not None else paths.work_dir()

    def source(self, name: str, *, check: bool = True) -> Source:
        """The dataset's resolved :class:`~data_catalog.sources.Source`.

        Raises:
            SourceMissing: ``check`` and the source does not exist (the flow reports the
                dataset and skips it); the message names the dataset.
        """
        entry = self.get(name)
        spec = entry.source
        source = Source(
            kind=spec.kind,
            path=self.resolve_path(spec.location),
            member_glob=spec.member_glob,
            sidecars=tuple(spec.sidecars),
        )
        if check:
            try:
                check_source(source)
            except SourceMissing as error:
                hint = (
                    " (the shared data folder is absent; set MOCAP2TO3_SHARED_DATA)"
                    if "${SHARED_DATA}" in spec.location
                    else ""
                )
                raise SourceMissing(f"dataset {name}: {error}{hint}") from error
        return source

    def reader_options(self, name: str) -> dict[str, Any]:
        """The reader options with ``${VAR}`` expanded in string values (nested too)."""
        return _expand_tree(self.get(name).options, self.expand)

    def conversion_config(self, name: str) -> dict[str, Any]:
        """The dataset's conversion config (:func:`data_catalog.store.conversion_config`)."""
        entry = self.get(name)
        return conversion_config(
            entry.reader, self.reader_options(name), entry.joint_sets, entry.fps
        )

    def store_url(self, name: str) -> str:
        """The dataset folder: ``store`` resolved, or ``<work dir>/stores/<name>``."""
        entry = self.get(name)
        if entry.store:
            return self.resolve_path(entry.store)
        return str(self._resolved_work_dir() / "stores" / entry.name)

    # -- reading prepared data -------------------------------------------------------

    def open_store(self, name: str) -> MotionStore:
        """The dataset's current store version; StoreNotFound when not prepared yet."""
        return open_store(self.store_url(name))

    def manifest(self, name: str) -> Manifest:
        """The manifest the current store version was built from."""
        return self.open_store(name).manifest()

    def sequences(self, name: str) -> pd.DataFrame:
        """The current store version's sequence table."""
        return self.open_store(name).sequences

    def quarantine(self, name: str) -> list[QuarantineEntry]:
        """Items the last preparation run rejected, with reasons."""
        return read_quarantine(self.store_url(name))


def _expand_tree(value: Any, expand: Any) -> Any:
    if isinstance(value, str):
        return expand(value)
    if isinstance(value, Mapping):
        return {k: _expand_tree(v, expand) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_tree(v, expand) for v in value]
    return value


def parse_catalog(
    data: Mapping[str, Any],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Catalog:
    """Validate an already-parsed catalog mapping.

    Args:
        data: the YAML content as a mapping.
        base_dir: folder relative paths resolve against (default: the current folder).
        work_dir: working folder for default stores (default: :func:`paths.work_dir`).
        path: the file it came from, for messages.

    Raises:
        CatalogError: the content is invalid; the message names the file and the fields.
    """
    where = str(path) if path is not None else "catalog"
    if not isinstance(data, Mapping):
        raise CatalogError(
            f"{where}: expected a mapping with 'datasets', got {type(data).__name__}"
        )
    try:
        catalog = Catalog.model_validate(data)
    except ValidationError as error:
        raise CatalogError(f"{where}: invalid catalog:\n{error}") from error
    catalog._base_dir = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
    catalog._work_dir = Path(work_dir).resolve() if work_dir is not None else None
    catalog._path = Path(path).resolve() if path is not None else None
    return catalog


def load_catalog(
    path: str | os.PathLike[str] | None = None,
    *,
    work_dir: str | os.PathLike[str] | None = None,
) -> Catalog:
    """Load and validate a catalog file (default: the packaged ``data_catalog/catalog.yaml``).

    Args:
        path: the YAML file.
        work_dir: working folder for default store locations (default: ``MOCAP2TO3_HOME``
            or ``./work``, resolved when a store location is first asked for).

    Raises:
        FileNotFoundError: the file does not exist.
        CatalogError: it is not valid YAML or not a valid catalog.
    """
    file = Path(path) if path is not None else DEFAULT_CATALOG
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"catalog file {file} does not exist") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CatalogError(f"{file}: not valid YAML: {error}") from error
    return parse_catalog(data or {}, base_dir=file.resolve().parent, work_dir=work_dir, path=file)
