"""The training objective of both stages and one optimisation step (DESIGN 2.4, docs/TRAINING.md).

Pure torch: batches in, a loss and a few metrics out; no files, no Prefect. The loop that drives
it (data, seeds, checkpoints, validation, DDP) is :mod:`tasks.training`.

A *batch* is the default collation of training samples (docs/TRAINING.md, "One sample"), a
mapping of tensors with a leading batch axis ``B``:

=================  ============================  =============================================
key                shape                         meaning
=================  ============================  =============================================
``local``          ``(B, V, L, C) float32``      local encoding per view, raw (not z-scored)
``global0``        ``(B, L, C) float32``         view 0's global encoding, raw
``feature_mask``   ``(B, V, L, C) float32``      1 where a channel is supervised
``length``         ``(B,) int64``                valid frames (frames ``>= length`` are padding)
``rt``             ``(B, V, 3) float32``         tilt, roll (rad), height (m)
``k``              ``(B, V, 4) float32``         padded intrinsics / fixed scale
``pointmap``       ``(B, V, P, P, 3) float32``   ground pointmaps, world XYZ metres
``R``              ``(B, V, 3, 3) float32``      world-to-camera rotations (canonical frame)
``camera_known``   ``(B,) bool``                 False for 2D-track samples
=================  ============================  =============================================

(``K``, ``t``, ``sizes`` and ``joints`` may be present; the loss does not read them.)

The objective, per stage (``stage`` is ``"pretrain-2d"`` or ``"finetune-multiview"``):

1. ``x0 = z-score(local)`` per view and channel with the run's ``FeatureStats``, in the
   model layout ``(B, V, C, L)``; stage 1 keeps view 0 only.
2. ``t ~ U{0, .., T-1}`` per sample (``T = scheduler.num_train_timesteps``, 100); noise is
   ``N(0, I)`` in stage 1 and multi-view consistent world noise
   (:func:`mocap_core.diffusion.world_noise` with the batch's ``R``) in stage 2;
   ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``.
3. The model predicts ``x0``. Stage 1 gets view 0's camera embeddings and pointmap, dropped
   (``cond_mask``) where ``camera_known`` is False. Stage 2 gets every view's conditions plus
   V0's observed encodings, z-scored, with Gaussian augmentation of std
   :data:`OBS_GLOBAL_NOISE_STD` (global) and :data:`OBS_LOCAL_NOISE_STD` (local) in normalised
   units (method-notes 5.2).
4. Loss: squared error averaged over the supervised entries (``feature_mask`` on frames
   ``< length``) of all views, view 0 included.

Every random draw of the objective (timesteps, noise, observation augmentation) comes from
the explicit ``torch.Generator``; the model's dropout and classifier-free-guidance drops use
torch's global generator, which the loop seeds per step. The draws are made on the
generator's device and moved to the batch's, so a CPU generator gives the same numbers on any
device.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mocap_core.diffusion import DDPMScheduler, world_noise
from mocap_core.representation import FeatureStats, to_channels_first

__all__ = [
    "BATCH_KEYS",
    "OBS_GLOBAL_NOISE_STD",
    "OBS_LOCAL_NOISE_STD",
    "STAGES",
    "STAGE_MULTIVIEW",
    "STAGE_PRETRAIN",
    "StepResult",
    "batch_to_device",
    "check_batch",
    "diffusion_loss",
    "train_step",
    "validation_loss",
]

STAGE_PRETRAIN = "pretrain-2d"
STAGE_MULTIVIEW = "finetune-multiview"
STAGES: tuple[str, ...] = (STAGE_PRETRAIN, STAGE_MULTIVIEW)

# Gaussian augmentation of V0's observed encodings in stage 2, in normalised (z-score) units:
# the reference's sigma on f_cond2d (global) and f_condb2d (local) (method-notes 5.2). It makes
# the model tolerate detector jitter at recovery time.
OBS_GLOBAL_NOISE_STD = 0.02
OBS_LOCAL_NOISE_STD = 0.1

# Keys the loss reads, with the number of dimensions after the batch axis.
BATCH_KEYS: dict[str, int] = {
    "local": 3,
    "global0": 2,
    "feature_mask": 3,
    "length": 0,
    "rt": 2,
    "k": 2,
    "pointmap": 4,
    "R": 3,
    "camera_known": 0,
}


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown training stage {stage!r}; known: {list(STAGES)}")


def check_batch(batch: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """Check a batch's keys and shapes against the contract (module docstring).

    Returns:
        ``(B, V, L, C)``.

    Raises:
        ValueError: a missing key, a wrong number of dimensions or inconsistent sizes (the
            message names the key); TypeError: a value that is not a tensor.
    """
    missing = sorted(set(BATCH_KEYS) - set(batch))
    if missing:
        raise ValueError(f"batch lacks keys {missing}; it has {sorted(batch)}")
    for key, ndim in BATCH_KEYS.items():
        value = batch[key]
        if not isinstance(value, Tensor):
            raise TypeError(f"batch[{key!r}] must be a torch.Tensor, got {type(value).__name__}")
        if value.ndim != ndim + 1:
            raise ValueError(
                f"batch[{key!r}] must have {ndim + 1} dimensions (batch first), "
                f"got shape {tuple(value.shape)}"
            )
    b, v, num_frames, c = (int(s) for s in batch["local"].shape)
    expected = {
        "global0": (b, num_frames, c),
        "feature_mask": (b, v, num_frames, c),
        "length": (b,),
        "rt": (b, v, 3),
        "k": (b, v, 4),
        "R": (b, v, 3, 3),
        "camera_known": (b,),
    }
    for key, shape in expected.items():
        if tuple(batch[key].shape) != shape:
            raise ValueError(
                f"batch[{key!r}] must have shape {shape} to match local {(b, v, num_frames, c)}, "
                f"got {tuple(batch[key].shape)}"
            )
    pointmap = batch["pointmap"]
    if pointmap.shape[:2] != (b, v) or pointmap.shape[-1] != 3:
        raise ValueError(
            f"batch['pointmap'] must be (B={b}, V={v}, P, P, 3), got {tuple(pointmap.shape)}"
        )
    if c % 2 != 0 or c < 6:
        raise ValueError(f"feature channels must be 2 (J + 1) with J >= 2, got C = {c}")
    return b, v, num_frames, c


def batch_to_device(batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """Move every tensor of ``batch`` to ``device`` (non-blocking from pinned memory); other
    values pass through unchanged."""
    device = torch.device(device)
    return {
        key: value.to(device, non_blocking=True) if isinstance(value, Tensor) else value
        for key, value in batch.items()
    }


def _randn(shape: tuple[int, ...], generator: torch.Generator, like: Tensor) -> Tensor:
    """Standard normal draws from ``generator`` (on its device), cast and moved like ``like``."""
    draws = torch.randn(shape, generator=generator, device=generator.device)
    return draws.to(device=like.device, dtype=like.dtype)


def diffusion_loss(
    model: nn.Module,
    batch: Mapping[str, Tensor],
    scheduler: DDPMScheduler,
    stats: Mapping[str, FeatureStats],
    stage: str,
    generator: torch.Generator,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The x0-prediction MSE of one batch (module docstring).

    Args:
        model: a :class:`~mocap_core.models.SingleViewDenoiser` for ``"pretrain-2d"``, a
            :class:`~mocap_core.models.MultiViewDenoiser` for ``"finetune-multiview"`` (or
            either wrapped in DDP); its train/eval mode is left as the caller set it.
        batch: the collated batch on the model's device (module docstring). Stage 1 reads view
            0 only, so stage-2 batches work there too.
        scheduler: gives ``T`` and the forward process (``add_noise``).
        stats: ``{"local": FeatureStats, "global": FeatureStats}``, ``C`` channels each.
        stage: ``"pretrain-2d"`` or ``"finetune-multiview"``.
        generator: source of the timesteps, the noise and the observation augmentation.

    Returns:
        ``loss`` (scalar tensor with the graph, float32) and detached scalar metrics:
        ``loss``, ``loss_view0`` (error on view 0 only) and ``supervised`` (number of
        supervised entries).

    Raises:
        ValueError: unknown stage, a batch that breaks the contract, or statistics of another
            channel count.
    """
    _check_stage(stage)
    b, v, num_frames, c = check_batch(batch)
    for name in ("local", "global"):
        if name not in stats:
            raise ValueError(f"stats needs 'local' and 'global' FeatureStats, got {sorted(stats)}")
        if stats[name].num_channels != c:
            raise ValueError(
                f"{name} statistics have {stats[name].num_channels} channels, the batch {c}; "
                "were they fitted for another joint set?"
            )
    if stage == STAGE_PRETRAIN:
        v = 1
    local = batch["local"][:, :v].float()
    device = local.device
    # (B, V, L, C) -> (B, V, C, L), the model layout.
    x0 = stats["local"].normalize(to_channels_first(local), channel_axis=-2)
    frames = torch.arange(num_frames, device=device)
    frame_valid = frames[None, :] < batch["length"].to(device)[:, None]  # (B, L)
    supervised = (to_channels_first(batch["feature_mask"][:, :v]) > 0) & frame_valid[
        :, None, None, :
    ]
    # Unsupervised entries (padding, missing joints) may hold anything, even NaN: zero them so
    # that nothing undefined enters the model or the loss.
    x0 = torch.where(supervised, x0, torch.zeros_like(x0))

    timesteps = torch.randint(
        0, scheduler.num_train_timesteps, (b,), generator=generator, device=generator.device
    ).to(device)
    unknown_camera = ~batch["camera_known"].to(device=device, dtype=torch.bool)
    cond_mask = {"rt": unknown_camera, "k": unknown_camera, "pointmap": unknown_camera}
    lengths = batch["length"].to(device)

    if stage == STAGE_PRETRAIN:
        noise = _randn((b, 1, c, num_frames), generator, x0)
        x_t = scheduler.add_noise(x0, noise, timesteps)
        pred = model(
            x_t[:, 0],
            timesteps,
            lengths=lengths,
            rt=batch["rt"][:, 0].float(),
            k=batch["k"][:, 0].float(),
            pointmap=batch["pointmap"][:, 0].float(),
            cond_mask=cond_mask,
        )[:, None]
    else:
        num_joints = c // 2 - 1
        rotations = batch["R"].detach().to(device=generator.device, dtype=torch.float32)
        noise = world_noise(rotations, num_frames, num_joints, generator=generator).to(
            device=device, dtype=x0.dtype
        )
        x_t = scheduler.add_noise(x0, noise, timesteps)
        global0 = batch["global0"].float()
        obs_global = stats["global"].normalize(to_channels_first(global0), channel_axis=-2)
        obs_local = x0[:, 0]
        view0_valid = supervised[:, 0]
        obs_global = torch.where(view0_valid, obs_global, torch.zeros_like(obs_global))
        obs_global = obs_global + OBS_GLOBAL_NOISE_STD * _randn(
            tuple(obs_global.shape), generator, obs_global
        )
        obs_local = obs_local + OBS_LOCAL_NOISE_STD * _randn(
            tuple(obs_local.shape), generator, obs_local
        )
        pred = model(
            x_t,
            timesteps,
            lengths=lengths,
            rt=batch["rt"].float(),
            k=batch["k"].float(),
            pointmap=batch["pointmap"].float(),
            obs_global=obs_global,
            obs_local=obs_local,
            cond_mask=cond_mask,
        )

    weight = supervised.to(torch.float32)
    squared = torch.where(supervised, (pred.float() - x0) ** 2, torch.zeros_like(x0))
    # No host sync to check for an empty mask (a batch without supervision gives loss 0).
    count = weight.sum()
    loss = squared.sum() / count.clamp_min(1.0)
    with torch.no_grad():
        count0 = weight[:, 0].sum().clamp_min(1.0)
        metrics = {
            "loss": loss.detach(),
            "loss_view0": squared[:, 0].sum() / count0,
            "supervised": count.detach(),
        }
    return loss, metrics


