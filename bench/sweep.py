"""Sweep benchmarks: what a trial costs besides its training steps, and trials per hour.

A 4-trial sweep of the ``tiny`` preset from a tiny stage-1 checkpoint, on a local Ray
instance, in a temporary directory, with trials trained in their own process and again on a
TorchTrainer each. From each trial's MLflow run: the time from its start to its first
training step (run start -> epoch 0's first logged metric, minus epoch 0's training and
monitoring time) and its evaluation time (``eval.json`` timings).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import Result


def bench_sweep(trials: int = 4) -> list[Result]:
    """The same sweep with trials trained in their own process (the default) and on a
    TorchTrainer each (``sweep.in_process=false``), side by side."""
    here = _sweep(trials, in_process=True)
    trainer = _sweep(trials, in_process=False)
    note = f"tiny preset, {trials} trials, 2 epochs each, 2-core CPU"
    first = "median over trials of MLflow run start -> first step; "
    return [
        Result(
            "sweep_trial_start_to_first_step_s",
            here["overhead"],
            "s",
            baseline=trainer["overhead"],
            target="<= 5 s",
            note=f"{first}{note}; in-process trials (baseline: a TorchTrainer per trial)",
        ),
        Result(
            "sweep_trial_evaluation_s",
            here["evaluation"],
            "s",
            baseline=trainer["evaluation"],
            note=f"{note}; in-process trials (baseline: a TorchTrainer per trial)",
        ),
        Result(
            "sweep_tiny_trials_per_hour",
            here["per_hour"],
            "trials/h",
            baseline=trainer["per_hour"],
            target=">= 2x",
            note=(
                f"{note}; in-process trials, {here['concurrent']} at a time (baseline: a "
                f"TorchTrainer per trial, {trainer['concurrent']} at a time, as each sweep "
                "chooses on this machine)"
            ),
        ),
        Result(
            "sweep_tiny_trials_per_hour_one_at_a_time",
            _one_at_a_time(trials),
            "trials/h",
            baseline=trainer["per_hour"],
            note=f"{note}; in-process trials, 1 at a time (baseline: TorchTrainer per trial)",
        ),
    ]


def _one_at_a_time(trials: int) -> float:
    return _sweep(trials, in_process=True, max_concurrent=1)["per_hour"]


def _sweep(trials: int, in_process: bool, max_concurrent: int = 0) -> dict[str, float]:
    import ray
    import torch

    from stars.config import load_layers
    from stars.data.prepare import write_synthetic
    from stars.data.shards import open_dataset
    from stars.data.synthetic import SyntheticSpec
    from stars.eval.config import EvalConfig
    from stars.model import checkpoint as ckpt
    from stars.model.config import preset
    from stars.model.mamp import MAMP
    from stars.presets import job_preset
    from stars.sweep.config import SweepConfig
    from stars.sweep.runner import SweepRequest, max_concurrent_trials, run_sweep
    from stars.sweep.space import load_space
    from stars.tracking import runs as tr
    from stars.tracking.config import TrackingConfig
    from stars.train.config import Stage2JobConfig

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="stars-bench-sweep-") as tmp:
        tmp = Path(tmp)
        spec = SyntheticSpec(num_classes=12, samples_per_class=12, num_base_classes=8, seed=3)
        write_synthetic(tmp / "data", spec, progress=False)
        data = open_dataset(tmp / "data")
        torch.manual_seed(0)
        source = tmp / "stage1.pt"
        ckpt.save(source, ckpt.stage1_payload(MAMP(preset("tiny")), epoch=0, global_step=0))
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        stage2 = load_layers(
            Stage2JobConfig,
            job_preset("tiny", "stage2"),
            overrides=[f"data.path={tmp / 'data'}", f"scale.storage_path={tmp / 'runs'}"],
        )
        evaluation = EvalConfig(protocols=("knn", "fewshot"), fewshot_shots=(1, 5))
        sweep = SweepConfig(
            num_samples=trials, in_process=in_process, max_concurrent=max_concurrent
        )
        request = SweepRequest(
            name="bench",
            sweep=sweep,
            space=load_space(root / "search_spaces" / "tiny.yaml", "stage2"),
            stage2=stage2,
            evaluation=evaluation,
            tracking=TrackingConfig(uri=uri),
            stage1_checkpoint=str(source),
            preset="tiny",
        )
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            concurrent = max_concurrent_trials(stage2.config.scale, sweep, in_process)
            start = time.perf_counter()
            outcome = run_sweep(request, data, log=lambda _: None)
            wall = time.perf_counter() - start
        finally:
            ray.shutdown()
        c = tr.client(uri)
        overheads, evals = [], []
        for row in outcome.rows:
            run_id = row["mlflow_run"]
            run = c.get_run(run_id)
            first = min(c.get_metric_history(run_id, "loss"), key=lambda m: m.step)
            # The first loss is logged after epoch 0's training and its monitoring.
            epoch0 = c.get_metric_history(run_id, "epoch_time_s")[0].value
            monitor0 = c.get_metric_history(run_id, "monitor_time_s")[0].value
            overheads.append((first.timestamp - run.info.start_time) / 1000 - epoch0 - monitor0)
            results = Path(run.data.tags[tr.CHECKPOINT]).parent.parent / "eval" / "eval.json"
            evals.append(sum(json.loads(results.read_text())["timings_s"].values()))
    done = sum(r["status"] == "DONE" for r in outcome.rows)
    return {
        "overhead": statistics.median(overheads),
        "evaluation": statistics.median(evals),
        "per_hour": 3600 * done / wall,
        "concurrent": concurrent,
    }


BENCHMARKS = {"sweep": bench_sweep}
