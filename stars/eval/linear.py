"""Linear probe on frozen, cached features (docs/method.md §8).

BatchNorm1d(affine=False) then Linear, SGD (momentum 0.9), lr 0.1 with a cosine schedule to
0, 100 epochs, batch 256. On cached features this takes seconds rather than the hours of
re-encoding every epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from stars.metrics.feature_set import FeatureSet


@dataclass(frozen=True)
class LinearProbeConfig:
    epochs: int = 100
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0


def train_linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    cfg: LinearProbeConfig = LinearProbeConfig(),
    seed: int = 0,
) -> nn.Module:
    """Fit BN + Linear on (N, C) features and (N,) labels; returns the probe in eval mode.

    Every draw (initial weights, batch order) comes from one generator seeded by ``seed``,
    never torch's global RNG, so probes fitted in concurrent threads stay reproducible."""
    gen = torch.Generator().manual_seed(seed)
    probe = nn.Sequential(
        nn.BatchNorm1d(train_x.shape[1], affine=False), nn.Linear(train_x.shape[1], num_classes)
    )
    nn.init.trunc_normal_(probe[1].weight, std=0.01, generator=gen)
    nn.init.zeros_(probe[1].bias)
    opt = torch.optim.SGD(
        probe.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    n = len(train_y)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    x, y = train_x.float(), train_y.long()
    step = 0
    probe.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        for lo in range(0, n, cfg.batch_size):
            rows = order[lo : lo + cfg.batch_size]
            if len(rows) < 2:  # BatchNorm needs two rows
                continue
            for group in opt.param_groups:
                group["lr"] = 0.5 * cfg.lr * (1 + math.cos(math.pi * step / total))
            loss = nn.functional.cross_entropy(probe(x[rows]), y[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return probe.eval()


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted; pred, target (N,)."""
    from sklearn.metrics import confusion_matrix as counts

    classes = np.arange(num_classes)
    return counts(target.cpu().numpy(), pred.cpu().numpy(), labels=classes).astype(np.int64)


@dataclass(frozen=True)
class ProbeResult:
    """A fitted probe's test scores.

    Attributes:
        scores: ``{"linear_top1", "linear_top5"}``.
        confusion: (K, K) counts, rows = true class.
        correct: per-query correctness, ``{"linear_top1": (Q,) bool, "linear_top5": (Q,) bool}``.
        fitted_on: (N,) sample ids of the rows the probe was trained on; the protocol checks
            them against the scored ids, so a probe can never be fitted on its test rows.
    """

    scores: dict[str, float]
    confusion: np.ndarray
    correct: dict[str, np.ndarray]
    fitted_on: np.ndarray


def linear_probe(
    train: FeatureSet,
    test: FeatureSet,
    num_classes: int,
    cfg: LinearProbeConfig = LinearProbeConfig(),
    seed: int = 0,
) -> ProbeResult:
    """Train on ``train``'s (N, C) features, score ``test``'s (Q, C)."""
    train_x, train_y = train.tensors()
    test_x, test_y = test.tensors()
    probe = train_linear_probe(train_x, train_y, num_classes, cfg, seed)
    with torch.no_grad():
        logits = probe(test_x.float())
    top = logits.topk(min(5, num_classes), dim=1).indices
    correct = {
        "linear_top1": (top[:, 0] == test_y).numpy(),
        "linear_top5": (top == test_y[:, None]).any(dim=1).numpy(),
    }
    scores = {k: float(v.mean()) if len(test_y) else 0.0 for k, v in correct.items()}
    return ProbeResult(
        scores, confusion_matrix(top[:, 0], test_y, num_classes), correct, train.sample_index
    )
