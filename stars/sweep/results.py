"""What a sweep leaves: a results table (one row per trial), the best configuration as a
stage-2 YAML file, and a plot of the objective against each swept parameter."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from stars.config import apply_dotted
from stars.metrics.intervals import SUFFIX_HIGH, SUFFIX_LOW
from stars.storage import shown
from stars.sweep.trial import TRIAL_DONE
from stars.text import table
from stars.workflow.group_run import write_rows

TEST_METRICS = ("fewshot_test_5shot_mean", "fewshot_5shot_mean", "knn_top1")


INTERRUPTED = "INTERRUPTED"
PARTIAL = "stars.partial"  # on a sweep run: "n of m trials" when it was interrupted


def mark_interrupted(rows: list[dict[str, Any]], trial_ids: list[str]) -> list[str]:
    """Rows of trials an interruption stopped say so (Tune reports them like trials a
    scheduler stopped): those in ``trial_ids`` (started, never ended) and those that never
    reported. Returns the ids of all of them."""
    marked = []
    for row in rows:
        stopped = row["status"] == "STOPPED" and (
            row["trial"] in trial_ids or row.get("epochs") is None
        )
        if stopped:
            row["status"] = INTERRUPTED
            marked.append(str(row["trial"]))
    return sorted(set(marked) | set(trial_ids))


def trial_id_of(result: Any) -> str:
    """A trial's id from its last report, else from its directory name (``..._<id>_<n>_...``)."""
    metrics = result.metrics or {}
    if metrics.get("trial_id"):
        return str(metrics["trial_id"])
    name = Path(str(result.path)).name
    found = re.search(r"([0-9a-f]{5}_\d{5})", name)
    return found.group(1) if found else name


