"""Evaluation benchmarks: feature extraction rate and exact kNN at scale (issue #6)."""

from __future__ import annotations

import time

import torch

from bench.common import Result, rate
from stars.eval.features import feature_autocast
from stars.metrics.knn import knn_predict
from stars.model.config import preset
from stars.model.encoder import SkeletonEncoder


def bench_feature_extraction(batch: int = 16) -> list[Result]:
    """Pooled features at the paper preset (C 256, 8 blocks, T 120, two actors), no_grad,
    one core: fp32 vs bf16 autocast (what ``eval.feature_precision=bf16`` does)."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    encoder = SkeletonEncoder(preset("paper")).eval()
    x = torch.randn(batch, 2, 120, 25, 3)

    def run(precision: str) -> float:
        @torch.no_grad()
        def step() -> int:
            with feature_autocast(device, precision):
                encoder.forward_features(x)
            return batch

        return rate(step, min_seconds=5.0)

    fp32, bf16 = run("fp32"), run("bf16")
    return [
        Result(
            "features_paper_bf16_seq_per_s",
            bf16,
            "seq/s",
            baseline=fp32,
            target="GPU: not measured (no device lent)",
            note=f"CPU, 1 thread, batch {batch}; baseline fp32",
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
