"""Tests for data_catalog.readers.bvh: parsing, FK, units, up axis, sources, errors."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from data_catalog.paths import shared_data_dir
from data_catalog.readers.bvh import UNIT_SCALES, BvhError, read_bvh
from mocap_core.procedural import procedural_walk
from mocap_core.rotations import (
    axis_rotation_matrix,
    euler_to_matrix,
    matrix_to_euler,
    up_axis_rotation,
)

DATA_ROOT = shared_data_dir()
BANDAI_DIR = DATA_ROOT / "bandai-namco-motion" / "dataset-1" / "data"
BANDAI_ARCHIVE = DATA_ROOT / "bandai-namco-motion" / "dataset-2" / "data.tar.xz"
needs_bandai = pytest.mark.skipif(
    not BANDAI_DIR.is_dir(),
    reason=f"Bandai-Namco data not found at {BANDAI_DIR} (../shared/data absent)",
)

# A small skeleton in centimetres: a 6-channel root, a 3-channel XYZ joint, a joint with no
# channels at all, a 6-channel YZX child whose position channels replace its OFFSET, and
# End Sites. Frame 1 is worked out by hand in test_hand_computed_positions.
SIMPLE_BVH = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
  JOINT Spine
  {
    OFFSET 0 10 0
    CHANNELS 3 Xrotation Yrotation Zrotation
    JOINT Head
    {
      OFFSET 0 20 0
      End Site
      {
        OFFSET 0 5 0
      }
    }
  }
  JOINT Leg
  {
    OFFSET 10 0 0
    CHANNELS 6 Xposition Yposition Zposition Yrotation Zrotation Xrotation
    End Site
    {
      OFFSET 0 -90 0
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.0333333
0 100 0 0 0 0 0 0 0 10 0 0 0 0 0
10 100 20 90 0 0 90 0 0 5 0 0 0 90 0
"""
SIMPLE_LINES = SIMPLE_BVH.split("\n")


def line_of(text: str, fragment: str) -> int:
    """1-based number of the first line containing ``fragment``."""
    return next(i + 1 for i, line in enumerate(text.split("\n")) if fragment in line)


def test_hand_computed_positions() -> None:
    motion = read_bvh(SIMPLE_BVH, name="simple.bvh")
    assert motion.joint_names == ("Hips", "Spine", "Head", "Leg")
    np.testing.assert_array_equal(motion.parents, [-1, 0, 1, 0])
    assert motion.channels[2] == ()
    assert motion.channels[3] == (
        "Xposition",
        "Yposition",
        "Zposition",
        "Yrotation",
        "Zrotation",
        "Xrotation",
    )
    assert motion.units_detected == "cm" and motion.scale_to_metres == 0.01
    assert motion.fps == 30.0 and motion.frame_time == pytest.approx(0.0333333)
    assert motion.num_frames == 2 and motion.positions.dtype == np.float64
    np.testing.assert_allclose(motion.offsets[1], [0.0, 0.1, 0.0])

    rest = [[0.0, 1.0, 0.0], [0.0, 1.1, 0.0], [0.0, 1.3, 0.0], [0.1, 1.0, 0.0]]
    np.testing.assert_allclose(motion.positions[0], rest, atol=1e-12)
    np.testing.assert_allclose(
        motion.end_site_positions[0], [[0.0, 1.35, 0.0], [0.1, 0.1, 0.0]], atol=1e-12
    )

    # Frame 1: root at (0.1, 1, 0.2) turned 90 degrees about z (x -> y, y -> -x); Spine
    # turned 90 degrees about its x; Leg's position channels (5, 0, 0) cm replace its OFFSET
    # and its Zrotation is 90 degrees (channel order Y, Z, X).
    expected = [[0.1, 1.0, 0.2], [0.0, 1.0, 0.2], [0.0, 1.0, 0.4], [0.1, 1.05, 0.2]]
    np.testing.assert_allclose(motion.positions[1], expected, atol=1e-12)
    np.testing.assert_allclose(
        motion.end_site_positions[1], [[0.0, 1.0, 0.45], [0.1, 1.95, 0.2]], atol=1e-12
    )
    np.testing.assert_allclose(motion.local_translations[1, 3], [0.05, 0.0, 0.0])
    np.testing.assert_allclose(
        motion.global_rotations[1, 3], axis_rotation_matrix("Z", np.pi), atol=1e-12
    )
    assert motion.end_sites[1].parent == 3
    np.testing.assert_allclose(motion.end_sites[1].offset, [0.0, -0.9, 0.0])


