"""``jobs/tune_stage2.py``: one stage-2 (STARS tuning) run from a stage-1 checkpoint or run."""

from __future__ import annotations

import argparse

from stars.cli.common import (
    DATA_HELP,
    add_config_args,
    add_overrides_argument,
    add_tracking_args,
    add_verbose_arg,
    init_ray,
    protocol_list,
    reported,
    run_name,
    table,
    tracking_flags,
)
from stars.config import load_layers
from stars.eval.config import EvalConfig
from stars.presets import job_preset
from stars.tracking.config import TrackingConfig
from stars.train.config import Stage2JobConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tune_stage2.py",
        description="STARS stage 2: contrastive tuning of a stage-1 encoder on Ray, tracked in "
        "MLflow as a descendant of its stage-1 run. Settings: preset < --config < --set < flags.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from",
        dest="source",
        help="stage-1 checkpoint: file, checkpoint dir or run dir (ours), or a published "
        "MAMP / STARS file",
    )
    source.add_argument("--from-run", help="the stage-1 MLflow run RUN_ID")
    add_config_args(parser, "YAML file of stage-2 job keys (e.g. a sweep's best config)")
    parser.add_argument("--data", help=DATA_HELP)
    parser.add_argument("--name", help="Ray run name (default: generated); re-use resumes")
    parser.add_argument(
        "--protocols",
        default="",
        help="evaluation protocols after tuning, comma-separated (default: none)",
    )
    add_overrides_argument(parser, "--eval-set", "eval_set", "dotted evaluation override")
    add_tracking_args(parser)
    add_verbose_arg(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "tune_stage2.py"
    from stars.cli.console import job_console
    from stars.cli.pretrain import storage_log
    from stars.data.source import pretrain_split, resolve_data
    from stars.model.checkpoint import encoder_state, read
    from stars.train.resolve import resolve_stage2
    from stars.workflow.stages import source_from_checkpoint, source_from_run, tracked_stage2
    from stars.workflow.tracker import Tracker

    name = args.name or run_name("stage2")
    with reported(prog):
        flags = {"data.path": args.data} if args.data else {}
        layered = load_layers(
            Stage2JobConfig, job_preset(args.preset, "stage2"), args.config, args.overrides, flags
        )
        evaluation = load_layers(
            EvalConfig,
            job_preset(args.preset, "eval")["eval"],
            None,
            args.eval_set,
            {"protocols": protocol_list(args.protocols)},
        ).config
        tracking = load_layers(TrackingConfig, {}, None, (), tracking_flags(args)).config
        log_file, log_kept = storage_log(layered.config.scale.storage_path, name)
        with job_console(prog, log_file, args.verbose, publish_to=log_kept):
            data = resolve_data(layered.config.data)
            tracker = Tracker(
                tracking, data, pretrain_split(data, layered.config.data.protocol), args.preset
            )
            source = (
                source_from_run(tracker, args.from_run)
                if args.from_run
                else source_from_checkpoint(args.source)
            )
            encoder = encoder_state(read(source.checkpoint), source.checkpoint)[0]
            cfg = resolve_stage2(layered, data, encoder, source.checkpoint)
            init_ray(args.verbose)
            outcome = tracked_stage2(cfg, source, data, name, tracker, evaluation, progress=True)
    history = outcome.result.history if outcome.result else []
    last = history[-1] if history else {}
    rows = [
        ("stage", "stage2 (STARS)"),
        ("MLflow run", f"{outcome.run_name} ({outcome.run_id})" if outcome.run_id else "-"),
        ("source", source.checkpoint),
        ("epochs", len(history)),
        ("final loss", f"{last.get('loss', 0):.4f}"),
    ]
    rows += [(k, f"{v:.4f}") for k, v in last.items() if k.startswith("monitor_")]
    rows += [(k, f"{v:.4f}") for k, v in sorted(outcome.metrics.items())]
    rows.append(("checkpoint", outcome.checkpoint))
    print(table(rows))
    return 0
