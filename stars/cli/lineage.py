"""``jobs/lineage.py``: the tree of stage-1 runs, their tuned descendants and sweeps."""

from __future__ import annotations

import argparse

from stars.cli.common import add_version_arg, reported
from stars.errors import JobError
from stars.tracking.config import resolve_uri
from stars.tracking.lineage import (
    best_descendant,
    compare_url,
    descendants,
    format_tree,
    lineage_tree,
    plot_comparison,
    ui_base,
)
from stars.tracking.liveness import end_stale_runs
from stars.tracking.runs import client
from stars.tracking.store import check_store

EXAMPLES = """\
examples:
  lineage.py                                   every stage-1 run and its descendants
  lineage.py --tracking-uri http://HOST:5000 --plot lineage.png
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lineage.py",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Stage-1 runs, their tuned descendants (and sweeps) and their metrics.",
    )
    parser.add_argument("--tracking-uri", default="", help="default: sqlite:///mlflow.db")
    add_version_arg(parser)
    parser.add_argument("--experiment", action="append", default=[], help="name; repeatable")
    parser.add_argument(
        "--metrics",
        default="knn_top1,fewshot_1shot_mean,fewshot_5shot_mean",
        help="comma-separated metrics to show",
    )
    parser.add_argument(
        "--best", metavar="RUN_ID", help="print the best tuned descendant of this stage-1 run"
    )
    parser.add_argument(
        "--url",
        metavar="RUN_ID",
        help="print the MLflow compare URL of this stage-1 run and its tuned descendants",
    )
    parser.add_argument("--plot", metavar="PNG", help="also draw the comparison as a PNG")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with reported("lineage.py"):
        uri = resolve_uri(args.tracking_uri)
        check_store(uri, create=False)
        mlflow_client = client(uri)
        for name, reason in end_stale_runs(mlflow_client):
            print(f"[stars] run {name!r} was left RUNNING: ended FAILED ({reason})")
        exp_ids = []
        for name in args.experiment:
            exp = mlflow_client.get_experiment_by_name(name)
            if exp is None:
                raise JobError(f"no experiment named {name!r} in {uri}")
            exp_ids.append(exp.experiment_id)
        metrics = tuple(m for m in args.metrics.split(",") if m)
        if args.url:
            from mlflow.exceptions import MlflowException

            try:
                root = mlflow_client.get_run(args.url)
            except MlflowException:
                raise JobError(f"no MLflow run {args.url!r} in {uri}") from None
            family = [root, *descendants(mlflow_client, args.url, exp_ids or None)]
            runs = [r.info.run_id for r in family]
            exps = [r.info.experiment_id for r in family]
            print(compare_url(ui_base(uri), runs, exps))
            return 0
        if args.best:
            run = best_descendant(
                mlflow_client, args.best, metrics[0], experiment_ids=exp_ids or None
            )
            print(run.info.run_id if run else f"no descendant of {args.best} reports {metrics[0]}")
            return 0 if run else 1
        tree = lineage_tree(mlflow_client, exp_ids or None)
    print(format_tree(tree, metrics))
    if args.plot:
        print(f"wrote {plot_comparison(tree, args.plot, metrics)}")
    return 0
