"""``jobs/evaluate.py``: every evaluation protocol on any encoder checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from stars.cli.common import (
    DATA_HELP,
    add_config_args,
    add_verbose_arg,
    init_ray,
    protocol_list,
    reported,
    table,
)
from stars.config import load_layers
from stars.errors import StarsError
from stars.eval.config import EvalJobConfig
from stars.eval.protocols import FEATURE_PROTOCOLS, PROTOCOLS, TRAINING_PROTOCOLS
from stars.presets import job_preset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Evaluate an encoder checkpoint (stage 1, stage 2, published MAMP/STARS). "
        "Settings: preset < --config < --set < flags.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="checkpoint file, checkpoint dir or run dir (ours), a published file, 'raw' "
        "(the raw-pose baseline: centred, resized, flattened coordinates) or 'random' (a "
        "seeded, randomly initialised encoder of the --preset's architecture)",
    )
    parser.add_argument("--data", help=DATA_HELP)
    parser.add_argument(
        "--protocols",
        help=f"comma-separated, from: {','.join(PROTOCOLS)} "
        f"(default: {','.join(FEATURE_PROTOCOLS)})",
    )
    parser.add_argument("--protocol", help="the dataset's train/test pair (default: its own)")
    add_config_args(parser, "YAML file of evaluation job keys (data, eval, scale)")
    parser.add_argument("--out", help="results directory (default: eval/ beside the checkpoint)")
    add_verbose_arg(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "evaluate.py"
    from stars import storage
    from stars.cli.console import job_console
    from stars.data.source import resolve_data
    from stars.eval.feature_cache import RAW_POSE, use_in_process
    from stars.eval.resolve import resolve_eval
    from stars.eval.runner import evaluate
    from stars.model.checkpoint import (
        RANDOM_INIT,
        encoder_state,
        read,
        resolve_checkpoint,
        write_random_init,
    )
    from stars.model.config import preset as preset_model

    with reported(prog):
        raw = args.checkpoint == RAW_POSE
        if args.checkpoint in (RAW_POSE, RANDOM_INIT) and not args.out:
            raise StarsError(f"--checkpoint {args.checkpoint} needs --out DIR")
        flags: dict = {}
        if args.protocols is not None:
            flags["eval.protocols"] = protocol_list(args.protocols)
        if args.protocol:
            flags["eval.protocol"] = args.protocol
        if args.data:
            flags["data.path"] = args.data
        layered = load_layers(
            EvalJobConfig, job_preset(args.preset, "eval"), args.config, args.overrides, flags
        )
        data = resolve_data(layered.config.data)
        if args.checkpoint == RANDOM_INIT:  # the preset's architecture, seeded, untrained
            model = dataclasses.replace(preset_model(args.preset), num_joints=data.num_joints)
            seed = layered.config.eval.seed
            path = write_random_init(model, seed, Path(args.out) / f"random-{args.preset}.pt")
            checkpoint = str(path)
        else:
            checkpoint = RAW_POSE if raw else resolve_checkpoint(args.checkpoint)
        encoder = None if raw else encoder_state(read(checkpoint), checkpoint)[0]
        cfg = resolve_eval(layered, data, encoder, checkpoint)
        # Beside the checkpoint by default: its run's directory, or that URI's local mirror
        # (copied to the URI afterwards).
        kept = args.out or storage.join(storage.parent(checkpoint), "eval")
        out = storage.local_dir(kept).resolve()
        with job_console(prog, out / "evaluate.log", args.verbose):
            trains = set(cfg.eval.protocols) & set(TRAINING_PROTOCOLS)
            if trains or not use_in_process(cfg.eval, data, encoder, cfg.scale.use_gpu):
                init_ray(args.verbose)
            result = evaluate(
                checkpoint,
                data,
                cfg.eval,
                out,
                data_cfg=cfg.data,
                scale=cfg.scale,
                run_name=out.name,
            )
        storage.publish(out, kept)
    rows = [("checkpoint", storage.shown(checkpoint)), ("protocol", result.info["protocol"])]
    rows += [(k, f"{v:.4f}") for k, v in sorted(result.metrics.items())]
    rows += [(f"artifact {k}", v) for k, v in sorted(result.artifacts.items())]
    if storage.is_uri(kept):
        rows.append(("outputs kept at", storage.shown(kept)))
    print(table(rows))
    return 0