@pytest.mark.parametrize("order", ["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"])
def test_any_rotation_channel_order(order: str) -> None:
    channels = " ".join(f"{axis}rotation" for axis in order)
    text = f"""HIERARCHY
ROOT Base
{{
  OFFSET 0 0 0
  CHANNELS 3 {channels}
  JOINT Tip
  {{
    OFFSET 0 0 100
    CHANNELS 0
  }}
}}
MOTION
Frames: 1
Frame Time: 0.01
30 -40 75
"""
    motion = read_bvh(text, units="cm")
    rotation = euler_to_matrix(np.array([30.0, -40.0, 75.0]), order, degrees=True)
    np.testing.assert_allclose(motion.global_rotations[0, 0], rotation, atol=1e-12)
    np.testing.assert_allclose(motion.positions[0, 1], rotation @ [0.0, 0.0, 1.0], atol=1e-12)
    assert motion.fps == 100.0


def test_z_up_file_is_rotated_to_y_up() -> None:
    raw = read_bvh(SIMPLE_BVH, up_axis="y")
    converted = read_bvh(SIMPLE_BVH, up_axis="z")
    to_y_up = up_axis_rotation("z", "y")
    np.testing.assert_allclose(converted.positions, raw.positions @ to_y_up.T, atol=1e-12)
    np.testing.assert_allclose(
        converted.global_rotations, to_y_up @ raw.global_rotations, atol=1e-12
    )
    np.testing.assert_allclose(
        converted.end_site_positions, raw.end_site_positions @ to_y_up.T, atol=1e-12
    )
    assert converted.source_up_axis == "z"
    # A z-up skeleton standing on its feet: Spine above Hips along +z in the file.
    z_up_text = SIMPLE_BVH.replace("OFFSET 0 10 0", "OFFSET 0 0 10").replace(
        "0 100 0 0 0 0", "0 0 100 0 0 0"
    )
    standing = read_bvh(z_up_text, up_axis="z")
    np.testing.assert_allclose(
        standing.positions[0, 1] - standing.positions[0, 0], [0.0, 0.1, 0.0], atol=1e-12
    )
    np.testing.assert_allclose(standing.positions[0, 0], [0.0, 1.0, 0.0], atol=1e-12)


def scaled_text(text: str, factor: float) -> str:
    """SIMPLE_BVH with every length multiplied by ``factor`` (angles untouched)."""
    out = []
    in_motion = False
    for line in text.split("\n"):
        words = line.split()
        if words[:1] == ["OFFSET"]:
            line = "OFFSET " + " ".join(repr(float(w) * factor) for w in words[1:])
        elif words[:1] == ["MOTION"]:
            in_motion = True
        elif in_motion and words and words[0][0].isdigit():
            values = [float(w) for w in words]
            for k in (0, 1, 2, 9, 10, 11):  # the position channels of Hips and Leg
                values[k] *= factor
            line = " ".join(repr(v) for v in values)
        out.append(line)
    return "\n".join(out)


@pytest.mark.parametrize("unit", ["m", "mm", "cmu", "inch"])
def test_unit_detection_and_conversion(unit: str) -> None:
    reference = read_bvh(SIMPLE_BVH)
    text = scaled_text(SIMPLE_BVH, 0.01 / UNIT_SCALES[unit])
    motion = read_bvh(text)
    assert motion.units_detected == unit
    np.testing.assert_allclose(motion.positions, reference.positions, atol=1e-9)
    np.testing.assert_allclose(motion.offsets, reference.offsets, atol=1e-12)
    np.testing.assert_allclose(
        motion.end_sites[0].offset, reference.end_sites[0].offset, atol=1e-12
    )


def test_explicit_units_override_detection() -> None:
    as_metres = read_bvh(SIMPLE_BVH, units="m")
    assert as_metres.units_detected == "m"
    np.testing.assert_allclose(as_metres.positions, read_bvh(SIMPLE_BVH).positions * 100, atol=1e-9)
    with pytest.raises(ValueError, match="units"):
        read_bvh(SIMPLE_BVH, units="feet")  # type: ignore[arg-type]


