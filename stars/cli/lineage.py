"""``jobs/lineage.py``: the tree of stage-1 runs and their tuned descendants."""

from __future__ import annotations

import argparse

from stars.tracking.config import resolve_uri
from stars.tracking.lineage import best_descendant, format_tree, lineage_tree, plot_comparison
from stars.tracking.runs import client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lineage.py", description="Stage-1 runs, their tuned descendants and their metrics."
    )
    parser.add_argument("--tracking-uri", default="", help="default: sqlite:///mlflow.db")
    parser.add_argument("--experiment", action="append", default=[], help="name; repeatable")
    parser.add_argument(
        "--metrics",
        default="knn_top1,fewshot_1shot_mean,fewshot_5shot_mean",
        help="comma-separated metrics to show",
    )
    parser.add_argument(
        "--best", metavar="RUN_ID", help="print the best tuned descendant of this stage-1 run"
    )
    parser.add_argument("--plot", metavar="PNG", help="also draw the comparison as a PNG")
    args = parser.parse_args(argv)
    mlflow_client = client(resolve_uri(args.tracking_uri))
    exp_ids = []
    for name in args.experiment:
        exp = mlflow_client.get_experiment_by_name(name)
        if exp is None:
            parser.error(f"no experiment named {name!r}")
        exp_ids.append(exp.experiment_id)
    metrics = tuple(m for m in args.metrics.split(",") if m)
    if args.best:
        run = best_descendant(mlflow_client, args.best, metrics[0], experiment_ids=exp_ids or None)
        print(run.info.run_id if run else f"no descendant of {args.best} reports {metrics[0]}")
        return 0 if run else 1
    tree = lineage_tree(mlflow_client, exp_ids or None)
    print(format_tree(tree, metrics))
    if args.plot:
        print(f"wrote {plot_comparison(tree, args.plot, metrics)}")
    return 0
