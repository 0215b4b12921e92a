"""The two denoisers of the method (DESIGN 2.3-2.4): stage-1 single view, stage-2 multi-view.

Both predict the clean sample ``x0`` from a noisy, z-score normalised motion (DESIGN 2.2)
``x (B, [V,] C, L)`` with ``C = 2 (J + 1)`` channels and ``L`` frames, given the diffusion
step and the view's conditions.

Tokens and layers (post-norm, written here so that stage 2 can interleave its blocks):

- sequence ``[t-token, frame_1 .. frame_L]`` of width ``d``; frames come from ``Linear(C -> d)``,
  the t-token is ``MLP(sinusoid(t))`` plus the zero-initialised camera embeddings
  ``Linear(3 -> d)(rt)`` and ``Linear(4 -> d)(k)``; sinusoidal positions (t-token at position 0)
  and dropout; a key-padding mask from ``lengths`` hides padded frames (never the t-token);
- per layer: temporal self-attention, cross-attention to the 49 pointmap tokens, FFN, each
  followed by residual + LayerNorm;
- readout ``Linear(d -> C)`` per frame; the t-token is dropped.

Conditions and classifier-free guidance (CFG):

- ``rt (.., 3)`` camera tilt, roll (radians) and height (metres) and ``k (.., 4)`` the padded
  intrinsics divided by a fixed scale, both as computed by the data pipeline (DESIGN 2.3).
- ``pointmap (.., P, P, 3)`` world XYZ of each pixel's ground hit (metres, y-up, 0 = no hit),
  encoded by :class:`PointmapEncoder` into 49 tokens.
- A dropped condition contributes nothing: a dropped ``rt``/``k`` embedding is zeroed (bias
  included) and a dropped pointmap is replaced by 49 learned "no pointmap" tokens, so the
  cross-attention always runs and a batch can mix samples with and without a ground prior.
  Passing ``None`` drops the condition for every sample.
- In training mode each condition is dropped per sample (per view in stage 2) with
  probability ``config.cond_drop_prob``. This drops a condition as a whole; the reference
  draws its mask over the condition's second axis, which zeroes single channels of ``rt``/
  ``k``, single rows of the pointmap, or single feature channels of the V0 observation
  (method-notes 4.3). Whole-condition dropping is the deliberate simplification: it trains
  exactly the unconditional model that CFG sampling and unknown-camera 2D data need.
- ``cond_mask`` forces drops: ``{"rt": (B,) bool, ...}`` with True = drop, OR-ed with the
  random training drops (2D tracks without a camera pass True for rt, k and pointmap).

Stage 2 (:class:`MultiViewDenoiser`) keeps every stage-1 module under the same name and adds,
per layer, zero-initialised cross-view attention on the motion tokens and on the pointmap
tokens, and two zero-initialised embeddings of V0's observed encodings. At initialisation it
computes exactly the stage-1 model on each view (:meth:`MultiViewDenoiser.from_single_view`).

Nothing in a forward pass synchronises with the host (no ``.item()``, no data-dependent
shapes), so the models run under CUDA autocast and DDP. For DDP without
``find_unused_parameters``: ``rt``/``k``/``obs_*`` given as None still run their layers on
zeros, but a None pointmap skips the encoder; pass a zero map plus ``cond_mask`` instead when a
batch may lack pointmaps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mocap_core.model_config import NUM_POINTMAP_TOKENS, POINTMAP_GRID, ModelConfig

__all__ = [
    "DenoiserLayer",
    "CrossViewBlock",
    "MultiViewDenoiser",
    "PointmapEncoder",
    "SingleViewDenoiser",
    "TimestepEmbedding",
    "count_parameters",
    "sinusoidal_embedding",
]

# Conditions of each model; ``cond_mask`` keys must come from these.
SINGLE_VIEW_CONDITIONS: tuple[str, ...] = ("rt", "k", "pointmap")
MULTI_VIEW_CONDITIONS: tuple[str, ...] = ("rt", "k", "pointmap", "obs_global", "obs_local")
# Stage-2 conditions that exist once per view; the others exist once per sample.
_PER_VIEW_CONDITIONS = frozenset({"rt", "k", "pointmap"})

RT_DIM = 3
K_DIM = 4

# Conv init of the pointmap ResNet: N(0, 0.001) as in the reference. BatchNorm follows every
# conv, so the scale only matters relative to BatchNorm's eps.
_CONV_INIT_STD = 1e-3
_MAX_PERIOD = 10000.0


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``model`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def sinusoidal_embedding(positions: Tensor, dim: int) -> Tensor:
    """Transformer sinusoids of (possibly fractional) positions.

    Args:
        positions: ``(N,)`` positions or diffusion steps, any real dtype.
        dim: even embedding width.

    Returns:
        ``(N, dim) float32``: ``[sin(p w_i), cos(p w_i)]`` with ``w_i = 10000^(-i / (dim/2))``.
    """
    if dim % 2 != 0:
        raise ValueError(f"sinusoidal embedding width must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(_MAX_PERIOD)
        * torch.arange(half, dtype=torch.float32, device=positions.device)
        / half
    )
    angles = positions.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def _zero_linear(in_features: int, out_features: int) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class TimestepEmbedding(nn.Module):
    """Diffusion step -> token: sinusoid -> Linear -> SiLU -> Linear.

    ``forward(timesteps (N,) int or float) -> (N, d_model)``.
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.mlp = nn.Sequential(
            nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model)
        )

    def forward(self, timesteps: Tensor) -> Tensor:
        first = self.mlp[0]
        assert isinstance(first, nn.Linear)
        # The float32 sinusoids follow the weights (float64 models); autocast handles fp16.
        return self.mlp(sinusoidal_embedding(timesteps, self.d_model).to(first.weight.dtype))


