"""MAMP: masked motion prediction with motion-aware masking (docs/method.md §5-6).

Reads top to bottom as the method does: patchify -> mask -> encode the visible tokens ->
decode all tokens (mask tokens filled in) -> predict each token's l x 3 target values ->
loss over the masked tokens only. ``target='coords'`` gives MAE-style coordinate
reconstruction from the same class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stars.model.config import ModelConfig
from stars.model.encoder import SkeletonEncoder, actors_as_batch, patchify
from stars.model.layers import Block, init_weights


def motion_intensity(patches: torch.Tensor) -> torch.Tensor:
    """Per-token motion: mean |difference with the previous temporal token of the same
    joint| over its l x 3 values; the first temporal token copies the second.

    patches (B, T/l, V, l*3) -> (B, T/l * V).
    """
    diff = torch.zeros_like(patches)
    diff[:, 1:] = (patches[:, 1:] - patches[:, :-1]).abs()
    diff[:, 0] = diff[:, 1]
    return diff.mean(dim=-1).flatten(1)


def sample_mask(
    intensity: torch.Tensor, mask_ratio: float, tau: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Choose the masked tokens of each sequence, vectorised over the batch.

    Motion-aware (tau > 0): pi = softmax(I / (max(I) * tau)); score = log(pi) + Gumbel noise;
    the largest scores are masked (Gumbel top-k: sampling without replacement from pi).
    tau = 0: uniform random masking.

    Args:
        intensity: (B, L) motion intensity per token.
    Returns:
        (B, L) bool, True = masked; exactly L - int(L * (1 - mask_ratio)) per row.
    """
    B, L = intensity.shape
    num_keep = visible_count(L, mask_ratio)
    uniform = torch.rand(B, L, device=intensity.device, generator=generator)
    if tau > 0:
        scale = intensity.amax(dim=1, keepdim=True).clamp_min(1e-12) * tau
        log_pi = F.log_softmax(intensity / scale, dim=1)
        score = log_pi - torch.log(-torch.log(uniform.clamp(1e-12, 1 - 1e-7)))
    else:
        score = uniform
    order = score.argsort(dim=1, descending=True)
    mask = torch.zeros(B, L, dtype=torch.bool, device=intensity.device)
    mask.scatter_(1, order[:, : L - num_keep], True)
    return mask


def visible_count(num_tokens: int, mask_ratio: float) -> int:
    """Tokens left visible per sequence: int(L x (1 - ratio)), robust to float rounding."""
    return int(num_tokens * (1 - mask_ratio) + 1e-6)  # 750 x (1 - 0.9) is 74.999... in floats


