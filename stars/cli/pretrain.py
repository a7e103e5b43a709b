"""``jobs/pretrain.py``: the main job (stage 1 -> evaluation -> stage 2 -> evaluation)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stars.cli.common import (
    DATA_HELP,
    STAGE1_HELP,
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
    protocol_list,
    reported,
    routed_overrides,
    run_name,
    stage1_source,
    tracking_config,
)
from stars.config import ConfigError, load_layers, read_sections
from stars.eval.config import EvalConfig
from stars.presets import DEFAULT_PRESET, job_preset
from stars.recipes import RECIPES, get_recipe
from stars.train.config import Stage1JobConfig, Stage2JobConfig
from stars.workflow.config import SECTIONS, MainConfig

EXAMPLES = """\
examples:
  pretrain.py                                        the CPU demo on the embedded data
  pretrain.py --preset tiny --print-config           the resolved config, then exit
  pretrain.py --recipe ntu60-xsub --data data/ntu60  a paper row (docs/paper.md)
  pretrain.py --data data/mine --set stage1.epochs=100 --set stage2.layer_decay=0.4
  pretrain.py --stage1 RUN_ID                        tune an existing stage-1 run again
  pretrain.py --seeds 3                              three lineages, intervals over seeds
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pretrain.py",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="STARS main job: data -> stage 1 (MAMP) -> evaluation -> stage 2 (STARS "
        "tuning) -> evaluation, tracked in MLflow. Settings: preset < --config file < --set "
        "< flags.",
    )
    add_config_args(
        parser, "YAML file with sections stage1, stage2, eval, tracking (each optional)"
    )
    parser.add_argument("--data", help=DATA_HELP)
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        help="a published row: the paper preset, the released per-dataset values and the "
        "dataset protocol; needs --data (docs/paper.md)",
    )
    parser.add_argument("--name", help="Ray run name prefix (default: generated); re-use resumes")
    parser.add_argument(
        "--stage1-only", action="store_true", help="pre-train and evaluate, no stage 2"
    )
    add_stage1_arg(
        parser,
        ("--from-run",),
        default="",
        help="skip stage 1 and tune this stage-1 source instead (" + STAGE1_HELP[15:] + ")",
    )
    add_seed_args(parser, "the whole lineage (control, stage 1, evaluation, stage 2, evaluation)")
    parser.add_argument(
        "--protocols",
        help="evaluation protocols after each stage, comma-separated (default: the feature "
        "protocols knn,linear,fewshot,cluster,tsne; empty string: none)",
    )
    for flag, section in (("--stage2-set", "stage2"), ("--eval-set", "eval")):
        add_overrides_argument(
            parser, flag, flag[2:].replace("-", "_"), f"older spelling of --set {section}.KEY=VALUE"
        )
    add_tracking_args(parser)
    add_verbose_arg(parser)
    return parser


def recipe_base(args: argparse.Namespace) -> dict[str, dict]:
    """Each section's base: the preset's (the recipe's preset with ``--recipe``), with the
    recipe's values over it; the data protocol is the recipe's."""
    from stars.config import apply_dotted

    recipe = get_recipe(args.recipe) if args.recipe else None
    if recipe is not None:
        if not args.data:
            raise ConfigError(
                f"--recipe {recipe.name} needs --data DIR: a dataset imported with {recipe.prepare}"
            )
        if args.preset != DEFAULT_PRESET and args.preset != recipe.preset:
            raise ConfigError(
                f"--recipe {recipe.name} uses the {recipe.preset} preset; drop --preset "
                f"{args.preset} (override single values with --set)"
            )
        args.preset = recipe.preset
    base = {
        "stage1": job_preset(args.preset, "stage1"),
        "stage2": job_preset(args.preset, "stage2"),
        "eval": job_preset(args.preset, "eval")["eval"],
    }
    if recipe is not None:
        protocol = {"data.protocol": recipe.protocol}
        base["stage1"] = apply_dotted(base["stage1"], {**recipe.stage1, **protocol})
        base["stage2"] = apply_dotted(base["stage2"], {**recipe.stage2, **protocol})
        base["eval"] = apply_dotted(base["eval"], {**recipe.eval, "protocol": recipe.protocol})
    return base