class _MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with separate query and key/value projections.

    ``forward(query (N, Lq, d), key_value (N, Lk, d), attend (N, 1, 1, Lk) bool | None)
    -> (N, Lq, d)``; ``attend`` is True where a key may be attended to.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(d_model, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        # Same init as torch's MultiheadAttention: Xavier projections, zero biases.
        for layer in (self.q_proj, self.kv_proj, self.out_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, query: Tensor, key_value: Tensor, attend: Tensor | None = None) -> Tensor:
        n, lq, d = query.shape
        lk = key_value.shape[1]
        q = self.q_proj(query).view(n, lq, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv_proj(key_value).view(n, lk, 2, self.num_heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attend, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out_proj(out.transpose(1, 2).reshape(n, lq, d))


class DenoiserLayer(nn.Module):
    """Post-norm decoder layer: temporal self-attention, pointmap cross-attention, FFN.

    ``forward(tokens (N, L+1, d), memory (N, 49, d) | None, attend (N, 1, 1, L+1) bool | None)
    -> (N, L+1, d)``. Without ``use_pointmap`` there is no cross-attention sublayer (the
    reference's encoder layer).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.d_model
        self.self_attn = _MultiHeadAttention(d, config.num_heads, config.dropout)
        self.norm_self = nn.LayerNorm(d)
        self.cross_attn: _MultiHeadAttention | None = None
        self.norm_cross: nn.LayerNorm | None = None
        if config.use_pointmap:
            self.cross_attn = _MultiHeadAttention(d, config.num_heads, config.dropout)
            self.norm_cross = nn.LayerNorm(d)
        self.ff_in = nn.Linear(d, config.ff_dim)
        self.ff_out = nn.Linear(config.ff_dim, d)
        self.norm_ff = nn.LayerNorm(d)
        self.activation = nn.GELU() if config.activation == "gelu" else nn.ReLU()
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, tokens: Tensor, memory: Tensor | None, attend: Tensor | None) -> Tensor:
        h = self.norm_self(tokens + self.dropout(self.self_attn(tokens, tokens, attend)))
        if self.cross_attn is not None and self.norm_cross is not None:
            if memory is None:
                raise ValueError("a pointmap model layer needs memory tokens")
            h = self.norm_cross(h + self.dropout(self.cross_attn(h, memory)))
        ff = self.ff_out(self.dropout(self.activation(self.ff_in(h))))
        return self.norm_ff(h + self.dropout(ff))


class CrossViewBlock(nn.Module):
    """Zero-initialised attention across views: ``x + ZeroLinear(Dropout(MHA(LN(x))))``.

    ``forward(tokens (N, V, d)) -> (N, V, d)``, attending over the V tokens of each row (the
    same frame, or the same pointmap cell, in every view). The zero linear makes the block
    exactly the identity at init.

    A deliberate change from the reference's ``x + LN(ZeroLinear(...))``: a LayerNorm after
    the zero linear rescales its first tiny outputs to unit size, so the branch switches fully
    on within a few steps, before it has learned anything (stage-2 validation loss rose from
    0.21 to 0.39 over the first 50 steps). With the norm in front, the branch grows with its
    weights and fine-tuning starts smoothly from the stage-1 model.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.d_model
        self.attn = _MultiHeadAttention(d, config.num_heads, config.dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.out = _zero_linear(d, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, tokens: Tensor) -> Tensor:
        normed = self.norm(tokens)
        return tokens + self.out(self.dropout(self.attn(normed, normed)))


class _BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BatchNorm, identity or 1x1-conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


def _pointmap_strides(input_size: int) -> tuple[int, ...]:
    """Strides of (conv1, max-pool, stage 2, stage 3, stage 4) that bring ``input_size`` to
    no less than 7 cells: ResNet-18's five halvings for 224, the late ones dropped first for
    smaller inputs (56 px: conv1, pool, stage 2), so the cheap early layers keep their
    downsampling and the grid never falls below 7 x 7."""
    halvings = min(5, int(math.floor(math.log2(input_size / POINTMAP_GRID))))
    return tuple(2 if i < halvings else 1 for i in range(5))


class PointmapEncoder(nn.Module):
    """ResNet-18-shaped CNN, trained from scratch, from a ground pointmap to 49 tokens.

    Input transform: ``asinh(xyz / config.pointmap_scale_m)`` (10 m by default), linear for
    the nearby ground and logarithmic for the far hits near the horizon (which reach hundreds of
    metres), keeping the "no hit" zeros at zero; then an area resample (average pooling) from
    ``pointmap_size`` to ``pointmap_input_size``. Layout: conv 7x7 stride 2, BN, ReLU, 3x3
    max-pool, four stages of two basic blocks with ``config.pointmap_channels`` widths; the
    strides follow :func:`_pointmap_strides`, a final adaptive average pool makes the grid
    7 x 7 whatever the input size, and ``Linear(channels[-1] -> d_model)`` projects each cell.
    The tokens carry no positional encoding (as in the reference).

    ``forward(pointmap (N, P, P, 3) float, metres, world, y-up) -> (N, 49, d_model)``, tokens in
    row-major grid order.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.map_size = config.pointmap_size
        self.input_size = config.pointmap_input_size
        self.scale_m = float(config.pointmap_scale_m)
        c1, c2, c3, c4 = config.pointmap_channels
        s_conv, s_pool, s2, s3, s4 = _pointmap_strides(self.input_size)
        self.conv1 = nn.Conv2d(3, c1, 7, s_conv, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.pool = nn.MaxPool2d(3, s_pool, 1)
        self.layer1 = nn.Sequential(_BasicBlock(c1, c1, 1), _BasicBlock(c1, c1, 1))
        self.layer2 = nn.Sequential(_BasicBlock(c1, c2, s2), _BasicBlock(c2, c2, 1))
        self.layer3 = nn.Sequential(_BasicBlock(c2, c3, s3), _BasicBlock(c3, c3, 1))
        self.layer4 = nn.Sequential(_BasicBlock(c3, c4, s4), _BasicBlock(c4, c4, 1))
        self.proj = nn.Linear(c4, config.d_model)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, _CONV_INIT_STD)

    def forward(self, pointmap: Tensor) -> Tensor:
        if pointmap.ndim != 4 or pointmap.shape[1:] != (self.map_size, self.map_size, 3):
            raise ValueError(
                f"pointmap must be (N, {self.map_size}, {self.map_size}, 3), "
                f"got {tuple(pointmap.shape)}"
            )
        x = torch.asinh(pointmap.permute(0, 3, 1, 2) / self.scale_m)
        if self.map_size != self.input_size:
            x = F.adaptive_avg_pool2d(x, self.input_size)
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if x.shape[-1] != POINTMAP_GRID or x.shape[-2] != POINTMAP_GRID:
            x = F.adaptive_avg_pool2d(x, POINTMAP_GRID)
        return self.proj(x.flatten(2).transpose(1, 2))


def _as_bool_mask(value: object, name: str, shape: tuple[int, ...], device: torch.device) -> Tensor:
    mask = torch.as_tensor(value, device=device)
    if mask.dtype != torch.bool:
        raise TypeError(f"cond_mask[{name!r}] must be boolean, got {mask.dtype}")
    if mask.shape != shape:
        raise ValueError(f"cond_mask[{name!r}] must have shape {shape}, got {tuple(mask.shape)}")
    return mask


def _check_shape(name: str, tensor: Tensor | None, shape: tuple[int, ...]) -> None:
    if tensor is not None and tuple(tensor.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")


class _DenoiserBase(nn.Module):
    """Modules shared by both stages, with the token plumbing; the subclasses' ``forward``
    fold their batch layout into rows of ``N`` single-view sequences."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
        self.config = config
        d = config.d_model
        self.input_proj = nn.Linear(config.feature_dim, d)
        self.time_embed = TimestepEmbedding(d)
        self.embed_rt: nn.Linear | None = None
        self.embed_k: nn.Linear | None = None
        if config.use_camera_embedding:
            self.embed_rt = _zero_linear(RT_DIM, d)
            self.embed_k = _zero_linear(K_DIM, d)
        self.pointmap_encoder: PointmapEncoder | None = None
        self.null_pointmap_tokens: nn.Parameter | None = None
        if config.use_pointmap:
            self.pointmap_encoder = PointmapEncoder(config)
            self.null_pointmap_tokens = nn.Parameter(0.02 * torch.randn(NUM_POINTMAP_TOKENS, d))
        self.register_buffer(
            "positional_encoding",
            sinusoidal_embedding(torch.arange(config.max_frames + 1), d),
            persistent=False,
        )
        self.token_dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(DenoiserLayer(config) for _ in range(config.num_layers))
        self.output_proj = nn.Linear(d, config.feature_dim)

    # -- conditions -------------------------------------------------------------------------

    def _drop_masks(
        self,
        names: tuple[str, ...],
        shapes: Mapping[str, tuple[int, ...]],
        cond_mask: Mapping[str, object] | None,
        device: torch.device,
    ) -> dict[str, Tensor]:
        """Per condition, a bool tensor of ``shapes[name]``: True = dropped (forced or drawn)."""
        cond_mask = dict(cond_mask or {})
        unknown = set(cond_mask) - set(names)
        if unknown:
            raise ValueError(f"unknown cond_mask keys {sorted(unknown)}; known: {list(names)}")
        p = self.config.cond_drop_prob
        drops = {}
        for name in names:
            shape = shapes[name]
            if name in cond_mask:
                forced = cond_mask[name]
                given = torch.as_tensor(forced, device=device)
                # A per-sample (B,) mask of a per-view condition covers all its views.
                if len(shape) == 2 and given.ndim == 1:
                    forced = given[:, None].expand(shape)
                drop = _as_bool_mask(forced, name, shape, device)
            else:
                drop = torch.zeros(shape, dtype=torch.bool, device=device)
            if self.training and p > 0:
                drop = drop | (torch.rand(shape, device=device) < p)
            drops[name] = drop
        return drops

    def _condition_token(
        self,
        timesteps: Tensor,
        rt: Tensor | None,
        k: Tensor | None,
        drop_rt: Tensor,
        drop_k: Tensor,
    ) -> Tensor:
        """``(N, d)`` diffusion-step token with the kept camera embeddings added."""
        token = self.time_embed(timesteps)
        for values, drop, layer, width in (
            (rt, drop_rt, self.embed_rt, RT_DIM),
            (k, drop_k, self.embed_k, K_DIM),
        ):
            if layer is None:
                continue
            if values is None:
                # Zeros keep the layer in the graph (static for DDP); the whole row is dropped.
                values = token.new_zeros(token.shape[0], width)
                drop = torch.ones_like(drop)
            embedding = layer(values.to(layer.weight.dtype))
            token = token + torch.where(drop[:, None], torch.zeros_like(embedding), embedding)
        return token

    def _memory(self, pointmap: Tensor | None, drop: Tensor, like: Tensor) -> Tensor | None:
        """``(N, 49, d)`` pointmap tokens, the learned null tokens where dropped or absent."""
        if self.pointmap_encoder is None or self.null_pointmap_tokens is None:
            return None
        n = drop.shape[0]
        if pointmap is None:
            null = self.null_pointmap_tokens.to(like.dtype)
            return null[None].expand(n, -1, -1)
        tokens = self.pointmap_encoder(pointmap)
        null = self.null_pointmap_tokens.to(tokens.dtype)
        return torch.where(drop[:, None, None], null[None], tokens)

    # -- tokens -----------------------------------------------------------------------------

    def _check_frames(self, num_frames: int) -> None:
        if num_frames > self.config.max_frames:
            raise ValueError(
                f"{num_frames} frames exceed the model's max_frames={self.config.max_frames}"
            )

    @staticmethod
    def _frame_valid(
        lengths: Tensor | None, num_frames: int, device: torch.device
    ) -> Tensor | None:
        """``(n, L)`` bool, True on frames before each sample's length; None if unpadded."""
        if lengths is None:
            return None
        frames = torch.arange(num_frames, device=device)
        return frames[None, :] < lengths.to(device)[:, None]

    def _embed_frames(self, x: Tensor, frame_valid: Tensor | None) -> Tensor:
        """``x (N, C, L)`` -> ``(N, L, d)``; padded frames are zeroed first so that garbage
        (even NaN) there cannot leak through the masked attention (0 weight x NaN = NaN)."""
        if frame_valid is not None:
            x = torch.where(frame_valid[:, None, :], x, torch.zeros_like(x))
        return self.input_proj(x.transpose(1, 2))

    def _sequence(self, cond_token: Tensor, frame_tokens: Tensor) -> Tensor:
        """``[t-token, frames] + positions``, dropout: ``(N, d), (N, L, d) -> (N, L+1, d)``."""
        tokens = torch.cat([cond_token[:, None, :].to(frame_tokens.dtype), frame_tokens], dim=1)
        positions = self.positional_encoding[: tokens.shape[1]].to(tokens.dtype)
        return self.token_dropout(tokens + positions[None])

    @staticmethod
    def _attend_mask(frame_valid: Tensor | None) -> Tensor | None:
        """``(N, 1, 1, L+1)`` keys that may be attended to; the t-token always may."""
        if frame_valid is None:
            return None
        keep_t = torch.ones_like(frame_valid[:, :1])
        return torch.cat([keep_t, frame_valid], dim=1)[:, None, None, :]

    def _readout(self, tokens: Tensor) -> Tensor:
        """``(N, L+1, d) -> (N, C, L)``, the t-token dropped."""
        return self.output_proj(tokens[:, 1:]).transpose(1, 2)


class SingleViewDenoiser(_DenoiserBase):
    """Stage 1: predicts ``x0`` of one view's motion (DESIGN 2.4).

    Example::

        model = SingleViewDenoiser(ModelConfig.profile("tiny", "smpl22"))
        x0 = model(x_t, t, lengths=lengths, rt=rt, k=k, pointmap=pointmap)
    """

    def forward(
        self,
        x: Tensor,
        timesteps: Tensor,
        *,
        lengths: Tensor | None = None,
        rt: Tensor | None = None,
        k: Tensor | None = None,
        pointmap: Tensor | None = None,
        cond_mask: Mapping[str, object] | None = None,
    ) -> Tensor:
        """Predict the clean sample.

        Args:
            x: ``(B, C, L)`` noisy normalised features, ``C = config.feature_dim``,
                ``L <= config.max_frames``.
            timesteps: ``(B,)`` diffusion steps (int; float accepted).
            lengths: ``(B,)`` int valid frames per sample (frames ``>= length`` are padding);
                None = all valid. Values are not checked (that would sync with the device).
            rt: ``(B, 3)`` camera tilt, roll (rad), height (m); None = dropped.
            k: ``(B, 4)`` padded intrinsics / fixed scale; None = dropped.
            pointmap: ``(B, P, P, 3)`` ground pointmap, metres, world y-up; None = dropped.
            cond_mask: ``{"rt" | "k" | "pointmap": (B,) bool}``, True forces the drop.

        Returns:
            ``(B, C, L)`` predicted ``x0``, in ``x``'s dtype under autocast's rules. Padded
            frames hold finite values of no meaning.

        Conditions are ignored when the config turns their embedding off.
        """
        if x.ndim != 3 or x.shape[1] != self.config.feature_dim:
            raise ValueError(
                f"x must be (B, {self.config.feature_dim}, L) for joint set "
                f"{self.config.joint_set!r}, got {tuple(x.shape)}"
            )
        b, _, num_frames = x.shape
        self._check_frames(num_frames)
        _check_shape("timesteps", timesteps, (b,))
        _check_shape("lengths", lengths, (b,))
        _check_shape("rt", rt, (b, RT_DIM))
        _check_shape("k", k, (b, K_DIM))
        drops = self._drop_masks(
            SINGLE_VIEW_CONDITIONS, dict.fromkeys(SINGLE_VIEW_CONDITIONS, (b,)), cond_mask, x.device
        )
        frame_valid = self._frame_valid(lengths, num_frames, x.device)
        frame_tokens = self._embed_frames(x, frame_valid)
        cond_token = self._condition_token(timesteps, rt, k, drops["rt"], drops["k"])
        tokens = self._sequence(cond_token, frame_tokens)
        memory = self._memory(pointmap, drops["pointmap"], tokens)
        attend = self._attend_mask(frame_valid)
        for layer in self.layers:
            tokens = layer(tokens, memory, attend)
        return self._readout(tokens)


class MultiViewDenoiser(_DenoiserBase):
    """Stage 2: predicts ``x0`` of all V views at once, conditioned on V0's observation.

    Every stage-1 module keeps its name; new are, per layer, ``motion_view_blocks[i]`` and
    ``pointmap_view_blocks[i]`` (:class:`CrossViewBlock`, run before ``layers[i]``), and the
    zero-initialised ``embed_obs_global`` / ``embed_obs_local`` (``Linear(d -> d)`` after the
    shared ``input_proj``), added to every view's frame tokens before the positions. There is
    no view-index embedding: views differ by their camera conditions only.

    Views are folded into the batch for the per-view layers (``B*V`` rows) and time (or the
    pointmap cell) into the batch for the cross-view attention (``B*(L+1)`` rows of V tokens).
    The number of views is read from the input; ``config.num_views`` is what the data
    pipeline should feed.
    """

    # State-dict key prefixes that stage 1 does not have.
    STAGE2_PREFIXES: tuple[str, ...] = (
        "motion_view_blocks.",
        "pointmap_view_blocks.",
        "embed_obs_global.",
        "embed_obs_local.",
    )

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        d = config.d_model
        self.motion_view_blocks = nn.ModuleList(
            CrossViewBlock(config) for _ in range(config.num_layers)
        )
        self.pointmap_view_blocks: nn.ModuleList | None = None
        if config.use_pointmap:
            self.pointmap_view_blocks = nn.ModuleList(
                CrossViewBlock(config) for _ in range(config.num_layers)
            )
        self.embed_obs_global = _zero_linear(d, d)
        self.embed_obs_local = _zero_linear(d, d)

    def stage2_keys(self) -> list[str]:
        """State-dict keys that are new in stage 2 (absent from a stage-1 checkpoint)."""
        return [k for k in self.state_dict() if k.startswith(self.STAGE2_PREFIXES)]

    @classmethod
    def from_single_view(
        cls,
        stage1: SingleViewDenoiser | Mapping[str, Tensor],
        config: ModelConfig | None = None,
    ) -> MultiViewDenoiser:
        """Stage-2 model initialised from stage-1 weights.

        Args:
            stage1: a :class:`SingleViewDenoiser` or its ``state_dict()``.
            config: stage-2 config; defaults to the stage-1 model's config. Its architecture
                must match stage 1 (dropout, ``cond_drop_prob``, ``num_views`` and
                ``max_frames`` may differ).

        Returns:
            A new model (on the CPU, float32) whose every view's output equals the stage-1 output on that view (exactly,
            up to float rounding, in eval mode) until the zero-initialised parts train.

        Raises:
            ValueError: a checkpoint of another joint set / feature dim or architecture, or
                keys other than the stage-2 ones missing or left over.
        """
        if isinstance(stage1, SingleViewDenoiser):
            state = stage1.state_dict()
            if config is None:
                config = stage1.config
            else:
                free = ("dropout", "cond_drop_prob", "num_views", "max_frames")
                a = {k: v for k, v in stage1.config.to_dict().items() if k not in free}
                b = {k: v for k, v in config.to_dict().items() if k not in free}
                diff = sorted(k for k in a if a[k] != b[k])
                if diff:
                    raise ValueError(
                        "stage-2 config differs from the stage-1 model's in "
                        + ", ".join(f"{k} ({a[k]!r} vs {b[k]!r})" for k in diff)
                    )
        elif isinstance(stage1, Mapping):
            if config is None:
                raise ValueError("a config is needed to build stage 2 from a bare state dict")
            state = dict(stage1)
        else:
            raise TypeError(
                f"stage1 must be a SingleViewDenoiser or a state dict, got {type(stage1).__name__}"
            )
        model = cls(config)
        expected = model.state_dict()
        weight = state.get("input_proj.weight")
        if weight is not None and tuple(weight.shape) != tuple(expected["input_proj.weight"].shape):
            raise ValueError(
                f"stage-1 weights take {weight.shape[1]} features per frame with width "
                f"{weight.shape[0]}, but the config (joint set {config.joint_set!r}) expects "
                f"feature_dim={config.feature_dim}, d_model={config.d_model}"
            )
        new_keys = set(model.stage2_keys())
        unexpected = sorted(set(state) - set(expected))
        missing = sorted(set(expected) - set(state) - new_keys)
        present_new = sorted(new_keys & set(state))
        if unexpected or missing or present_new:
            raise ValueError(
                "state dict does not match a stage-1 model of this config: "
                f"unexpected {unexpected[:8]}, missing {missing[:8]}, "
                f"already has stage-2 keys {present_new[:8]}"
            )
        mismatched = [
            f"{key} {tuple(value.shape)} vs {tuple(expected[key].shape)}"
            for key, value in state.items()
            if tuple(value.shape) != tuple(expected[key].shape)
        ]
        if mismatched:
            raise ValueError(f"stage-1 weights have other shapes: {mismatched[:8]}")
        result = model.load_state_dict(state, strict=False)
        # Guaranteed by the checks above; kept as the invariant this loader promises.
        assert set(result.missing_keys) == new_keys and not result.unexpected_keys
        return model

    def forward(
        self,
        x: Tensor,
        timesteps: Tensor,
        *,
        lengths: Tensor | None = None,
        rt: Tensor | None = None,
        k: Tensor | None = None,
        pointmap: Tensor | None = None,
        obs_global: Tensor | None = None,
        obs_local: Tensor | None = None,
        cond_mask: Mapping[str, object] | None = None,
    ) -> Tensor:
        """Predict the clean sample of every view.

        Args:
            x: ``(B, V, C, L)`` noisy normalised features of all views (V0 first).
            timesteps: ``(B,)`` diffusion steps, shared by the views of a sample.
            lengths: ``(B,)`` int valid frames per sample; None = all valid.
            rt: ``(B, V, 3)`` per-view tilt, roll (rad), height (m); None = dropped.
            k: ``(B, V, 4)`` per-view padded intrinsics / fixed scale; None = dropped.
            pointmap: ``(B, V, P, P, 3)`` per-view ground pointmaps, metres; None = dropped.
            obs_global: ``(B, C, L)`` V0's observed global encoding, normalised; None = dropped.
            obs_local: ``(B, C, L)`` V0's observed local encoding, normalised; None = dropped.
            cond_mask: True forces the drop: ``rt``/``k``/``pointmap`` ``(B, V)`` (or ``(B,)``
                for all views of a sample), ``obs_global``/``obs_local`` ``(B,)``.

        Returns:
            ``(B, V, C, L)`` predicted ``x0``; padded frames hold finite values of no meaning.
        """
        cfg = self.config
        if x.ndim != 4 or x.shape[2] != cfg.feature_dim:
            raise ValueError(
                f"x must be (B, V, {cfg.feature_dim}, L) for joint set {cfg.joint_set!r}, "
                f"got {tuple(x.shape)}"
            )
        b, v, c, num_frames = x.shape
        self._check_frames(num_frames)
        _check_shape("timesteps", timesteps, (b,))
        _check_shape("lengths", lengths, (b,))
        _check_shape("rt", rt, (b, v, RT_DIM))
        _check_shape("k", k, (b, v, K_DIM))
        _check_shape("obs_global", obs_global, (b, c, num_frames))
        _check_shape("obs_local", obs_local, (b, c, num_frames))
        if pointmap is not None and (pointmap.ndim != 5 or pointmap.shape[:2] != (b, v)):
            raise ValueError(
                f"pointmap must be (B={b}, V={v}, P, P, 3), got {tuple(pointmap.shape)}"
            )
        shapes = {
            name: (b, v) if name in _PER_VIEW_CONDITIONS else (b,) for name in MULTI_VIEW_CONDITIONS
        }
        drops = self._drop_masks(MULTI_VIEW_CONDITIONS, shapes, cond_mask, x.device)
        n = b * v

        frame_valid = self._frame_valid(lengths, num_frames, x.device)
        frame_tokens = self._embed_frames(
            x.reshape(n, c, num_frames), _repeat_views(frame_valid, v)
        )
        obs_tokens = self._observation_tokens(
            obs_global, obs_local, drops, frame_valid, frame_tokens
        )
        frame_tokens = (frame_tokens.reshape(b, v, num_frames, -1) + obs_tokens[:, None]).reshape(
            n, num_frames, -1
        )
        cond_token = self._condition_token(
            timesteps[:, None].expand(b, v).reshape(n),
            None if rt is None else rt.reshape(n, RT_DIM),
            None if k is None else k.reshape(n, K_DIM),
            drops["rt"].reshape(n),
            drops["k"].reshape(n),
        )
        tokens = self._sequence(cond_token, frame_tokens)
        memory = self._memory(
            None if pointmap is None else pointmap.flatten(0, 1),
            drops["pointmap"].reshape(n),
            tokens,
        )
        attend = self._attend_mask(_repeat_views(frame_valid, v))
        pointmap_blocks = self.pointmap_view_blocks
        for i, layer in enumerate(self.layers):
            tokens = _across_views(self.motion_view_blocks[i], tokens, b, v)
            if memory is not None and pointmap_blocks is not None:
                memory = _across_views(pointmap_blocks[i], memory, b, v)
            tokens = layer(tokens, memory, attend)
        return self._readout(tokens).reshape(b, v, c, num_frames)

    def _observation_tokens(
        self,
        obs_global: Tensor | None,
        obs_local: Tensor | None,
        drops: Mapping[str, Tensor],
        frame_valid: Tensor | None,
        like: Tensor,
    ) -> Tensor:
        """``(B, L, d)`` sum of the kept V0 observation embeddings (zero where dropped)."""
        b = drops["obs_global"].shape[0]
        total = None
        for name, obs, layer in (
            ("obs_global", obs_global, self.embed_obs_global),
            ("obs_local", obs_local, self.embed_obs_local),
        ):
            drop = drops[name]
            if obs is None:
                # Zeros keep the layers in the graph (static for DDP); every row is dropped.
                obs = like.new_zeros(b, self.config.feature_dim, like.shape[1])
                drop = torch.ones_like(drop)
            embedding = layer(self._embed_frames(obs, frame_valid))
            embedding = torch.where(drop[:, None, None], torch.zeros_like(embedding), embedding)
            total = embedding if total is None else total + embedding
        assert total is not None
        return total


def _repeat_views(frame_valid: Tensor | None, num_views: int) -> Tensor | None:
    """``(B, L)`` -> ``(B*V, L)``, each sample's row repeated for its views."""
    if frame_valid is None:
        return None
    b, num_frames = frame_valid.shape
    return frame_valid[:, None].expand(b, num_views, num_frames).reshape(b * num_views, num_frames)


def _across_views(block: CrossViewBlock, tokens: Tensor, b: int, v: int) -> Tensor:
    """Apply ``block`` over views: ``(B*V, S, d)`` -> rows ``(B*S, V, d)`` -> back."""
    s, d = tokens.shape[1], tokens.shape[2]
    rows = tokens.reshape(b, v, s, d).transpose(1, 2).reshape(b * s, v, d)
    out = block(rows)
    return out.reshape(b, s, v, d).transpose(1, 2).reshape(b * v, s, d)
