"""Tests for the AMASS reader, body-model loading and the chumpy-free unpickler."""

from __future__ import annotations

import contextlib
import io
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import smplx
import torch
from scipy.spatial.transform import Rotation

from data_catalog.readers.amass import (
    BodyModelError,
    find_body_model_file,
    load_body_model_file,
    read_amass_npz,
    unpickle_body_model,
    write_synthetic_smpl_model,
)
from data_catalog.types import ReaderError
from mocap_core.joint_sets import COCO17, SMPL22
from mocap_core.synthetic_smpl import make_synthetic_smpl_model

Z_TO_Y = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])  # -90 deg about x


@pytest.fixture(scope="module")
def smplh_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("smplh_models")
    write_synthetic_smpl_model(folder, model_type="smplh", num_betas=16, file_format="npz")
    return folder


@pytest.fixture(scope="module")
def smpl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("smpl_models")
    write_synthetic_smpl_model(folder, model_type="smpl", num_betas=10, file_format="pkl")
    return folder


def amass_bytes(
    poses: np.ndarray,
    trans: np.ndarray,
    betas: np.ndarray,
    *,
    gender: str = "male",
    rate_key: str = "mocap_framerate",
    fps: float = 120.0,
    compressed: bool = False,
) -> bytes:
    buffer = io.BytesIO()
    save = np.savez_compressed if compressed else np.savez
    save(
        buffer,
        poses=poses,
        trans=trans,
        betas=betas,
        gender=np.array(gender),
        dmpls=np.zeros((len(poses), 8)),
        **{rate_key: np.array(fps)},
    )
    return buffer.getvalue()


