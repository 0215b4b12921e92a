"""The demo's data on disk: the example input folder, its ground truth, and a small BVH catalog.

**The example** (:func:`write_example`, from :func:`mocap_core.examples.make_example_scene`)::

    two_walkers/
      input/                  what `mocap2to3 recover` reads (nothing else in it)
        scene.npz             the 2D keypoints file of DESIGN 4.3: keypoints (N, 17, 3)
                              float32 pixels u, v and confidence (0 = not seen),
                              joint_set "coco17", fps, track_id (N,) int64 (the person),
                              frame (N,) int64; one row per person and detected frame
        camera.json           the camera (width, height, K, height_m, pitch_deg, roll_deg)
      truth.npz               the ground truth: joints (P, T, 17, 3) float32 metres in the
                              camera's world (y-up, ground y = 0), track_id (P,), fps,
                              joint_set, detected (P, T) bool, walkers (JSON text), seed
      README.md               what the files are and how they were made

The truth lies outside ``input/`` so that recovering the folder never takes it for a clip.
Files are written atomically and byte for byte reproducibly (``.npz`` members carry a fixed
timestamp), so regenerating an unchanged example changes no byte. The repository bundles one
(:data:`BUNDLED_EXAMPLE_DIR`, ``examples/two_walkers``); regenerate it with
``python -m data_catalog.example_data examples/two_walkers``.

**The small catalog of** ``make demo-full`` (:func:`write_walk_catalog`): procedural walks
(:func:`mocap_core.procedural.procedural_walk`) written as BVH files with the Bandai-Namco
joint names (:func:`procedural_bvh_text`) and a catalog YAML reading them with the ``bvh``
reader into ``smpl22`` and ``coco17``, some clips held out for validation and test by name.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from data_catalog.paths import REPO_ROOT
from mocap_core.cameras import Camera, height_pitch_roll
from mocap_core.examples import ExampleScene, Walker, make_example_scene, track_rows
from mocap_core.procedural import ProceduralMotion, procedural_walk
from mocap_core.rotations import matrix_to_euler

__all__ = [
    "BUNDLED_EXAMPLE_DIR",
    "CAMERA_FILE",
    "INPUT_DIR",
    "SCENE_FILE",
    "TRUTH_FILE",
    "ExampleFiles",
    "ExampleTruth",
    "WalkClip",
    "example_files",
    "procedural_bvh_text",
    "read_example_truth",
    "walk_clips",
    "write_example",
    "write_walk_catalog",
]

#: The example the repository ships (``make demo`` recovers it).
BUNDLED_EXAMPLE_DIR = REPO_ROOT / "examples" / "two_walkers"
INPUT_DIR = "input"
SCENE_FILE = "scene.npz"
CAMERA_FILE = "camera.json"
TRUTH_FILE = "truth.npz"
README_FILE = "README.md"
# A fixed member timestamp (the earliest a zip can hold) makes the .npz bytes reproducible.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class ExampleFiles:
    """Where an example's files are (absolute paths)."""

    folder: str
    input_dir: str
    scene: str
    camera: str
    truth: str


@dataclass(frozen=True)
class ExampleTruth:
    """The ground truth of an example.

    Attributes:
        joints: ``(P, T, J, 3) float64`` metres, the camera's world, y-up, ground y = 0.
        track_ids: ``(P,) int64``, the track id of each person in ``scene.npz``.
        detected: ``(P, T) bool``, frames in which ``scene.npz`` has a row of the person.
        fps: frames per second.
        joint_set: the layout of ``joints`` (``"coco17"``).
        walkers: the generator's parameters per person (JSON-able dicts).
    """

    joints: np.ndarray
    track_ids: np.ndarray
    detected: np.ndarray
    fps: float
    joint_set: str
    walkers: tuple[dict[str, Any], ...]

    def person(self, track_id: int) -> np.ndarray:
        """``(T, J, 3)`` joints of the person with this track id.

        Raises:
            KeyError: no person has this track id.
        """
        matches = np.flatnonzero(self.track_ids == int(track_id))
        if matches.size == 0:
            raise KeyError(f"no person with track id {track_id} in the truth")
        return self.joints[int(matches[0])]


