"""The MLflow run of a group of seeds (``stars.stage=group``): each seed's lineage nests under
it, and it holds the aggregates over seeds, the per-seed values (``per_seed.csv``) and the
comparison figure (``comparison.png``: bars with 95 % intervals, the differences in words)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stars import interrupts
from stars.metrics.intervals import DELTA, verdict
from stars.text import table
from stars.tracking import liveness
from stars.tracking import runs as tr
from stars.workflow.group import (
    COMPARISONS,
    HEADLINE,
    STAGE_LABELS,
    Lineage,
    difference_rows,
    group_metrics,
    per_seed_rows,
    points,
    stored_interval,
)
from stars.workflow.repeats import run_seeds
from stars.workflow.stages import StageOutcome
from stars.workflow.tracker import Tracker, command_line

GROUP_RUN = "stars.group_run_id"  # on every run of a group's lineages
GROUP_NAME = "stars.group"
SEEDS = "stars.seeds"
FIGURE = "comparison.png"


class GroupRun:
    """A group's run: created (or continued, for the same ``name``) before its seeds run."""

    def __init__(self, tracker: Tracker, run: tr.StageRun | None, seeds: list[int]):
        self.tracker, self.run, self.seeds = tracker, run, seeds

    @classmethod
    def start(
        cls,
        tracker: Tracker,
        name: str,
        seeds: list[int],
        what: str,
        cfg: dict[str, Any],
        parent_run_id: str = "",
    ) -> GroupRun:
        """``what``: the lineage each seed runs (``stage1 -> stage2``); ``cfg``: the params
        the seeds share (their ``seed`` aside); ``parent_run_id``: the run the group nests
        under (the stage-1 run a group of tuned runs starts from)."""
        if not tracker.enabled:
            return cls(tracker, None, seeds)
        shown = ",".join(str(s) for s in seeds)
        existing = tr.find_runs(
            tracker.client, tracker.experiment, **{tr.STAGE: "group", GROUP_NAME: name}
        )
        if existing:
            tracker.client.update_run(existing[0].info.run_id, status="RUNNING")
            run = tr.StageRun(tracker.client, existing[0].info.run_id)
            run.clear_error()
            liveness.beat(tracker.client, run.run_id)
            return cls(tracker, run, seeds)
        params = {"seeds": shown, "n_seeds": len(seeds), **cfg}
        params.pop("seed", None)
        run = tr.StageRun.create(
            tracker.client,
            tracker.experiment,
            f"group {what} seeds={shown} {tracker.dataset}/{tracker.preset or 'custom'}",
            "group",
            params,
            {GROUP_NAME: name, SEEDS: shown, tr.DATA_DIGEST: tracker.data.digest},
            parent_run_id,
        )
        liveness.beat(tracker.client, run.run_id)
        return cls(tracker, run, seeds)

    @property
    def run_id(self) -> str:
        return self.run.run_id if self.run else ""

    def member_tags(self) -> dict[str, str]:
        return {GROUP_RUN: self.run_id} if self.run else {}

    def kill(self, signal_name: str = "") -> None:
        """Ctrl-C or SIGTERM: this run and every run of its lineages still RUNNING end
        KILLED."""
        if self.run is None:
            return
        signal_name = signal_name or interrupts.received() or "SIGINT"
        for member in tr.find_runs(
            self.tracker.client, self.tracker.experiment, **self.member_tags()
        ):
            if member.info.status == "RUNNING":
                tr.StageRun(self.tracker.client, member.info.run_id).kill(signal_name)
        liveness.stop_beating(self.run.run_id)
        self.run.kill(signal_name)

    def finish(self, lineages: list[Lineage], out_dir: Path) -> dict[str, float]:
        """Aggregates, the per-seed table and the figure on the group run (also written to
        ``out_dir``); FINISHED, or FAILED naming the seeds that failed. Returns the
        aggregates."""
        metrics = group_metrics(lineages)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = [write_rows(per_seed_rows(lineages), out_dir / "per_seed.csv")]
        done = [ln for ln in lineages if not ln.error]
        if len(done) > 1:
            files.append(comparison_figure(metrics, len(done), out_dir / FIGURE))
        failed = [ln for ln in lineages if ln.error]
        if self.run is None:
            return metrics
        liveness.stop_beating(self.run.run_id)
        self.run.log_metrics(metrics)
        for path in files:
            self.run.log_artifact(path)
        self.run.describe(describe_group(metrics, lineages))
        if failed:
            why = "; ".join(f"seed {ln.seed}: {ln.error}" for ln in failed)
            self.run.set_tags({tr.ERROR: tr.error_summary(why) or why[:500]})
            self.run.end("FAILED")
        else:
            self.run.clear_error()
            self.run.end("FINISHED")
        return metrics