@dataclass
class StepResult:
    """What one optimisation step reports (detached scalar tensors; ``.item()`` them when
    logging, not every step on a GPU).

    Attributes:
        loss: the batch loss before the update.
        loss_view0: the loss on view 0 only.
        grad_norm: total gradient norm before clipping (inf/NaN when an fp16 step overflowed
            and was skipped by the scaler).
    """

    loss: Tensor
    loss_view0: Tensor
    grad_norm: Tensor


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Mapping[str, Tensor],
    scheduler: DDPMScheduler,
    stats: Mapping[str, FeatureStats],
    stage: str,
    generator: torch.Generator,
    grad_clip: float | None,
    autocast_dtype: torch.dtype | None = None,
    grad_scaler: torch.amp.GradScaler | None = None,
) -> StepResult:
    """One AdamW step: loss, backward, gradient clipping, update.

    Args:
        model, batch, scheduler, stats, stage, generator: as :func:`diffusion_loss`; the model
            should be in train mode.
        optimizer: over the model's parameters.
        grad_clip: maximum total L2 gradient norm (0.5 in the reference); None = no clipping.
        autocast_dtype: ``torch.bfloat16``/``torch.float16`` to run the forward pass under
            autocast on the batch's device; None = full precision.
        grad_scaler: loss scaler for float16 (skips steps whose gradients overflow).

    Returns:
        :class:`StepResult`.
    """
    if grad_clip is not None and not (math.isfinite(grad_clip) and grad_clip > 0):
        raise ValueError(f"grad_clip must be a positive number or None, got {grad_clip}")
    optimizer.zero_grad(set_to_none=True)
    device_type = batch["local"].device.type
    with torch.autocast(
        device_type=device_type,
        dtype=autocast_dtype or torch.float32,
        enabled=autocast_dtype is not None,
    ):
        loss, metrics = diffusion_loss(model, batch, scheduler, stats, stage, generator)
    if grad_scaler is not None:
        grad_scaler.scale(loss).backward()
        grad_scaler.unscale_(optimizer)
    else:
        loss.backward()
    parameters = [p for p in model.parameters() if p.grad is not None]
    if grad_clip is not None:
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    else:
        grad_norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p.grad.detach()) for p in parameters])
        )
    if grad_scaler is not None:
        grad_scaler.step(optimizer)
        grad_scaler.update()
    else:
        optimizer.step()
    return StepResult(
        loss=metrics["loss"], loss_view0=metrics["loss_view0"], grad_norm=grad_norm.detach()
    )


