"""Hyper-parameters of the two denoisers (DESIGN 2.4), saved inside checkpoints as a plain dict.

:class:`ModelConfig` is frozen and validated on construction. Sizes come from named profiles:

- ``"tiny"``: trains on a 2-core CPU in minutes (4 layers, width 128, pointmaps encoded at 56 px
  with a narrow ResNet).
- ``"small"``: a middle size for a single GPU or a patient CPU.
- ``"paper"``: the reference size (8 layers, width 512, 4 heads, feed-forward 1024, dropout 0.1,
  224 px pointmaps through a ResNet-18 with widths 64-128-256-512).

Example::

    cfg = ModelConfig.profile("tiny", "smpl22")
    cfg.feature_dim  # 46 = 2 * (22 + 1)
    ModelConfig.from_dict(cfg.to_dict()) == cfg  # True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mocap_core.joint_sets import get_joint_set

# The motion representation (DESIGN 2.2) needs joint 0 to be the root, so only these layouts
# can be modelled; raw ``coco17`` must first get its pelvis (``joint_sets.add_pelvis``).
MODEL_JOINT_SETS: tuple[str, ...] = ("smpl22", "coco17_pelvis")

ACTIVATIONS: tuple[str, ...] = ("gelu", "relu")

# The pointmap encoder always ends on a 7 x 7 grid, i.e. this many memory tokens.
POINTMAP_GRID = 7
NUM_POINTMAP_TOKENS = POINTMAP_GRID * POINTMAP_GRID

_PROFILES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        d_model=128,
        num_layers=4,
        num_heads=4,
        ff_dim=256,
        dropout=0.1,
        pointmap_input_size=56,
        pointmap_channels=(16, 32, 64, 128),
    ),
    "small": dict(
        d_model=256,
        num_layers=6,
        num_heads=4,
        ff_dim=512,
        dropout=0.1,
        pointmap_input_size=112,
        pointmap_channels=(32, 64, 128, 256),
    ),
    "paper": dict(
        d_model=512,
        num_layers=8,
        num_heads=4,
        ff_dim=1024,
        dropout=0.1,
        pointmap_input_size=224,
        pointmap_channels=(64, 128, 256, 512),
    ),
}

PROFILES: tuple[str, ...] = tuple(_PROFILES)

# Keys of ``to_dict`` that are derived from the fields rather than stored.
_DERIVED_KEYS = ("num_joints", "feature_dim")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the stage-1 and stage-2 denoisers.

    Attributes:
        joint_set: ``"smpl22"`` or ``"coco17_pelvis"`` (joint 0 is the root).
        d_model: transformer width.
        num_layers: decoder layers.
        num_heads: attention heads (``d_model`` must be divisible by it).
        ff_dim: feed-forward hidden width.
        dropout: dropout on token embeddings, attention weights, sublayer outputs and the FFN.
        activation: FFN activation, ``"gelu"`` or ``"relu"``.
        max_frames: longest window the positional encoding covers (300 = 10 s at 30 fps).
        pointmap_size: side of the input pointmaps, pixels (224 in the paper).
        pointmap_input_size: side the encoder area-resamples the map to before its ResNet
            (equal to ``pointmap_size`` for the paper; smaller to make the CPU profile cheap).
        pointmap_channels: widths of the four ResNet stages.
        pointmap_scale_m: length scale of the pointmap input transform ``asinh(xyz / scale)``,
            metres.
        use_pointmap: cross-attend to the pointmap tokens (the ground-prior ablation turns it off).
        use_camera_embedding: add the tilt/roll/height and intrinsics embeddings to the
            diffusion-step token.
        cond_drop_prob: classifier-free-guidance drop probability of each condition, per sample
            (per view for per-view conditions), in training mode.
        num_views: views of the stage-2 model (V0 plus the virtual views).
    """

    joint_set: str
    d_model: int
    num_layers: int
    num_heads: int
    ff_dim: int
    dropout: float = 0.1
    activation: str = "gelu"
    max_frames: int = 300
    pointmap_size: int = 224
    pointmap_input_size: int = 224
    pointmap_channels: tuple[int, int, int, int] = field(default=(64, 128, 256, 512))
    pointmap_scale_m: float = 10.0
    use_pointmap: bool = True
    use_camera_embedding: bool = True
    cond_drop_prob: float = 0.1
    num_views: int = 4

    def __post_init__(self) -> None:
        # Lists arrive from JSON/YAML round trips; keep the stored value hashable.
        object.__setattr__(self, "pointmap_channels", tuple(self.pointmap_channels))
        self._validate()

    def _validate(self) -> None:
        if self.joint_set not in MODEL_JOINT_SETS:
            raise ValueError(
                f"joint_set {self.joint_set!r} cannot be modelled; known: {list(MODEL_JOINT_SETS)}"
            )
        for name in ("d_model", "num_layers", "num_heads", "ff_dim", "max_frames", "num_views"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.d_model % self.num_heads != 0:
            raise ValueError(
                f"d_model {self.d_model} is not divisible by num_heads {self.num_heads}"
            )
        if self.d_model % 2 != 0:
            raise ValueError(f"d_model must be even for sinusoidal encodings, got {self.d_model}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} unknown; known: {list(ACTIVATIONS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.cond_drop_prob <= 1.0:
            raise ValueError(f"cond_drop_prob must be in [0, 1], got {self.cond_drop_prob}")
        if not POINTMAP_GRID <= self.pointmap_input_size <= self.pointmap_size:
            raise ValueError(
                f"pointmap_input_size must be in [{POINTMAP_GRID}, pointmap_size="
                f"{self.pointmap_size}], got {self.pointmap_input_size}"
            )
        channels = self.pointmap_channels
        if len(channels) != 4 or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels
        ):
            raise ValueError(
                f"pointmap_channels must be four positive integers, got {self.pointmap_channels}"
            )
        if not self.pointmap_scale_m > 0:
            raise ValueError(f"pointmap_scale_m must be positive, got {self.pointmap_scale_m}")

    @property
    def num_joints(self) -> int:
        """Joints of ``joint_set`` (22 for smpl22, 18 for coco17_pelvis)."""
        return get_joint_set(self.joint_set).num_joints

    @property
    def feature_dim(self) -> int:
        """Channels per view and frame: 2 * (J + 1) (root, J - 1 local joints, scale twice)."""
        return 2 * (self.num_joints + 1)

    @classmethod
    def profile(cls, name: str, joint_set: str, **overrides: Any) -> ModelConfig:
        """The named size profile for ``joint_set``, with any field overridden.

        Raises:
            ValueError: unknown profile (the message lists the profiles) or an invalid field.
        """
        if name not in _PROFILES:
            raise ValueError(f"unknown model profile {name!r}; known: {list(PROFILES)}")
        return cls(joint_set=joint_set, **{**_PROFILES[name], **overrides})

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of builtins (lists, not tuples), with the derived sizes for readers."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["pointmap_channels"] = list(self.pointmap_channels)
        out["num_joints"] = self.num_joints
        out["feature_dim"] = self.feature_dim
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: unknown keys, or derived sizes that disagree with the joint set.
        """
        if not isinstance(data, dict):
            raise TypeError(f"ModelConfig.from_dict needs a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known - set(_DERIVED_KEYS)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
        config = cls(**{k: v for k, v in data.items() if k in known})
        for key in _DERIVED_KEYS:
            if key in data and data[key] != getattr(config, key):
                raise ValueError(
                    f"stored {key}={data[key]} disagrees with joint set {config.joint_set!r} "
                    f"({key}={getattr(config, key)})"
                )
        return config
