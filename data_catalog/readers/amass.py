"""AMASS ``.npz`` reader (SMPL-H parameters -> joints through smplx), body-model loading,
and the writer of the synthetic SMPL-format model used for tests.

AMASS file keys: ``poses (T, 156)`` axis-angle (global orientation 3, 21 body joints 63,
2 x 15 finger joints 90; the SMPL-X layout of 165 and the SMPL layout of 72 are accepted
too), ``trans (T, 3)`` metres, ``betas (B,)`` (16 in AMASS), ``gender`` and the frame rate as
``mocap_framerate`` or ``mocap_frame_rate``. AMASS's world is z-up.

Body model (a folder the user supplies; the files cannot be redistributed):

- ``model_type="auto"`` uses SMPL-H when the folder holds SMPL-H files, else SMPL.
  SMPL-H files: ``SMPLH_{GENDER}.npz|.pkl`` in the folder or in ``smplh/``, or AMASS's own
  layout ``[smplh/]{gender}/model.npz``. SMPL files: ``SMPL_{GENDER}.pkl|.npz`` in the folder
  or in ``smpl/``. ``body_model_dir`` may also be a model file itself.
- SMPL-H runs with full finger poses (no PCA) and a flat hand mean, as AMASS stores them.
  SMPL gets the global orientation and the 21 body joints (the first 66 values) and zero
  rotations for its two hand joints (or the file's own 72 values for SMPL-layout poses).
  The 22 body joints are identical in both, so either model gives the same ``smpl22``
  skeleton up to the model's own shape space.
- The file's gender picks the model; when that gender's file is missing the neutral one is
  used and ``meta["gender_fallback"]`` says so. ``gender_override`` replaces the file's.
- All of the file's betas are used, up to the number of shape components the model has
  (smplx 0.1.28 would silently cap models with fewer than 300 components at 10 betas; the
  reader restores the model's full shape space, which AMASS's 16 betas need).
- Files are loaded without ``smplx.create`` (which ignores ``ext`` for SMPL and always
  unpickles): ``.npz`` with ``allow_pickle=False``; ``.pkl`` with a restricted unpickler that
  only resolves numpy, scipy-sparse and chumpy classes. Chumpy (which real SMPL ``.pkl``
  files reference and which does not import on Python 3.11 / numpy 2) is replaced by a
  stand-in whose pickled state yields its numpy value; sparse matrices become dense arrays.

Output (``Motion3D``, y-up): joints computed in AMASS's z-up frame are rotated by -90 degrees
about +X, (x, y, z) -> (x, z, -y), a proper rotation (det +1): an axis swap would mirror the
body and turn its left side into its right.

- ``smpl22``: SMPL's first 22 joints, all measured.
- ``coco17``: shoulders, elbows, wrists, knees and ankles are SMPL joints (measured); the
  nose, eyes and ears are smplx's vertex keypoints on the head surface and the hips are
  SMPL's hip joints, which sit inside the pelvis rather than where COCO annotators click
  (both derived, ``measured`` False).
- ``coco17_pelvis``: the same with the mid-hip pelvis prepended (derived).
- ``local_rotations (T, 22, 3, 3)``: the 22 body joints' local rotations; joint 0 is the
  global orientation already rotated into the y-up world (``R_up @ R_root``).
"""

from __future__ import annotations

import contextlib
import io
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from data_catalog.readers.arrays import (
    load_npz,
    numeric_array,
    require_keys,
    scalar_float,
    scalar_string,
)
from data_catalog.types import Motion3D, ReaderError
from mocap_core.joint_sets import COCO17, SMPL22, add_pelvis
from mocap_core.normalize import up_axis_rotation
from mocap_core.synthetic_smpl import make_synthetic_smpl_model

ModelType = Literal["smpl", "smplh"]