def load_layered(args: argparse.Namespace):
    """The four sections, layered: preset < file section < --set/--stage2-set/--eval-set <
    flags."""
    if args.config:
        read_sections(args.config, SECTIONS)
    sets = routed_overrides(
        args, {"stage1": "", "stage2": "stage2_set", "eval": "eval_set", "tracking": ""}, "stage1"
    )
    seed = given({"seed": args.seed})
    base = recipe_base(args)
    stage1 = load_layers(
        Stage1JobConfig,
        base["stage1"],
        args.config,
        sets["stage1"],
        data_and_seed_flags(args),
        section="stage1",
    )
    stage2 = load_layers(
        Stage2JobConfig,
        base["stage2"],
        args.config,
        sets["stage2"],
        seed,
        section="stage2",
    )
    eval_flags = {"protocols": protocol_list(args.protocols)} if args.protocols is not None else {}
    eval_flags.update(seed)
    evaluation = load_layers(
        EvalConfig,
        base["eval"],
        args.config,
        sets["eval"],
        eval_flags,
        section="eval",
    )
    tracking = tracking_config(args, args.config, sets["tracking"])
    return stage1, stage2, evaluation, tracking


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "pretrain.py"
    from stars.cli.console import job_console
    from stars.data.job_data import pretrain_split, resolve_data
    from stars.model.checkpoint import encoder_state, read
    from stars.workflow.config import resolve_main
    from stars.workflow.main_job import format_summary
    from stars.workflow.repeats import parse_seeds
    from stars.workflow.tracker import Tracker

    name = args.name or run_name("stars")
    with interruption(prog, name), reported(prog):
        stage1, stage2, evaluation, tracking = load_layered(args)
        if args.print_config and not args.stage1:
            data = resolve_data(stage1.config.data)
            if args.recipe:
                check_recipe_data(args.recipe, data)
            print(config_text(resolve_main(stage1, stage2, evaluation, tracking, data)), end="")
            return 0
        seeds = parse_seeds(args.seeds, stage1.config.seed) if args.seeds else []
        log_file, log_kept = storage_log(stage1.config.scale.storage_path, name)
        with job_console(prog, log_file, args.verbose, publish_to=log_kept):
            data = resolve_data(stage1.config.data)  # a bad --data fails here, before Ray
            if args.recipe:
                check_recipe_data(args.recipe, data)
            split = pretrain_split(data, stage1.config.data.protocol)
            tracker = Tracker(tracking, data, split, args.preset)
            print(data_line(data, split))
            print(results_line(stage1.config.scale.storage_path, name, tracker))
            source, encoder = None, None
            if args.stage1:
                source = stage1_source(tracker, args.stage1)
                encoder = encoder_state(read(source.checkpoint), source.checkpoint)[0]
            cfg: MainConfig = resolve_main(
                stage1,
                stage2,
                evaluation,
                tracking,
                data,
                encoder,
                source.checkpoint if source else "",
            )
            if args.print_config:
                print(config_text(cfg), end="")
                return 0
            cfg, skipped = feasible_only(cfg, data)
            init_ray(args.verbose)
            if len(seeds) > 1:
                return finish_group(args, cfg, data, name, seeds, source, tracker)
            if seeds:
                from stars.workflow.main_job import seeded

                cfg = seeded(cfg, seeds[0])
            outcomes = run_one(args, cfg, data, name, source, tracker)
    print()
    print(format_summary(outcomes, cfg.eval.bootstrap_resamples, cfg.eval.seed))
    for line in skipped.lines("{name}: not measured ({why})"):
        print(line)
    if args.recipe:
        print()
        print(paper_table(args.recipe, {o.stage: o.metrics for o in outcomes}))
    if tracker.enabled:
        print()
        print(mlflow_hint(tracker, [o.run_id for o in outcomes if o.run_id], outcomes))
    return 0


def feasible_only(cfg, data):
    """``cfg`` without the evaluation parts ``data`` cannot run, each said in one line now
    (before training) and again under the summary."""
    import dataclasses

    from stars.eval.feasibility import check_protocols

    skipped = check_protocols(data, cfg.eval)
    for line in skipped.lines():
        print(line)
    return dataclasses.replace(cfg, eval=skipped.eval), skipped


