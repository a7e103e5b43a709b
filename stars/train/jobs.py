"""Command-line front ends of the training jobs (the scripts in ``jobs/`` stay thin)."""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from stars.config import ConfigError, add_overrides_argument, from_dict, load_config
from stars.errors import reported
from stars.train.config import JOB_PRESETS, TUNE_PRESETS, PretrainConfig, TuneConfig


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        default="small",
        choices=sorted(JOB_PRESETS),
        help="named sizes and schedules (default: small, the CPU demo)",
    )
    parser.add_argument("--config", help="YAML file applied over the preset")
    parser.add_argument("--data", help="dataset directory (default: embedded synthetic data)")
    parser.add_argument("--name", help="run name under the storage path (default: generated)")
    add_overrides_argument(parser)


def load_pretrain_config(args: argparse.Namespace) -> PretrainConfig:
    base = from_dict(PretrainConfig, JOB_PRESETS[args.preset])
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.path={args.data}")
    return load_config(PretrainConfig, args.config, overrides, base=base)


def init_ray() -> None:
    """Join the cluster when there is one (``ray job submit`` sets RAY_ADDRESS), else start
    a local instance."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if not ray.is_initialized():
        ray.init(log_to_driver=True, configure_logging=False)
    quiet_ray_data()


def quiet_ray_data() -> None:
    """Ray Data's per-operator progress bars flood a terminal; our loops report per epoch."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def run_name(prefix: str) -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def table(rows: list[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def add_main_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stage1-only", action="store_true", help="pre-train and evaluate, no stage 2"
    )
    parser.add_argument("--from-run", default="", help="tune the stage-1 MLflow run RUN_ID")
    parser.add_argument(
        "--tracking-uri",
        default="",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)",
    )
    parser.add_argument("--experiment", default="", help="MLflow experiment (default: per dataset)")
    parser.add_argument("--no-tracking", action="store_true", help="run without MLflow")
    parser.add_argument(
        "--protocols",
        help="evaluation protocols after each stage (default: knn,linear,fewshot,cluster,tsne; "
        "empty string: none)",
    )
    for flag, what in (("--tune-set", "stage-2"), ("--eval-set", "evaluation")):
        add_overrides_argument(
            parser, flag, flag[2:].replace("-", "_"), f"dotted {what} config override, repeatable"
        )


def load_main_config(args: argparse.Namespace):
    from stars.eval.config import EVAL_PRESETS, EvalConfig
    from stars.workflow import MAIN_EVAL_PROTOCOLS, MainConfig

    pretrain = load_pretrain_config(args)
    tune = load_config(
        TuneConfig, None, list(args.tune_set), base=from_dict(TuneConfig, TUNE_PRESETS[args.preset])
    )
    eval_base = dict(EVAL_PRESETS[args.preset].get("eval", {}))
    eval_base.setdefault("protocols", list(MAIN_EVAL_PROTOCOLS))
    eval_overrides = list(args.eval_set)
    if args.protocols is not None:
        eval_overrides.append(f"protocols=[{args.protocols}]")
    evaluation = load_config(
        EvalConfig, None, eval_overrides, base=from_dict(EvalConfig, eval_base)
    )
    tracking = {"uri": args.tracking_uri, "experiment": args.experiment}
    tracking["enabled"] = not args.no_tracking
    from stars.tracking.config import TrackingConfig

    return MainConfig(
        pretrain=pretrain, tune=tune, eval=evaluation, tracking=from_dict(TrackingConfig, tracking)
    )


def pretrain_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pretrain.py",
        description="STARS main job: data -> stage 1 (MAMP) -> evaluation -> stage 2 (STARS "
        "tuning) -> evaluation, tracked in MLflow.",
    )
    add_common_args(parser)
    add_main_args(parser)
    args = parser.parse_args(argv)
    if args.preset not in TUNE_PRESETS and not args.stage1_only:
        parser.error(f"stage 2 presets: {', '.join(sorted(TUNE_PRESETS))} (or --stage1-only)")
    try:
        cfg = load_main_config(args)
    except (ConfigError, ValueError) as err:
        parser.error(str(err))
    from stars.train.launch import resolve_data
    from stars.workflow import format_summary, run_main

    name = args.name or run_name("stars")
    with reported(parser.prog):
        resolve_data(cfg.pretrain.data)  # a bad --data fails here, before Ray starts
        init_ray()
        outcomes = run_main(cfg, name, stage1_only=args.stage1_only, from_run=args.from_run)
    print()
    print(format_summary(outcomes))
    if cfg.tracking.enabled:
        from stars.tracking.config import resolve_uri

        uri = resolve_uri(cfg.tracking.uri)
        print()
        if uri.startswith(("http://", "https://")):
            print(f"MLflow: {uri}")
        else:
            print(f"MLflow UI:  mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")
            print("then open http://127.0.0.1:5000 and compare the stage-1 and stage-2 runs")
    return 0


def tune_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tune_stage2.py", description="STARS stage 2: contrastive tuning on Ray."
    )
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        help="stage-1 checkpoint: file, checkpoint dir or run dir (ours), or a "
        "published MAMP / STARS file",
    )
    add_common_args(parser)
    parser.set_defaults(preset="small")
    args = parser.parse_args(argv)
    if args.preset not in TUNE_PRESETS:
        parser.error(f"stage 2 presets: {', '.join(sorted(TUNE_PRESETS))}")
    overrides = list(args.overrides) + ([f"data.path={args.data}"] if args.data else [])
    try:
        base = from_dict(TuneConfig, TUNE_PRESETS[args.preset])
        cfg = load_config(TuneConfig, args.config, overrides, base=base)
    except (ConfigError, ValueError) as err:
        parser.error(str(err))
    from stars.train.launch import run_stage2

    name = args.name or run_name("stage2")
    with reported(parser.prog):
        init_ray()
        result = run_stage2(cfg, args.source, name)
    last = result.history[-1] if result.history else {}
    rows = [
        ("stage", "stage2 (STARS)"),
        ("run", name),
        ("source", args.source),
        ("epochs", len(result.history)),
        ("final loss", f"{last.get('loss', 0):.4f}"),
    ]
    rows += [(k, f"{v:.4f}") for k, v in last.items() if k.startswith("monitor_")]
    rows.append(("checkpoint", result.checkpoint_file))
    print(table(rows))
    return 0