_BODY_MODEL_KEYS = (
    "v_template",
    "f",
    "shapedirs",
    "posedirs",
    "J_regressor",
    "weights",
    "kintree_table",
)
_HAND_KEYS = ("hands_componentsl", "hands_componentsr", "hands_meanl", "hands_meanr")
_GENDERS = ("male", "female", "neutral")
_NUM_VERTICES = 6890
SUPPORTED_TARGETS = ("smpl22", "coco17", "coco17_pelvis")

# smplx appends vertex keypoints after the kinematic joints in this order (vertex_joint_selector).
_FACE_KEYPOINTS = ("nose", "right_eye", "left_eye", "right_ear", "left_ear")
_COCO_DERIVED = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_hip", "right_hip")


class BodyModelError(ValueError):
    """The body-model folder or file is missing or unusable (a setup problem, not a bad item)."""


# --------------------------------------------------------------------------------------------
# Loading body-model files


class _ChumpyStandIn:
    """Takes the place of any chumpy class while unpickling; keeps the pickled state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _SparseStandIn:
    """Takes the place of a scipy.sparse matrix class; rebuilt as a dense array afterwards."""

    format = "csc"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _sparse_stand_in(sparse_format: str) -> type:
    return type(f"_{sparse_format}_stand_in", (_SparseStandIn,), {"format": sparse_format})


_NUMPY_GLOBALS = {"_reconstruct", "scalar", "ndarray", "dtype", "_frombuffer", "frombuffer"}
_NUMPY_MODULES = {
    "numpy",
    "numpy.core.multiarray",
    "numpy._core.multiarray",
    "numpy.core.numeric",
    "numpy._core.numeric",
}


class _BodyModelUnpickler(pickle.Unpickler):
    """Resolves only what SMPL-family pickles need; anything else is refused.

    A pickle can name any importable callable, so a model file from the web is not trusted
    with the full machinery: numpy array reconstruction, chumpy (stand-in), scipy sparse
    matrices (stand-in) and copyreg/builtin basics are allowed.
    """

    def find_class(self, module: str, name: str) -> Any:
        if module == "chumpy" or module.startswith("chumpy."):
            return _ChumpyStandIn
        if module.startswith("scipy.sparse"):
            for sparse_format in ("csc", "csr", "coo"):
                if name == f"{sparse_format}_matrix":
                    return _sparse_stand_in(sparse_format)
            raise pickle.UnpicklingError(f"unsupported sparse class {module}.{name}")
        if module in _NUMPY_MODULES and name in _NUMPY_GLOBALS:
            # numpy 2 renamed numpy.core to numpy._core; old pickles use the old path.
            return super().find_class(module.replace("numpy.core", "numpy._core"), name)
        if (module, name) in {
            ("copy_reg", "_reconstructor"),
            ("copyreg", "_reconstructor"),
            ("_codecs", "encode"),
        } or (module in ("__builtin__", "builtins") and name in ("object", "set", "frozenset")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a body-model pickle")


def _plain(value: Any, key: str, name: str) -> Any:
    """Turn unpickled stand-ins into numpy arrays."""
    if isinstance(value, _ChumpyStandIn):
        state = value.state
        if isinstance(state, dict) and "x" in state:
            return np.asarray(state["x"])
        raise BodyModelError(f"{name}: {key!r} is a chumpy object without a stored value ('x')")
    if isinstance(value, _SparseStandIn):
        import scipy.sparse

        state = value.state if isinstance(value.state, dict) else {}
        shape = state.get("_shape", state.get("shape"))
        try:
            if value.format == "coo":
                matrix = scipy.sparse.coo_matrix(
                    (state["data"], (state["row"], state["col"])), shape=shape
                )
            else:
                cls = scipy.sparse.csc_matrix if value.format == "csc" else scipy.sparse.csr_matrix
                matrix = cls((state["data"], state["indices"], state["indptr"]), shape=shape)
        except (KeyError, TypeError, ValueError) as error:
            raise BodyModelError(
                f"{name}: {key!r} is an unreadable sparse matrix ({error})"
            ) from error
        return np.asarray(matrix.toarray())
    return value


def unpickle_body_model(raw: bytes, *, name: str) -> dict[str, Any]:
    """Read an SMPL-family ``.pkl`` without chumpy (real SMPL files reference chumpy).

    Args:
        raw: the pickle's bytes (Python 2 pickles are read with latin-1 strings).
        name: file name for error messages.

    Returns:
        The model dict with every chumpy/sparse value replaced by a numpy array.

    Raises:
        BodyModelError: not a pickle of a dict, or a class outside the allowed set.
    """
    try:
        model = _BodyModelUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        ImportError,
        ValueError,
        TypeError,
    ) as error:
        raise BodyModelError(f"{name}: cannot unpickle body model ({error})") from error
    if not isinstance(model, dict):
        raise BodyModelError(
            f"{name}: body-model pickle holds a {type(model).__name__}, not a dict"
        )
    return {key: _plain(value, key, name) for key, value in model.items()}


def load_body_model_file(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an SMPL or SMPL-H model file (``.npz`` or ``.pkl``) that smplx needs.

    Returns:
        dict with ``v_template (6890, 3)``, ``f``, ``shapedirs (6890, 3, B)``, ``posedirs``,
        ``J_regressor (J, 6890)`` dense, ``weights (6890, J)``, ``kintree_table (2, J)`` and,
        when present, the SMPL-H hand PCA arrays.

    Raises:
        BodyModelError: unreadable file, missing keys or non-SMPL topology.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise BodyModelError(f"cannot read body model {path} ({error})") from error
    if path.suffix == ".npz":
        try:
            with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
                model = {k: archive[k] for k in archive.files if k in _BODY_MODEL_KEYS + _HAND_KEYS}
        except Exception as error:  # any numpy/zip failure means "unreadable"
            raise BodyModelError(f"{path}: unreadable body-model .npz ({error})") from error
    else:
        model = unpickle_body_model(raw, name=str(path))
    missing = [k for k in _BODY_MODEL_KEYS if k not in model]
    if missing:
        raise BodyModelError(f"{path}: not an SMPL-family model, missing {missing}")
    out = {k: np.asarray(v) for k, v in model.items() if k in _BODY_MODEL_KEYS + _HAND_KEYS}
    if out["v_template"].shape != (_NUM_VERTICES, 3):
        raise BodyModelError(
            f"{path}: v_template is {out['v_template'].shape}; only SMPL/SMPL-H meshes "
            f"({_NUM_VERTICES} vertices) are supported"
        )
    return out


def _model_type_of(model: dict[str, np.ndarray], path: Path) -> ModelType:
    num_joints = model["kintree_table"].shape[1]
    if num_joints == 52:
        return "smplh"
    if num_joints == 24:
        return "smpl"
    raise BodyModelError(f"{path}: {num_joints} joints; expected SMPL (24) or SMPL-H (52)")


def _candidates(folder: Path, model_type: ModelType, gender: str) -> list[Path]:
    upper = gender.upper()
    if model_type == "smplh":
        return [
            folder / f"SMPLH_{upper}.npz", folder / f"SMPLH_{upper}.pkl",
            folder / "smplh" / f"SMPLH_{upper}.npz", folder / "smplh" / f"SMPLH_{upper}.pkl",
            folder / "smplh" / gender / "model.npz", folder / gender / "model.npz",
        ]  # fmt: skip
    return [
        folder / f"SMPL_{upper}.pkl", folder / f"SMPL_{upper}.npz",
        folder / "smpl" / f"SMPL_{upper}.pkl", folder / "smpl" / f"SMPL_{upper}.npz",
    ]  # fmt: skip


def find_body_model_file(
    body_model_dir: str | Path,
    *,
    gender: str,
    model_type: Literal["auto", "smpl", "smplh"] = "auto",
) -> tuple[Path, ModelType, str]:
    """Locate the model file for ``gender`` (falling back to neutral).

    Returns:
        ``(path, model type, gender actually used)``.

    Raises:
        BodyModelError: nothing suitable in the folder; the message lists the names looked for.
    """
    folder = Path(body_model_dir)
    if folder.is_file():
        return folder, _model_type_of(load_body_model_file(folder), folder), gender
    if not folder.is_dir():
        raise BodyModelError(f"body model folder {folder} does not exist")
    if model_type == "auto":
        has_smplh = any(p.is_file() for g in _GENDERS for p in _candidates(folder, "smplh", g))
        types: tuple[ModelType, ...] = ("smplh",) if has_smplh else ("smpl",)
    elif model_type in ("smpl", "smplh"):
        types = (model_type,)
    else:
        raise BodyModelError(f"model_type must be 'auto', 'smpl' or 'smplh', got {model_type!r}")
    looked: list[Path] = []
    for kind in types:
        for use_gender in dict.fromkeys((gender, "neutral")):
            for path in _candidates(folder, kind, use_gender):
                looked.append(path)
                if path.is_file():
                    return path, kind, use_gender
    raise BodyModelError(
        f"no {'/'.join(types)} body model for gender {gender!r} (or neutral) in {folder}; "
        f"looked for {[str(p.relative_to(folder)) for p in looked]}"
    )


@dataclass
class LoadedBodyModel:
    """A smplx body model built from a model file, with what the reader needs to know."""

    module: Any  # smplx.SMPL or smplx.SMPLH
    model_type: ModelType
    num_betas: int
    num_kinematic_joints: int
    path: str


@lru_cache(maxsize=4)
def _cached_body_model(
    path: str, mtime_ns: int, size: int, model_type: ModelType, num_betas: int, device: str
) -> LoadedBodyModel:
    # mtime and size are part of the key so that a replaced file is reloaded.
    import smplx
    import torch
    from smplx.utils import Struct

    model = load_body_model_file(path)
    if _model_type_of(model, Path(path)) != model_type:
        raise BodyModelError(f"{path}: file is not a {model_type} model")
    available = int(model["shapedirs"].shape[-1])
    use_betas = max(1, min(num_betas, available))
    if model_type == "smplh":
        # Hand PCA is unused (use_pca=False, flat mean) but smplx reads the arrays.
        model.setdefault("hands_componentsl", np.eye(45))
        model.setdefault("hands_componentsr", np.eye(45))
        model.setdefault("hands_meanl", np.zeros(45))
        model.setdefault("hands_meanr", np.zeros(45))
    struct = Struct(**model)
    # smplx prints a warning for models with < 300 shape components; it is expected here.
    with contextlib.redirect_stdout(io.StringIO()):
        if model_type == "smplh":
            module = smplx.SMPLH(
                model_path=path,
                data_struct=struct,
                num_betas=use_betas,
                use_pca=False,
                flat_hand_mean=True,
                batch_size=1,
            )
        else:
            module = smplx.SMPL(
                model_path=path, data_struct=struct, num_betas=use_betas, batch_size=1
            )
    if module.num_betas < use_betas:
        # Restore the shape space smplx capped at 10 components.
        module.shapedirs = torch.tensor(model["shapedirs"][:, :, :use_betas], dtype=torch.float32)
        module._num_betas = use_betas
    module = module.to(device).eval()
    return LoadedBodyModel(
        module, model_type, use_betas, int(model["kintree_table"].shape[1]), path
    )


def load_body_model(
    body_model_dir: str | Path,
    *,
    gender: str = "neutral",
    model_type: Literal["auto", "smpl", "smplh"] = "auto",
    num_betas: int = 10,
    device: str = "cpu",
) -> tuple[LoadedBodyModel, str]:
    """Find and build (cached per file, shape count and device) a smplx body model.

    Args:
        body_model_dir: folder of model files, or one model file (see module docstring).
        gender: "male", "female" or "neutral" (falls back to neutral when missing).
        model_type: "auto" (SMPL-H if present, else SMPL), "smpl" or "smplh".
        num_betas: shape coefficients wanted; capped at the model's own count.
        device: torch device.

    Returns:
        ``(model, gender actually used)``.

    Raises:
        BodyModelError: no usable model file.
    """
    path, kind, gender_used = find_body_model_file(
        body_model_dir, gender=gender, model_type=model_type
    )
    stat = path.stat()
    model = _cached_body_model(str(path), stat.st_mtime_ns, stat.st_size, kind, num_betas, device)
    return model, gender_used


# --------------------------------------------------------------------------------------------
# Running the model


_POSE_WIDTHS = {156: "SMPL-H", 165: "SMPL-X", 72: "SMPL", 66: "body only"}


def _check_pose_width(width: int, *, name: str) -> None:
    if width not in _POSE_WIDTHS:
        raise ReaderError(
            f"{name}: 'poses' has {width} values per frame; expected one of "
            + ", ".join(f"{w} ({label})" for w, label in _POSE_WIDTHS.items())
        )


def _pose_parts(poses: np.ndarray, model_type: ModelType, *, name: str) -> dict[str, np.ndarray]:
    """Split an AMASS pose vector into smplx's arguments."""
    width = poses.shape[1]
    frames = poses.shape[0]
    _check_pose_width(width, name=name)
    parts = {"global_orient": poses[:, :3]}
    if model_type == "smplh":
        parts["body_pose"] = poses[:, 3:66]
        if width == 156:
            hands = poses[:, 66:156]
        elif width == 165:
            hands = poses[:, 75:165]  # after jaw and eyes in the SMPL-X layout
        else:
            hands = np.zeros((frames, 90))
        parts["left_hand_pose"] = hands[:, :45]
        parts["right_hand_pose"] = hands[:, 45:]
    elif width == 72:
        parts["body_pose"] = poses[:, 3:72]
    else:
        parts["body_pose"] = np.concatenate([poses[:, 3:66], np.zeros((frames, 6))], axis=1)
    return parts