def check_recipe_data(name: str, data) -> None:
    from stars.recipes import check_dataset

    check_dataset(
        get_recipe(name),
        data.num_classes,
        sorted(data.manifest.protocols),
        data.fewshot is not None,
    )


def paper_table(name: str, measured: dict[str, dict[str, float]], over: str = "samples") -> str:
    """The recipe's published numbers beside this run's (docs/paper.md)."""
    from stars.recipes import paper_rows
    from stars.text import table

    recipe = get_recipe(name)
    if not recipe.results:
        return f"recipe {name}: no published number to compare with in this repository"
    what = "test samples" if over == "samples" else "seeds"
    head = (
        f"recipe {name} ({recipe.description}): the paper's numbers beside these "
        f"(intervals over {what}; the paper reports one run)"
    )
    return head + "\n" + table(paper_rows(recipe, measured))


def config_text(cfg) -> str:
    """The resolved config as a ``--config`` file of this job (what ``--print-config`` shows);
    each stage's section is the config its runs log as ``config.yaml``."""
    import yaml

    from stars.cli.common import without_unused_synthetic
    from stars.config import to_dict

    tree = to_dict(cfg)
    tree["stage1"] = without_unused_synthetic(tree["stage1"])
    tree["stage2"] = without_unused_synthetic(tree["stage2"])
    first, second = tree["stage1"], tree["stage2"]
    # Stage 2 takes stage 1's data, scale and seed unless its section says otherwise: show
    # only where it differs, so the file reads as the job is set up (and loads back as is).
    for section in ("data", "scale"):
        second[section] = {k: v for k, v in second[section].items() if first[section].get(k) != v}
        if not second[section]:
            del second[section]
    if second.get("seed") == first.get("seed"):
        del second["seed"]
    head = "# resolved by pretrain.py --print-config; usable as --config\n"
    return head + yaml.safe_dump(tree, sort_keys=False)


def run_one(args, cfg, data, name, source, tracker):
    from stars.workflow.main_job import run_main

    return run_main(
        cfg,
        data,
        name,
        preset=args.preset,
        stage1_only=args.stage1_only,
        source=source,
        tracker=tracker,
        progress=True,
    )


def finish_group(args, cfg, data, name, seeds, source, tracker) -> int:
    """Every seed's lineage under one group run, then the summary over seeds."""
    from stars.workflow.main_job import run_main_group
    from stars.workflow.repeats import seeds_at_once

    at_once = seeds_at_once(cfg.stage1.scale, len(seeds), args.seeds_at_once)
    print(f"[stars] {len(seeds)} seeds ({', '.join(map(str, seeds))}), {at_once} at a time")
    group = run_main_group(
        cfg,
        data,
        name,
        seeds,
        at_once=at_once,
        preset=args.preset,
        stage1_only=args.stage1_only,
        source=source,
        tracker=tracker,
        progress=True,
    )
    return report_group(tracker, group, args)


def report_group(tracker, group, args=None) -> int:
    """A group's summary over seeds and its links; exit status 1 when a seed failed."""
    from stars.workflow.group_run import format_group_summary

    print()
    print(format_group_summary(group.metrics, group.lineages))
    if args is not None and args.recipe:
        measured: dict[str, dict[str, float]] = {}
        for key, value in group.metrics.items():
            stage, _, metric = key.partition("/")
            measured.setdefault(stage, {})[metric] = value
        print()
        print(paper_table(args.recipe, measured, over="seeds"))
    if tracker.enabled:
        print()
        print(group_hint(tracker, group.run_id))
    return 1 if group.failed else 0


def storage_log(storage_path: str, name: str) -> tuple[Path, str]:
    """Where the job's library logs go: ``<storage>/<name>.log``, written locally (the
    storage directory, or a URI's mirror) and copied to a URI when the job ends; a path that
    would not outlive the job, or a URI this machine cannot write, is refused first."""
    from stars import storage
    from stars.paths import check_kept

    flag = "--set scale.storage_path"
    root = check_kept("scale.storage_path", storage_path, flag)
    storage.check_writable(root, "scale.storage_path", flag)  # a URI: before any work
    kept = storage.join(root, f"{name}.log")
    return storage.local_dir(kept), kept


