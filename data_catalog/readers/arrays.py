"""Reader for generic joint arrays (``.npz`` / ``.npy``), and the small array-file helpers the
other array-based readers (2D tracks, AMASS) share.

``.npz`` layout (keys):

- ``joints (T, J, 3)`` float positions, ``J == len(joint_set)``;
- ``joint_set`` a registered joint-set name (``mocap_core.joint_sets``), e.g. ``"smpl22"``;
- ``fps`` frame rate;
- optional ``measured`` or ``valid`` ``(J,) bool`` (False where the joint is derived);
- optional ``units`` ("m", "cm", "mm", "in"; default "m") and ``up_axis`` ("y" or "z";
  default "y").

``.npy``: just the ``(T, J, 3)`` array; ``joint_set`` and ``fps`` (and ``units``,
``up_axis`` when not metres / y-up) are reader options. Options also fill keys a ``.npz``
lacks; a key present in the file wins over an option, except that an option that contradicts
the file raises, so a mislabelled batch is caught rather than silently mixed.

Files are recognised by their content (zip or NPY magic), not by the name's extension, so an
archive member's bytes can be passed directly. Pickled object arrays are never loaded.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from data_catalog.types import Motion3D, ReaderError
from mocap_core.joint_sets import JOINT_SETS, add_pelvis, get_joint_set
from mocap_core.normalize import to_metres, to_y_up

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # local file header; empty archive
_NPY_MAGIC = b"\x93NUMPY"
# Joint sets that can be turned into each other without a skeleton model.
_COCO_FAMILY = {"coco17", "coco17_pelvis"}


def source_bytes(data: bytes | bytearray | memoryview | str | Path, *, name: str) -> bytes:
    """The raw bytes of a source item given as bytes or as a file path.

    Raises:
        ReaderError: the file cannot be read, or is empty.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    elif isinstance(data, str | Path):
        try:
            raw = Path(data).read_bytes()
        except OSError as error:
            raise ReaderError(f"{name}: cannot read file ({error})") from error
    else:
        raise TypeError(f"{name}: expected bytes or a path, got {type(data).__name__}")
    if not raw:
        raise ReaderError(f"{name}: empty file (0 bytes)")
    return raw


