"""Stage-2 heads: the BatchNorm projector and the MLP predictor, with batch statistics taken
over the global batch of all workers (works on CPU/gloo and GPU/NCCL alike)."""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

# The autograd-aware collectives of torch.distributed.nn are what the gradient-equality
# guarantee rests on; their suggested replacement is a private module. Keep them, quietly.
warnings.filterwarnings(
    "ignore", message=r"torch\.distributed\.nn\.functional", category=FutureWarning
)


def _global_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(t)  # differentiable
    return t


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics cover the batches of every worker, so N workers
    with B samples each normalise exactly like one process with N*B samples."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C) -> (B, C)."""
        if not self.training:
            return super().forward(x)
        # Sums, not per-worker means, go through the all-reduce: workers may hold different
        # batch sizes (a last partial batch), and E[x^2] - E[x]^2 over the summed moments is
        # the global batch's variance whatever the split. The all-reduce is the autograd one,
        # so every worker's gradient also sees the other workers' rows through mean and var,
        # as a single process on the concatenated batch would.
        count = _global_sum(torch.tensor([float(x.shape[0])], device=x.device, dtype=x.dtype))
        mean = _global_sum(x.sum(dim=0)) / count
        var = _global_sum((x * x).sum(dim=0)) / count - mean * mean
        with torch.no_grad():
            n = float(count.item())
            # Normalisation uses the biased variance (as nn.BatchNorm1d does); the running
            # estimate used at evaluation stores the unbiased one, also as nn.BatchNorm1d.
            unbiased = var * n / max(n - 1.0, 1.0)
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean.detach())
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * unbiased.detach())
            self.num_batches_tracked += 1
        # One-pass moments can go slightly negative in float rounding: clamp before the root.
        out = (x - mean) / torch.sqrt(var.clamp_min(0) + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        return out


class Projector(nn.Module):
    """g(y) = BatchNorm1d(y): the STARS projector (no MLP)."""

    def __init__(self, dim: int):
        super().__init__()
        self.bn = GlobalBatchNorm1d(dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.bn(y)


class Predictor(nn.Module):
    """Linear dim -> hidden, BatchNorm, ReLU, Linear hidden -> dim."""

    def __init__(self, dim: int, hidden: int = 4096):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.bn = GlobalBatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.bn(self.fc1(z))))


class ContrastiveHeads(nn.Module):
    """z = normalise(projector(y)), p = normalise(predictor(z)); y (B, C) pooled features."""

    def __init__(self, dim: int, hidden: int = 4096):
        super().__init__()
        self.projector = Projector(dim)
        self.predictor = Predictor(dim, hidden)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = F.normalize(self.projector(y), dim=1)
        p = F.normalize(self.predictor(z), dim=1)
        return z, p
