"""Groups of seeds: parsing --seeds, the aggregates over seeds, the summary's words, and
running seeds side by side with one seed's failure kept to itself."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from scipy import stats

from stars.config import ConfigError
from stars.train.progress import current_prefix
from stars.workflow.group import Lineage, group_metrics
from stars.workflow.group_run import format_group_summary
from stars.workflow.repeats import parse_seeds, run_seeds


def test_seeds_are_a_count_or_a_list():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("3", base=10) == [10, 11, 12]
    assert parse_seeds("0,3,7") == [0, 3, 7]
    assert parse_seeds("5,") == [5]
    for bad in ("0", "x", "1,1", "-1,2", "1000"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def _lineages() -> list[Lineage]:
    knn = {
        "baseline": [0.30, 0.31, 0.29],
        "stage1": [0.45, 0.42, 0.44],
        "stage2": [0.46, 0.41, 0.45],
    }
    out = []
    for i, seed in enumerate((0, 3, 7)):
        ln = Lineage(seed)
        for stage, values in knn.items():
            ln.metrics[stage] = {"knn_top1": values[i], "knn_top1_ci95_low": 0.0}
        out.append(ln)
    return out


def test_group_aggregates_are_t_intervals_over_seeds():
    metrics = group_metrics(_lineages())
    assert metrics["n_seeds"] == 3
    s1 = np.array([0.45, 0.42, 0.44])
    low, high = stats.t.interval(0.95, 2, loc=s1.mean(), scale=stats.sem(s1))
    assert metrics["stage1/knn_top1"] == pytest.approx(s1.mean())
    assert metrics["stage1/knn_top1_ci95_low"] == pytest.approx(low)
    assert metrics["stage1/knn_top1_ci95_high"] == pytest.approx(high)
    assert metrics["stage1/knn_top1_std"] == pytest.approx(s1.std(ddof=1))
    d = np.array([0.46, 0.41, 0.45]) - s1  # stage 2 - stage 1, paired by seed
    low, high = stats.t.interval(0.95, 2, loc=d.mean(), scale=stats.sem(d))
    assert metrics["stage2/delta_knn_top1"] == pytest.approx(d.mean())
    assert metrics["stage2/delta_knn_top1_ci95_low"] == pytest.approx(low)
    assert metrics["stage1/delta_knn_top1"] == pytest.approx((s1 - [0.30, 0.31, 0.29]).mean())
    assert "control/knn_top1_ci95_low" in metrics
    assert not any("knn_top1_ci95_low_" in k for k in metrics)  # bounds are not re-aggregated


def test_a_tuned_runs_own_paired_delta_is_used_when_it_has_one():
    lineages = _lineages()
    for ln in lineages:
        ln.metrics["stage2"]["delta_knn_top1"] = 0.5  # measured against its own reference
    assert group_metrics(lineages)["stage2/delta_knn_top1"] == pytest.approx(0.5)


def test_summary_says_in_words_when_a_difference_is_within_the_noise():
    lineages = _lineages()
    lineages.append(Lineage(9, error="stage 1 failed: out of memory"))
    text = format_group_summary(group_metrics(lineages), lineages)
    assert "3 seeds (0, 3, 7)" in text
    stage2_line = next(line for line in text.splitlines() if line.startswith("stage2 - stage1"))
    assert "interval includes 0: not distinguishable from no change" in stage2_line
    stage1_line = next(line for line in text.splitlines() if line.startswith("stage1 - control"))
    assert "interval excludes 0: higher" in stage1_line
    assert "seed 9 FAILED: stage 1 failed: out of memory" in text


def test_seeds_run_side_by_side_and_a_failure_stays_with_its_seed():
    running, peak, lock = [0], [0], threading.Lock()

    def work(seed: int) -> str:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        if seed == 2:
            raise RuntimeError("boom")
        return current_prefix()

    results = run_seeds([1, 2, 3, 4], work, at_once=2)
    assert peak[0] == 2
    assert [r.seed for r in results] == [1, 2, 3, 4]
    assert results[0].value == "[seed 1] " and results[3].value == "[seed 4] "
    assert str(results[1].error) == "boom" and results[1].value is None
    sequential = run_seeds([5, 6], work, at_once=1)
    assert [r.value for r in sequential] == ["", ""]  # one at a time: no prefix


def test_seeds_fit_by_the_cpus_their_workers_use(monkeypatch):
    import ray

    from stars.train.config import ScaleConfig
    from stars.workflow.repeats import seeds_at_once

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    assert seeds_at_once(ScaleConfig(cpus_per_worker=0.5), 3) == 2  # one data task's CPU left
    # Workers that run 2 torch threads each fill the 2 cores alone: one seed at a time.
    assert seeds_at_once(ScaleConfig(cpus_per_worker=0.5, torch_threads=2), 3) == 1
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64.0, "GPU": 4.0})
    gpu = ScaleConfig(num_workers=2, use_gpu=True, cpus_per_worker=4)
    assert seeds_at_once(gpu, 5) == 2  # 2 GPUs a seed
    assert seeds_at_once(gpu, 5, limit=1) == 1
    assert seeds_at_once(ScaleConfig(), 2) == 2  # never more than the seeds
