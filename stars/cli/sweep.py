"""``jobs/sweep_stage2.py``: a Ray Tune sweep over stage 2, optionally fanned out from
stage-1 checkpoints trained per point of a masking space."""

from __future__ import annotations

import argparse

from stars.cli.common import (
    DATA_HELP,
    add_config_args,
    add_overrides_argument,
    add_stage1_arg,
    add_tracking_args,
    add_verbose_arg,
    data_and_seed_flags,
    given,
    init_ray,
    interruption,
    reported,
    routed_overrides,
    run_name,
    sections_text,
    tracking_config,
)
from stars.config import load_layers, read_sections
from stars.errors import StarsError
from stars.eval.config import EvalConfig
from stars.presets import job_preset
from stars.sweep.config import SECTIONS, SweepConfig
from stars.train.config import Stage1JobConfig, Stage2JobConfig

EXAMPLES = """\
examples:
  sweep_stage2.py --preset tiny --stage1 RUN_ID --num-samples 4
  sweep_stage2.py --stage1 RUN_ID --preset paper --data data/ntu60 --scheduler asha
  sweep_stage2.py --stage1-space search_spaces/masking.yaml --set stage2.epochs=10
  sweep_stage2.py --name SWEEP_NAME --resume --stage1 RUN_ID
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweep_stage2.py",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Ray Tune sweep over STARS stage 2 (queue size, layer decay, ...), each "
        "trial a tracked stage-2 run nested under the sweep run and linked to its stage-1 run. "
        "The objective is measured on validation data, never on the test split.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    add_stage1_arg(
        source,
        ("--stage1-runs", "--stage1-checkpoint"),
        help="the stage-1 sources: MLflow run ids (comma-separated) or one checkpoint (file, "
        "directory, URI or published MAMP / STARS file)",
    )
    source.add_argument(
        "--stage1-space",
        help="a stage-1 search space: one stage-1 run per point (masking temperature, ratio)",
    )
    parser.add_argument(
        "--space",
        help="the stage-2 search space file (default: the preset's, search_spaces/"
        "{tiny,small,stage2}.yaml; a relative path not found here is the repository's)",
    )
    add_config_args(parser, "YAML file with sections sweep, stage1, stage2, eval, tracking")
    parser.add_argument("--num-samples", type=int, help="trials per stage-1 source")
    parser.add_argument(
        "--objective", help="fewshot_val_<n>shot_mean (default n=5) or knn_val_top1"
    )
    parser.add_argument("--scheduler", choices=["asha", "none"], help="ASHA early stopping")
    parser.add_argument("--search", choices=["random", "grid", "optuna"], help="search algorithm")
    parser.add_argument("--data", help=DATA_HELP)
    parser.add_argument(
        "--name", help="sweep name (default: generated); with --resume, the one to continue"
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    parser.add_argument(
        "--seed",
        type=int,
        help="the sweep's seed (default 0): the search's draws and the trials' stage-2 seed "
        "(repeats use seed, seed+1, ...)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help="seeds each configuration trains with; its objective is their mean, with a "
        "95 %% interval over them (sweep.repeats, default 1)",
    )
    add_overrides_argument(parser, "--stage1-set", "stage1_set", "older: --set stage1.K=V")
    add_overrides_argument(parser, "--eval-set", "eval_set", "older: --set eval.K=V")
    add_overrides_argument(parser, "--sweep-set", "sweep_set", "older: --set sweep.K=V")
    add_tracking_args(parser)
    add_verbose_arg(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "sweep_stage2.py"
    from stars.cli.console import job_console
    from stars.data.job_data import resolve_data
    from stars.storage import check_writable, join, local_dir
    from stars.sweep.runner import SweepRequest, check_sweep, run_sweep, sweep_storage
    from stars.sweep.space import load_space, space_path

    name = args.name or run_name("sweep")
    kept = "its MLflow runs ended KILLED; finished trials are kept and are not run again"
    with interruption(prog, name, "--resume", kept=kept), reported(prog):
        if args.resume and not args.name:
            raise StarsError("--resume needs the --name of the sweep to continue")
        if args.config:
            read_sections(args.config, SECTIONS)
        sets = routed_overrides(
            args,
            {
                "sweep": "sweep_set",
                "stage1": "stage1_set",
                "stage2": "",
                "eval": "eval_set",
                "tracking": "",
            },
            "stage2",
        )
        sweep_flags = given(
            {
                "num_samples": args.num_samples,
                "objective": args.objective,
                "scheduler": args.scheduler,
                "search": args.search,
                "seed": args.seed,
                "repeats": args.repeats,
            }
        )
        sweep = load_layers(
            SweepConfig, {}, args.config, sets["sweep"], sweep_flags, section="sweep"
        ).config
        flags = data_and_seed_flags(args)

        def stage_layers(cls: type, stage: str):
            preset = job_preset(args.preset, stage)
            return load_layers(cls, preset, args.config, sets[stage], flags, section=stage)

        stage2 = stage_layers(Stage2JobConfig, "stage2")
        stage1 = stage_layers(Stage1JobConfig, "stage1")
        eval_tree = job_preset(args.preset, "eval")["eval"]
        # What a trial needs; --set eval.protocols adds more.
        eval_tree["protocols"] = ["knn", "fewshot"]
        evaluation = load_layers(
            EvalConfig, eval_tree, args.config, sets["eval"], section="eval"
        ).config
        tracking = tracking_config(args, args.config, sets["tracking"])
        runs, checkpoint = split_sources(args.stage1 or "")
        if args.print_config:
            two_level = stage1.config if args.stage1_space else None
            text = sections_text(
                prog,
                sweep=sweep,
                stage1=two_level,
                stage2=stage2.config,
                eval=evaluation,
                tracking=tracking,
            )
            print(text, end="")
            return 0
        request = SweepRequest(
            name=name,
            sweep=sweep,
            space=load_space(space_path(args.space, args.preset), job="stage2"),
            stage2=stage2,
            evaluation=evaluation,
            tracking=tracking,
            stage1=stage1,
            stage1_space=(
                load_space(space_path(args.stage1_space, args.preset), job="stage1")
                if args.stage1_space
                else None
            ),
            stage1_runs=runs,
            stage1_checkpoint=checkpoint,
            preset=args.preset,
            resume=args.resume,
        )
        data = resolve_data(stage2.config.data)
        flag = "--set scale.storage_path"
        check_writable(stage2.config.scale.storage_path, "scale.storage_path", flag)
        kept = sweep_storage(request)
        log_kept, results = join(kept, "sweep.log"), join(kept, "results")
        log_file = local_dir(log_kept)
        with job_console(prog, log_file, args.verbose, publish_to=log_kept):
            tracker = check_sweep(request, data)  # before Ray starts and before any run
            init_ray(args.verbose)
            outcome = run_sweep(request, data, tracker=tracker)
    print()
    print(outcome.table)
    print()
    if outcome.best is not None:
        from stars.sweep.results import best_lines

        for line in best_lines(outcome.rows, outcome.best, request.sweep.objective):
            print(line)
        print(f"best config: {kept_copy(outcome.artifacts['best_config'], results)}")
    results_csv = kept_copy(outcome.artifacts["results_csv"], results)
    print(f"sweep MLflow run: {outcome.run_id}; results: {results_csv}")
    return 0


def split_sources(text: str) -> tuple[list[str], str]:
    """``--stage1`` of a sweep: (run ids, '') or ([], one checkpoint)."""
    from stars.cli.common import is_run_id

    items = [t.strip() for t in text.split(",") if t.strip()]
    if all(is_run_id(t) for t in items):
        return items, ""
    if len(items) == 1:
        return [], items[0]
    raise StarsError(
        f"--stage1 takes MLflow run ids (comma-separated) or a single checkpoint, not a mix: {text}"
    )


def kept_copy(local: str, kept_dir: str) -> str:
    """A results file as kept: its path, or its URI when the sweep's storage is one."""
    from pathlib import Path

    from stars.location import Location

    kept = Location(kept_dir)
    if not kept.remote:
        return local
    return f"{kept.join(Path(local).name).shown} (local copy {local})"