def test_every_source_kind(tmp_path: Path) -> None:
    path = tmp_path / "walk_01.bvh"
    path.write_text(SIMPLE_BVH.replace("\n", "\r\n"))  # Windows line ends too
    expected = read_bvh(SIMPLE_BVH).positions
    sources = [
        (path, "walk_01.bvh"),
        (str(path), "walk_01.bvh"),
        (SIMPLE_BVH.encode(), "<bytes>"),
        (io.BytesIO(SIMPLE_BVH.encode()), "<stream>"),
        (io.StringIO(SIMPLE_BVH), "<stream>"),
        (path.open("rb"), "walk_01.bvh"),
    ]
    for source, name in sources:
        motion = read_bvh(source)
        assert motion.name == name
        np.testing.assert_allclose(motion.positions, expected)
    assert read_bvh(SIMPLE_BVH.encode(), name="given").name == "given"
    # A member of an archive, read without unpacking it.
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        info = tarfile.TarInfo("clips/a.bvh")
        info.size = len(SIMPLE_BVH.encode())
        tar.addfile(info, io.BytesIO(SIMPLE_BVH.encode()))
    archive.seek(0)
    with tarfile.open(fileobj=archive, mode="r:gz") as tar:
        member = tar.extractfile("clips/a.bvh")
        assert member is not None
        np.testing.assert_allclose(read_bvh(member.read(), name="clips/a.bvh").positions, expected)
    with pytest.raises(BvhError, match="missing.bvh: cannot read"):
        read_bvh(tmp_path / "missing.bvh")
    with pytest.raises(TypeError):
        read_bvh(42)  # type: ignore[arg-type]


def replace_line(text: str, fragment: str, new_line: str) -> str:
    return "\n".join(new_line if fragment in line else line for line in text.split("\n"))


def test_error_truncated_hierarchy() -> None:
    truncated = "\n".join(SIMPLE_LINES[:12])
    with pytest.raises(BvhError, match=r"cut\.bvh: line 12: unexpected end of file"):
        read_bvh(truncated, name="cut.bvh")


def test_error_truncated_motion() -> None:
    text = SIMPLE_BVH.replace("Frames: 2", "Frames: 3")
    with pytest.raises(
        BvhError, match=r"short\.bvh: line \d+: file ends after 2 of 3 declared frames"
    ):
        read_bvh(text, name="short.bvh")


def test_error_wrong_value_count_names_the_line() -> None:
    text = replace_line(SIMPLE_BVH, "10 100 20", "10 100 20 90 0 0 90 0 0 5 0 0 0 90")
    line = line_of(text, "10 100 20")
    with pytest.raises(
        BvhError, match=rf"bad\.bvh: line {line}: motion line has 14 values, expected 15"
    ):
        read_bvh(text, name="bad.bvh")


@pytest.mark.parametrize(
    ("token", "message"),
    [("abc", "'abc' is not a number"), ("nan", "non-finite"), ("inf", "non-finite")],
)
def test_error_bad_numbers(token: str, message: str) -> None:
    text = replace_line(SIMPLE_BVH, "10 100 20", f"10 100 20 90 0 0 90 {token} 0 5 0 0 0 90 0")
    line = line_of(text, "10 100 20")
    with pytest.raises(BvhError, match=rf"num\.bvh: line {line}: .*{message}"):
        read_bvh(text, name="num.bvh")


def test_error_bad_offset_number() -> None:
    text = SIMPLE_BVH.replace("OFFSET 0 20 0", "OFFSET 0 x20 0")
    with pytest.raises(
        BvhError, match=rf"line {line_of(SIMPLE_BVH, 'OFFSET 0 20 0')}: OFFSET of Head"
    ):
        read_bvh(text, name="o.bvh")


def test_error_missing_motion() -> None:
    hierarchy_only = SIMPLE_BVH.split("MOTION")[0]
    with pytest.raises(BvhError, match=r"nomotion\.bvh: line \d+: missing MOTION section"):
        read_bvh(hierarchy_only, name="nomotion.bvh")
    with pytest.raises(BvhError, match="expected 'MOTION'"):
        read_bvh(SIMPLE_BVH.replace("MOTION", "MOTON"), name="typo.bvh")


def test_error_zero_frames() -> None:
    text = SIMPLE_BVH.replace("Frames: 2", "Frames: 0")
    with pytest.raises(
        BvhError, match=rf"zero\.bvh: line {line_of(text, 'Frames: 0')}: .*zero frames"
    ):
        read_bvh(text, name="zero.bvh")


def test_error_unknown_channel() -> None:
    text = SIMPLE_BVH.replace(
        "CHANNELS 3 Xrotation Yrotation Zrotation", "CHANNELS 3 Xrotation Wrotation Zrotation"
    )
    line = line_of(text, "Wrotation")
    with pytest.raises(BvhError, match=rf"chan\.bvh: line {line}: unknown channel 'Wrotation'"):
        read_bvh(text, name="chan.bvh")
    assert issubclass(BvhError, ValueError)


