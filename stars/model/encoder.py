"""The skeleton transformer encoder: segment tokens, position embeddings, pre-norm blocks.

Input sequences are (N, M, T, V, 3): N samples of M actors. Each actor is encoded on its own
(a batch of N*M sequences); a token is ``l`` consecutive frames of one joint, linearly embedded
from its l x 3 values (ordered frame-in-segment major, coordinate minor).
"""

from __future__ import annotations

import torch
from torch import nn

from stars.model.config import ModelConfig
from stars.model.layers import Block, init_weights


def patchify(x: torch.Tensor, patch_frames: int) -> torch.Tensor:
    """(B, T, V, C) -> (B, T/l, V, l*C), values ordered (frame-in-segment, coordinate)."""
    B, T, V, C = x.shape
    x = x.reshape(B, T // patch_frames, patch_frames, V, C).permute(0, 1, 3, 2, 4)
    return x.reshape(B, T // patch_frames, V, patch_frames * C)


def actors_as_batch(x: torch.Tensor) -> torch.Tensor:
    """(N, M, T, V, C) -> (N*M, T, V, C)."""
    N, M, T, V, C = x.shape
    return x.reshape(N * M, T, V, C)


class SkeletonEncoder(nn.Module):
    """Token embedding + learned temporal/joint position embeddings + blocks + LayerNorm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.dim
        self.joints_embed = nn.Linear(cfg.patch_values, C)
        self.temp_embed = nn.Parameter(torch.zeros(1, cfg.temporal_tokens, 1, C))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1, cfg.num_joints, C))
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(C, cfg.num_heads, cfg.mlp_ratio, drop_path=r) for r in rates
        )
        self.norm = nn.LayerNorm(C)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.temp_embed, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(init_weights)

    @property
    def num_layers(self) -> int:
        """Layer ids: 0 = embeddings, 1..depth = blocks, depth + 1 = what follows."""
        return self.cfg.depth + 2

    def layer_id(self, name: str) -> int:
        """Layer id of an encoder parameter name, for layer-wise learning-rate decay."""
        if name.startswith(("joints_embed", "temp_embed", "pos_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.cfg.depth + 1

    def no_weight_decay(self) -> set[str]:
        return {"temp_embed", "pos_embed"}

    def embed(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, T/l, V, l*3) patches -> (B, T/l * V, C) tokens with position embeddings."""
        B, TP, VP, _ = patches.shape
        tokens = self.joints_embed(patches) + self.pos_embed[:, :, :VP] + self.temp_embed[:, :TP]
        return tokens.reshape(B, TP * VP, -1)

    def run_blocks(self, tokens: torch.Tensor, first: int = 0) -> torch.Tensor:
        for block in self.blocks[first:]:
            tokens = block(tokens)
        return self.norm(tokens)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens, unmasked: x (N, M, T, V, 3) -> (N, M, T/l * V, C) after the final norm."""
        N, M = x.shape[:2]
        patches = patchify(actors_as_batch(x), self.cfg.patch_frames)
        tokens = self.run_blocks(self.embed(patches))
        return tokens.reshape(N, M, tokens.shape[1], -1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled sequence feature: mean over actors and tokens. x (N, M, T, V, 3) -> (N, C).

        In eval mode an absent actor (all zeros) is encoded once per batch rather than once per
        sample (:meth:`pooled_present_actors`); in training mode every actor is encoded.
        """
        if self.training or x.shape[1] == 1:
            return self.forward_tokens(x).mean(dim=(1, 2))
        return self.pooled_present_actors(x).mean(dim=1)

    def pooled_present_actors(self, x: torch.Tensor) -> torch.Tensor:
        """Per-actor pooled features (N, M, C) of x (N, M, T, V, 3), in eval mode.

        Without dropout an actor's feature depends on its own frames only, so every absent
        actor (all coordinates zero: the padding of single-actor samples, most of NTU and all
        of the synthetic data) has the same feature: one zero sequence stands for all of them,
        and evaluation encodes about half the sequences.
        """
        N, M = x.shape[:2]
        present = x.reshape(N, M, -1).ne(0).any(dim=2)  # (N, M)
        sequences = torch.cat([x[present], x.new_zeros((1, *x.shape[2:]))])  # (P + 1, T, V, 3)
        pooled = self.forward_tokens(sequences[:, None]).mean(dim=2)[:, 0]  # (P + 1, C)
        per_actor = pooled[-1].expand(N, M, -1).clone()
        per_actor[present] = pooled[:-1]
        return per_actor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def create_encoder(preset_name: str = "paper", **overrides: object) -> SkeletonEncoder:
    """A randomly initialised encoder of a named preset (``paper``, ``small``, ``tiny``), with
    model-config ``overrides`` (e.g. ``num_joints=20`` for N-UCLA)."""
    from stars.model.config import preset

    return SkeletonEncoder(preset(preset_name, **overrides))
