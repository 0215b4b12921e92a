"""BVH (Biovision hierarchy) reader: skeleton, channels, forward kinematics, units, up axis.

:func:`read_bvh` accepts a path, the file's text, its bytes, or an open file object (text or
binary), so members of an archive can be read without unpacking them. The result,
:class:`BvhMotion`, holds the skeleton and motion in **metres**, in a **y-up** world, with
global joint positions and orientations from forward kinematics.

Format rules followed here:

- Any number of rotation channels in any order; the channel order is the multiplication
  order of intrinsic rotations (``Zrotation Xrotation Yrotation`` gives
  ``R = Rz @ Rx @ Ry``), angles in degrees.
- Position channels replace the matching component of the joint's OFFSET (for the root
  and for joints with 6 channels alike); a joint without them uses its OFFSET every frame.
- Joints with 0, 3 or 6 channels (or any other count of the six known channel names).
- ``End Site`` blocks become :class:`EndSite` entries, kept out of ``positions``.
- Several ``ROOT`` blocks give a forest (each root's parent is ``-1``).

Units (``units="auto"``): the rule looks at the skeleton's size in the first frame: the
largest extent along any axis of the forward-kinematics positions of all non-root joints
and end sites, in file units (the root is left out because some skeletons, such as
Bandai-Namco's, keep a ground-level root far from the body). A standing, lying or T-posed
adult measures 1-2.5 m that way; the bands below leave room for children and crouches:

============  =========================  ==========================================
extent        unit                       typical source
============  =========================  ==========================================
< 4           ``"m"`` (1)                 exports already in metres
4 - 40        ``"cmu"`` (0.0254 / 0.45)   CMU Graphics Lab BVH conversions (cgspeed):
                                          the ASF length unit, 1/0.45 inch = 5.644 cm
40 - 100      ``"inch"`` (0.0254)         files in plain inches
100 - 400     ``"cm"`` (0.01)             Bandai-Namco, most commercial mocap
>= 400        ``"mm"`` (0.001)            Vicon-style exports
============  =========================  ==========================================

CMU files are *not* in inches: a CMU thigh is about 7 file units long, i.e. 0.40 m at
5.644 cm per unit (0.18 m if it were inches). A child or crouching figure stored in
centimetres may measure under 100 and be taken for inches; pass ``units`` explicitly when
the source is known.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np

from mocap_core.kinematics import forward_kinematics
from mocap_core.rotations import euler_to_matrix, up_axis_rotation

Units = Literal["auto", "cm", "m", "mm", "inch", "cmu"]

#: Metres per file unit for each explicit unit name.
UNIT_SCALES: dict[str, float] = {
    "m": 1.0,
    "cm": 0.01,
    "mm": 0.001,
    "inch": 0.0254,
    "cmu": 0.0254 / 0.45,
}

# (upper bound of the extent in file units, unit) for units="auto"; see the module docstring.
_AUTO_UNIT_BANDS: tuple[tuple[float, str], ...] = (
    (4.0, "m"),
    (40.0, "cmu"),
    (100.0, "inch"),
    (400.0, "cm"),
    (float("inf"), "mm"),
)

_POSITION_CHANNELS = {"xposition": 0, "yposition": 1, "zposition": 2}
_ROTATION_CHANNELS = {"xrotation": "X", "yrotation": "Y", "zrotation": "Z"}
_CANONICAL_CHANNEL = {
    "xposition": "Xposition",
    "yposition": "Yposition",
    "zposition": "Zposition",
    "xrotation": "Xrotation",
    "yrotation": "Yrotation",
    "zrotation": "Zrotation",
}


class BvhError(ValueError):
    """A BVH source that cannot be read; the message names the source and the line."""


@dataclass(frozen=True)
class EndSite:
    """An ``End Site``: a leaf point fixed in its parent joint's frame.

    Attributes:
        parent: index of the joint it hangs from.
        offset: ``(3,)`` float64, metres, in the parent joint's local frame.
    """

    parent: int
    offset: np.ndarray


@dataclass(frozen=True)
class BvhMotion:
    """A BVH skeleton and its motion, in metres and a y-up world.

    Attributes:
        name: the source's name (file name, or the ``name`` given to :func:`read_bvh`).
        joint_names: ``S`` joint names in file order (parents precede children).
        parents: ``(S,)`` int64 parent index, ``-1`` for roots.
        offsets: ``(S, 3)`` float64 metres, each joint's OFFSET in its parent's frame (a
            root's OFFSET in the y-up world).
        channels: per joint, its channel names in file order (canonical spelling, e.g.
            ``("Xposition", ..., "Zrotation")``), ``()`` for a joint without channels.
        local_rotations: ``(T, S, 3, 3)`` float64, each joint's rotation relative to its
            parent (a root's relative to the y-up world).
        local_translations: ``(T, S, 3)`` float64 metres, each joint's translation in its
            parent's frame per frame: the position channels where present, else the OFFSET.
        positions: ``(T, S, 3)`` float64 metres, world frame, y-up (forward kinematics).
            Not grounded: the file's own origin and floor are kept.
        global_rotations: ``(T, S, 3, 3)`` float64, each joint's frame in the world.
        end_sites: the ``End Site`` leaves.
        end_site_positions: ``(T, E, 3)`` float64 metres, world frame, y-up.
        frame_time: seconds per frame as written in the file.
        fps: ``1 / frame_time``, snapped to the nearest integer when within 0.01 %.
        units_detected: the unit the file was read in (the ``units`` argument, or what
            ``"auto"`` chose).
        scale_to_metres: metres per file unit.
        source_up_axis: the file's up axis (``"y"`` or ``"z"``) before conversion.
    """

    name: str
    joint_names: tuple[str, ...]
    parents: np.ndarray
    offsets: np.ndarray
    channels: tuple[tuple[str, ...], ...]
    local_rotations: np.ndarray
    local_translations: np.ndarray
    positions: np.ndarray
    global_rotations: np.ndarray
    end_sites: tuple[EndSite, ...]
    end_site_positions: np.ndarray
    frame_time: float
    fps: float
    units_detected: str
    scale_to_metres: float
    source_up_axis: str

    @property
    def num_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def joint_index(self, joint_name: str) -> int:
        """Index of ``joint_name``; ``KeyError`` naming the source when absent."""
        try:
            return self.joint_names.index(joint_name)
        except ValueError:
            raise KeyError(f"{self.name}: no joint named {joint_name!r}") from None


@dataclass
class _JointSpec:
    name: str
    parent: int
    line: int
    offset: np.ndarray | None = None
    channels: tuple[str, ...] = ()


class _HeaderParser:
    """Token stream over the lines before the motion data, with line numbers."""

    def __init__(self, lines: list[str], source_name: str) -> None:
        self.lines = lines
        self.source_name = source_name
        self.line_index = 0
        self.pending: list[str] = []
        self.pending_line = 0

    def error(self, message: str, line: int | None = None) -> BvhError:
        where = f"line {line if line is not None else self.pending_line}"
        return BvhError(f"{self.source_name}: {where}: {message}")

    def _fill(self) -> bool:
        while not self.pending:
            if self.line_index >= len(self.lines):
                return False
            text = self.lines[self.line_index]
            self.line_index += 1
            self.pending = text.replace("{", " { ").replace("}", " } ").split()
            self.pending_line = self.line_index
        return True

    def peek(self) -> str | None:
        return self.pending[0] if self._fill() else None

    def next(self, what: str) -> str:
        if not self._fill():
            raise self.error(
                f"unexpected end of file while reading {what} (truncated file?)",
                line=len(self.lines),
            )
        return self.pending.pop(0)

    def expect(self, keyword: str) -> None:
        token = self.next(repr(keyword))
        if token.upper() != keyword.upper():
            raise self.error(f"expected {keyword!r}, found {token!r}")

    def rest_of_line(self, what: str) -> str:
        """The remaining tokens of the current line (a joint name), before any brace."""
        if not self._fill():
            raise self.error(f"unexpected end of file while reading {what}", line=len(self.lines))
        words: list[str] = []
        while self.pending and self.pending[0] not in ("{", "}"):
            words.append(self.pending.pop(0))
        if not words:
            raise self.error(f"missing {what}")
        return " ".join(words)

    def number(self, what: str) -> float:
        token = self.next(what)
        try:
            value = float(token)
        except ValueError:
            raise self.error(f"{what}: {token!r} is not a number") from None
        if not np.isfinite(value):
            raise self.error(f"{what}: {token!r} is not finite")
        return value


def _source_text(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview | IO, name: str | None
) -> tuple[str, str]:
    """(text, name) for every accepted source kind."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(bytes(source)), name or "<bytes>"
    if isinstance(source, os.PathLike) or (
        isinstance(source, str)
        and "\n" not in source
        and not source.lstrip().upper().startswith("HIERARCHY")
    ):
        path = Path(source)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BvhError(f"{name or path}: cannot read BVH file: {exc}") from exc
        return _decode(data), name or path.name
    if isinstance(source, str):
        return source, name or "<string>"
    if hasattr(source, "read"):
        data = source.read()
        source_name = name or Path(str(getattr(source, "name", "<stream>"))).name
        return (_decode(data) if isinstance(data, bytes) else str(data)), source_name
    raise TypeError(f"read_bvh: unsupported source type {type(source).__name__}")


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # Joint names in old exporters may be Latin-1; the numbers are ASCII either way.
        return data.decode("latin-1")


def _parse_hierarchy(
    parser: _HeaderParser,
) -> tuple[list[_JointSpec], list[tuple[int, np.ndarray]]]:
    parser.expect("HIERARCHY")
    joints: list[_JointSpec] = []
    end_sites: list[tuple[int, np.ndarray]] = []

    def parse_offset(owner: str) -> np.ndarray:
        return np.array([parser.number(f"OFFSET of {owner}") for _ in range(3)])

    def parse_joint(parent: int) -> None:
        line = parser.pending_line
        joint_name = parser.rest_of_line("joint name")
        spec = _JointSpec(name=joint_name, parent=parent, line=line)
        index = len(joints)
        joints.append(spec)
        parser.expect("{")
        while True:
            token = parser.next(f"the body of joint {joint_name!r}")
            upper = token.upper()
            if upper == "OFFSET":
                spec.offset = parse_offset(joint_name)
            elif upper == "CHANNELS":
                count_token = parser.next("channel count")
                if not count_token.isdigit():
                    raise parser.error(
                        f"CHANNELS count {count_token!r} of {joint_name!r} is not an integer"
                    )
                names = []
                for _ in range(int(count_token)):
                    channel = parser.next("channel name")
                    if channel.lower() not in _CANONICAL_CHANNEL:
                        raise parser.error(
                            f"unknown channel {channel!r} in joint {joint_name!r} (CHANNELS declares "
                            f"{count_token}; known: {sorted(_CANONICAL_CHANNEL.values())})"
                        )
                    names.append(_CANONICAL_CHANNEL[channel.lower()])
                positions = [c for c in names if c.endswith("position")]
                if len(set(positions)) != len(positions):
                    raise parser.error(f"joint {joint_name!r} repeats a position channel: {names}")
                spec.channels = tuple(names)
            elif upper == "JOINT":
                parse_joint(index)
            elif upper == "END":
                parser.expect("Site")
                parser.expect("{")
                parser.expect("OFFSET")
                end_sites.append((index, parse_offset(f"End Site of {joint_name!r}")))
                parser.expect("}")
            elif token == "}":
                break
            else:
                raise parser.error(f"unexpected {token!r} in joint {joint_name!r}")
        if spec.offset is None:
            raise parser.error(f"joint {joint_name!r} has no OFFSET", line=spec.line)

    parser.expect("ROOT")
    parse_joint(-1)
    while (parser.peek() or "").upper() == "ROOT":
        parser.next("ROOT")
        parse_joint(-1)
    return joints, end_sites


def _parse_motion_header(parser: _HeaderParser) -> tuple[int, float, int]:
    """(declared frame count, frame time, index of the first motion line)."""
    token = parser.peek()
    if token is None:
        raise parser.error(
            "missing MOTION section (file ends after the hierarchy)", line=len(parser.lines)
        )
    if token.upper() != "MOTION":
        parser.next("MOTION")
        raise parser.error(f"expected 'MOTION' after the hierarchy, found {token!r}")
    parser.next("MOTION")
    frames_token = parser.next("'Frames:'")
    if frames_token.rstrip(":").upper() != "FRAMES":
        raise parser.error(f"expected 'Frames:', found {frames_token!r}")
    if not frames_token.endswith(":"):
        parser.expect(":")
    count_token = parser.next("frame count")
    frames_line = parser.pending_line
    if not count_token.isdigit():
        raise parser.error(f"frame count {count_token!r} is not a non-negative integer")
    num_frames = int(count_token)
    if num_frames == 0:
        raise parser.error("the file declares zero frames", line=frames_line)
    parser.expect("Frame")
    time_token = parser.next("'Time:'")
    if time_token.rstrip(":").upper() != "TIME":
        raise parser.error(f"expected 'Frame Time:', found 'Frame {time_token}'")
    if not time_token.endswith(":"):
        parser.expect(":")
    frame_time = parser.number("Frame Time")
    if frame_time <= 0:
        raise parser.error(f"Frame Time must be positive, got {frame_time}")
    if parser.pending:
        raise parser.error(f"unexpected {parser.pending[0]!r} after Frame Time")
    return num_frames, frame_time, parser.line_index


def _bulk_motion_values(
    lines: list[str], first_line: int, num_frames: int, num_channels: int
) -> np.ndarray | None:
    """``(num_frames, num_channels)`` float64 parsed in one C pass, or None to check line by line.

    numpy's ``loadtxt`` parses the whole block about three times faster than splitting
    every line in Python; it skips blank lines as the line-by-line path does. Anything it
    does not accept as exactly ``num_frames`` finite rows of ``num_channels`` numbers
    (a ragged, short, long or non-numeric block, NaN or inf) returns None, so that
    :func:`_parse_motion_values` finds the offending line and names it.
    """
    block = lines[first_line:]
    # An all-blank block would make loadtxt warn ("Empty input"); warnings filters are
    # process-global, so the block is checked instead of silencing it (threads parse too).
    if num_channels == 0 or not any(line.strip() for line in block[:num_frames]):
        return None
    try:
        values = np.loadtxt(block, dtype=np.float64, comments=None, ndmin=2)
    except ValueError:
        return None
    if values.shape != (num_frames, num_channels) or not np.isfinite(values).all():
        return None
    return values


def _parse_motion_values(
    lines: list[str], first_line: int, num_frames: int, num_channels: int, source_name: str
) -> np.ndarray:
    """``(num_frames, num_channels)`` float64 from the motion lines; errors name the line."""
    values = _bulk_motion_values(lines, first_line, num_frames, num_channels)
    if values is not None:
        return values
    rows: list[str] = []
    row_lines: list[int] = []
    for index in range(first_line, len(lines)):
        text = lines[index]
        if not text.strip():
            continue
        if len(rows) == num_frames:
            raise BvhError(
                f"{source_name}: line {index + 1}: more motion lines than the {num_frames} frames declared"
            )
        count = len(text.split())
        if count != num_channels:
            raise BvhError(
                f"{source_name}: line {index + 1}: motion line has {count} values, expected {num_channels} "
                "(one per channel)"
            )
        rows.append(text)
        row_lines.append(index + 1)
    if len(rows) < num_frames:
        raise BvhError(
            f"{source_name}: line {len(lines)}: file ends after {len(rows)} of {num_frames} declared frames "
            "(truncated file?)"
        )
    if num_channels == 0:
        return np.zeros((num_frames, 0))
    try:
        values = np.array(" ".join(rows).split(), dtype=np.float64).reshape(
            num_frames, num_channels
        )
    except ValueError:
        for text, line in zip(rows, row_lines, strict=True):
            for token in text.split():
                try:
                    float(token)
                except ValueError:
                    raise BvhError(
                        f"{source_name}: line {line}: {token!r} is not a number"
                    ) from None
        raise
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise BvhError(
            f"{source_name}: line {row_lines[bad]}: non-finite value (NaN or inf) in motion data"
        )
    return values


def _iter_groups(joints: list[_JointSpec]) -> Iterator[tuple[str, list[int]]]:
    """(rotation order, joints with that order) groups, so Euler conversion is batched."""
    groups: dict[str, list[int]] = {}
    for j, spec in enumerate(joints):
        order = "".join(
            _ROTATION_CHANNELS[c.lower()] for c in spec.channels if c.endswith("rotation")
        )
        if order:
            groups.setdefault(order, []).append(j)
    yield from groups.items()


def _detect_units(
    positions_first_frame: np.ndarray, parents: np.ndarray, end_site_points: np.ndarray
) -> str:
    body = positions_first_frame[parents >= 0] if np.any(parents >= 0) else positions_first_frame
    points = np.concatenate([body, end_site_points], axis=0)
    extent = float(np.max(np.ptp(points, axis=0))) if len(points) else 0.0
    if extent <= 0.0:
        raise ValueError(
            "cannot detect units of a skeleton with zero extent; pass units explicitly"
        )
    for upper, unit in _AUTO_UNIT_BANDS:
        if extent < upper:
            return unit
    raise AssertionError("unreachable: the last band is unbounded")


def _snap_fps(frame_time: float) -> float:
    fps = 1.0 / frame_time
    nearest = round(fps)
    return float(nearest) if nearest > 0 and abs(fps - nearest) <= 1e-4 * fps else fps


def read_bvh(
    source: str | os.PathLike[str] | bytes | bytearray | IO,
    *,
    units: Units = "auto",
    up_axis: Literal["y", "z"] = "y",
    name: str | None = None,
) -> BvhMotion:
    """Read a BVH file into metres and a y-up world, with forward kinematics.

    Args:
        source: a path (``str`` without newlines or ``Path``), the file's text (a ``str``
            that contains a newline or starts with ``HIERARCHY``), its ``bytes``, or an open
            file object in text or binary mode (e.g. a member of a tar archive).
        units: the file's length unit: ``"m"``, ``"cm"``, ``"mm"``, ``"inch"``, ``"cmu"``
            (the CMU ASF unit, 0.0254 / 0.45 m), or ``"auto"`` to detect it from the
            skeleton's size in the first frame (rule in the module docstring).
        up_axis: the file's up axis. ``"z"`` files are turned into y-up by a proper rotation
            of -90 degrees about x applied to the root(s) (+z -> +y, +y -> -z).
        name: the source's name for error messages and :attr:`BvhMotion.name`
            (defaults to the file name).

    Returns:
        :class:`BvhMotion` in metres, y-up.

    Raises:
        BvhError: (a ``ValueError``) for a truncated file, a motion line with the wrong
            number of values, a non-numeric or non-finite value, a missing MOTION section,
            zero frames, an unknown channel name, or other malformed syntax; the message
            names the source and the line number.
    """
    if units not in ("auto", *UNIT_SCALES):
        raise ValueError(f"units must be 'auto' or one of {sorted(UNIT_SCALES)}, got {units!r}")
    if up_axis not in ("y", "z"):
        raise ValueError(f"up_axis must be 'y' or 'z', got {up_axis!r}")
    text, source_name = _source_text(source, name)
    # Line numbers in errors count "\n", "\r\n" and "\r" line ends, as editors do.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    parser = _HeaderParser(lines, source_name)
    joints, end_site_specs = _parse_hierarchy(parser)
    num_frames, frame_time, first_motion_line = _parse_motion_header(parser)

    channel_counts = [len(spec.channels) for spec in joints]
    values = _parse_motion_values(
        lines, first_motion_line, num_frames, sum(channel_counts), source_name
    )

    num_joints = len(joints)
    parents = np.array([spec.parent for spec in joints], dtype=np.int64)
    # Every joint has an OFFSET here: _parse_hierarchy refuses a joint without one.
    raw_offsets = np.stack([np.asarray(spec.offset, dtype=np.float64) for spec in joints])
    starts = np.concatenate([[0], np.cumsum(channel_counts)])

    translations = np.broadcast_to(raw_offsets, (num_frames, num_joints, 3)).copy()
    for j, spec in enumerate(joints):
        for k, channel in enumerate(spec.channels):
            axis = _POSITION_CHANNELS.get(channel.lower())
            if axis is not None:
                translations[:, j, axis] = values[:, starts[j] + k]
    local_rotations = np.broadcast_to(np.eye(3), (num_frames, num_joints, 3, 3)).copy()
    for order, members in _iter_groups(joints):
        columns = [
            [starts[j] + k for k, c in enumerate(joints[j].channels) if c.endswith("rotation")]
            for j in members
        ]
        angles = values[:, np.array(columns)]  # (T, n, len(order))
        local_rotations[:, members] = euler_to_matrix(angles, order, degrees=True)

    end_parents = np.array([p for p, _ in end_site_specs], dtype=np.int64)
    raw_end_offsets = np.array([o for _, o in end_site_specs]).reshape(-1, 3)

    if units == "auto":
        first_positions, first_rotations = forward_kinematics(
            parents, raw_offsets, local_rotations[:1], local_translations=translations[:1]
        )
        end_first = first_positions[0, end_parents] + np.einsum(
            "eij,ej->ei", first_rotations[0, end_parents], raw_end_offsets
        )
        try:
            unit = _detect_units(first_positions[0], parents, end_first)
        except ValueError as exc:
            raise BvhError(f"{source_name}: {exc}") from None
    else:
        unit = units
    scale = UNIT_SCALES[unit]
    offsets = raw_offsets * scale
    translations *= scale
    end_offsets = raw_end_offsets * scale

    if up_axis == "z":
        to_y_up = up_axis_rotation("z", "y")
        roots = parents < 0
        local_rotations[:, roots] = to_y_up @ local_rotations[:, roots]
        translations[:, roots] = translations[:, roots] @ to_y_up.T
        offsets[roots] = offsets[roots] @ to_y_up.T

    positions, global_rotations = forward_kinematics(
        parents, offsets, local_rotations, local_translations=translations
    )
    end_positions = positions[:, end_parents] + np.einsum(
        "teij,ej->tei", global_rotations[:, end_parents], end_offsets
    )
    return BvhMotion(
        name=source_name,
        joint_names=tuple(spec.name for spec in joints),
        parents=parents,
        offsets=offsets,
        channels=tuple(spec.channels for spec in joints),
        local_rotations=local_rotations,
        local_translations=translations,
        positions=positions,
        global_rotations=global_rotations,
        end_sites=tuple(EndSite(int(p), o) for p, o in zip(end_parents, end_offsets, strict=True)),
        end_site_positions=end_positions,
        frame_time=frame_time,
        fps=_snap_fps(frame_time),
        units_detected=unit,
        scale_to_metres=scale,
        source_up_axis=up_axis,
    )