def results_line(storage_path: str, name: str, tracker) -> str:
    """One line naming where everything the job keeps goes."""
    from stars import storage
    from stars.paths import check_kept

    root = storage.shown(check_kept("scale.storage_path", storage_path, "--set scale.storage_path"))
    tracking = tracker.uri if tracker.enabled else "off (--no-tracking)"
    return (
        f"[stars] results: checkpoints, Ray state and evaluation in {root}/{name}-stage*, "
        f"log {root}/{name}.log; MLflow: {tracking}"
    )


def data_line(data, split: str) -> str:
    """One line saying what the job trains on."""
    from stars.storage import shown
    from stars.workflow.tracker import dataset_name

    fewshot = data.fewshot.classes if data.fewshot else ()
    held = f", {len(fewshot)} held out for few-shot" if fewshot else ""
    return (
        f"[stars] data: {dataset_name(data)} at {shown(data.root)} "
        f"({data.num_samples:,} sequences, {data.num_classes} classes{held}, "
        f"V={data.num_joints}); stage 1 trains on {split} ({data.split_size(split):,})"
    )


def mlflow_hint(tracker, run_ids: list[str], outcomes=None) -> str:
    """How to look at the runs: the UI command for a local store, the comparison figure
    (on the stage-1 run), the runs table (lineages nested), the same sorted by few-shot
    accuracy (MLflow shows a sorted table flat) and the compare page."""
    from stars.tracking.lineage import artifact_url, compare_url, runs_url, ui_base
    from stars.workflow.main_job import COMPARISON_FILE

    base = ui_base(tracker.uri)
    lines = _ui_command(tracker)
    exp = tracker.client.get_experiment_by_name(tracker.experiment)
    if exp is None:
        return "\n".join(lines)
    holder = next((o for o in outcomes or [] if o.stage == "stage1" and o.run_id), None)
    if holder is not None and COMPARISON_FILE in _artifact_names(tracker, holder.run_id):
        url = artifact_url(base, exp.experiment_id, holder.run_id, COMPARISON_FILE)
        lines.append(f"comparison: {url}")
    metrics = {m for o in outcomes or [] for m in o.metrics}
    lines.append(f"runs:       {runs_url(base, exp.experiment_id)}")
    lines.append(f"ranked:     {runs_url(base, exp.experiment_id, sort_metric(metrics))}")
    if run_ids:
        lines.append(f"compare:    {compare_url(base, run_ids, [exp.experiment_id])}")
    return "\n".join(lines)


def sort_metric(metrics) -> str:
    """What the runs link sorts by: 5-shot accuracy, else the fewest shots, else 1-NN."""
    from stars.workflow.group import HEADLINE

    shots = sorted(
        (m for m in metrics if m.startswith("fewshot_") and m.endswith("shot_mean")),
        key=lambda m: (m != "fewshot_5shot_mean", len(m), m),
    )
    return shots[0] if shots else next((m for m in HEADLINE if m in metrics), "knn_top1")


def _artifact_names(tracker, run_id: str) -> set[str]:
    return {f.path for f in tracker.client.list_artifacts(run_id)}


def _ui_command(tracker) -> list[str]:
    if tracker.uri.startswith(("http://", "https://")):
        return []
    return [f"MLflow UI:  mlflow ui --backend-store-uri {tracker.uri} --host 127.0.0.1 --port 5000"]


def group_hint(tracker, group_run_id: str) -> str:
    """The group run's comparison figure and overview, and its runs sorted by few-shot."""
    from stars.tracking.lineage import artifact_url, run_url, runs_url, ui_base
    from stars.workflow.group_run import FIGURE as COMPARISON_FILE

    base = ui_base(tracker.uri)
    lines = _ui_command(tracker)
    exp = tracker.client.get_experiment_by_name(tracker.experiment)
    if exp is None or not group_run_id:
        return "\n".join(lines)
    exp_id = exp.experiment_id
    lines.append(f"comparison: {artifact_url(base, exp_id, group_run_id, COMPARISON_FILE)}")
    lines.append(f"group run:  {run_url(base, exp_id, group_run_id)}")
    metrics = tracker.client.get_run(group_run_id).data.metrics
    names = {k.split("/", 1)[1] for k in metrics if k.startswith("stage2/")}
    lines.append(f"runs:       {runs_url(base, exp_id)}")
    lines.append(f"ranked:     {runs_url(base, exp_id, sort_metric(names))}")
    return "\n".join(lines)
