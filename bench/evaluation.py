"""Evaluation benchmarks: feature extraction rate and exact kNN at scale (issue #6)."""

from __future__ import annotations

import time

import torch

from bench.common import Result, rate
from stars.eval.knn import knn_predict
from stars.model.config import preset
from stars.model.encoder import SkeletonEncoder


def bench_feature_extraction(batch: int = 64) -> list[Result]:
    """Pooled features at the paper preset (C 256, 8 blocks, T 120, two actors), batched
    vs one sequence at a time, no_grad, fp32, one core."""
    torch.manual_seed(0)
    encoder = SkeletonEncoder(preset("paper")).eval()
    x = torch.randn(batch, 2, 120, 25, 3)

    @torch.no_grad()
    def batched() -> int:
        encoder.forward_features(x)
        return batch

    @torch.no_grad()
    def one_by_one() -> int:
        for i in range(8):
            encoder.forward_features(x[i : i + 1])
        return 8

    fast = rate(batched, min_seconds=5.0)
    slow = rate(one_by_one, min_seconds=5.0)
    return [
        Result(
            "features_paper_seq_per_s",
            fast,
            "seq/s",
            baseline=slow,
            target="batched > 1 seq at a time",
            note=f"CPU, 1 thread, batch {batch} vs batch 1",
        )
    ]


def bench_knn(n: int = 50_000, dim: int = 256, classes: int = 120) -> list[Result]:
    """Exact cosine kNN of 50k queries against a 50k bank (blocked matmuls, one core)."""
    gen = torch.Generator().manual_seed(0)
    bank = torch.randn(n, dim, generator=gen)
    labels = torch.randint(0, classes, (n,), generator=gen)
    query = torch.randn(n, dim, generator=gen)
    out = []
    for k, temp, name in [(1, None, "knn_50k_k1_s"), (20, 0.1, "knn_50k_weighted_k20_s")]:
        start = time.perf_counter()
        knn_predict(bank, labels, query, k, temp, classes)
        out.append(
            Result(name, time.perf_counter() - start, "s", target="seconds", note="50k x 50k x 256")
        )
    return out


BENCHMARKS = {"features": bench_feature_extraction, "knn": bench_knn}
