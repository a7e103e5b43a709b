"""Optimiser parameter groups and learning-rate schedules shared by both stages."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from stars.train.config import OptimConfig


def param_groups(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float = 1.0,
    no_decay_names: set[str] | None = None,
) -> list[dict]:
    """Trainable parameters grouped by weight decay and layer-wise learning-rate scale.

    Weight decay is off for norms, biases, embeddings and anything in the model's
    ``no_weight_decay()``. With ``layer_decay`` below 1 the model must define ``num_layers``
    and ``layer_id(name)``: a parameter in layer i of N gets ``lr_scale = layer_decay **
    (N - 1 - i)``, so the top layer trains at the scheduled rate and each layer below at
    ``layer_decay`` times the one above (timm's layer decay, built from the model's own ids).
    Frozen parameters (``requires_grad=False``, see ``freeze_below``) are left out.

    Each group carries ``lr_scale`` (multiplied into the scheduled lr) and ``names``.
    """
    skip = set(no_decay_names or ())
    if hasattr(model, "no_weight_decay"):
        skip |= set(model.no_weight_decay())
    top = model.num_layers - 1 if layer_decay != 1.0 else 0
    groups: dict[tuple[float, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = 0.0 if (p.ndim <= 1 or name in skip or name.endswith(".bias")) else weight_decay
        scale = layer_decay ** (top - model.layer_id(name)) if layer_decay != 1.0 else 1.0
        group = groups.setdefault(
            (decay, scale), {"params": [], "names": [], "weight_decay": decay, "lr_scale": scale}
        )
        group["params"].append(p)
        group["names"].append(name)
    return list(groups.values())


def freeze_below(model: nn.Module, layers: int) -> list[str]:
    """Stop gradients for every parameter whose ``model.layer_id(name) < layers``; returns
    the frozen names."""
    frozen = [name for name, _ in model.named_parameters() if model.layer_id(name) < layers]
    params = dict(model.named_parameters())
    for name in frozen:
        params[name].requires_grad_(False)
    return frozen


def build_adamw(
    groups: list[dict], cfg: OptimConfig, fused: bool | None = None
) -> torch.optim.AdamW:
    """AdamW over ``param_groups``. ``fused`` None: fused kernels when every parameter is on
    CUDA (``bench.gpu`` measures both), torch's default implementation elsewhere."""
    groups = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    if fused is None:
        params = [p for g in groups for p in g["params"]]
        fused = bool(params) and all(p.is_cuda for p in params)
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=tuple(cfg.betas), **({"fused": True} if fused else {})
    )


def scheduled_lr(step: int, total_steps: int, warmup_steps: int, cfg: OptimConfig) -> float:
    """Per-step linear warm-up to ``lr``, then cosine to ``min_lr`` (or constant)."""
    if warmup_steps > 0 and step < warmup_steps:
        return cfg.lr * (step + 1) / warmup_steps
    if cfg.schedule == "constant" or total_steps <= warmup_steps:
        return cfg.lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class LrSchedule:
    """A run's per-step learning rate: ``warmup_steps`` of linear warm-up, then the
    config's schedule over the remaining steps of ``total_steps``."""

    total_steps: int
    warmup_steps: int
    optim: OptimConfig

    @classmethod
    def for_run(cls, optim: OptimConfig, epochs: int, steps_per_epoch: int) -> LrSchedule:
        """The schedule of ``epochs`` epochs of ``steps_per_epoch`` steps (warm-up in epochs,
        possibly fractional, rounded to whole steps)."""
        return cls(steps_per_epoch * epochs, round(optim.warmup_epochs * steps_per_epoch), optim)

    def at(self, step: int) -> float:
        return scheduled_lr(step, self.total_steps, self.warmup_steps, self.optim)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
