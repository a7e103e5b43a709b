"""Evaluation benchmarks: feature extraction rate, exact kNN at scale (issue #6), and the
demo's evaluation per stage, in process and over a Ray Data actor pool (issue #14)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

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


DEMO_PROTOCOLS = ("knn", "fewshot", "linear", "cluster")


def bench_demo_evaluation(encoders: int = 3) -> list[Result]:
    """Seconds to evaluate one ``small`` encoder on the embedded demo data (features + kNN +
    few-shot + linear + cluster), as the main job does for the control, stage 1 and stage 2
    in one process: the first evaluation also reads the views and imports the libraries; the
    per-stage figure is the median of the later ones. Same for the Ray Data actor pool."""
    import dataclasses

    import ray

    from bench.train_loop import _small_data
    from stars.data.job_data import resolve_data
    from stars.eval.config import EvalConfig
    from stars.eval.runner import evaluate
    from stars.model.checkpoint import write_random_init
    from stars.model.config import preset as model_preset

    torch.set_num_threads(2)  # the demo's torch threads (bench.run pins 1 per process)
    out = []
    with tempfile.TemporaryDirectory(prefix="stars-bench-eval-") as tmp:
        tmp = Path(tmp)
        data = resolve_data(_small_data(tmp), progress=False)
        arch = dataclasses.replace(model_preset("small"), num_joints=data.num_joints)
        ckpts = [write_random_init(arch, s, tmp / f"enc{s}.pt") for s in range(encoders)]
        times = {}
        for path, in_process in (("in_process", True), ("ray_pool", False)):
            cfg = EvalConfig(protocols=DEMO_PROTOCOLS, in_process=in_process)
            if not in_process:
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            try:
                spent = []
                for i, ck in enumerate(ckpts):
                    start = time.perf_counter()
                    evaluate(ck, data, cfg, tmp / f"{path}-{i}", log=lambda _: None)
                    spent.append(time.perf_counter() - start)
            finally:
                if not in_process:
                    ray.shutdown()
            times[path] = spent
    n = data.num_samples
    note = f"small encoder, {n} sequences, 2 torch threads; first evaluation {{:.1f}} s"
    for path in ("in_process", "ray_pool"):
        first, later = times[path][0], statistics.median(times[path][1:])
        out.append(
            Result(
                f"eval_demo_stage_{path}_s",
                later,
                "s",
                target="<= 5 s per stage" if path == "in_process" else "",
                note=note.format(first)
                + ("; what the job picks at this size" if path == "in_process" else ""),
            )
        )
    return out


BENCHMARKS = {
    "features": bench_feature_extraction,
    "knn": bench_knn,
    "demo_evaluation": bench_demo_evaluation,
}
