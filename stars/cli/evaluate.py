"""``jobs/evaluate.py``: every evaluation protocol on any encoder checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from stars.cli.common import (
    DATA_HELP,
    add_config_args,
    add_seed_args,
    add_tracking_args,
    add_verbose_arg,
    init_ray,
    protocol_list,
    reported,
    sections_text,
)
from stars.config import load_layers
from stars.errors import StarsError
from stars.eval.config import EvalJobConfig
from stars.eval.protocols import FEATURE_PROTOCOLS, PROTOCOLS, TRAINING_PROTOCOLS
from stars.location import Location
from stars.presets import job_preset
from stars.text import table

EXAMPLES = """\
examples:
  evaluate.py --checkpoint RUN_ID --protocols knn,linear,fewshot
  evaluate.py --checkpoint models:/stars-ntu60-xsub_train@stage2-best-knn --data data/ntu60
  evaluate.py --checkpoint runs/stars-...-stage2 --protocols finetune,semi --preset paper
  evaluate.py --checkpoint RUN_ID --protocols transfer --data data/pku2
  evaluate.py --checkpoint raw --out eval/raw --data data/ntu60   the raw-pose floor
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate an encoder checkpoint (stage 1, stage 2, published MAMP/STARS). "
        "Settings: preset < --config < --set < flags.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="an MLflow run id, a checkpoint file, checkpoint dir or run dir (ours), an "
        "MLflow model (models:/NAME@ALIAS), a published file, 'raw' "
        "(the raw-pose baseline: centred, resized, flattened coordinates) or 'random' (a "
        "seeded, randomly initialised encoder of the --preset's architecture)",
    )
    parser.add_argument("--data", help=DATA_HELP)
    parser.add_argument(
        "--protocols",
        help=f"comma-separated, from: {','.join(PROTOCOLS)} "
        f"(default: {','.join(FEATURE_PROTOCOLS)})",
    )
    parser.add_argument(
        "--data-protocol",
        "--protocol",
        dest="data_protocol",
        help="the dataset's train/test pair, e.g. xsub or xview (default: the dataset's own)",
    )
    add_config_args(parser, "YAML file of evaluation job keys (data, eval, scale)")
    parser.add_argument("--out", help="results directory (default: eval/ beside the checkpoint)")
    add_seed_args(
        parser,
        "the evaluation (few-shot episodes, probe, fine-tuning and subsets; for --checkpoint "
        "random, the initialisation)",
    )
    add_tracking_args(parser)
    add_verbose_arg(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "evaluate.py"
    from stars import storage
    from stars.cli.common import is_run_id
    from stars.cli.console import job_console
    from stars.data.job_data import resolve_data
    from stars.eval.feature_cache import RAW_POSE, use_in_process
    from stars.eval.resolve import resolve_eval
    from stars.interrupts import interruptible
    from stars.model.checkpoint import MLFLOW_SCHEMES, RANDOM_INIT, encoder_state, read
    from stars.workflow.repeats import parse_seeds

    with interruptible(prog, "features and results so far kept in --out"), reported(prog):
        raw = args.checkpoint == RAW_POSE
        outside = args.checkpoint in (RAW_POSE, RANDOM_INIT) or args.checkpoint.startswith(
            MLFLOW_SCHEMES
        )
        if outside and not args.out:
            # no run directory to put the results beside
            raise StarsError(f"--checkpoint {args.checkpoint} needs --out DIR")
        flags: dict = {}
        if args.protocols is not None:
            flags["eval.protocols"] = protocol_list(args.protocols)
        if args.data_protocol:
            flags["eval.protocol"] = args.data_protocol
        if args.data:
            flags["data.path"] = args.data
        if args.seed is not None:
            flags["eval.seed"] = args.seed
        layered = load_layers(
            EvalJobConfig,
            job_preset(args.preset, "eval"),
            args.config,
            args.overrides,
            flags,
            section="eval",
            whole_if_flat=True,
        )
        data = resolve_data(layered.config.data)
        seeds = parse_seeds(args.seeds, layered.config.eval.seed) if args.seeds else []
        first = seeds[0] if seeds else layered.config.eval.seed
        tracker = None
        if is_run_id(args.checkpoint):
            from stars.workflow.evaluation_run import checkpoint_of_run

            tracker = evaluation_tracker(args, data, layered.config.eval.protocol)
            args.checkpoint = checkpoint_of_run(tracker, args.checkpoint)
        checkpoint = eval_checkpoint(args, data, first)
        encoder = None if raw else encoder_state(read(checkpoint), checkpoint)[0]
        cfg = resolve_eval(layered, data, encoder, checkpoint)
        if tracker is None and not args.print_config:  # a bad checkpoint fails before the store
            tracker = evaluation_tracker(args, data, layered.config.eval.protocol)
        if args.print_config:
            print(sections_text(prog, eval=cfg), end="")
            return 0
        from stars.eval.feasibility import check_protocols

        feasible = check_protocols(data, cfg.eval)
        for line in feasible.lines():
            print(line)
        cfg = dataclasses.replace(cfg, eval=feasible.eval)
        # Beside the checkpoint by default: its run's directory, or that URI's local mirror
        # (copied to the URI afterwards).
        kept = args.out or storage.join(storage.parent(checkpoint), "eval")
        out = storage.local_dir(kept).resolve()
        with job_console(prog, out / "evaluate.log", args.verbose):
            trains = set(cfg.eval.protocols) & set(TRAINING_PROTOCOLS)
            if trains or not use_in_process(cfg.eval, data, encoder, cfg.scale.use_gpu):
                init_ray(args.verbose)
            if len(seeds) > 1:
                return evaluate_seeds(args, cfg, data, seeds, out, kept, tracker)
            cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, seed=first))
            result = tracked_evaluate(tracker, checkpoint, data, cfg, out, out.name)
        storage.publish(out, kept)
    rows = [("checkpoint", storage.shown(checkpoint)), ("protocol", result.info["protocol"])]
    rows += [(k, f"{v:.4f}") for k, v in sorted(result.metrics.items())]
    rows += [(f"artifact {k}", v) for k, v in sorted(result.artifacts.items())]
    if tracker.enabled:
        rows.append(("MLflow", f"{tracker.uri} (experiment {tracker.experiment} or the source's)"))
    if Location(str(kept)).remote:
        rows.append(("outputs kept at", storage.shown(kept)))
    print(table(rows))
    return 0


