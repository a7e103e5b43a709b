"""Command-line front ends of the training jobs (the scripts in ``jobs/`` stay thin)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from stars.config import ConfigError, dump_yaml, from_dict, load_config
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
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted config override, repeatable",
    )


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


def pretrain_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pretrain.py", description="STARS stage 1: MAMP pre-training on Ray."
    )
    add_common_args(parser)
    parser.add_argument(
        "--stage1-only",
        action="store_true",
        help="pre-train only (stage 2 and tracking come with later releases)",
    )
    args = parser.parse_args(argv)
    try:
        cfg = load_pretrain_config(args)
    except (ConfigError, ValueError) as err:
        parser.error(str(err))
    from stars.train.launch import run_stage1

    name = args.name or run_name("stage1")
    init_ray()
    result = run_stage1(cfg, name)
    out = Path(result.storage_dir)
    if "://" not in str(out):
        dump_yaml(cfg, out / "config.yaml")
    last = result.history[-1] if result.history else {}
    print(
        table(
            [
                ("stage", "stage1 (MAMP)"),
                ("run", name),
                ("epochs", len(result.history)),
                ("final loss", f"{last.get('loss', 0):.4f}"),
                ("throughput", f"{last.get('throughput_seq_per_s', 0):.1f} seq/s"),
                ("checkpoint", result.checkpoint_file),
            ]
        )
    )
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