def body_model_joints(
    body: LoadedBodyModel,
    poses: np.ndarray,
    trans: np.ndarray,
    betas: np.ndarray,
    *,
    name: str,
    batch_frames: int = 512,
) -> np.ndarray:
    """Joints of the body model for every frame, in the parameters' own (z-up) frame.

    Args:
        body: a loaded body model.
        poses: ``(T, P)`` axis-angle pose vectors (AMASS layouts, see ``_pose_parts``).
        trans: ``(T, 3)`` metres.
        betas: ``(B,)`` shape coefficients (only the model's count are used).
        batch_frames: frames per forward pass (memory: about 0.5 MB per frame for SMPL-H).

    Returns:
        ``(T, K + 21, 3) float64`` metres: smplx's joints (K = 24 or 52 kinematic joints, then
        5 face, 6 feet and 10 finger-tip vertex keypoints).
    """
    import torch

    if batch_frames < 1:
        raise ValueError(f"batch_frames must be >= 1, got {batch_frames}")
    parts = _pose_parts(poses, body.model_type, name=name)
    shape = np.zeros(body.num_betas)
    used = min(len(betas), body.num_betas)
    shape[:used] = betas[:used]
    module = body.module
    device = next(module.buffers()).device
    out = []
    with torch.no_grad():
        for start in range(0, poses.shape[0], batch_frames):
            stop = min(start + batch_frames, poses.shape[0])
            n = stop - start
            kwargs = {
                key: torch.as_tensor(value[start:stop], dtype=torch.float32, device=device)
                for key, value in parts.items()
            }
            result = module(
                betas=torch.as_tensor(np.tile(shape, (n, 1)), dtype=torch.float32, device=device),
                transl=torch.as_tensor(trans[start:stop], dtype=torch.float32, device=device),
                return_verts=True,
                **kwargs,
            )
            out.append(result.joints.detach().cpu().numpy().astype(np.float64))
    return np.concatenate(out, axis=0)


