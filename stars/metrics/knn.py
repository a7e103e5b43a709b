"""Exact k-nearest-neighbour classification on L2-normalised features (blocked matmuls)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    query: torch.Tensor,
    k: int,
    temperature: float | None,
    num_classes: int,
    block: int = 4096,
) -> torch.Tensor:
    """Predicted labels of ``query`` (Q, d) from ``bank`` (N, d), cosine similarity.

    ``temperature`` None: plain majority vote of the k nearest (k = 1: the nearest one);
    otherwise votes weighted by exp(similarity / temperature).
    """
    bank = F.normalize(bank.float(), dim=1)
    query = F.normalize(query.float(), dim=1)
    k = min(k, bank.shape[0])
    out = []
    for lo in range(0, query.shape[0], block):
        sims = query[lo : lo + block] @ bank.T
        top_sim, top_idx = sims.topk(k, dim=1)
        labels = bank_labels[top_idx]
        weights = torch.ones_like(top_sim) if temperature is None else (top_sim / temperature).exp()
        votes = torch.zeros(labels.shape[0], num_classes, device=bank.device)
        votes.scatter_add_(1, labels, weights)
        out.append(votes.argmax(dim=1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def knn_correct(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    query: torch.Tensor,
    query_labels: torch.Tensor,
    k: int = 1,
    temperature: float | None = None,
) -> torch.Tensor:
    """(Q,) bool: whether each query's kNN prediction is its label."""
    if not len(query_labels):
        return torch.zeros(0, dtype=torch.bool)
    num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    return knn_predict(bank, bank_labels, query, k, temperature, num_classes) == query_labels


def weighted_knn_correct(
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    query: torch.Tensor,
    query_labels: torch.Tensor,
    ks: tuple[int, ...] = (10, 20, 40),
    temperature: float = 0.1,
) -> dict[str, torch.Tensor]:
    """``{"knn_top1": (Q,) bool, "knn_weighted_k10_top1": ..., ...}``: per-query correctness
    of 1-NN and of weighted kNN."""
    out = {"knn_top1": knn_correct(bank, bank_labels, query, query_labels, 1, None)}
    for k in ks:
        out[f"knn_weighted_k{k}_top1"] = knn_correct(
            bank, bank_labels, query, query_labels, k, temperature
        )
    return out


def accuracies(correct: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each metric's accuracy from its per-query correctness, (Q,) bool -> fraction."""
    return {name: float(c.float().mean()) if len(c) else 0.0 for name, c in correct.items()}