def load_npz(data: bytes | str | Path, *, name: str) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` archive, loaded eagerly so that every member is checked.

    Raises:
        ReaderError: not an ``.npz`` archive, a truncated or corrupt archive or member
            (bad CRC, bad zlib stream, bad NPY header), or a pickled object array.
    """
    raw = source_bytes(data, name=name)
    if raw[:4] not in _ZIP_MAGICS:
        raise ReaderError(f"{name}: not an .npz archive (no zip signature)")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            out = {}
            for key in archive.files:
                try:
                    out[key] = archive[key]
                except ValueError as error:
                    if "allow_pickle" in str(error):
                        raise ReaderError(
                            f"{name}: member {key!r} is a pickled object array, which is not "
                            "loaded for safety; store plain numeric or string arrays"
                        ) from error
                    raise ReaderError(f"{name}: member {key!r} is corrupt ({error})") from error
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
                    raise ReaderError(f"{name}: member {key!r} is corrupt ({error})") from error
            return out
    except ReaderError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
        raise ReaderError(f"{name}: truncated or corrupt .npz archive ({error})") from error


def load_npy(data: bytes | str | Path, *, name: str) -> np.ndarray:
    """The array of an ``.npy`` file (no pickled objects).

    Raises:
        ReaderError: not an NPY file, truncated, or a pickled object array.
    """
    raw = source_bytes(data, name=name)
    if not raw.startswith(_NPY_MAGIC):
        raise ReaderError(f"{name}: not an .npy file (no NPY magic)")
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:
        raise ReaderError(f"{name}: truncated or corrupt .npy file ({error})") from error


def scalar_string(value: Any, *, key: str, name: str) -> str:
    """A string stored as a 0-d/1-element str or bytes array (as ``np.savez`` writes it)."""
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "US":
        raise ReaderError(
            f"{name}: {key!r} must be a single string, got {array.dtype} {array.shape}"
        )
    item = array.reshape(()).item()
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)


def scalar_float(value: Any, *, key: str, name: str, positive: bool = False) -> float:
    """A finite number stored as a 0-d/1-element numeric array."""
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "iuf":
        raise ReaderError(
            f"{name}: {key!r} must be a single number, got {array.dtype} {array.shape}"
        )
    number = float(array.reshape(()))
    if not np.isfinite(number) or (positive and number <= 0):
        raise ReaderError(
            f"{name}: {key!r} must be a {'positive ' if positive else ''}finite number, got {number}"
        )
    return number


def numeric_array(value: Any, *, key: str, name: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """A float64 copy of a numeric array checked against ``shape`` (None = any length)."""
    array = np.asarray(value)
    if array.dtype.kind not in "iuf":
        raise ReaderError(f"{name}: {key!r} must be numeric, got dtype {array.dtype}")
    if array.ndim != len(shape) or any(
        s is not None and s != d for s, d in zip(shape, array.shape, strict=True)
    ):
        expected = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise ReaderError(f"{name}: {key!r} must have shape {expected}, got {array.shape}")
    return array.astype(np.float64)


def require_keys(arrays: dict[str, Any], keys: tuple[str, ...], *, name: str, what: str) -> None:
    """Raise a ReaderError naming the missing keys and the keys present."""
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ReaderError(f"{name}: not a {what}: missing key(s) {missing}; found {sorted(arrays)}")


def _option_or_key(arrays: dict[str, Any], key: str, option: Any, *, name: str, parse) -> Any:
    """The file's value for ``key`` or the option; both given and different -> ReaderError."""
    from_file = parse(arrays[key]) if key in arrays else None
    if from_file is not None and option is not None and from_file != option:
        raise ReaderError(f"{name}: file says {key}={from_file!r} but the option says {option!r}")
    return from_file if from_file is not None else option


def read_joints_array(
    data: bytes | str | Path,
    *,
    name: str,
    joint_set: str | None = None,
    fps: float | None = None,
    units: str | None = None,
    up_axis: str | None = None,
    target_joint_sets: tuple[str, ...] | None = None,
    allow_nan: bool = False,
) -> Motion3D:
    """Read a generic ``(T, J, 3)`` joints array into a :class:`Motion3D`.

    Args:
        data: ``.npz``/``.npy`` bytes or a file path (format from content, see module doc).
        name: the item's name (file path or archive member) used in error messages.
        joint_set: registered joint-set name; required for ``.npy``.
        fps: frame rate; required for ``.npy``.
        units: source units ("m" default).
        up_axis: source up axis, "y" (default) or "z"; "z" is rotated to y-up (det +1).
        target_joint_sets: sets to return; default the file's own set. Other sets are only
            possible between ``coco17`` and ``coco17_pelvis`` (the pelvis is the mid-hip,
            marked derived); anything else needs a skeleton model and raises.
        allow_nan: keep NaN joints (for ``mocap_core.normalize.find_broken_frames`` to split
            at) instead of rejecting the file; infinities are always rejected.

    Returns:
        ``Motion3D`` with ``joints[set] (T, J, 3) float64`` metres, y-up, at the source rate,
        ``measured[set] (J,) bool``.

    Raises:
        ReaderError: naming ``name`` and the problem (format, keys, shape, values).
    """
    raw = source_bytes(data, name=name)
    if raw.startswith(_NPY_MAGIC):
        arrays: dict[str, Any] = {"joints": load_npy(raw, name=name)}
        source_format = "npy"
    else:
        arrays = load_npz(raw, name=name)
        source_format = "npz"
        require_keys(arrays, ("joints",), name=name, what="joints array (.npz)")

    set_name = _option_or_key(
        arrays,
        "joint_set",
        joint_set,
        name=name,
        parse=lambda v: scalar_string(v, key="joint_set", name=name),
    )
    rate = _option_or_key(
        arrays,
        "fps",
        fps,
        name=name,
        parse=lambda v: scalar_float(v, key="fps", name=name, positive=True),
    )
    unit = _option_or_key(
        arrays, "units", units, name=name, parse=lambda v: scalar_string(v, key="units", name=name)
    )
    up = _option_or_key(
        arrays,
        "up_axis",
        up_axis,
        name=name,
        parse=lambda v: scalar_string(v, key="up_axis", name=name),
    )
    if set_name is None:
        raise ReaderError(f"{name}: no joint_set in the file and none given as an option")
    if rate is None:
        raise ReaderError(f"{name}: no fps in the file and none given as an option")
    if set_name not in JOINT_SETS:
        raise ReaderError(f"{name}: unknown joint set {set_name!r}; known: {sorted(JOINT_SETS)}")
    if rate <= 0 or not np.isfinite(rate):
        raise ReaderError(f"{name}: fps must be positive, got {rate}")
    source_set = get_joint_set(set_name)

    joints = numeric_array(arrays["joints"], key="joints", name=name, shape=(None, None, 3))
    if joints.shape[0] == 0:
        raise ReaderError(f"{name}: empty sequence (0 frames)")
    if joints.shape[1] != source_set.num_joints:
        raise ReaderError(
            f"{name}: joints has {joints.shape[1]} joints but joint set {set_name!r} has "
            f"{source_set.num_joints}"
        )
    if np.isinf(joints).any():
        raise ReaderError(f"{name}: joints contain infinite values")
    if not allow_nan and np.isnan(joints).any():
        frames = np.flatnonzero(np.isnan(joints).any(axis=(1, 2)))
        raise ReaderError(
            f"{name}: joints contain NaN in {len(frames)} frame(s) (first {frames[0]}); "
            "pass allow_nan=True to keep them for splitting"
        )

    measured = np.ones(source_set.num_joints, dtype=bool)
    flag_keys = [k for k in ("measured", "valid") if k in arrays]
    if len(flag_keys) == 2:
        raise ReaderError(f"{name}: give either 'measured' or 'valid', not both")
    if flag_keys:
        flags = np.asarray(arrays[flag_keys[0]])
        if flags.shape != (source_set.num_joints,) or flags.dtype.kind not in "biu":
            raise ReaderError(
                f"{name}: {flag_keys[0]!r} must be a ({source_set.num_joints},) bool array, "
                f"got {flags.dtype} {flags.shape}"
            )
        measured = flags.astype(bool)

    try:
        joints = to_metres(joints, unit or "m")
        joints = to_y_up(joints, up or "y")
    except ValueError as error:
        raise ReaderError(f"{name}: {error}") from error

    targets = tuple(target_joint_sets) if target_joint_sets else (set_name,)
    out_joints: dict[str, np.ndarray] = {}
    out_measured: dict[str, np.ndarray] = {}
    for target in targets:
        if target == set_name:
            out_joints[target], out_measured[target] = joints, measured.copy()
        elif {target, set_name} == _COCO_FAMILY and target == "coco17_pelvis":
            out_joints[target] = add_pelvis(joints)
            out_measured[target] = np.concatenate([[False], measured])
        elif {target, set_name} == _COCO_FAMILY and target == "coco17":
            out_joints[target] = joints[:, 1:]
            out_measured[target] = measured[1:].copy()
        else:
            raise ReaderError(
                f"{name}: cannot map joint set {set_name!r} to {target!r} (a generic joints "
                "array is only mapped between coco17 and coco17_pelvis)"
            )
    return Motion3D(
        joints=out_joints,
        measured=out_measured,
        fps=float(rate),
        meta={
            "source_format": f"joints_{source_format}",
            "source_joint_set": set_name,
            "source_units": unit or "m",
            "source_up_axis": up or "y",
        },
    )