def trial_rows(results: Iterable[Any], keys: list[str], objective: str) -> list[dict[str, Any]]:
    """One row per trial of a Tune ``ResultGrid``: status, source, parameters, objective and
    the test metrics (reported separately; never used to choose)."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        config = result.config or {}
        params = config.get("params", {})
        source = config.get("source", {})
        if result.error is not None:
            status = "FAILED"
        elif metrics.get(TRIAL_DONE):
            status = "DONE"
        else:
            status = "STOPPED"
        row = {
            "trial": trial_id_of(result),
            "status": status,
            "stage1_run": source.get("run_id", "")
            or shown(source.get("checkpoint", "")).rsplit("/", 1)[-1],
            **{key: params.get(key) for key in keys},
            "epochs": metrics.get("epoch"),
            "repeats": metrics.get("repeats"),
            objective: metrics.get("objective") if status != "FAILED" else None,
        }
        for suffix in (SUFFIX_LOW, SUFFIX_HIGH):
            value = metrics.get("objective" + suffix)
            row[objective + suffix] = value if status != "FAILED" else None
        row.update({m: metrics.get(m) for m in TEST_METRICS if m in metrics})
        row["mlflow_run"] = metrics.get("mlflow_run_id", "")
        if result.error is not None:
            row["error"] = " ".join(str(result.error).split())[:200]
        rows.append(row)
    return rows


def best_row(rows: list[dict[str, Any]], objective: str, mode: str = "max") -> dict | None:
    """The finished trial with the best validation objective."""
    done = [r for r in rows if r["status"] == "DONE" and finite(r.get(objective))]
    if not done:
        return None
    pick = max if mode == "max" else min
    return pick(done, key=lambda r: r[objective])


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def interval_of(row: dict[str, Any], objective: str) -> tuple[float, float] | None:
    low, high = row.get(objective + SUFFIX_LOW), row.get(objective + SUFFIX_HIGH)
    return (low, high) if finite(low) and finite(high) else None


def with_interval(row: dict[str, Any], objective: str) -> str:
    """``0.2638 ± 0.0210`` (the objective and its interval's half-width), or the value."""
    value = row.get(objective)
    if not finite(value):
        return "-"
    iv = interval_of(row, objective)
    return f"{value:.4f}" if iv is None else f"{value:.4f} ± {(iv[1] - iv[0]) / 2:.4f}"


def trials_table(rows: list[dict[str, Any]], objective: str = "") -> str:
    """The trials as a table; the objective shown with its interval (``value ± half``)."""
    if not rows:
        return "(no trials)"
    hidden = {"mlflow_run", "error", objective + SUFFIX_LOW, objective + SUFFIX_HIGH}
    columns = [c for c in rows[0] if c not in hidden]

    def show(row: dict[str, Any], column: str) -> str:
        if column == objective:
            return with_interval(row, objective)
        value = row.get(column)
        if isinstance(value, float):
            return f"{value:.4g}"
        return "-" if value is None else str(value)

    header = [f"{c} (± 95 %)" if c == objective else c for c in columns]
    return table([header] + [[show(r, c) for c in columns] for r in rows])


def best_lines(rows: list[dict[str, Any]], best: dict[str, Any], objective: str) -> list[str]:
    """The best trial with its interval, what the interval is over, and the trials whose
    interval overlaps it: those the sweep cannot tell apart from the best."""
    repeats = int(best.get("repeats") or 1)
    if repeats > 1:
        over = f"95 % interval over {repeats} training seeds (sweep.repeats={repeats})"
    else:
        over = (
            "95 % interval over the evaluation of one seed only (sweep.repeats=1: it holds "
            "no spread over training seeds, which is usually larger)"
        )
    lines = [
        f"best trial: {best['trial']}  {objective} = {with_interval(best, objective)} ({over})"
    ]
    best_iv = interval_of(best, objective)
    if best_iv is None:
        lines.append("no interval for the best trial: it cannot be told apart from the others")
        return lines
    close = [
        r
        for r in rows
        if r is not best
        and r["status"] == "DONE"
        and (iv := interval_of(r, objective)) is not None
        and iv[1] >= best_iv[0]
    ]
    if close:
        shown = ", ".join(f"{r['trial']} ({with_interval(r, objective)})" for r in close)
        lines.append(f"not distinguishable from the best (intervals overlap): {shown}")
    else:
        lines.append("no other finished trial's interval overlaps the best one's")
    return lines


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    return write_rows(rows, path)


def write_best_config(
    best: dict[str, Any], keys: list[str], base: dict[str, Any], objective: str, path: Path
) -> Path:
    """The best trial's values over the sweep's base settings, as a job file whose
    ``stage2`` section every job's ``--config`` reads."""
    values = {k: list(best[k]) if isinstance(best[k], tuple) else best[k] for k in keys}
    tree = apply_dotted(yaml.safe_load(yaml.safe_dump(base)) or {}, values)
    header = (
        f"# Best trial {best['trial']} of the sweep: {objective} = "
        f"{with_interval(best, objective)} (± 95 % interval)\n"
        f"# (stage-1 source: {best['stage1_run']}). Its stage2 section is read by every job:\n"
        "#   python jobs/stage2.py --stage1 RUN_ID --config THIS_FILE\n"
        "#   python jobs/pretrain.py --config THIS_FILE\n"
    )
    path.write_text(header + yaml.safe_dump({"stage2": tree}, sort_keys=False))
    return path


def plot_objective(rows: list[dict[str, Any]], keys: list[str], objective: str, path: Path) -> Path:
    """One panel per swept parameter: the objective of every finished or stopped trial."""
    from stars.plots import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(4 * max(len(keys), 1), 3.5))
    axes = [axes] if not hasattr(axes, "__len__") else list(axes)
    for ax, key in zip(axes, keys, strict=False):
        for status, colour in (("DONE", "tab:blue"), ("STOPPED", "tab:gray")):
            pts = [
                (r[key], r[objective])
                for r in rows
                if r["status"] == status and finite(r.get(objective)) and r.get(key) is not None
            ]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.scatter(
                    [str(x) if isinstance(x, str) else x for x in xs],
                    ys,
                    c=colour,
                    label=status.lower(),
                )
        ax.set_xlabel(key)
        ax.set_ylabel(objective)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{objective} per trial (validation)")
    return save_figure(fig, path)