def mask_indices(
    mask: torch.Tensor, num_visible: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) bool mask with equal visible counts -> (ids_keep (B, K), ids_restore (B, L)).

    Visible tokens come first, in their original order; ``ids_restore`` undoes the shuffle.
    ``num_visible``: K when the caller knows it (a mask from :func:`sample_mask`); otherwise
    it is read from the mask and checked equal across rows, which waits for the device.
    """
    if num_visible is None:
        counts = (~mask).sum(dim=1)
        if not bool((counts == counts[0]).all()):
            raise ValueError("every sequence must have the same number of visible tokens")
        num_visible = int(counts[0])
    ids_shuffle = mask.to(torch.int8).argsort(dim=1, stable=True)
    ids_restore = ids_shuffle.argsort(dim=1)
    return ids_shuffle[:, :num_visible], ids_restore


def motion_target(x: torch.Tensor, stride: int) -> torch.Tensor:
    """M[t] = X[t + s] - X[t], last s frames zero. x (B, T, V, C) -> same shape."""
    out = torch.zeros_like(x)
    out[:, :-stride] = x[:, stride:] - x[:, :-stride]
    return out


def normalise_per_token(target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Subtract each token's mean and divide by sqrt(var + eps) over its values (last axis)."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return (target - mean) / (var + eps).sqrt()


class MAMP(nn.Module):
    """Encoder-decoder for masked motion (or coordinate) prediction.

    ``model(x)`` with x (N, M, T, V, 3) returns ``{"loss", "pred", "target", "mask"}``:
    pred/target (N*M, L, l*3), mask (N*M, L) bool (True = masked), L = T/l * V.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = SkeletonEncoder(cfg)
        D = cfg.decoder_dim
        self.decoder_embed = nn.Linear(cfg.dim, D)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, D))
        self.decoder_temp_embed = nn.Parameter(torch.zeros(1, cfg.temporal_tokens, 1, D))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, 1, cfg.num_joints, D))
        self.decoder_blocks = nn.ModuleList(
            Block(D, cfg.decoder_heads, cfg.mlp_ratio) for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(D)
        self.decoder_pred = nn.Linear(D, cfg.patch_values)
        for p in (self.mask_token, self.decoder_temp_embed, self.decoder_pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        for m in (self.decoder_embed, *self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            m.apply(init_weights)

    def no_weight_decay(self) -> set[str]:
        enc = {f"encoder.{n}" for n in self.encoder.no_weight_decay()}
        return enc | {"mask_token", "decoder_temp_embed", "decoder_pos_embed"}

    # -- the method, step by step -----------------------------------------------------------
    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """(N, M, T, V, 3) -> (N*M, T/l, V, l*3)."""
        return patchify(actors_as_batch(x), self.cfg.patch_frames)

    def choose_mask(
        self, patches: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B, T/l, V, l*3) -> (B, L) bool mask from motion-aware (or uniform) masking."""
        return sample_mask(
            motion_intensity(patches), self.cfg.mask_ratio, self.cfg.motion_tau, generator
        )

    def forward_encoder(self, patches: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Encode the visible tokens only: -> (B, K, C)."""
        tokens = self.encoder.embed(patches)
        visible = tokens.gather(1, ids_keep[..., None].expand(-1, -1, tokens.shape[-1]))
        return self.encoder.run_blocks(visible)

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """(B, K, C) visible latents -> (B, L, l*3) predictions for every token."""
        B, K, _ = latent.shape
        L = ids_restore.shape[1]
        x = self.decoder_embed(latent)
        D = x.shape[-1]
        x = torch.cat([x, self.mask_token.to(x.dtype).expand(B, L - K, D)], dim=1)
        x = x.gather(1, ids_restore[..., None].expand(-1, -1, D))
        TP, VP = self.cfg.temporal_tokens, L // self.cfg.temporal_tokens
        x = (
            x.reshape(B, TP, VP, D)
            + self.decoder_pos_embed[:, :, :VP]
            + self.decoder_temp_embed[:, :TP]
        )
        x = x.reshape(B, L, D)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """(N, M, T, V, 3) -> (N*M, L, l*3): motion (or coordinates), per-token normalised."""
        seq = actors_as_batch(x)
        if self.cfg.target == "motion":
            seq = motion_target(seq, self.cfg.motion_stride)
        target = patchify(seq, self.cfg.patch_frames).flatten(1, 2)
        return normalise_per_token(target) if self.cfg.norm_target else target

    @staticmethod
    def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error averaged over the masked tokens only."""
        per_token = (pred.float() - target.float()).pow(2).mean(dim=-1)
        weight = mask.to(per_token.dtype)
        return (per_token * weight).sum() / weight.sum().clamp_min(1.0)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """x (N, M, T, V, 3); ``mask`` (N*M, L) bool fixes the masked tokens (tests)."""
        patches = self.patches(x)
        num_visible = None
        if mask is None:
            mask = self.choose_mask(patches, generator)
            # Known on the host: a training step then never waits for the GPU to count it.
            num_visible = visible_count(mask.shape[1], self.cfg.mask_ratio)
        ids_keep, ids_restore = mask_indices(mask, num_visible)
        latent = self.forward_encoder(patches, ids_keep)
        pred = self.forward_decoder(latent, ids_restore)
        target = self.targets(x)
        return {
            "loss": self.masked_mse(pred, target, mask),
            "pred": pred,
            "target": target,
            "mask": mask,
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled encoder feature of the unmasked input: (N, M, T, V, 3) -> (N, C)."""
        return self.encoder.forward_features(x)