def test_error_extra_motion_lines() -> None:
    text = SIMPLE_BVH.rstrip("\n") + "\n0 100 0 0 0 0 0 0 0 10 0 0 0 0 0\n"
    with pytest.raises(BvhError, match="more motion lines than the 2 frames declared"):
        read_bvh(text, name="extra.bvh")


def procedural_as_bvh(num_frames: int) -> tuple[str, np.ndarray]:
    """A procedural walk written as a Bandai-style BVH (every joint 6 channels, ZXY, cm)."""
    walk = procedural_walk(num_frames, seed=11, turn_deg_per_s=20.0)
    children: dict[int, list[int]] = {}
    for j, p in enumerate(walk.parents.tolist()):
        children.setdefault(p, []).append(j)
    lines = ["HIERARCHY"]

    def emit(j: int, depth: int) -> None:
        pad = "  " * depth
        keyword = "ROOT" if walk.parents[j] < 0 else "JOINT"
        lines.extend([f"{pad}{keyword} {walk.joint_names[j]}", pad + "{"])
        lines.append(pad + "  OFFSET " + " ".join(f"{v * 100:.9g}" for v in walk.offsets[j]))
        lines.append(
            pad + "  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation"
        )
        for child in children.get(j, []):
            emit(child, depth + 1)
        if j not in children:
            lines.extend([pad + "  End Site", pad + "  {", pad + "    OFFSET 0 0 0", pad + "  }"])
        lines.append(pad + "}")

    emit(0, 0)
    translations = walk.local_translations.copy()
    translations[:, 0] = walk.root_translation
    angles = matrix_to_euler(walk.local_rotations, "ZXY", degrees=True)
    values = np.concatenate([translations * 100, angles], axis=-1).reshape(num_frames, -1)
    lines += ["MOTION", f"Frames: {num_frames}", "Frame Time: 0.0333333"]
    lines += [" ".join(f"{v:.10g}" for v in row) for row in values]
    return "\n".join(lines) + "\n", walk.positions


def test_round_trip_of_a_generated_walk() -> None:
    text, positions = procedural_as_bvh(45)
    motion = read_bvh(text, name="walk.bvh")
    assert motion.units_detected == "cm"
    assert motion.joint_names[1] == "Hips"
    np.testing.assert_allclose(motion.positions, positions, atol=1e-6)


@needs_bandai
def test_real_bandai_walks_sanity() -> None:
    """Sanity figures of the data README: feet on the floor, head height, walking speed."""
    for clip in ("walk_normal_001", "walk_active_001", "walk_masculinity_002"):
        motion = read_bvh(BANDAI_DIR / f"dataset-1_{clip}.bvh")
        assert motion.units_detected == "cm" and motion.fps == 30.0
        assert motion.num_joints == 22 and motion.joint_names[:2] == ("joint_Root", "Hips")
        assert motion.channels[5] == (
            "Xposition",
            "Yposition",
            "Zposition",
            "Zrotation",
            "Xrotation",
            "Yrotation",
        )
        names = motion.joint_names
        feet = [names.index(n) for n in ("Foot_L", "Foot_R", "Toes_L", "Toes_R")]
        lowest = motion.positions[:, feet, 1].min(axis=1)
        floor = lowest.min()
        # Grounded on its lowest foot joint, the clip keeps a foot on the floor most of the time.
        assert np.median(lowest - floor) < 0.005
        head = np.median(motion.positions[:, names.index("Head"), 1] - floor)
        assert 1.25 < head < 1.45
        hips = motion.positions[:, names.index("Hips")]
        speed = np.linalg.norm(hips[-1, [0, 2]] - hips[0, [0, 2]]) / (
            (motion.num_frames - 1) / motion.fps
        )
        assert 1.0 < speed < 1.7


@needs_bandai
def test_real_bandai_archive_member_without_unpacking() -> None:
    if not BANDAI_ARCHIVE.is_file():
        pytest.skip(f"{BANDAI_ARCHIVE} absent")
    with tarfile.open(BANDAI_ARCHIVE, "r|xz") as tar:
        for member in tar:
            if member.name.endswith(".bvh"):
                stream = tar.extractfile(member)
                assert stream is not None
                motion = read_bvh(stream, name=member.name)
                break
        else:
            pytest.fail("no .bvh member in the archive")
    assert motion.units_detected == "cm" and motion.num_joints == 22
    assert motion.name.endswith(".bvh")
    assert 0.7 < motion.positions[0, 1, 1] < 1.1  # Hips height, metres