def evaluation_tracker(args, data, protocol: str):
    """The job's MLflow side: the dataset's experiment, the evaluated split's lineage."""
    import logging

    from stars.cli.common import tracking_config
    from stars.workflow.tracker import Tracker

    tracking = tracking_config(args)
    test = data.protocol(protocol or None)["test"] if data.manifest.protocols else ""
    mlflow_log = logging.getLogger("mlflow")
    level = mlflow_log.level
    mlflow_log.setLevel(logging.WARNING)  # its store set-up lines are not this job's console
    try:
        return Tracker(tracking, data, test, args.preset)
    finally:
        mlflow_log.setLevel(level)


def tracked_evaluate(tracker, checkpoint: str, data, cfg, out: Path, name: str):
    """One evaluation, as an MLflow run nested under the checkpoint's run (when tracked)."""
    from stars.eval.runner import evaluate
    from stars.workflow.evaluation_run import evaluation_run, record

    title = f"eval {','.join(cfg.eval.protocols)} <- {checkpoint_label(checkpoint)}"
    with evaluation_run(tracker, str(checkpoint), cfg, title, cfg.eval.seed) as run:
        result = evaluate(
            checkpoint,
            data,
            cfg.eval,
            out,
            data_cfg=cfg.data,
            scale=cfg.scale,
            run_name=name,
        )
        record(run, result, out)
    return result


def checkpoint_label(checkpoint: str) -> str:
    """How a run title names a checkpoint: its run directory (``demo-stage2``), else its
    file name."""
    from stars import storage

    parts = storage.shown(str(checkpoint)).rstrip("/").split("/")
    named = [p for p in parts[:-1] if p and not p.startswith("checkpoint")]
    return named[-1] if named else parts[-1]


def eval_checkpoint(args, data, seed: int) -> str:
    """The checkpoint to evaluate: ``raw``, a seeded random-init encoder of the preset's
    architecture (``random``), or the given one."""
    from stars.eval.feature_cache import RAW_POSE
    from stars.model.checkpoint import RANDOM_INIT, resolve_checkpoint, write_random_init
    from stars.model.config import preset as preset_model

    if args.checkpoint == RANDOM_INIT:  # the preset's architecture, seeded, untrained
        model = dataclasses.replace(preset_model(args.preset), num_joints=data.num_joints)
        name = f"random-{args.preset}.pt" if seed == 0 else f"random-{args.preset}-seed{seed}.pt"
        return str(write_random_init(model, seed, Path(args.out) / name))
    if args.checkpoint == RAW_POSE:
        return RAW_POSE
    return resolve_checkpoint(args.checkpoint)


def evaluate_seeds(args, cfg, data, seeds: list[int], out: Path, kept: str, tracker) -> int:
    """The evaluation once per seed (``<out>/seed-<N>/``), then every compared metric as
    mean ± 95 % interval over seeds in ``<out>/eval_seeds.json``."""
    import json

    from stars import storage
    from stars.metrics.intervals import t_interval
    from stars.workflow.group import compared_metrics, points

    per_seed: dict[int, dict[str, float]] = {}
    for seed in seeds:
        checkpoint = eval_checkpoint(args, data, seed)
        seeded = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, seed=seed))
        result = tracked_evaluate(
            tracker, checkpoint, data, seeded, out / f"seed-{seed}", f"{out.name}-seed{seed}"
        )
        per_seed[seed] = result.metrics
    names = sorted(set.intersection(*(set(compared_metrics(m)) for m in per_seed.values())))
    summary: dict[str, float] = {}
    rows: list[tuple[str, object]] = [("checkpoint", args.checkpoint), ("seeds", seeds)]
    for name in names:
        iv = t_interval([per_seed[s][name] for s in seeds], "seeds")
        summary.update(iv.metrics(name))
        rows.append((name, f"{points(iv)} (mean ± 95 % over {len(seeds)} seeds, %)"))
    path = out / "eval_seeds.json"
    doc = {"seeds": seeds, "metrics": summary, "per_seed": {str(s): m for s, m in per_seed.items()}}
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))
    storage.publish(out, kept)
    rows.append(("results", str(path)))
    print(table(rows))
    return 0
