"""Diffusion noise schedule, DDPM and DDIM samplers, and multi-view "world" noise (DESIGN 2.4).

The schedulers follow the design of the ``diffusers`` schedulers (written fresh, no dependency):
the constructor arguments are the saved :attr:`config`, :meth:`set_timesteps` chooses the
sampling steps, :meth:`step` moves a sample one step down and returns a
:class:`SchedulerStepOutput`, :meth:`add_noise` makes training inputs. The loop that drives
them (the recovery loop with its triangulation "consistency block") lives elsewhere.

Notation: ``T = num_train_timesteps``, ``alpha_bar_t = prod_{i <= t} (1 - beta_i)`` for the
train steps ``t = 0 .. T-1``, and ``alpha_bar_{-1} = 1`` (clean data). The forward process is
``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps``.

Sampling steps (:meth:`set_timesteps`, ``n = num_inference_steps``, descending):

- ``"leading"`` (default): ``t_i = (n - 1 - i) * (T // n)``, ends at 0. With ``n == T`` it is
  every train step, the reference's full ancestral sampler. With ``n < T`` it starts below
  ``T - 1`` (``n = 1`` samples at ``t = 0`` only), i.e. from noise that is slightly less than
  pure.
- ``"trailing"``: ``t_i = round(T (n - i) / n) - 1``, starts at ``T - 1`` (the usual choice
  for few-step DDIM, Lin et al. 2024) and ends at ``round(T / n) - 1``.
- ``"linspace"``: ``t_i = round((T - 1) (n - 1 - i) / (n - 1))``, both ends (``[T - 1]`` for
  ``n = 1``).

A step goes from ``t`` to the next chosen step ``t'`` (``-1`` after the last one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from mocap_core.representation import feature_dim

PredictionType = Literal["sample", "epsilon"]
TimestepSpacing = Literal["leading", "trailing", "linspace"]

_PREDICTION_TYPES = ("sample", "epsilon")
_BETA_SCHEDULES = ("cosine",)
_TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")

# Offset of the cosine schedule (Nichol & Dhariwal 2021): keeps beta_0 from vanishing.
_COSINE_OFFSET = 0.008

# A posterior variance this small is zero in any float format; flooring it avoids sqrt(0)
# gradients and log(0) for callers that take logs.
_MIN_VARIANCE = 1e-20

# Rotations are accepted as orthonormal within this tolerance (float32 round-off is ~1e-7).
_ROTATION_TOLERANCE = 1e-4


@dataclass
class SchedulerStepOutput:
    """Result of one sampler step.

    Attributes:
        prev_sample: ``x_{t'}``, same shape, dtype and device as the input sample.
        pred_original_sample: the ``x_0`` estimate the step used (after clipping, if any).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def _cosine_alpha_bar(fraction: float) -> float:
    """``alpha_bar(t / T) = cos((t / T + s) / (1 + s) * pi / 2)^2``, unnormalised."""
    return math.cos((fraction + _COSINE_OFFSET) / (1 + _COSINE_OFFSET) * math.pi / 2) ** 2


def cosine_betas(num_steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """The cosine ("squaredcos_cap_v2") noise schedule.

    ``beta_i = min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta)`` for
    ``i = 0 .. T-1`` with ``alpha_bar(x) = cos((x + 0.008) / 1.008 * pi / 2)^2``. The cap stops
    the last step from destroying the signal with ``beta = 1`` (``alpha_bar(1) = 0``).

    Returns:
        ``betas (num_steps,)`` float64 tensor on the CPU.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps: expected an int >= 1, got {num_steps!r}")
    if not 0 < max_beta <= 1:
        raise ValueError(f"max_beta: expected a value in (0, 1], got {max_beta}")
    betas = [
        min(1 - _cosine_alpha_bar((i + 1) / num_steps) / _cosine_alpha_bar(i / num_steps), max_beta)
        for i in range(num_steps)
    ]
    return torch.tensor(betas, dtype=torch.float64)


def _spaced_timesteps(num_train: int, num_steps: int, spacing: str) -> list[int]:
    """Descending sampling steps (see the module docstring for the formulas)."""
    if spacing == "leading":
        ratio = num_train // num_steps
        return [(num_steps - 1 - i) * ratio for i in range(num_steps)]
    if spacing == "trailing":
        # round(T (n - i) / n) with halves rounded up, in exact integer arithmetic.
        return [
            (2 * num_train * (num_steps - i) + num_steps) // (2 * num_steps) - 1
            for i in range(num_steps)
        ]
    if num_steps == 1:
        return [num_train - 1]
    last = num_train - 1
    return [
        (2 * last * (num_steps - 1 - i) + (num_steps - 1)) // (2 * (num_steps - 1))
        for i in range(num_steps)
    ]


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {list(allowed)}, got {value!r}")


class _Scheduler:
    """Schedule, forward process and timestep bookkeeping shared by DDPM and DDIM."""

    def __init__(
        self,
        num_train_timesteps: int,
        beta_schedule: str,
        prediction_type: str,
        timestep_spacing: str,
    ) -> None:
        if (
            isinstance(num_train_timesteps, bool)
            or not isinstance(num_train_timesteps, int | np.integer)
            or num_train_timesteps < 1
        ):
            raise ValueError(
                f"num_train_timesteps: expected an int >= 1, got {num_train_timesteps!r}"
            )
        _check_choice("beta_schedule", beta_schedule, _BETA_SCHEDULES)
        _check_choice("prediction_type", prediction_type, _PREDICTION_TYPES)
        _check_choice("timestep_spacing", timestep_spacing, _TIMESTEP_SPACINGS)
        self.num_train_timesteps = int(num_train_timesteps)
        self.beta_schedule = beta_schedule
        self.prediction_type = prediction_type
        self.timestep_spacing = timestep_spacing
        # float64 on the CPU: the step coefficients are computed once per step as Python
        # floats, so the sample keeps its own dtype and device.
        self.betas = cosine_betas(self.num_train_timesteps)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.num_inference_steps = self.num_train_timesteps
        self.timesteps = torch.arange(self.num_train_timesteps - 1, -1, -1, dtype=torch.long)
        self._previous = self._previous_table(self.timesteps.tolist())

    @staticmethod
    def _previous_table(timesteps: list[int]) -> dict[int, int]:
        return {
            t: (timesteps[i + 1] if i + 1 < len(timesteps) else -1) for i, t in enumerate(timesteps)
        }

    def set_timesteps(
        self, num_inference_steps: int, device: torch.device | str | None = None
    ) -> None:
        """Choose ``num_inference_steps`` (1 .. T) sampling steps; sets :attr:`timesteps`.

        ``timesteps`` is a descending ``(num_inference_steps,)`` long tensor on ``device``,
        spaced by :attr:`timestep_spacing` (module docstring).
        """
        if (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, int | np.integer)
            or not 1 <= num_inference_steps <= self.num_train_timesteps
        ):
            raise ValueError(
                f"num_inference_steps: expected an int in [1, {self.num_train_timesteps}], "
                f"got {num_inference_steps!r}"
            )
        steps = _spaced_timesteps(
            self.num_train_timesteps, int(num_inference_steps), self.timestep_spacing
        )
        self.num_inference_steps = int(num_inference_steps)
        self.timesteps = torch.tensor(steps, dtype=torch.long, device=device)
        self._previous = self._previous_table(steps)

    def previous_timestep(self, timestep: int | torch.Tensor) -> int:
        """The sampling step after ``timestep`` in :attr:`timesteps`, ``-1`` after the last."""
        t = self._as_step(timestep)
        return self._previous[t]

    def _as_step(self, timestep: int | torch.Tensor) -> int:
        if isinstance(timestep, torch.Tensor):
            if timestep.numel() != 1 or timestep.is_floating_point():
                raise ValueError(f"timestep: expected one integer step, got {timestep!r}")
            timestep = int(timestep.item())
        if isinstance(timestep, bool) or not isinstance(timestep, int | np.integer):
            raise TypeError(f"timestep: expected an int, got {type(timestep).__name__}")
        if int(timestep) not in self._previous:
            raise ValueError(
                f"timestep {int(timestep)} is not one of the {self.num_inference_steps} sampling "
                "steps; call set_timesteps first and step through scheduler.timesteps"
            )
        return int(timestep)

    def _alpha_bar(self, t: int) -> float:
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | int
    ) -> torch.Tensor:
        """Forward process ``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps``.

        Args:
            original_samples: ``x_0 (B, ...)`` float tensor.
            noise: ``eps``, the shape of ``original_samples``.
            timesteps: ``(B,)`` integer train steps in ``[0, T-1]``, one per sample (broadcast
                over the trailing dimensions), or one int for all.

        Returns:
            ``x_t``, shape, dtype and device of ``original_samples``.
        """
        if tuple(noise.shape) != tuple(original_samples.shape):
            raise ValueError(
                f"noise: shape {tuple(noise.shape)} differs from the samples' "
                f"{tuple(original_samples.shape)}"
            )
        timesteps = torch.as_tensor(timesteps, device=original_samples.device)
        if timesteps.is_floating_point() or timesteps.dtype == torch.bool:
            raise TypeError(f"timesteps: expected integer steps, got dtype {timesteps.dtype}")
        if timesteps.ndim > 1 or (
            timesteps.ndim == 1
            and (original_samples.ndim == 0 or timesteps.shape[0] != original_samples.shape[0])
        ):
            raise ValueError(
                f"timesteps: expected shape (B,) with B = {tuple(original_samples.shape)[:1]}, "
                f"got {tuple(timesteps.shape)}"
            )
        if bool(((timesteps < 0) | (timesteps >= self.num_train_timesteps)).any()):
            raise ValueError(f"timesteps: must lie in [0, {self.num_train_timesteps - 1}]")
        alpha_bar = self.alphas_cumprod.to(original_samples.device)[timesteps]
        alpha_bar = alpha_bar.to(original_samples.dtype)
        alpha_bar = alpha_bar.reshape(
            tuple(alpha_bar.shape) + (1,) * (original_samples.ndim - alpha_bar.ndim)
        )
        return alpha_bar.sqrt() * original_samples + (1 - alpha_bar).sqrt() * noise

    def _predict_original(
        self, model_output: torch.Tensor, t: int, sample: torch.Tensor
    ) -> torch.Tensor:
        if self.prediction_type == "sample":
            return model_output
        alpha_bar = self._alpha_bar(t)
        return (sample - math.sqrt(1 - alpha_bar) * model_output) / math.sqrt(alpha_bar)

    @staticmethod
    def _check_step_inputs(
        model_output: torch.Tensor, sample: torch.Tensor, noise: torch.Tensor | None
    ) -> None:
        if tuple(model_output.shape) != tuple(sample.shape):
            raise ValueError(
                f"model_output: shape {tuple(model_output.shape)} differs from the sample's "
                f"{tuple(sample.shape)}"
            )
        if noise is not None and tuple(noise.shape) != tuple(sample.shape):
            raise ValueError(
                f"noise: shape {tuple(noise.shape)} differs from the sample's {tuple(sample.shape)}"
            )

    @staticmethod
    def _noise_like(
        sample: torch.Tensor, noise: torch.Tensor | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        if noise is not None:
            return noise.to(dtype=sample.dtype, device=sample.device)
        return torch.randn(
            sample.shape, generator=generator, dtype=sample.dtype, device=sample.device
        )


class DDPMScheduler(_Scheduler):
    """Ancestral DDPM sampler (Ho et al. 2020) on the cosine schedule.

    A step from ``t`` to ``t'`` (the next sampling step, ``-1`` at the end) draws from the
    forward-process posterior ``q(x_{t'} | x_t, x_0)`` with the predicted ``x_0``::

        a = alpha_bar_t / alpha_bar_t',  b = 1 - a
        mean = sqrt(alpha_bar_t') b / (1 - alpha_bar_t) x_0 + sqrt(a) (1 - alpha_bar_t') / (1 - alpha_bar_t) x_t
        var  = (1 - alpha_bar_t') / (1 - alpha_bar_t) b
        x_t' = mean + sqrt(var) z

    With ``t' = t - 1`` this is the textbook posterior with ``beta_t``; with fewer sampling
    steps it is the exact posterior between the chosen steps. The last step (``t' = -1``) has
    ``var = 0`` and returns the predicted ``x_0``.

    Args:
        num_train_timesteps: ``T``, train steps of the schedule (100 in the reference).
        beta_schedule: ``"cosine"`` (``squaredcos_cap_v2``), the only schedule offered.
        prediction_type: ``"sample"`` (the model predicts ``x_0``, the reference) or
            ``"epsilon"`` (it predicts the noise).
        clip_sample: clamp the predicted ``x_0`` to ``[-1, 1]`` (off for z-scored features).
        timestep_spacing: ``"leading"``, ``"trailing"`` or ``"linspace"`` (module docstring).
    """

    def __init__(
        self,
        num_train_timesteps: int = 100,
        beta_schedule: str = "cosine",
        prediction_type: PredictionType = "sample",
        clip_sample: bool = False,
        timestep_spacing: TimestepSpacing = "leading",
    ) -> None:
        super().__init__(num_train_timesteps, beta_schedule, prediction_type, timestep_spacing)
        if not isinstance(clip_sample, bool):
            raise TypeError(f"clip_sample: expected a bool, got {type(clip_sample).__name__}")
        self.clip_sample = clip_sample

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments: ``DDPMScheduler(**scheduler.config)`` rebuilds it."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule,
            "prediction_type": self.prediction_type,
            "clip_sample": self.clip_sample,
            "timestep_spacing": self.timestep_spacing,
        }

    def posterior_variance(self, timestep: int | torch.Tensor) -> float:
        """``var`` of the step from ``timestep`` to the next sampling step (class docstring)."""
        t = self._as_step(timestep)
        prev = self._previous[t]
        alpha_bar, alpha_bar_prev = self._alpha_bar(t), self._alpha_bar(prev)
        beta = 1 - alpha_bar / alpha_bar_prev
        return (1 - alpha_bar_prev) / (1 - alpha_bar) * beta

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> SchedulerStepOutput:
        """One ancestral step ``x_t -> x_t'``.

        Args:
            model_output: the model's ``x_0`` (or ``eps``) prediction, shape of ``sample``.
            timestep: the current step ``t``, one of :attr:`timesteps`.
            sample: ``x_t``.
            noise: the standard-normal ``z``, shape of ``sample`` (e.g. world noise from
                :func:`world_noise`); ``None`` draws it from ``generator``. Unused (and not
                drawn) on the last step, whose variance is 0.
            generator: torch generator on the sample's device, used only when ``noise`` is None.

        Returns:
            :class:`SchedulerStepOutput` with ``prev_sample = x_t'`` and the ``x_0`` used.
        """
        self._check_step_inputs(model_output, sample, noise)
        t = self._as_step(timestep)
        prev = self._previous[t]
        alpha_bar, alpha_bar_prev = self._alpha_bar(t), self._alpha_bar(prev)
        alpha = alpha_bar / alpha_bar_prev
        beta = 1 - alpha

        original = self._predict_original(model_output, t, sample)
        if self.clip_sample:
            original = original.clamp(-1.0, 1.0)
        coef_original = math.sqrt(alpha_bar_prev) * beta / (1 - alpha_bar)
        coef_current = math.sqrt(alpha) * (1 - alpha_bar_prev) / (1 - alpha_bar)
        prev_sample = coef_original * original + coef_current * sample
        if prev >= 0:
            variance = max((1 - alpha_bar_prev) / (1 - alpha_bar) * beta, _MIN_VARIANCE)
            prev_sample = prev_sample + math.sqrt(variance) * self._noise_like(
                sample, noise, generator
            )
        return SchedulerStepOutput(prev_sample=prev_sample, pred_original_sample=original)


class DDIMScheduler(_Scheduler):
    """DDIM sampler (Song et al. 2021) on the cosine schedule, any number of steps.

    A step from ``t`` to ``t'`` (``alpha_bar_{-1} = 1``)::

        eps_hat = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)      (x_0 prediction)
        sigma   = eta sqrt((1 - alpha_bar_t') / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_t')
        x_t'    = sqrt(alpha_bar_t') x_0 + sqrt(1 - alpha_bar_t' - sigma^2) eps_hat + sigma z

    ``eta = 0`` is deterministic; ``eta = 1`` has the DDPM posterior variance.

    Args:
        num_train_timesteps, beta_schedule, prediction_type, timestep_spacing: as for
            :class:`DDPMScheduler`.
        eta: stochasticity in ``[0, 1]``.
    """

    def __init__(
        self,
        num_train_timesteps: int = 100,
        beta_schedule: str = "cosine",
        prediction_type: PredictionType = "sample",
        eta: float = 0.0,
        timestep_spacing: TimestepSpacing = "leading",
    ) -> None:
        super().__init__(num_train_timesteps, beta_schedule, prediction_type, timestep_spacing)
        if isinstance(eta, bool) or not isinstance(eta, int | float) or not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta: expected a number in [0, 1], got {eta!r}")
        self.eta = float(eta)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments: ``DDIMScheduler(**scheduler.config)`` rebuilds it."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule,
            "prediction_type": self.prediction_type,
            "eta": self.eta,
            "timestep_spacing": self.timestep_spacing,
        }

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> SchedulerStepOutput:
        """One DDIM step ``x_t -> x_t'``; arguments as :meth:`DDPMScheduler.step`.

        ``noise`` and ``generator`` matter only when ``eta > 0`` (no noise is drawn otherwise).
        """
        self._check_step_inputs(model_output, sample, noise)
        t = self._as_step(timestep)
        prev = self._previous[t]
        alpha_bar, alpha_bar_prev = self._alpha_bar(t), self._alpha_bar(prev)

        original = self._predict_original(model_output, t, sample)
        if self.prediction_type == "epsilon":
            epsilon = model_output
        else:
            epsilon = (sample - math.sqrt(alpha_bar) * original) / math.sqrt(1 - alpha_bar)
        sigma = self.eta * math.sqrt(
            (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)
        )
        direction = math.sqrt(max(1 - alpha_bar_prev - sigma**2, 0.0))
        prev_sample = math.sqrt(alpha_bar_prev) * original + direction * epsilon
        if sigma > 0:
            prev_sample = prev_sample + sigma * self._noise_like(sample, noise, generator)
        return SchedulerStepOutput(prev_sample=prev_sample, pred_original_sample=original)


def world_noise(
    R: torch.Tensor | np.ndarray,
    num_frames: int,
    num_joints: int,
    batch: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Multi-view consistent ("world") noise in the per-view feature layout (DESIGN 2.4).

    One 3D Gaussian ``n ~ N(0, I)`` of shape ``(B, L, J + 1, 3)`` is rotated into every view
    (``R_v n``) and its camera ``(x, y)`` kept: point 0 feeds the global-root slot, points
    ``1 .. J-1`` the local slots, point ``J`` the scale slot. A rotation keeps ``N(0, I)``, so
    every channel of every view is standard normal, and the views see one and the same 3D
    noise. (The reference also subtracts a camera-origin term; rotation only is used here.)

    Args:
        R: ``(V, 3, 3)`` or ``(B, V, 3, 3)`` world-to-camera rotations (orthonormal, det +1).
        num_frames: ``L``.
        num_joints: ``J`` (root included), giving ``C = 2 (J + 1)`` channels.
        batch: ``B``; defaults to 1 for ``R (V, 3, 3)`` and to ``R.shape[0]`` otherwise.
        generator: torch generator on ``device``; the draw depends only on ``(B, L, J)``, not
            on the views, so the same seed gives the same 3D noise for any rig.
        dtype: defaults to ``R``'s floating dtype for a tensor, float32 otherwise.
        device: defaults to ``R``'s device for a tensor, the CPU otherwise.

    Returns:
        ``(B, V, C, L)`` noise, channels-first like the model's input.
    """
    if dtype is None:
        dtype = R.dtype if isinstance(R, torch.Tensor) and R.is_floating_point() else torch.float32
    if device is None:
        device = R.device if isinstance(R, torch.Tensor) else torch.device("cpu")
    R = torch.as_tensor(R, dtype=dtype, device=device)
    if R.ndim not in (3, 4) or tuple(R.shape[-2:]) != (3, 3):
        raise ValueError(f"R: expected shape (V, 3, 3) or (B, V, 3, 3), got {tuple(R.shape)}")
    if (
        isinstance(num_frames, bool)
        or not isinstance(num_frames, int | np.integer)
        or num_frames < 1
    ):
        raise ValueError(f"num_frames: expected an int >= 1, got {num_frames!r}")
    channels = feature_dim(num_joints)
    if R.ndim == 3:
        batch = 1 if batch is None else batch
        R = R.unsqueeze(0).expand(batch, -1, -1, -1)
    elif batch is None:
        batch = int(R.shape[0])
    elif batch != R.shape[0]:
        raise ValueError(f"batch: {batch} does not match R's batch dimension {R.shape[0]}")
    if isinstance(batch, bool) or not isinstance(batch, int | np.integer) or batch < 1:
        raise ValueError(f"batch: expected an int >= 1, got {batch!r}")

    identity = torch.eye(3, dtype=dtype, device=device)
    orthonormal = (R @ R.transpose(-1, -2) - identity).abs().amax() <= _ROTATION_TOLERANCE
    proper = (torch.linalg.det(R) > 0).all()
    if not bool(orthonormal & proper):
        raise ValueError("R: expected proper rotation matrices (orthonormal, det +1)")

    points = torch.randn(
        (batch, num_frames, num_joints + 1, 3), generator=generator, dtype=dtype, device=device
    )
    # (B, V, 2, 3) x (B, L, P, 3) -> (B, V, L, P, 2): camera x and y of every point.
    in_views = torch.einsum("bvij,blpj->bvlpi", R[..., :2, :], points)
    num_views = int(R.shape[1])
    return in_views.reshape(batch, num_views, num_frames, channels).transpose(-1, -2)