def _coco17_from_smpl(joints: np.ndarray, num_kinematic: int) -> np.ndarray:
    """``(T, K + 21, 3)`` smplx joints -> ``(T, 17, 3)`` COCO-17."""
    source = {n: i for i, n in enumerate(SMPL22.joint_names)}
    source.update({n: num_kinematic + i for i, n in enumerate(_FACE_KEYPOINTS)})
    return joints[:, [source[n] for n in COCO17.joint_names]]


# --------------------------------------------------------------------------------------------
# The reader


def _gender_of(arrays: dict[str, np.ndarray], override: str | None, *, name: str) -> str:
    if override is not None:
        gender = override
    elif "gender" in arrays:
        gender = scalar_string(arrays["gender"], key="gender", name=name)
    else:
        gender = "neutral"
    gender = gender.strip().lower()
    if gender not in _GENDERS:
        raise ReaderError(f"{name}: unknown gender {gender!r}; expected one of {_GENDERS}")
    return gender


def read_amass_npz(
    data: bytes | str | Path,
    *,
    name: str,
    body_model_dir: str | Path,
    target_joint_sets: Sequence[str] = ("smpl22",),
    gender_override: str | None = None,
    model_type: Literal["auto", "smpl", "smplh"] = "auto",
    device: str = "cpu",
    batch_frames: int = 512,
) -> Motion3D:
    """Read an AMASS ``.npz`` into joints (see the module docstring for every convention).

    Args:
        data: ``.npz`` bytes or a file path.
        name: the item's name (file path or archive member) for error messages.
        body_model_dir: folder with SMPL-H or SMPL model files (or one model file).
        target_joint_sets: any of ``smpl22``, ``coco17``, ``coco17_pelvis``.
        gender_override: use this gender's model whatever the file says.
        model_type: ``"auto"``, ``"smplh"`` or ``"smpl"``.
        device: torch device for the body model.
        batch_frames: frames per body-model forward pass.

    Returns:
        ``Motion3D``: ``joints[set] (T, J, 3) float64`` metres, world y-up (not grounded),
        ``measured[set] (J,) bool``, ``fps`` from the file, ``local_rotations (T, 22, 3, 3)``,
        ``meta`` (gender asked and used, model type and file, betas, pose layout).

    Raises:
        ReaderError: the item is bad (names ``name`` and the problem).
        BodyModelError: the body-model folder is unusable.
    """
    from scipy.spatial.transform import Rotation

    targets = tuple(target_joint_sets)
    unknown = [t for t in targets if t not in SUPPORTED_TARGETS]
    if unknown or not targets:
        raise ReaderError(
            f"{name}: cannot produce joint sets {unknown or targets}; supported: {SUPPORTED_TARGETS}"
        )
    arrays = load_npz(data, name=name)
    if "poses" not in arrays and "betas" in arrays:
        raise ReaderError(
            f"{name}: no 'poses' (an AMASS shape.npz holds betas only); keys {sorted(arrays)}"
        )
    require_keys(arrays, ("poses", "trans", "betas"), name=name, what="AMASS motion .npz")
    rate_keys = [k for k in ("mocap_framerate", "mocap_frame_rate") if k in arrays]
    if not rate_keys:
        raise ReaderError(
            f"{name}: no frame rate ('mocap_framerate' or 'mocap_frame_rate'); keys {sorted(arrays)}"
        )
    fps = scalar_float(arrays[rate_keys[0]], key=rate_keys[0], name=name, positive=True)

    poses = numeric_array(arrays["poses"], key="poses", name=name, shape=(None, None))
    num_frames = poses.shape[0]
    if num_frames == 0:
        raise ReaderError(f"{name}: empty sequence (0 frames)")
    trans = numeric_array(arrays["trans"], key="trans", name=name, shape=(num_frames, 3))
    betas = np.asarray(arrays["betas"])
    if betas.ndim == 2 and betas.shape[0] == 1:
        betas = betas[0]
    betas = numeric_array(betas, key="betas", name=name, shape=(None,))
    for key, values in (("poses", poses), ("trans", trans), ("betas", betas)):
        if not np.all(np.isfinite(values)):
            raise ReaderError(f"{name}: {key!r} contains NaN or infinite values")
    _check_pose_width(poses.shape[1], name=name)
    gender = _gender_of(arrays, gender_override, name=name)

    body, gender_used = load_body_model(
        body_model_dir,
        gender=gender,
        model_type=model_type,
        num_betas=max(len(betas), 1),
        device=device,
    )
    kind = body.model_type
    joints_source = body_model_joints(
        body, poses, trans, betas, name=name, batch_frames=batch_frames
    )
    up = up_axis_rotation("z")
    joints_world = joints_source @ up.T

    out_joints: dict[str, np.ndarray] = {}
    out_measured: dict[str, np.ndarray] = {}
    coco = _coco17_from_smpl(joints_world, body.num_kinematic_joints)
    coco_measured = np.array([n not in _COCO_DERIVED for n in COCO17.joint_names])
    for target in targets:
        if target == "smpl22":
            out_joints[target] = joints_world[:, :22].copy()
            out_measured[target] = np.ones(22, dtype=bool)
        elif target == "coco17":
            out_joints[target] = coco
            out_measured[target] = coco_measured.copy()
        else:
            out_joints[target] = add_pelvis(coco)
            out_measured[target] = np.concatenate([[False], coco_measured])

    local = (
        Rotation.from_rotvec(poses[:, :66].reshape(-1, 3)).as_matrix().reshape(num_frames, 22, 3, 3)
    )
    local[:, 0] = up @ local[:, 0]
    return Motion3D(
        joints=out_joints,
        measured=out_measured,
        fps=fps,
        local_rotations=local,
        meta={
            "source_format": "amass_npz",
            "body_model": kind,
            "body_model_file": Path(body.path).name,
            "gender": gender,
            "gender_used": gender_used,
            "gender_fallback": gender_used != gender,
            "num_betas_used": min(len(betas), body.num_betas),
            "betas": [float(b) for b in betas],
            "pose_width": int(poses.shape[1]),
            "source_up_axis": "z",
        },
    )