def write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    """A CSV of ``rows`` (dicts), the columns in the order they first appear."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def headline_present(metrics: dict[str, float], label: str) -> list[str]:
    return [m for m in HEADLINE if f"{label}/{m}" in metrics]


def stage_rows(metrics: dict[str, float]) -> list[list[str]]:
    """A table: one row per stage, ``mean ± half-width`` over seeds per headline metric."""
    names = [m for m in HEADLINE if any(f"{lb}/{m}" in metrics for lb in STAGE_LABELS.values())]
    rows = [["stage", *names]]
    for label in STAGE_LABELS.values():
        if not any(f"{label}/{m}" in metrics for m in names):
            continue
        rows.append(
            [label, *(points(stored_interval(metrics, f"{label}/{m}", "seeds")) for m in names)]
        )
    return rows


def group_differences(metrics: dict[str, float]):
    """(comparison, metric, interval over seeds) for the headline metrics."""
    out = []
    for later, earlier in COMPARISONS:
        label = STAGE_LABELS[later]
        for m in HEADLINE:
            iv = stored_interval(metrics, f"{label}/{DELTA}{m}", "seeds")
            if iv is not None:
                out.append((f"{label} - {STAGE_LABELS[earlier]}", m, iv))
    return out


def format_group_summary(metrics: dict[str, float], lineages: list[Lineage]) -> str:
    n = int(metrics.get("n_seeds", 0))
    seeds = ", ".join(str(ln.seed) for ln in lineages if not ln.error)
    lines = [f"{n} seeds ({seeds}): metrics in %, mean ± 95 % interval over seeds (t, n = {n})"]
    lines.append(table(stage_rows(metrics)))
    diffs = group_differences(metrics)
    if diffs:
        lines += ["", "differences paired by seed:", table(difference_rows(diffs))]
    failed = [ln for ln in lineages if ln.error]
    for ln in failed:
        lines.append(f"seed {ln.seed} FAILED: {ln.error}")
    return "\n".join(lines)


def describe_group(metrics: dict[str, float], lineages: list[Lineage]) -> str:
    """Markdown for the group run's description."""
    rows = stage_rows(metrics)
    lines = [
        "**Group of seeds**: the same lineage trained once per seed; each seed's runs are "
        "nested under this one.",
        "",
        f"Reproduce: `{command_line()}`",
        "",
        "Mean ± 95 % interval over seeds (%):",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    diffs = group_differences(metrics)
    if diffs:
        lines += [
            "",
            "| difference | metric | value ± 95 % | what the interval says |",
            "|---|---|---|---|",
        ]
        lines += [f"| {w} | {m} | {points(iv, True)} | {verdict(iv)} |" for w, m, iv in diffs]
    lines += ["", f"Figure: `{FIGURE}`; per-seed values: `per_seed.csv`."]
    return "\n".join(lines)


def comparison_figure(metrics: dict[str, float], n: int, path: Path) -> Path:
    """Bars of each stage's headline metrics with their intervals over seeds."""
    from stars.plots import plot_comparison

    series: dict[str, dict[str, tuple[float, float, float]]] = {}
    for label in STAGE_LABELS.values():
        bars = {}
        for m in headline_present(metrics, label):
            iv = stored_interval(metrics, f"{label}/{m}", "seeds")
            if iv is not None:
                bars[m] = (iv.value, iv.low, iv.high)
        if bars:
            series[label] = bars
    notes = [
        f"{w:<17} {m:<19} {points(iv, True):>13}  {verdict(iv)}"
        for w, m, iv in group_differences(metrics)
    ]
    return plot_comparison(series, path, f"mean and 95 % interval over {n} seeds", notes)


@dataclass
class GroupOutcome:
    """What a group left: its run, aggregates, each seed's lineage and stage outcomes."""

    run_id: str
    metrics: dict[str, float]
    lineages: list[Lineage]
    stages: dict[int, list[StageOutcome]] = field(default_factory=dict)

    @property
    def failed(self) -> list[Lineage]:
        return [ln for ln in self.lineages if ln.error]


def run_group(
    tracker: Tracker,
    name: str,
    seeds: list[int],
    what: str,
    params: dict[str, Any],
    work: Callable[[int, GroupRun], list[StageOutcome]],
    *,
    at_once: int,
    out_dir: Path,
    repeated: tuple[str, ...] = tuple(STAGE_LABELS),
    parent_run_id: str = "",
) -> GroupOutcome:
    """``work(seed, group)`` for every seed (its runs nested under the group's), then the
    aggregates. ``repeated``: the stages each seed trains or evaluates anew (a stage-1 run
    tuned again with several seeds is not repeated, so it has no spread over seeds)."""
    group = GroupRun.start(tracker, name, seeds, what, params, parent_run_id)
    results = run_seeds(seeds, lambda seed: work(seed, group), at_once, on_interrupt=group.kill)
    lineages, stages = [], {}
    for result in results:
        error = " ".join(str(result.error).split())[:300] if result.error else ""
        lineage = Lineage(
            result.seed, error=error or (type(result.error).__name__ if result.error else "")
        )
        for outcome in result.value or []:
            lineage.run_ids[outcome.stage] = outcome.run_id
            if outcome.stage in repeated:
                lineage.metrics[outcome.stage] = dict(outcome.metrics)
        lineages.append(lineage)
        stages[result.seed] = list(result.value or [])
    metrics = group.finish(lineages, out_dir)
    return GroupOutcome(group.run_id, metrics, lineages, stages)
