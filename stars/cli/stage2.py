"""``jobs/stage2.py``: one stage-2 (STARS tuning) run from a stage-1 checkpoint or run."""

from __future__ import annotations

import argparse
import dataclasses

from stars.cli.common import (
    DATA_HELP,
    add_config_args,
    add_overrides_argument,
    add_seed_args,
    add_stage1_arg,
    add_tracking_args,
    add_verbose_arg,
    data_and_seed_flags,
    given,
    init_ray,
    interruption,
    is_run_id,
    protocol_list,
    reported,
    routed_overrides,
    run_name,
    sections_text,
    stage1_source,
    tracking_config,
)
from stars.config import load_layers
from stars.eval.config import EvalConfig
from stars.presets import job_preset
from stars.text import table
from stars.train.config import Stage2JobConfig

EXAMPLES = """\
examples:
  stage2.py --stage1 RUN_ID --protocols knn,fewshot
  stage2.py --stage1 runs/stars-...-stage1 --set stage2.queue_size=4096
  stage2.py --stage1 MAMP_ntu60_xsub.pth --preset paper --data data/ntu60
  stage2.py --stage1 RUN_ID --config runs/sweeps/NAME/results/best_stage2.yaml
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stage2.py",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="STARS stage 2: contrastive tuning of a stage-1 encoder on Ray, tracked in "
        "MLflow as a descendant of its stage-1 run. Settings: preset < --config < --set < flags.",
    )
    add_stage1_arg(parser, ("--from", "--from-run"), required=True)
    add_config_args(parser, "YAML file of stage-2 job keys (e.g. a sweep's best config)")
    parser.add_argument("--data", help=DATA_HELP)
    parser.add_argument("--name", help="Ray run name (default: generated); re-use resumes")
    parser.add_argument(
        "--protocols",
        default="",
        help="evaluation protocols after tuning, comma-separated (default: none)",
    )
    add_overrides_argument(parser, "--eval-set", "eval_set", "older spelling of --set eval.K=V")
    add_seed_args(parser, "the tuning (and its evaluation) of the one stage-1 source")
    add_tracking_args(parser)
    add_verbose_arg(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "stage2.py"
    from stars.cli.console import job_console
    from stars.cli.pretrain import storage_log
    from stars.data.job_data import pretrain_split, resolve_data
    from stars.model.checkpoint import encoder_state, read
    from stars.train.resolve import resolve_stage2
    from stars.workflow.config import evaluation_seeded
    from stars.workflow.repeats import parse_seeds
    from stars.workflow.tracker import Tracker

    name = args.name or run_name("stage2")
    with interruption(prog, name), reported(prog):
        flags = data_and_seed_flags(args)
        seed = given({"seed": args.seed})
        sets = routed_overrides(args, {"stage2": "", "eval": "eval_set", "tracking": ""}, "stage2")
        layered = load_layers(
            Stage2JobConfig,
            job_preset(args.preset, "stage2"),
            args.config,
            sets["stage2"],
            flags,
            section="stage2",
            whole_if_flat=True,
        )
        eval_flags = {"protocols": protocol_list(args.protocols)} if args.protocols else {}
        evaluation = load_layers(
            EvalConfig,
            {"protocols": [], **job_preset(args.preset, "eval")["eval"]},
            args.config,
            sets["eval"],
            {**eval_flags, **seed},
            section="eval",
        )
        tracking = tracking_config(args, args.config, sets["tracking"])
        seeds = parse_seeds(args.seeds, layered.config.seed) if args.seeds else []
        if args.print_config and not is_run_id(args.stage1):
            # Nothing written, no console: a checkpoint source needs no store or log.
            data = resolve_data(layered.config.data)
            source = stage1_source(None, args.stage1)
            encoder = encoder_state(read(source.checkpoint), source.checkpoint)[0]
            cfg = resolve_stage2(layered, data, encoder, source.checkpoint)
            evaluation = evaluation_seeded(evaluation, cfg.seed)
            print(sections_text(prog, stage2=cfg, eval=evaluation, tracking=tracking), end="")
            return 0
        log_file, log_kept = storage_log(layered.config.scale.storage_path, name)
        with job_console(prog, log_file, args.verbose, publish_to=log_kept):
            data = resolve_data(layered.config.data)
            tracker = Tracker(
                tracking, data, pretrain_split(data, layered.config.data.protocol), args.preset
            )
            source = stage1_source(tracker, args.stage1)
            encoder = encoder_state(read(source.checkpoint), source.checkpoint)[0]
            cfg = resolve_stage2(layered, data, encoder, source.checkpoint)
            evaluation = evaluation_seeded(evaluation, cfg.seed)
            if args.print_config:
                print(sections_text(prog, stage2=cfg, eval=evaluation, tracking=tracking), end="")
                return 0
            if evaluation.protocols:
                from stars.eval.feasibility import check_protocols

                feasible = check_protocols(data, evaluation)
                for line in feasible.lines():
                    print(line)
                evaluation = feasible.eval
            init_ray(args.verbose)
            if len(seeds) > 1:
                return tune_group(args, cfg, evaluation, data, name, seeds, source, tracker)
            if seeds:
                cfg, evaluation = with_seed(cfg, evaluation, seeds[0])
            outcome = tune_one(cfg, evaluation, data, name, source, tracker)
    print(table(outcome_rows(outcome, source)))
    return 0


def with_seed(cfg, evaluation, seed: int):
    return dataclasses.replace(cfg, seed=seed), dataclasses.replace(evaluation, seed=seed)


def tune_one(cfg, evaluation, data, name, source, tracker, **group):
    from stars.workflow.stages import tracked_stage2

    return tracked_stage2(cfg, source, data, name, tracker, evaluation, progress=True, **group)


def outcome_rows(outcome, source) -> list[tuple[str, object]]:
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
    return rows


def tune_group(args, cfg, evaluation, data, name, seeds, source, tracker) -> int:
    """One tuned run per seed from the same source, under one group run nested under the
    source's run; then the summary over seeds."""
    from stars import storage
    from stars.cli.pretrain import report_group
    from stars.config import flatten
    from stars.train.launch import shared_training_rows
    from stars.train.progress import prefixed_print
    from stars.workflow.group_run import run_group
    from stars.workflow.repeats import seeds_at_once
    from stars.workflow.stages import stage2_run_name

    at_once = seeds_at_once(cfg.scale, len(seeds), args.seeds_at_once)
    print(f"[stars] {len(seeds)} seeds ({', '.join(map(str, seeds))}), {at_once} at a time")

    def lineage(seed: int, group):
        seeded, seeded_eval = with_seed(cfg, evaluation, seed)
        outcome = tune_one(
            seeded,
            seeded_eval,
            data,
            f"{name}-seed{seed}",
            source,
            tracker,
            parent_run_id=group.run_id or None,
            run_name=f"{stage2_run_name(seeded, source)} seed={seed}",
            tags=group.member_tags(),
            log=prefixed_print,
        )
        return [outcome]

    kept = storage.join(cfg.scale.storage_path, f"{name}-group")
    with shared_training_rows():
        group = run_group(
            tracker,
            name,
            seeds,
            f"stage2 <- {source.short}",
            flatten(cfg),
            lineage,
            at_once=at_once,
            out_dir=storage.local_dir(kept),
            repeated=("stage2",),
            parent_run_id=source.run_id,
        )
    storage.publish(storage.local_dir(kept), kept)
    return report_group(tracker, group)
