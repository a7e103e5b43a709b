"""Nearest-neighbour contrastive learning: the support queue and the loss (docs/method.md §7)."""

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


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_no_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` (B, ...) from every worker in rank order (no gradient)."""
    _, world = _world()
    if world == 1:
        return t.detach()
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t.detach().contiguous())
    return torch.cat(parts)


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from every worker; gradients flow back to each worker's own rows."""
    _, world = _world()
    if world == 1:
        return t
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(t.contiguous()))


class SupportQueue(nn.Module):
    """First-in first-out memory of past projections and the sample ids they came from.

    Args:
        size: number of entries (released STARS: 32,768); any size, any batch size.
        dim: feature width.
    Buffers: ``feats`` (size, dim), ``ids`` (size,) int64 with -1 marking empty slots,
    ``ptr`` the next slot to write.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1:
            raise ValueError("queue size must be >= 1")
        self.size = size
        self.register_buffer("feats", torch.zeros(size, dim))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, feats: torch.Tensor, ids: torch.Tensor) -> None:
        """Write a batch (n, dim) at the pointer, wrapping around; if n > size, only the last
        ``size`` rows survive (as if written one by one)."""
        n = feats.shape[0]
        if n > self.size:
            # A global batch larger than the queue (many workers, a small queue): writing row
            # by row would overwrite the first rows with later ones, so only the last `size`
            # rows survive, and they land where row-by-row writing would have put them; the
            # pointer ends where it would after all n writes.
            feats, ids = feats[-self.size :], ids[-self.size :]
            start = (int(self.ptr) + n - self.size) % self.size
            n = self.size
        else:
            start = int(self.ptr)
        # Slot indices modulo the size: a batch that crosses the end of the buffer continues
        # at slot 0 in the same indexed write, with no split into two copies.
        slots = (start + torch.arange(n, device=self.feats.device)) % self.size
        self.feats[slots] = feats.to(self.feats.dtype)
        self.ids[slots] = ids.to(self.ids.device)
        self.ptr.fill_((start + n) % self.size)

    @torch.no_grad()
    def nearest(
        self,
        z: torch.Tensor,
        ids: torch.Tensor,
        topk: int = 1,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The most similar queue entry of each row of z (B, dim), never an entry of the same
        sample id and never an empty slot; with ``topk`` > 1, a random one of the k most
        similar. A row with no valid entry (an empty queue) gets itself back.
        """
        sims = z @ self.feats.T  # (B, size)
        # A sample's own past projection is the most similar entry but no neighbour (it would
        # turn the loss into instance discrimination against an older self), and empty slots
        # (id -1, zeros) would otherwise tie at similarity 0 early in training.
        invalid = (self.ids[None, :] == ids[:, None]) | (self.ids[None, :] < 0)
        sims = sims.masked_fill(invalid, float("-inf"))
        k = min(topk, self.size)
        top = sims.topk(k, dim=1)
        if k > 1:
            pick = torch.randint(0, k, (z.shape[0], 1), device=z.device, generator=generator)
            choice = top.indices.gather(1, pick)[:, 0]
            valid = top.values.gather(1, pick)[:, 0] > float("-inf")
        else:
            choice = top.indices[:, 0]
            valid = top.values[:, 0] > float("-inf")
        nn_feats = self.feats[choice]
        return torch.where(valid[:, None], nn_feats, z.detach())


def nnclr_loss(
    nn_local: torch.Tensor,
    p_local: torch.Tensor,
    temperature: float = 0.07,
    symmetric: bool = False,
) -> torch.Tensor:
    """Cross-entropy of NN(z_i) . p_k / tau over the global batch, positives on the diagonal.

    Args:
        nn_local: (B, d) nearest neighbours of this worker's projections (no gradient).
        p_local: (B, d) this worker's predictions (gradient).
    Returns:
        The mean loss over this worker's rows; averaged over workers (DDP) it equals the
        single-process loss on the concatenated batch, and so do the gradients.
    """
    rank, _ = _world()
    B = p_local.shape[0]
    # Row i of this worker is row rank*B + i of the gathered predictions (all_gather keeps
    # rank order, and every rank holds B rows: the loader drops last partial batches).
    labels = torch.arange(B, device=p_local.device) + rank * B
    p_all = gather_with_grad(p_local)
    logits = nn_local @ p_all.T / temperature  # (B, B*world)
    loss = F.cross_entropy(logits, labels)
    if symmetric:
        nn_all = gather_no_grad(nn_local)
        loss = 0.5 * (loss + F.cross_entropy(p_local @ nn_all.T / temperature, labels))
    return loss