# --------------------------------------------------------------------------------------------
# Synthetic model on disk


def write_synthetic_smpl_model(
    folder: str | Path,
    *,
    seed: int = 0,
    model_type: ModelType = "smpl",
    num_betas: int = 10,
    genders: Sequence[str] = ("neutral",),
    file_format: Literal["pkl", "npz"] = "pkl",
) -> list[Path]:
    """Write the synthetic body model (``mocap_core.synthetic_smpl``) as smplx expects it.

    Files: ``SMPL_{GENDER}.pkl`` / ``SMPLH_{GENDER}.pkl`` (a plain pickle of numpy arrays, no
    chumpy, loadable by ``smplx.SMPL(folder)``) or ``.npz`` (``smplx.SMPLH(folder,
    ext="npz")``), one per gender, all the same model.

    Returns:
        The written paths.
    """
    if model_type not in ("smpl", "smplh"):
        raise ValueError(f"model_type must be 'smpl' or 'smplh', got {model_type!r}")
    if file_format not in ("pkl", "npz"):
        raise ValueError(f"file_format must be 'pkl' or 'npz', got {file_format!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = make_synthetic_smpl_model(seed=seed, model_type=model_type, num_betas=num_betas)
    prefix = "SMPLH" if model_type == "smplh" else "SMPL"
    written = []
    for gender in genders:
        if gender not in _GENDERS:
            raise ValueError(f"unknown gender {gender!r}; expected one of {_GENDERS}")
        path = folder / f"{prefix}_{gender.upper()}.{file_format}"
        tmp = path.with_name(path.name + ".tmp")
        if file_format == "pkl":
            with open(tmp, "wb") as handle:
                pickle.dump(model, handle, protocol=2)
        else:
            with open(tmp, "wb") as handle:
                np.savez(handle, **model)
        tmp.replace(path)
        written.append(path)
    return written
