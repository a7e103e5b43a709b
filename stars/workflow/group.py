"""Comparisons with their uncertainty: the stages of one lineage against each other, and
a group of lineages trained with different seeds.

One lineage (one seed): every kNN, linear and few-shot metric carries its interval over the
test samples or episodes, and a difference between two stages is paired on the same samples
and episodes (``delta_<metric>``). That interval says how much the *evaluation* could move;
it says nothing about training again with another seed, which moves these numbers by more.

A group (``--seeds N``): the same lineage per seed; each stage's metric is the mean over
seeds with a t-interval over seeds, and a difference between stages is paired by seed.
On the group run the names are ``<stage>/<metric>`` (``stage1/knn_top1``,
``stage1/knn_top1_ci95_low``, ...) and ``<stage>/delta_<metric>`` (stage 2 against stage 1,
stage 1 against the random-init control).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from stars.metrics.intervals import (
    DELTA,
    SUFFIX_HIGH,
    SUFFIX_LOW,
    Interval,
    t_interval,
    verdict,
)

COMPARED_PREFIXES = ("knn_", "linear_", "fewshot_")
HEADLINE = ("knn_top1", "linear_top1", "fewshot_1shot_mean", "fewshot_5shot_mean")
STAGE_LABELS = {"baseline": "control", "stage1": "stage1", "stage2": "stage2"}
# (later stage, earlier stage): the differences a lineage is about.
COMPARISONS = (("stage1", "baseline"), ("stage2", "stage1"))


def compared_metrics(metrics: Iterable[str]) -> list[str]:
    """The metrics that carry intervals and are compared: kNN, linear, few-shot means."""
    return sorted(
        m
        for m in metrics
        if m.startswith(COMPARED_PREFIXES)
        and not m.endswith((SUFFIX_LOW, SUFFIX_HIGH, "_std"))
        and not m.startswith(DELTA)
    )


def stored_interval(metrics: Mapping[str, float], name: str, over: str) -> Interval | None:
    """``name`` with its logged ``_ci95_`` bounds, when all three are there."""
    if name not in metrics or name + SUFFIX_LOW not in metrics:
        return None
    return Interval(
        float(metrics[name]),
        float(metrics[name + SUFFIX_LOW]),
        float(metrics[name + SUFFIX_HIGH]),
        0,
        over,
    )


@dataclass
class Lineage:
    """One seed's stages: ``stage`` ('baseline', 'stage1', 'stage2') -> its metrics, and
    the run ids."""

    seed: int
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    run_ids: dict[str, str] = field(default_factory=dict)
    error: str = ""


def group_metrics(lineages: list[Lineage]) -> dict[str, float]:
    """The group run's aggregates over the lineages that finished: per stage and metric the
    mean over seeds with its t-interval and std, and the per-seed paired differences."""
    done = [ln for ln in lineages if not ln.error]
    out: dict[str, float] = {"n_seeds": float(len(done))}
    for stage, label in STAGE_LABELS.items():
        names = _common(done, stage)
        for name in names:
            values = np.array([ln.metrics[stage][name] for ln in done])
            out[f"{label}/{name}"] = float(values.mean())
            if len(values) > 1:
                out[f"{label}/{name}_std"] = float(values.std(ddof=1))
            iv = t_interval(values, "seeds")
            if iv is not None:
                out.update({f"{label}/{k}": v for k, v in iv.metrics(name).items()})
    for later, earlier in COMPARISONS:
        label = STAGE_LABELS[later]
        for name, diffs in _paired_by_seed(done, later, earlier).items():
            out[f"{label}/{DELTA}{name}"] = float(np.mean(diffs))
            iv = t_interval(diffs, "seeds")
            if iv is not None:
                out.update({f"{label}/{k}": v for k, v in iv.metrics(DELTA + name).items()})
    return out


def _paired_by_seed(lineages: list[Lineage], later: str, earlier: str) -> dict[str, list[float]]:
    """Per metric, each seed's ``later - earlier``: the later run's own paired
    ``delta_<metric>`` when it has one (a tuned run against its source), else the
    difference of the two values (both evaluated with the seed's evaluation draws)."""
    diffs: dict[str, list[float]] = {}
    for ln in lineages:
        a, b = ln.metrics.get(later, {}), ln.metrics.get(earlier, {})
        for name in compared_metrics(a):
            if DELTA + name in a:
                diffs.setdefault(name, []).append(float(a[DELTA + name]))
            elif name in b:
                diffs.setdefault(name, []).append(float(a[name]) - float(b[name]))
    return {k: v for k, v in diffs.items() if len(v) == len(lineages)}


def _common(lineages: list[Lineage], stage: str) -> list[str]:
    """Compared metrics every lineage has for ``stage``."""
    sets = [set(compared_metrics(ln.metrics.get(stage, {}))) for ln in lineages]
    return sorted(set.intersection(*sets)) if sets and all(sets) else []


def per_seed_rows(lineages: list[Lineage]) -> list[dict[str, object]]:
    """One row per (seed, stage): run id and every compared metric (the group's CSV)."""
    rows: list[dict[str, object]] = []
    for ln in lineages:
        for stage, label in STAGE_LABELS.items():
            if stage not in ln.metrics and stage not in ln.run_ids:
                continue
            row: dict[str, object] = {
                "seed": ln.seed,
                "stage": label,
                "mlflow_run": ln.run_ids.get(stage, ""),
                "error": ln.error,
            }
            values = ln.metrics.get(stage, {})
            row.update({m: values[m] for m in compared_metrics(values)})
            rows.append(row)
    return rows


def points(iv: Interval | None, signed: bool = False) -> str:
    """``45.2 ± 2.1`` in percentage points (``+0.6 ± 2.1`` for a difference); ``-``."""
    if iv is None:
        return "-"
    sign = "+" if signed else ""
    value = round(iv.value * 100, 1) + 0.0  # never "-0.0"
    return f"{value:{sign}.1f} ± {iv.half_width * 100:.1f}"


def difference_rows(
    intervals: Iterable[tuple[str, str, Interval | None]],
) -> list[list[str]]:
    """Table rows ``comparison, metric, mean ± half-width, what the interval says``."""
    rows = [["difference", "metric", "value ± 95 %", "what the interval says"]]
    for what, metric, iv in intervals:
        rows.append([what, metric, points(iv, signed=True), verdict(iv)])
    return rows
