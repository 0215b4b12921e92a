"""Training checkpoints: a plain dict written with ``torch.save`` (docs/TRAINING.md).

Layout (``format_version`` 1):

==================  ==========================================================================
key                 value
==================  ==========================================================================
``format``          ``"mocap2to3.checkpoint"``
``format_version``  ``1``
``stage``           ``"pretrain-2d"`` or ``"finetune-multiview"``
``model_config``    ``ModelConfig.to_dict()``
``model``           the model's ``state_dict()`` (float32 tensors)
``optimizer``       the AdamW ``state_dict()``; absent from inference exports
``grad_scaler``     the float16 loss scaler's ``state_dict()`` (optional)
``step``            optimisation steps done
``stats``           ``{"local": FeatureStats.to_dict(), "global": ...}``
``scene_config``    ``SceneConfig.model_dump(mode="json")`` (holds the ``RigConfig``)
``train_config``    the run's ``TrainConfig`` as a JSON-able dict
``data``            store name -> manifest fingerprint of the data trained on
``package_version`` the ``mocap2to3`` version that wrote it
``history``         list of ``{"step", "train_loss", "val_loss", "samples_per_s", ...}`` rows
``parent``          sha256 of the stage-1 checkpoint (stage 2), else None
==================  ==========================================================================

Only builtins, lists, dicts and tensors are stored, so checkpoints load with
``torch.load(weights_only=True)``: loading one never runs code from the file.

Writes are atomic: a temporary file in the target folder, flushed to disk, then
``os.replace``, so a crash or an error mid-write leaves the previous file intact. Paths are
local files.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from data_catalog.store import package_version
from mocap_core.model_config import ModelConfig
from mocap_core.models import MultiViewDenoiser, SingleViewDenoiser
from mocap_core.representation import FeatureStats

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "REQUIRED_KEYS",
    "TRAINING_ONLY_KEYS",
    "CheckpointError",
    "build_model",
    "checkpoint_sha256",
    "export_for_inference",
    "load_checkpoint",
    "load_stats",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "mocap2to3.checkpoint"
CHECKPOINT_FORMAT_VERSION = 1

REQUIRED_KEYS: tuple[str, ...] = (
    "format",
    "format_version",
    "stage",
    "model_config",
    "model",
    "step",
    "stats",
    "scene_config",
    "train_config",
    "data",
    "package_version",
    "history",
)
# Needed only to continue training; an inference export drops them.
TRAINING_ONLY_KEYS: tuple[str, ...] = ("optimizer", "grad_scaler")

_MODEL_CLASSES: dict[str, type[SingleViewDenoiser] | type[MultiViewDenoiser]] = {
    "pretrain-2d": SingleViewDenoiser,
    "finetune-multiview": MultiViewDenoiser,
}
_HASH_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """A file that is not a usable mocap2to3 checkpoint (the message says why)."""


def _check_payload(payload: Mapping[str, Any], where: str) -> None:
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"{where}: a checkpoint is a dict, got {type(payload).__name__}")
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{where} is not a mocap2to3 checkpoint (format {payload.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT!r})"
        )
    version = payload.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{where}: format_version must be an int, got {version!r}")
    if version > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{where} has checkpoint format_version {version}, newer than this package's "
            f"{CHECKPOINT_FORMAT_VERSION} (written by mocap2to3 "
            f"{payload.get('package_version', '?')}); upgrade mocap2to3"
        )
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{where}: checkpoint lacks keys {missing}")
    if payload["stage"] not in _MODEL_CLASSES:
        raise CheckpointError(
            f"{where}: unknown stage {payload['stage']!r}; known: {list(_MODEL_CLASSES)}"
        )


def save_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file, fsync, ``os.replace``).

    ``format``, ``format_version`` and ``package_version`` are filled in when absent. The
    parent folder is created.

    Returns:
        The written path.

    Raises:
        CheckpointError: the payload lacks required keys or has an unknown stage.
        Any error of serialisation or I/O, after removing the temporary file; the previous
        file at ``path`` is then untouched.
    """
    path = Path(path)
    payload = dict(payload)
    payload.setdefault("format", CHECKPOINT_FORMAT)
    payload.setdefault("format_version", CHECKPOINT_FORMAT_VERSION)
    payload.setdefault("package_version", package_version())
    _check_payload(payload, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates the file private (0600); a checkpoint is an ordinary file.
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    # Make the rename itself durable (best effort: not every file system allows it).
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read and validate a checkpoint.

    Args:
        path: a file written by :func:`save_checkpoint`.
        map_location: where the tensors go (``torch.load``'s argument).

    Returns:
        The payload dict (module docstring).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: not a torch file, not a mocap2to3 checkpoint, a newer
            ``format_version``, or missing keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # junk bytes fail in many ways (unpickling, struct, zip, EOF)
        raise CheckpointError(
            f"{path} is not a mocap2to3 checkpoint (torch.load failed: {exc})"
        ) from exc
    _check_payload(payload, str(path))
    return payload


def checkpoint_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of the checkpoint file's bytes (how stage 2 names its parent)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_stats(checkpoint: Mapping[str, Any]) -> dict[str, FeatureStats]:
    """The normalisation statistics ``{"local": FeatureStats, "global": FeatureStats}``."""
    stats = checkpoint["stats"]
    missing = {"local", "global"} - set(stats)
    if missing:
        raise CheckpointError(f"checkpoint stats lack {sorted(missing)}")
    return {name: FeatureStats.from_dict(stats[name]) for name in ("local", "global")}


def build_model(
    checkpoint: Mapping[str, Any],
) -> tuple[SingleViewDenoiser | MultiViewDenoiser, dict[str, FeatureStats], Any]:
    """The trained model of a checkpoint, ready for recovery or evaluation.

    Args:
        checkpoint: a payload from :func:`load_checkpoint`.

    Returns:
        ``(model, stats, scene_config)``: a :class:`SingleViewDenoiser` (stage 1) or
        :class:`MultiViewDenoiser` (stage 2) with the saved weights, in eval mode, on the
        tensors' device; the ``{"local", "global"}`` :class:`FeatureStats`; the
        ``mocap_core.training_data.SceneConfig`` the run drew its scenes from.

    Raises:
        CheckpointError: invalid payload, or weights that do not fit the saved config.
    """
    from mocap_core.training_data import SceneConfig

    _check_payload(checkpoint, "checkpoint")
    config = ModelConfig.from_dict(dict(checkpoint["model_config"]))
    model = _MODEL_CLASSES[checkpoint["stage"]](config)
    try:
        model.load_state_dict(checkpoint["model"], strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint weights do not fit its {checkpoint['stage']} model config: {exc}"
        ) from exc
    first = next(iter(checkpoint["model"].values()), None)
    if isinstance(first, torch.Tensor):
        model.to(first.device)
    model.eval()
    scene_config = SceneConfig.model_validate(checkpoint["scene_config"])
    return model, load_stats(checkpoint), scene_config


def export_for_inference(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Copy a checkpoint without its optimiser state (what recovery needs, about a third of
    the size): the release format.

    ``dst`` gets ``exported_from`` = the sha256 of ``src``; everything else is unchanged, so
    :func:`build_model` gives the same model. Written atomically; ``dst`` may equal ``src``.

    Returns:
        ``dst``.
    """
    payload = load_checkpoint(src)
    source_digest = checkpoint_sha256(src)
    for key in TRAINING_ONLY_KEYS:
        payload.pop(key, None)
    payload["exported_from"] = source_digest
    return save_checkpoint(dst, payload)


#: Where the release checkpoints live: ``<repo>/checkpoints/<smpl22|coco17>.pt``.
RELEASE_DIR = Path(__file__).resolve().parents[1] / "checkpoints"


def release_checkpoint(joint_set: str) -> Path:
    """The release checkpoint of a joint set (``coco17_pelvis``, the COCO model's layout, is
    ``coco17``); the file may not exist (a clone before the release, or a trimmed install)."""
    name = {"coco17_pelvis": "coco17"}.get(joint_set, joint_set)
    if name not in ("smpl22", "coco17"):
        raise ValueError(f"no release checkpoint for joint set {joint_set!r} (smpl22 or coco17)")
    return RELEASE_DIR / f"{name}.pt"


#: Overrides that turn off every step this project adds after the method's sampling loop
#: (``post_process=False`` in the recover and evaluate flows, ``--no-post-process``): the
#: output is then the final triangulation, as in the reference.
METHOD_ONLY_RECOVERY: dict[str, Any] = {
    "init": "noise",
    "smooth_frames": 0,
    "ground_anchor_frames": 0,
}


def recovery_config(checkpoint: Mapping[str, Any], **overrides: Any):
    """The recovery settings a checkpoint is meant to be sampled with.

    The window is the checkpoint's training window (capped at the model's ``max_frames``);
    then the defaults the checkpoint carries under ``"recovery"`` (a release checkpoint holds
    the settings chosen on the validation split, e.g. ``ground_anchor_frames`` and
    ``smooth_frames``); then
    ``overrides`` (None values are ignored).

    Returns:
        A :class:`mocap_core.recovery.RecoveryConfig`.

    Raises:
        ValueError: invalid settings (the message names them).
    """
    from mocap_core.recovery import RecoveryConfig

    max_frames = int(checkpoint["model_config"]["max_frames"])
    window = (checkpoint.get("train_config") or {}).get("window")
    if not isinstance(window, int) or isinstance(window, bool) or not 2 <= window <= max_frames:
        window = max_frames
    fields = set(RecoveryConfig.model_fields)
    settings: dict[str, Any] = {"window": window}
    settings.update({k: v for k, v in (checkpoint.get("recovery") or {}).items() if k in fields})
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return RecoveryConfig(**settings)
