"""Model configuration and the named size presets (written once, used everywhere)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal


@dataclass(frozen=True)
class ModelConfig:
    """The MAMP encoder-decoder (MAMP, Mao et al. ICCV 2023, Sec. 3; STARS paper Sec. 3.1).

    Attributes:
        dim, depth, num_heads: encoder width, blocks and attention heads.
        decoder_dim, decoder_depth, decoder_heads: the same for the decoder.
        num_frames: T of the input; ``patch_frames`` (l) frames x 1 joint form a token.
        num_joints: V; taken from the dataset when a job builds the model.
        mask_ratio: fraction of tokens hidden from the encoder.
        motion_tau: temperature of motion-aware masking; 0 means uniform random masking.
        target: ``motion`` (MAMP) or ``coords`` (MAE-style coordinate reconstruction).
        motion_stride: s in M[t] = X[t + s] - X[t] (released code: 1).
        norm_target: per-token target normalisation (mean 0, variance 1 over its values).
        drop_path: stochastic depth rate of the encoder (fine-tuning uses it).
    """

    dim: int = 256
    depth: int = 8
    num_heads: int = 8
    decoder_dim: int = 256
    decoder_depth: int = 5
    decoder_heads: int = 8
    mlp_ratio: float = 4.0
    num_frames: int = 120
    patch_frames: int = 4
    num_joints: int = 25
    in_channels: int = 3
    mask_ratio: float = 0.9
    motion_tau: float = 0.8
    target: Literal["motion", "coords"] = "motion"
    motion_stride: int = 1
    norm_target: bool = True
    drop_path: float = 0.0

    def __post_init__(self) -> None:
        if self.num_frames % self.patch_frames:
            raise ValueError(
                f"num_frames={self.num_frames} must be a multiple of "
                f"patch_frames={self.patch_frames}"
            )
        if self.dim % self.num_heads or self.decoder_dim % self.decoder_heads:
            raise ValueError("dim / decoder_dim must be divisible by their head counts")
        if not 0 <= self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.motion_tau < 0:
            raise ValueError("motion_tau must be >= 0 (0 = uniform masking)")

    @property
    def temporal_tokens(self) -> int:
        return self.num_frames // self.patch_frames

    @property
    def num_tokens(self) -> int:
        return self.temporal_tokens * self.num_joints

    @property
    def patch_values(self) -> int:
        return self.patch_frames * self.in_channels


def preset(name: str, **overrides: object) -> ModelConfig:
    """The model of the named preset (:mod:`stars.presets`), with ``overrides``."""
    from stars.presets import get_preset

    return replace(ModelConfig(**get_preset(name).model), **overrides)