def random_motion(
    num_frames: int, seed: int = 0, width: int = 156
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    poses = rng.normal(scale=0.25, size=(num_frames, width))
    poses[:, :3] = Rotation.from_euler(
        "xz",
        np.column_stack([np.full(num_frames, 90.0), rng.uniform(-180, 180, num_frames)]),
        degrees=True,
    ).as_rotvec()
    trans = np.column_stack(
        [rng.normal(size=num_frames), rng.normal(size=num_frames), np.full(num_frames, 0.95)]
    )
    return poses, trans


def quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


# ---------------------------------------------------------------- round trips


def test_smplh_round_trip_matches_smplx_then_rotation(smplh_dir: Path) -> None:
    poses, trans = random_motion(37)
    betas = np.random.default_rng(1).normal(size=10)
    motion = read_amass_npz(
        amass_bytes(poses, trans, betas),
        name="subject/walk_poses.npz",
        body_model_dir=smplh_dir,
        target_joint_sets=("smpl22", "coco17", "coco17_pelvis"),
        batch_frames=16,
    )
    model = quiet(
        smplx.SMPLH, str(smplh_dir), ext="npz", use_pca=False, flat_hand_mean=True, num_betas=10
    )
    as_t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    direct = (
        model(
            betas=as_t(np.tile(betas, (37, 1))),
            global_orient=as_t(poses[:, :3]),
            body_pose=as_t(poses[:, 3:66]),
            left_hand_pose=as_t(poses[:, 66:111]),
            right_hand_pose=as_t(poses[:, 111:156]),
            transl=as_t(trans),
        )
        .joints.detach()
        .numpy()
        .astype(np.float64)
    )
    expected = direct @ Z_TO_Y.T
    assert motion.fps == 120.0 and motion.num_frames == 37
    np.testing.assert_allclose(motion.joints["smpl22"], expected[:, :22], atol=1e-5)
    assert motion.measured["smpl22"].all()
    # coco17: SMPL body joints and smplx's face vertex keypoints (nose, reye, leye, rear, lear).
    coco = motion.joints["coco17"]
    face = {"nose": 52, "right_eye": 53, "left_eye": 54, "right_ear": 55, "left_ear": 56}
    for i, joint_name in enumerate(COCO17.joint_names):
        source = face[joint_name] if joint_name in face else SMPL22.index(joint_name)
        np.testing.assert_allclose(coco[:, i], expected[:, source], atol=1e-5)
    derived = {"nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_hip", "right_hip"}
    np.testing.assert_array_equal(
        motion.measured["coco17"], [n not in derived for n in COCO17.joint_names]
    )
    np.testing.assert_allclose(motion.joints["coco17_pelvis"][:, 0], coco[:, 11:13].mean(axis=1))
    assert not motion.measured["coco17_pelvis"][0]
    # Rotations: local body rotations, the root turned into the y-up world.
    R = motion.local_rotations
    assert R.shape == (37, 22, 3, 3)
    np.testing.assert_allclose(
        R[:, 0], Z_TO_Y @ Rotation.from_rotvec(poses[:, :3]).as_matrix(), atol=1e-12
    )
    assert motion.meta["gender"] == "male" and motion.meta["gender_used"] == "neutral"
    assert motion.meta["gender_fallback"] and motion.meta["body_model"] == "smplh"


def test_all_sixteen_betas_are_used(smplh_dir: Path) -> None:
    betas = np.random.default_rng(2).normal(size=16)
    poses = np.zeros((2, 156))
    motion = read_amass_npz(
        amass_bytes(poses, np.zeros((2, 3)), betas), name="b.npz", body_model_dir=smplh_dir
    )
    model = load_body_model_file(smplh_dir / "SMPLH_NEUTRAL.npz")
    # In the zero pose the joints are the shaped rest joints, computed here without smplx.
    shaped = model["v_template"] + model["shapedirs"] @ betas
    rest = model["J_regressor"] @ shaped
    np.testing.assert_allclose(motion.joints["smpl22"][0], rest[:22] @ Z_TO_Y.T, atol=1e-5)
    assert motion.meta["num_betas_used"] == 16


def test_smpl_model_gives_the_same_body_joints(smpl_dir: Path, smplh_dir: Path) -> None:
    poses, trans = random_motion(12, seed=4)
    data = amass_bytes(poses, trans, np.zeros(16))
    via_smpl = read_amass_npz(data, name="a.npz", body_model_dir=smpl_dir)
    via_smplh = read_amass_npz(data, name="a.npz", body_model_dir=smplh_dir)
    assert via_smpl.meta["body_model"] == "smpl"
    # Same rest skeleton and tree for the first 22 joints; hands do not move body joints.
    np.testing.assert_allclose(via_smpl.joints["smpl22"], via_smplh.joints["smpl22"], atol=1e-5)
    model = quiet(smplx.SMPL, str(smpl_dir))
    as_t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    body_pose = np.concatenate([poses[:, 3:66], np.zeros((12, 6))], axis=1)
    direct = model(
        global_orient=as_t(poses[:, :3]), body_pose=as_t(body_pose), transl=as_t(trans)
    ).joints
    np.testing.assert_allclose(
        via_smpl.joints["smpl22"], direct.detach().numpy()[:, :22] @ Z_TO_Y.T, atol=1e-5
    )


@pytest.mark.parametrize("rate_key", ["mocap_framerate", "mocap_frame_rate"])
def test_frame_rate_key_spellings(smpl_dir: Path, rate_key: str) -> None:
    poses, trans = random_motion(3, width=165)  # SMPL-X layout accepted too
    motion = read_amass_npz(
        amass_bytes(poses, trans, np.zeros(10), rate_key=rate_key, fps=59.94),
        name="r.npz",
        body_model_dir=smpl_dir,
    )
    assert motion.fps == pytest.approx(59.94)


def test_standing_body_is_upright_and_not_mirrored(smplh_dir: Path) -> None:
    # AMASS stands the SMPL body (y-up internally) in its z-up world by +90 deg about x.
    poses = np.zeros((1, 156))
    poses[0, :3] = [np.pi / 2, 0.0, 0.0]
    motion = read_amass_npz(
        amass_bytes(poses, np.zeros((1, 3)), np.zeros(16)),
        name="s.npz",
        body_model_dir=smplh_dir,
        target_joint_sets=("smpl22", "coco17"),
    )
    j = motion.joints["smpl22"][0]
    assert j[SMPL22.index("head"), 1] > j[0, 1] + 0.5  # head above the pelvis: y is up
    assert j[SMPL22.index("left_hip"), 0] > j[0, 0]  # the body's left stays on +x
    nose = motion.joints["coco17"][0, 0]
    assert nose[2] > j[SMPL22.index("head"), 2]  # facing +z, as SMPL's rest pose


def test_turn_about_vertical_stays_a_turn(smplh_dir: Path) -> None:
    poses, trans = random_motion(8, seed=5)
    turn = Rotation.from_euler("z", 90, degrees=True)  # +90 deg about AMASS's vertical
    turned_poses = poses.copy()
    turned_poses[:, :3] = (turn * Rotation.from_rotvec(poses[:, :3])).as_rotvec()
    # The synthetic pelvis rests at the origin, so turning the body turns its translation.
    turned_trans = turn.apply(trans)
    betas = np.zeros(16)
    a = read_amass_npz(
        amass_bytes(poses, trans, betas), name="a.npz", body_model_dir=smplh_dir
    ).joints["smpl22"]
    b = read_amass_npz(
        amass_bytes(turned_poses, turned_trans, betas), name="b.npz", body_model_dir=smplh_dir
    ).joints["smpl22"]
    # Best rigid map from a to b (Kabsch, reflections allowed): must be +90 deg about y.
    pa, pb = a.reshape(-1, 3), b.reshape(-1, 3)
    u, _, vt = np.linalg.svd(pb.T @ pa)
    fitted = u @ vt
    assert np.linalg.det(fitted) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(
        fitted, Rotation.from_euler("y", 90, degrees=True).as_matrix(), atol=1e-5
    )
    np.testing.assert_allclose(pa @ fitted.T, pb, atol=1e-5)


# ---------------------------------------------------------------- body-model files


def test_model_discovery(tmp_path: Path, smplh_dir: Path) -> None:
    path, kind, gender = find_body_model_file(smplh_dir, gender="female")
    assert (path.name, kind, gender) == ("SMPLH_NEUTRAL.npz", "smplh", "neutral")
    layout = tmp_path / "amass_layout" / "smplh" / "female"
    layout.mkdir(parents=True)
    (layout / "model.npz").write_bytes((smplh_dir / "SMPLH_NEUTRAL.npz").read_bytes())
    path, kind, gender = find_body_model_file(tmp_path / "amass_layout", gender="female")
    assert path == layout / "model.npz" and kind == "smplh" and gender == "female"
    with pytest.raises(BodyModelError, match="SMPL_MALE.pkl"):
        find_body_model_file(tmp_path / "amass_layout", gender="male", model_type="smpl")
    with pytest.raises(BodyModelError, match="does not exist"):
        find_body_model_file(tmp_path / "nowhere", gender="male")


def test_gendered_file_preferred(tmp_path: Path) -> None:
    write_synthetic_smpl_model(tmp_path, model_type="smpl", genders=("male", "neutral"))
    poses, trans = random_motion(2)
    motion = read_amass_npz(
        amass_bytes(poses, trans, np.zeros(10), gender="male"),
        name="g.npz",
        body_model_dir=tmp_path,
    )
    assert motion.meta["gender_used"] == "male" and not motion.meta["gender_fallback"]
    motion = read_amass_npz(
        amass_bytes(poses, trans, np.zeros(10), gender="male"),
        name="g.npz",
        body_model_dir=tmp_path,
        gender_override="female",
    )
    assert motion.meta["gender"] == "female" and motion.meta["gender_used"] == "neutral"


def _fake_chumpy_init(self, value: np.ndarray) -> None:
    # State like chumpy.ch.Ch: the value under 'x', plus bookkeeping the reader must ignore.
    self.x = value
    self._dirty_vars = set()
    self.label = "ch"


def test_chumpy_pickle_is_read_without_chumpy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_synthetic_smpl_model(seed=0, model_type="smpl")
    # A class that pickles as chumpy.ch.Ch, importable only while the file is written.
    fake_ch = type("Ch", (), {"__module__": "chumpy.ch", "__init__": _fake_chumpy_init})
    chumpy = types.ModuleType("chumpy")
    chumpy_ch = types.ModuleType("chumpy.ch")
    chumpy_ch.Ch = fake_ch
    chumpy.ch = chumpy_ch
    monkeypatch.setitem(sys.modules, "chumpy", chumpy)
    monkeypatch.setitem(sys.modules, "chumpy.ch", chumpy_ch)
    legacy = dict(model)
    for key in ("v_template", "shapedirs", "posedirs", "weights"):
        legacy[key] = fake_ch(model[key])
    legacy["J_regressor"] = scipy.sparse.csc_matrix(model["J_regressor"])
    legacy["bs_style"] = "lbs"
    raw = pickle.dumps(legacy, protocol=2)
    monkeypatch.delitem(sys.modules, "chumpy")
    monkeypatch.delitem(sys.modules, "chumpy.ch")
    assert b"chumpy.ch" in raw
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(raw)

    loaded = unpickle_body_model(raw, name="SMPL_NEUTRAL.pkl")
    for key in (
        "v_template",
        "shapedirs",
        "posedirs",
        "weights",
        "J_regressor",
        "f",
        "kintree_table",
    ):
        assert isinstance(loaded[key], np.ndarray)
        np.testing.assert_array_equal(loaded[key], model[key])

    # A folder holding the chumpy-style file reads AMASS like the plain one.
    (tmp_path / "legacy").mkdir()
    (tmp_path / "legacy" / "SMPL_NEUTRAL.pkl").write_bytes(raw)
    write_synthetic_smpl_model(tmp_path / "plain", model_type="smpl")
    poses, trans = random_motion(4)
    data = amass_bytes(poses, trans, np.zeros(10))
    a = read_amass_npz(data, name="c.npz", body_model_dir=tmp_path / "legacy").joints["smpl22"]
    b = read_amass_npz(data, name="c.npz", body_model_dir=tmp_path / "plain").joints["smpl22"]
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_unpickler_refuses_other_globals() -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("should not run",))

    raw = pickle.dumps({"v_template": Evil()}, protocol=2)
    with pytest.raises(BodyModelError, match=r"refusing to load (__builtin__|builtins)\.print"):
        unpickle_body_model(raw, name="evil.pkl")
    with pytest.raises(BodyModelError, match="not a dict"):
        unpickle_body_model(pickle.dumps([1, 2]), name="list.pkl")


