"""A straightforward implementation of the same MAMP architecture, kept as the benchmark
baseline: explicit softmax attention in fp32 and per-sample masking, as a direct reading of
the paper would write it. It shares parameter names with :class:`stars.model.mamp.MAMP`, so
both run with identical weights."""

from __future__ import annotations

import torch
from torch import nn

from stars.model.encoder import actors_as_batch, patchify
from stars.model.mamp import MAMP, motion_target, normalise_per_token


def explicit_attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    B, L, C = x.shape
    h = attn.num_heads
    qkv = attn.qkv(x).reshape(B, L, 3, h, C // h).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    weights = (q @ k.transpose(-2, -1)) * (C // h) ** -0.5
    weights = weights.softmax(dim=-1)
    return attn.proj((weights @ v).transpose(1, 2).reshape(B, L, C))


def block_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x + explicit_attention(block.attn, block.norm1(x))
    return x + block.mlp(block.norm2(x))


class ReferenceMAMP(MAMP):
    """Same parameters as MAMP: batched blocks with explicit softmax attention, and the mask
    drawn sample by sample with per-sample gathers."""

    def _mask_one(self, patches: torch.Tensor) -> torch.Tensor:
        """One sequence (T/l, V, l*3) -> sorted indices of its visible tokens."""
        TP, VP, _ = patches.shape
        L = TP * VP
        motion = torch.zeros_like(patches)
        for t in range(1, TP):
            motion[t] = (patches[t] - patches[t - 1]).abs()
        motion[0] = motion[1]
        intensity = motion.mean(dim=-1).flatten()
        pi = torch.softmax(intensity / (intensity.max() * self.cfg.motion_tau), dim=0)
        score = torch.log(pi) - torch.log(-torch.log(torch.rand(L)))
        keep = int(L * (1 - self.cfg.mask_ratio) + 1e-6)
        return score.argsort()[:keep].sort().values

    def forward(self, x: torch.Tensor, mask=None, generator=None) -> dict[str, torch.Tensor]:
        patches = self.patches(x)
        B, TP, VP, _ = patches.shape
        L = TP * VP
        tokens = self.encoder.embed(patches)
        keeps = [self._mask_one(patches[i]) for i in range(B)]
        visible = torch.stack([tokens[i, keeps[i]] for i in range(B)])
        for block in self.encoder.blocks:
            visible = block_forward(block, visible)
        latent = self.decoder_embed(self.encoder.norm(visible))
        full = []
        mask = torch.ones(B, L, dtype=torch.bool)
        for i in range(B):
            seq = self.mask_token[0].expand(L, -1).clone()
            seq[keeps[i]] = latent[i]
            mask[i, keeps[i]] = False
            full.append(seq)
        dec = torch.stack(full).reshape(B, TP, VP, -1)
        dec = (dec + self.decoder_pos_embed + self.decoder_temp_embed).reshape(B, L, -1)
        for block in self.decoder_blocks:
            dec = block_forward(block, dec)
        pred = self.decoder_pred(self.decoder_norm(dec))
        seq = motion_target(actors_as_batch(x), self.cfg.motion_stride)
        target = normalise_per_token(patchify(seq, self.cfg.patch_frames).flatten(1, 2))
        return {
            "loss": self.masked_mse(pred, target, mask),
            "pred": pred,
            "target": target,
            "mask": mask,
        }
