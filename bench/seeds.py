"""A group of seeds against the same seeds as separate jobs: ``jobs/pretrain.py --seeds 3``
(one Ray start, one opened dataset, one read of the training rows, seeds side by side where
the machine has room) against three ``jobs/pretrain.py --seed N`` runs one after another,
each a fresh process as a user would start it. The tiny preset on a prepared tiny dataset,
each measurement with its own storage and MLflow store."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Result

ROOT = Path(__file__).resolve().parents[1]


def _job(data: Path, out: Path, *extra: str) -> float:
    """Wall seconds of one ``jobs/pretrain.py`` process."""
    cmd = [
        sys.executable,
        str(ROOT / "jobs" / "pretrain.py"),
        "--preset",
        "tiny",
        "--data",
        str(data),
        "--set",
        f"scale.storage_path={out / 'runs'}",
        "--tracking-uri",
        f"sqlite:///{out / 'mlflow.db'}",
        "--protocols",
        "knn,linear,fewshot",
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=out, capture_output=True, text=True)
    return time.perf_counter() - start


def bench_seeds(seeds: int = 3) -> list[Result]:
    from stars.data.prepare import write_synthetic
    from stars.data.synthetic import SyntheticSpec

    with tempfile.TemporaryDirectory(prefix="stars-bench-seeds-") as tmp:
        tmp = Path(tmp)
        spec = SyntheticSpec(num_classes=10, samples_per_class=12, num_base_classes=6, seed=0)
        write_synthetic(tmp / "data", spec, progress=False)
        separate = 0.0
        for seed in range(seeds):
            out = tmp / f"separate-{seed}"
            out.mkdir()
            separate += _job(tmp / "data", out, "--seed", str(seed), "--name", f"s{seed}")
        out = tmp / "group"
        out.mkdir()
        grouped = _job(tmp / "data", out, "--seeds", str(seeds), "--name", "g")
    return [
        Result(
            f"main_job_seeds{seeds}_vs_separate_s",
            grouped,
            "s",
            baseline=separate,
            target="< the separate runs",
            note=f"tiny preset, {seeds} seeds: one --seeds {seeds} job (value) against "
            f"{seeds} jobs one after another (baseline), each a new process",
        )
    ]


BENCHMARKS = {"seeds": bench_seeds}