# ---------------------------------------------------------------- bad input


def corrupt_member(data: bytes, member: str) -> bytes:
    """Flip bytes inside one member's stored data (the zip directory stays valid)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(member)
    header_len = 30 + len(info.filename.encode()) + len(info.extra)
    start = info.header_offset + header_len + info.compress_size // 2
    corrupted = bytearray(data)
    for k in range(start, start + 16):
        corrupted[k] ^= 0xFF
    return bytes(corrupted)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: b"", "empty file"),
        (lambda d: b"just some text", "not an .npz"),
        (lambda d: d[: len(d) // 2], "truncated or corrupt"),
        (lambda d: corrupt_member(d, "poses.npy"), "poses"),
        (lambda d: amass_bytes(np.full((3, 156), np.nan), np.zeros((3, 3)), np.zeros(10)), "NaN"),
        (
            lambda d: amass_bytes(np.full((3, 156), np.inf), np.zeros((3, 3)), np.zeros(10)),
            "infinite",
        ),
        (
            lambda d: amass_bytes(np.zeros((0, 156)), np.zeros((0, 3)), np.zeros(10)),
            "empty sequence",
        ),
        (lambda d: amass_bytes(np.zeros((3, 100)), np.zeros((3, 3)), np.zeros(10)), "100 values"),
        (
            lambda d: amass_bytes(np.zeros((3, 156)), np.zeros((4, 3)), np.zeros(10)),
            "'trans' must have shape",
        ),
        (
            lambda d: amass_bytes(
                np.zeros((3, 156)), np.zeros((3, 3)), np.zeros(10), gender="robot"
            ),
            "gender",
        ),
        (
            lambda d: amass_bytes(np.zeros((3, 156)), np.zeros((3, 3)), np.zeros(10), fps=-5.0),
            "positive",
        ),
    ],
)
def test_bad_items_raise_reader_error_naming_the_item(smpl_dir: Path, make, message: str) -> None:
    good = amass_bytes(*random_motion(3), np.zeros(10), compressed=True)
    with pytest.raises(ReaderError, match=message) as info:
        read_amass_npz(
            make(good), name="archive.zip:CMU/01/01_01_poses.npz", body_model_dir=smpl_dir
        )
    assert "archive.zip:CMU/01/01_01_poses.npz" in str(info.value)


def test_wrong_keys(smpl_dir: Path) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, betas=np.zeros(16), gender=np.array("male"))
    with pytest.raises(ReaderError, match=r"shape\.npz") as info:
        read_amass_npz(buffer.getvalue(), name="CMU/01/shape.npz", body_model_dir=smpl_dir)
    assert "CMU/01/shape.npz" in str(info.value)
    buffer = io.BytesIO()
    np.savez(buffer, poses=np.zeros((2, 156)), trans=np.zeros((2, 3)), betas=np.zeros(10))
    with pytest.raises(ReaderError, match="frame rate"):
        read_amass_npz(buffer.getvalue(), name="x.npz", body_model_dir=smpl_dir)
    with pytest.raises(ReaderError, match="joint sets"):
        read_amass_npz(
            amass_bytes(*random_motion(2), np.zeros(10)),
            name="x.npz",
            body_model_dir=smpl_dir,
            target_joint_sets=("blazepose33",),
        )


def test_file_path_input_and_missing_model(tmp_path: Path, smpl_dir: Path) -> None:
    path = tmp_path / "walk_poses.npz"
    path.write_bytes(amass_bytes(*random_motion(2), np.zeros(10)))
    assert read_amass_npz(path, name=str(path), body_model_dir=smpl_dir).num_frames == 2
    with pytest.raises(ReaderError, match="cannot read file"):
        read_amass_npz(tmp_path / "missing.npz", name="missing.npz", body_model_dir=smpl_dir)
    (tmp_path / "empty_models").mkdir()
    with pytest.raises(BodyModelError, match="no smpl body model"):
        read_amass_npz(path, name=str(path), body_model_dir=tmp_path / "empty_models")