@torch.no_grad()
def validation_loss(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    scheduler: DDPMScheduler,
    stats: Mapping[str, FeatureStats],
    stage: str,
    seed: int,
    device: torch.device | str,
    autocast_dtype: torch.dtype | None = None,
) -> float:
    """Mean loss over fixed batches with fixed draws, in eval mode (no dropout, no CFG drops).

    Batch ``i`` uses a CPU generator seeded with ``seed + i``, so the value depends only on the
    model's weights: two calls on the same weights agree exactly. The model's train/eval mode
    is restored afterwards.

    Args:
        batches: collated batches (on any device; moved to ``device``).
        seed: base seed of the per-batch generators.
        device: where the model lives.

    Returns:
        The mean of the per-batch losses (each batch weighted equally), a Python float; NaN
        when ``batches`` is empty.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for index, batch in enumerate(batches):
            generator = torch.Generator(device="cpu").manual_seed(int(seed) + index)
            on_device = batch_to_device(batch, device)
            with torch.autocast(
                device_type=torch.device(device).type,
                dtype=autocast_dtype or torch.float32,
                enabled=autocast_dtype is not None,
            ):
                loss, _ = diffusion_loss(model, on_device, scheduler, stats, stage, generator)
            total += float(loss)
            count += 1
    finally:
        model.train(was_training)
    return total / count if count else float("nan")