def _npz_bytes(arrays: Mapping[str, Any]) -> bytes:
    """A compressed ``.npz`` of ``arrays`` whose bytes depend on the arrays alone."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, value in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` under a temporary name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep committed copies private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def camera_json(camera: Camera, note: str = "") -> dict[str, Any]:
    """The camera JSON (DESIGN 4.3) of a yaw-0 camera above the world origin, in the
    readable height/pitch/roll form: ``width``, ``height``, ``K``, ``height_m``,
    ``pitch_deg`` (down positive), ``roll_deg``, ``dist`` and an optional ``note``.

    Raises:
        ValueError: the camera is not of that form (its centre is not above the origin, or
            it has a yaw): its JSON would not give the same camera back.
    """
    height_m, pitch_deg, roll_deg = height_pitch_roll(camera)
    out: dict[str, Any] = {
        "width": camera.width,
        "height": camera.height,
        "K": camera.K.tolist(),
        "height_m": round(float(height_m), 9),
        "pitch_deg": round(float(pitch_deg), 9),
        "roll_deg": round(float(roll_deg), 9) + 0.0,  # + 0.0: no "-0.0" in the file
        "dist": camera.dist.tolist(),
    }
    if not Camera.from_dict(out).is_close(camera, atol=1e-6):
        raise ValueError(
            "camera_json: the camera is not a yaw-0 camera above the world origin; write "
            "Camera.to_dict() (R, t) instead"
        )
    if note:
        out["note"] = note
    return out


def _json_lines(value: Mapping[str, Any]) -> str:
    """A JSON object with one key per line and compact values (K on one line)."""
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
    return "{\n" + body + "\n}\n"


def _readme(scene: ExampleScene, rows: int) -> str:
    height_m, pitch_deg, _ = height_pitch_roll(scene.camera)
    people = "\n".join(
        f"- track {i}: seed {w.seed}, body scale {w.body_scale:g}, starts at (x, z) = "
        f"{w.start_xz} m heading {w.heading_deg:g} deg, walks {w.speed_m_s:g} m/s turning "
        f"{w.turn_deg_per_s:g} deg/s; detected in {int(scene.detected[i].sum())} of "
        f"{scene.num_frames} frames"
        for i, w in enumerate(scene.walkers)
    )
    return f"""# Example input: two people walking before one camera

Made by `python -m data_catalog.example_data` from
`mocap_core.examples.make_example_scene(seed={scene.seed})`: procedural motion, no
third-party data. `make demo` recovers `input/` and scores the result against `truth.npz`.

- `input/scene.npz`: {rows} rows of COCO-17 2D keypoints (`keypoints (N, 17, 3)`: pixels
  u, v and confidence, 0 = not seen; `track_id`, `frame`, `joint_set`, `fps` = {scene.fps:g})
  over {scene.num_frames} frames, as a detector with a tracker reports them: pixel noise,
  confidences in [0.55, 0.98], joints missed at random, outside the image or hidden behind
  the nearer person at confidence 0, no row where a person shows fewer than 6 joints.
- `input/camera.json`: {scene.camera.width}x{scene.camera.height}, focal length
  {scene.camera.K[0, 0]:.1f} px, {height_m:g} m above the ground, pitched {pitch_deg:g} deg
  down; its world is y-up with the ground at y = 0 and the camera above the origin,
  looking along -z.
- `truth.npz`: the people's 3D COCO-17 joints in that world (`joints (P, T, 17, 3)`,
  metres), their `track_id`, `detected (P, T)` and the walkers' parameters.

People:

{people}
"""


def write_example(folder: str | os.PathLike[str], scene: ExampleScene) -> ExampleFiles:
    """Write an example scene as the example folder (module docstring).

    Args:
        folder: the example folder (created; files in it are replaced).
        scene: from :func:`mocap_core.examples.make_example_scene`.

    Returns:
        :class:`ExampleFiles`.
    """
    if not isinstance(scene, ExampleScene):
        raise TypeError(f"scene: expected an ExampleScene, got {type(scene).__name__}")
    root = Path(folder).absolute()
    keypoints, track_id, frame = track_rows(scene.keypoints, scene.detected)
    if len(keypoints) == 0:
        raise ValueError("scene: no person is detected in any frame; nothing to write")
    files = _files(root)
    _write_atomic(
        Path(files.scene),
        _npz_bytes(
            {
                "keypoints": keypoints,
                "joint_set": np.array(scene.joint_set),
                "fps": np.array(scene.fps),
                "track_id": track_id,
                "frame": frame,
            }
        ),
    )
    note = "mocap2to3 example camera: yaw 0, above the world origin, looking along -z"
    _write_atomic(Path(files.camera), _json_lines(camera_json(scene.camera, note)).encode())
    walkers = json.dumps([asdict(w) for w in scene.walkers])
    _write_atomic(
        Path(files.truth),
        _npz_bytes(
            {
                "joints": scene.truth.astype(np.float32),
                "track_id": np.arange(scene.num_people, dtype=np.int64),
                "detected": scene.detected,
                "fps": np.array(scene.fps),
                "joint_set": np.array(scene.joint_set),
                "walkers": np.array(walkers),
                "seed": np.array(scene.seed),
            }
        ),
    )
    _write_atomic(root / README_FILE, _readme(scene, len(keypoints)).encode())
    return files


def _files(root: Path) -> ExampleFiles:
    return ExampleFiles(
        folder=str(root),
        input_dir=str(root / INPUT_DIR),
        scene=str(root / INPUT_DIR / SCENE_FILE),
        camera=str(root / INPUT_DIR / CAMERA_FILE),
        truth=str(root / TRUTH_FILE),
    )


def example_files(folder: str | os.PathLike[str]) -> ExampleFiles:
    """The files of an existing example folder.

    Raises:
        FileNotFoundError: a file of the layout is missing (the message names it).
    """
    files = _files(Path(folder).absolute())
    for path in (files.scene, files.camera, files.truth):
        if not Path(path).is_file():
            raise FileNotFoundError(f"example folder {folder}: {path} is missing")
    return files


def read_example_truth(path: str | os.PathLike[str]) -> ExampleTruth:
    """Read an example's ``truth.npz``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a key is missing or an array has the wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground truth {path} does not exist")
    with np.load(path, allow_pickle=False) as data:
        missing = {"joints", "track_id", "detected", "fps", "joint_set", "walkers"} - set(data)
        if missing:
            raise ValueError(f"{path}: missing keys {sorted(missing)}")
        joints = np.asarray(data["joints"], dtype=np.float64)
        track_ids = np.asarray(data["track_id"], dtype=np.int64)
        detected = np.asarray(data["detected"], dtype=bool)
        fps = float(data["fps"])
        joint_set = str(data["joint_set"])
        walkers = tuple(json.loads(str(data["walkers"])))
    if joints.ndim != 4 or joints.shape[-1] != 3:
        raise ValueError(f"{path}: joints must have shape (P, T, J, 3), got {joints.shape}")
    if track_ids.shape != joints.shape[:1] or detected.shape != joints.shape[:2]:
        raise ValueError(
            f"{path}: track_id {track_ids.shape} and detected {detected.shape} do not match "
            f"joints {joints.shape}"
        )
    return ExampleTruth(joints, track_ids, detected, fps, joint_set, walkers)


# ---------------------------------------------------------------------------------------------
# BVH files of procedural walks, and the small catalog of `make demo-full`


def procedural_bvh_text(motion: ProceduralMotion, units: str = "cm") -> str:
    """BVH text of a procedural walk with its Bandai-Namco joint names.

    ``joint_Root`` and ``Hips`` carry 6 channels (``Xposition Yposition Zposition Zrotation
    Xrotation Yrotation``), the other joints the 3 rotation channels; intrinsic ZXY Euler
    angles in degrees (``R_local = Rz @ Rx @ Ry``), as Bandai-Namco files do; leaves get a
    display End Site 5 cm along their y axis. Read back by the catalog's ``bvh`` reader with
    ``{skeleton: bandai_namco, units: <units>, up_axis: y}``.

    Args:
        motion: from :func:`mocap_core.procedural.procedural_walk` (metres, y-up).
        units: ``"cm"`` (default, as Bandai-Namco) or ``"m"``.
    """
    scale = {"cm": 100.0, "m": 1.0}.get(units)
    if scale is None:
        raise ValueError(f"units must be 'cm' or 'm', got {units!r}")
    parents = [int(p) for p in motion.parents]
    names = motion.joint_names
    translations = motion.local_translations.copy()
    translations[:, 0] = motion.root_translation
    translations *= scale
    euler = matrix_to_euler(motion.local_rotations, "ZXY", degrees=True)
    six_channels = {0} | {int(j) for j in np.flatnonzero(motion.translated_joints)}
    children = [[c for c in range(len(names)) if parents[c] == j] for j in range(len(names))]
    order: list[int] = []
    lines = ["HIERARCHY"]

    def write_joint(index: int, depth: int) -> None:
        pad = "  " * depth
        offset = motion.offsets[index] * scale
        channels = (
            "6 Xposition Yposition Zposition Zrotation Xrotation Yrotation"
            if index in six_channels
            else "3 Zrotation Xrotation Yrotation"
        )
        lines.extend(
            [
                f"{pad}{'ROOT' if parents[index] < 0 else 'JOINT'} {names[index]}",
                pad + "{",
                f"{pad}  OFFSET {offset[0]:.6f} {offset[1]:.6f} {offset[2]:.6f}",
                f"{pad}  CHANNELS {channels}",
            ]
        )
        order.append(index)
        for child in children[index]:
            write_joint(child, depth + 1)
        if not children[index]:
            lines.extend(
                [f"{pad}  End Site", pad + "  {", f"{pad}    OFFSET 0 {0.05 * scale:.4f} 0"]
            )
            lines.append(pad + "  }")
        lines.append(pad + "}")

    write_joint(parents.index(-1), 0)
    num_frames = translations.shape[0]
    lines += ["MOTION", f"Frames: {num_frames}", f"Frame Time: {1.0 / motion.fps:.8f}"]
    for t in range(num_frames):
        values: list[float] = []
        for index in order:
            if index in six_channels:
                values.extend(translations[t, index])
            values.extend(euler[t, index])
        lines.append(" ".join(f"{v:.5f}" for v in values))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class WalkClip:
    """One clip of the small catalog: a file name and its walker."""

    name: str
    walker: Walker


