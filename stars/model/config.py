"""Model configuration and the named size presets (written once, used everywhere)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal


@dataclass(frozen=True)
class ModelConfig:
    """The MAMP encoder-decoder (protocols.md §5-6).

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


PRESETS: dict[str, ModelConfig] = {
    # The paper / released configuration (NTU-60: 8 encoder, 5 decoder blocks).
    "paper": ModelConfig(),
    "paper_dec3": ModelConfig(decoder_depth=3),
    # Minutes on a 2-core CPU: the demo and the CPU-sized real-data checks.
    "small": ModelConfig(
        dim=64,
        depth=4,
        num_heads=4,
        decoder_dim=64,
        decoder_depth=2,
        decoder_heads=4,
        num_frames=32,
    ),
    # Seconds: tests.
    "tiny": ModelConfig(
        dim=32,
        depth=2,
        num_heads=2,
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=2,
        num_frames=32,
    ),
}


def preset(name: str, **overrides: object) -> ModelConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; presets: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)
