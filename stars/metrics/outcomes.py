"""What an evaluation measured item by item, kept so that intervals and paired differences
can be computed from it, now or later from the saved file.

- per-sample outcomes: a metric's score of each test sample (1 correct, 0 wrong), with the
  samples' ``sample_index``: kNN and linear accuracy;
- per-episode outcomes: a metric's accuracy in each few-shot episode, with the episode seeds.

A metric's value is the mean of its outcomes, so its interval and its paired difference to
another encoder measured on the same samples or episodes follow from them
(:mod:`stars.metrics.intervals`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stars.metrics.intervals import (
    DELTA,
    Interval,
    bootstrap_interval,
    paired,
    stable_seed,
    t_interval,
)

OUTCOMES_FILE = "outcomes.npz"
SAMPLE, EPISODE = "sample", "episode"


@dataclass
class Outcomes:
    """Per-item outcomes by metric name: ``kind`` -> metric -> (ids (n,), values (n,))."""

    items: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = field(
        default_factory=lambda: {SAMPLE: {}, EPISODE: {}}
    )

    def add_samples(self, metric: str, sample_index: np.ndarray, scores: np.ndarray) -> None:
        self.items[SAMPLE][metric] = (
            np.asarray(sample_index, np.int64),
            np.asarray(scores, np.float32),
        )

    def add_episodes(self, metric: str, seeds: list[int], accuracies: np.ndarray) -> None:
        self.items[EPISODE][metric] = (
            np.asarray(seeds, np.int64),
            np.asarray(accuracies, np.float64),
        )

    def __contains__(self, metric: str) -> bool:
        return any(metric in by_metric for by_metric in self.items.values())

    def metric_names(self) -> list[str]:
        return sorted(m for by_metric in self.items.values() for m in by_metric)

    def interval(self, metric: str, resamples: int, seed: int) -> Interval | None:
        """``metric``'s value and 95 % interval: bootstrap over samples, t over episodes."""
        if metric in self.items[SAMPLE]:
            _, scores = self.items[SAMPLE][metric]
            return bootstrap_interval(scores, resamples, stable_seed(seed, metric))
        if metric in self.items[EPISODE]:
            return t_interval(self.items[EPISODE][metric][1], over="episodes")
        return None

    def intervals(self, resamples: int, seed: int) -> dict[str, float]:
        """``<metric>_ci95_low`` / ``_high`` of every metric with outcomes."""
        out: dict[str, float] = {}
        for metric in self.metric_names():
            iv = self.interval(metric, resamples, seed)
            if iv is not None:
                out.update({k: v for k, v in iv.metrics(metric).items() if k != metric})
        return out

    def delta(self, other: Outcomes, metric: str, resamples: int, seed: int) -> Interval | None:
        """``metric`` of this encoder minus ``other``'s, paired on the same samples
        (bootstrap, the same resampled rows for both) or episodes (t-interval of the
        per-episode differences); None when ``other`` did not measure it."""
        for kind in (SAMPLE, EPISODE):
            if metric in self.items[kind] and metric in other.items[kind]:
                ids, values = self.items[kind][metric]
                other_ids, other_values = other.items[kind][metric]
                _, diff = paired(ids, values, other_ids, other_values)
                if kind == SAMPLE:
                    return bootstrap_interval(diff, resamples, stable_seed(seed, DELTA, metric))
                return t_interval(diff, over="episodes")
        return None

    def deltas(self, other: Outcomes, resamples: int, seed: int) -> dict[str, float]:
        """``delta_<metric>`` with ``delta_<metric>_ci95_low/high`` for every metric both
        measured."""
        out: dict[str, float] = {}
        for metric in self.metric_names():
            iv = self.delta(other, metric, resamples, seed)
            if iv is not None:
                out.update(iv.metrics(DELTA + metric))
        return out

    def save(self, path: str | Path) -> Path:
        arrays: dict[str, np.ndarray] = {}
        for kind, by_metric in self.items.items():
            for metric, (ids, values) in by_metric.items():
                arrays[f"{kind}/{metric}/ids"] = ids
                arrays[f"{kind}/{metric}/values"] = values
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        with open(partial, "wb") as fh:  # readers never see a half-written file
            np.savez_compressed(fh, **arrays)
        partial.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Outcomes:
        out = cls()
        with np.load(path) as z:
            for key in z.files:
                kind, metric, part = key.split("/")
                if part != "ids":
                    continue
                out.items.setdefault(kind, {})[metric] = (
                    z[key],
                    z[f"{kind}/{metric}/values"],
                )
        return out