def walk_clips(num_clips: int = 12, seed: int = 0) -> tuple[WalkClip, ...]:
    """``num_clips`` varied walkers (speeds 0.6-1.6 m/s, straight and curved paths, body
    scales 0.85-1.15), named ``walk_00.bvh``, ``walk_01.bvh``, ...; drawn from ``seed``."""
    if not isinstance(num_clips, int) or num_clips < 3:
        raise ValueError(
            f"num_clips must be an integer of at least 3 (train, val, test), got {num_clips}"
        )
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(num_clips):
        turn = 0.0 if i % 3 == 0 else float(rng.uniform(-30.0, 30.0))
        walker = Walker(
            seed=int(rng.integers(0, 2**31 - 1)),
            start_xz=(0.0, 0.0),
            heading_deg=float(rng.uniform(0.0, 360.0)),
            speed_m_s=float(rng.uniform(0.6, 1.6)),
            turn_deg_per_s=turn,
            body_scale=float(rng.uniform(0.85, 1.15)),
        )
        clips.append(WalkClip(f"walk_{i:02d}.bvh", walker))
    return tuple(clips)


def write_walk_catalog(
    folder: str | os.PathLike[str],
    clips: Sequence[WalkClip],
    *,
    num_frames: int = 240,
    fps: float = 30.0,
    dataset: str = "demo_walks",
    store_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Write ``clips`` as BVH files into ``FOLDER/bvh`` and a catalog YAML ``FOLDER/catalog.yaml``.

    The catalog has one dataset, ``dataset``, read with the ``bvh`` reader into ``smpl22``
    and ``coco17`` at 30 fps. The last clip is held out for test and the one before it for
    validation (by name), the others train.

    Args:
        folder: the data folder (created).
        clips: from :func:`walk_clips`, at least 3.
        num_frames, fps: length and frame rate of each walk.
        dataset: the dataset's name in the catalog.
        store_dir: where the store goes (default ``FOLDER/stores/<dataset>``).

    Returns:
        The catalog's path.
    """
    if len(clips) < 3:
        raise ValueError(f"clips: need at least 3 (train, val, test), got {len(clips)}")
    root = Path(folder).absolute()
    bvh_dir = root / "bvh"
    for clip in clips:
        w = clip.walker
        motion = procedural_walk(
            num_frames,
            fps=fps,
            speed_m_s=w.speed_m_s,
            turn_deg_per_s=w.turn_deg_per_s,
            seed=w.seed,
            initial_heading_deg=w.heading_deg,
            start_xz=w.start_xz,
            body_scale=w.body_scale,
        )
        _write_atomic(bvh_dir / clip.name, procedural_bvh_text(motion).encode())
    store = Path(store_dir) if store_dir is not None else root / "stores" / dataset
    catalog = {
        "version": 1,
        "datasets": [
            {
                "name": dataset,
                "description": "procedural walks written by mocap2to3 demo --full",
                "source": {"folder": str(bvh_dir), "member_glob": "*.bvh"},
                "reader": "bvh",
                "options": {"skeleton": "bandai_namco", "units": "cm", "up_axis": "y"},
                "joint_sets": ["smpl22", "coco17"],
                "fps": 30,
                "split": {
                    "test_fraction": 0.0,
                    "val_fraction": 0.0,
                    "test": {"keys": [clips[-1].name]},
                    "val": {"keys": [clips[-2].name]},
                },
                "store": str(store),
            }
        ],
    }
    path = root / "catalog.yaml"
    _write_atomic(path, yaml.safe_dump(catalog, sort_keys=False).encode())
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m data_catalog.example_data [FOLDER]``: (re)generate the example folder
    (default: the bundled ``examples/two_walkers``) and print its files."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: python -m data_catalog.example_data [FOLDER]", file=sys.stderr)
        return 2
    folder = Path(args[0]) if args else BUNDLED_EXAMPLE_DIR
    files = write_example(folder, make_example_scene())
    for path in (files.scene, files.camera, files.truth):
        print(f"{path}  {Path(path).stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
