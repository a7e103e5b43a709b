"""Lineage queries over the ``stars.*`` tags: which tuned runs came from which stage-1 run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from stars.tracking.runs import SOURCE_RUN, STAGE, SWEEP


@dataclass
class LineageNode:
    run: Any  # mlflow.entities.Run
    children: list[LineageNode] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.run.info.run_id


def _experiments(mlflow_client, experiment_ids: list[str] | None) -> list[str]:
    if experiment_ids:
        return experiment_ids
    return [e.experiment_id for e in mlflow_client.search_experiments()]


def descendants(mlflow_client, run_id: str, experiment_ids: list[str] | None = None) -> list:
    """Stage-2 runs tuned from stage-1 run ``run_id``, oldest first."""
    runs = mlflow_client.search_runs(
        _experiments(mlflow_client, experiment_ids),
        filter_string=f"tags.`{SOURCE_RUN}` = '{run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    return list(runs)


def best_descendant(
    mlflow_client,
    run_id: str,
    metric: str,
    mode: str = "max",
    experiment_ids: list[str] | None = None,
):
    """The tuned descendant with the best final ``metric`` (None when none reports it)."""
    scored = [
        r for r in descendants(mlflow_client, run_id, experiment_ids) if metric in r.data.metrics
    ]
    if not scored:
        return None
    pick = max if mode == "max" else min
    return pick(scored, key=lambda r: r.data.metrics[metric])


def lineage_tree(mlflow_client, experiment_ids: list[str] | None = None) -> list[LineageNode]:
    """Every stage-1 run with its tuned descendants; the trials of a sweep are grouped under
    a node of their sweep run. Stage-2 runs whose source is unknown to these experiments are
    listed as roots of their own."""
    exps = _experiments(mlflow_client, experiment_ids)

    def runs_of(stage: str) -> list:
        return list(
            mlflow_client.search_runs(
                exps,
                filter_string=f"tags.`{STAGE}` = '{stage}'",
                order_by=["attributes.start_time ASC"],
                max_results=10000,
            )
        )

    sweeps = {r.data.tags.get(SWEEP, ""): r for r in runs_of("sweep")}
    roots = {r.info.run_id: LineageNode(r) for r in runs_of("stage1")}
    orphans: list[LineageNode] = []
    for run in runs_of("stage2"):
        parent = roots.get(run.data.tags.get(SOURCE_RUN, ""))
        siblings = parent.children if parent else orphans
        sweep = run.data.tags.get(SWEEP, "")
        if sweep in sweeps:
            group = next((n for n in siblings if n.run is sweeps[sweep]), None)
            if group is None:
                group = LineageNode(sweeps[sweep])
                siblings.append(group)
            siblings = group.children
        siblings.append(LineageNode(run))
    return [*roots.values(), *orphans]


def format_tree(
    nodes: list[LineageNode],
    metrics: tuple[str, ...] = ("knn_top1", "fewshot_1shot_mean", "fewshot_5shot_mean"),
) -> str:
    """Text tree: each stage-1 run, its tuned descendants (and sweeps) indented, with
    ``metrics``."""

    def line(node: LineageNode, indent: str) -> str:
        run = node.run
        stage = run.data.tags.get(STAGE, "?")
        shown = metrics
        if stage == "sweep":
            shown = tuple(m for m in run.data.metrics if m.startswith(("best_", "trials_")))
        values = "  ".join(
            f"{m}={run.data.metrics[m]:.4g}" if m in run.data.metrics else f"{m}=-" for m in shown
        )
        name = run.info.run_name or ""
        return f"{indent}{stage} {run.info.run_id} {name} [{run.info.status}]  {values}"

    lines: list[str] = []

    def walk(node: LineageNode, depth: int) -> None:
        lines.append(line(node, "     " * (depth - 1) + "  └─ " if depth else ""))
        for child in node.children:
            walk(child, depth + 1)

    for node in nodes:
        walk(node, 0)
    return "\n".join(lines) if lines else "(no STARS runs)"


def tuned_runs(node: LineageNode) -> list:
    """The stage-2 runs under ``node``, through any sweep groups."""
    out = []
    for child in node.children:
        if child.run.data.tags.get(STAGE) == "stage2":
            out.append(child.run)
        out += tuned_runs(child)
    return out


def plot_comparison(
    nodes: list[LineageNode],
    path: str,
    metrics: tuple[str, ...] = ("knn_top1", "fewshot_1shot_mean", "fewshot_5shot_mean"),
) -> str:
    """Grouped bars: each stage-1 run next to its tuned descendants, one panel per metric
    (the numbers the MLflow compare view shows, as a PNG for reports)."""
    from stars.plots import pyplot, save_figure

    plt = pyplot()

    families = [n for n in nodes if n.children or n.run.data.tags.get(STAGE) == "stage1"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        labels, values, colours = [], [], []
        for node in families:
            for i, run in enumerate([node.run, *tuned_runs(node)]):
                labels.append(f"{run.info.run_name or run.info.run_id[:8]}")
                values.append(run.data.metrics.get(metric, float("nan")))
                colours.append("tab:gray" if i == 0 else "tab:blue")
        ax.bar(range(len(values)), values, color=colours)
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(metric)
    fig.suptitle("stage 1 (grey) and its tuned descendants (blue)")
    return str(save_figure(fig, path))


DEFAULT_UI = "http://127.0.0.1:5000"


def ui_base(tracking_uri: str) -> str:
    """Where the UI of ``tracking_uri`` is: the server itself, or a local ``mlflow ui``."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return DEFAULT_UI


def compare_url(base: str, run_ids: list[str], experiment_ids: list[str]) -> str:
    """The MLflow UI's compare page for ``run_ids`` (metrics side by side, charts)."""
    from urllib.parse import quote

    runs = quote(json.dumps(run_ids, separators=(",", ":")))
    exps = quote(json.dumps(sorted(set(experiment_ids)), separators=(",", ":")))
    return f"{base}/#/compare-runs?runs={runs}&experiments={exps}&{TRAINING_VIEW}"


# MLflow 3's UI opens in its GenAI view unless told otherwise (the experiment tag alone is
# overridden by the UI's own toggle): links say which view to open.
TRAINING_VIEW = "workflowType=machine_learning"


def runs_url(base: str, experiment_id: str, order_by: str = "") -> str:
    """The experiment's runs table (stage-1 runs with their tuned runs nested under them),
    sorted by the metric ``order_by`` (best first) when given."""
    from urllib.parse import quote

    order = f"orderByKey={quote(f'metrics.`{order_by}`')}&orderByAsc=false&" if order_by else ""
    return f"{base}/#/experiments/{experiment_id}/runs?{order}{TRAINING_VIEW}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """A run's page (its description, metrics and parameters)."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_VIEW}"


def artifact_url(base: str, experiment_id: str, run_id: str, path: str) -> str:
    """A run's artifact ``path`` opened in the run page's artifact view."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifactPath/{path}?{TRAINING_VIEW}"
