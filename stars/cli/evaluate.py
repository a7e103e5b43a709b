"""``jobs/evaluate.py``: every evaluation protocol on any encoder checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from stars.cli.common import add_config_args, init_ray, protocol_list, reported, table
from stars.config import load_layers
from stars.errors import StarsError
from stars.eval.config import EvalJobConfig
from stars.eval.protocols import FEATURE_PROTOCOLS, PROTOCOLS
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
        help="checkpoint file, checkpoint dir or run dir (ours), a published file, or 'raw' "
        "(the raw-pose baseline: centred, resized, flattened coordinates)",
    )
    parser.add_argument("--data", help="dataset directory (default: embedded synthetic data)")
    parser.add_argument(
        "--protocols",
        help=f"comma-separated, from: {','.join(PROTOCOLS)} "
        f"(default: {','.join(FEATURE_PROTOCOLS)})",
    )
    parser.add_argument("--protocol", help="the dataset's train/test pair (default: its own)")
    add_config_args(parser, "YAML file of evaluation job keys (data, eval, scale)")
    parser.add_argument("--out", help="results directory (default: eval/ beside the checkpoint)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "evaluate.py"
    from stars.data.source import resolve_data
    from stars.eval.feature_cache import RAW_POSE
    from stars.eval.resolve import resolve_eval
    from stars.eval.runner import evaluate
    from stars.model.checkpoint import encoder_state, read, resolve_checkpoint

    with reported(prog):
        raw = args.checkpoint == RAW_POSE
        if raw and not args.out:
            raise StarsError("--checkpoint raw needs --out DIR")
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
        checkpoint = Path(RAW_POSE) if raw else resolve_checkpoint(args.checkpoint)
        encoder = None if raw else encoder_state(read(checkpoint), checkpoint)[0]
        data = resolve_data(layered.config.data)
        cfg = resolve_eval(layered, data, encoder, str(checkpoint))
        out = Path(args.out) if args.out else checkpoint.parent / "eval"
        if not cfg.eval.in_process and not raw:
            init_ray()
        result = evaluate(
            checkpoint, data, cfg.eval, out, data_cfg=cfg.data, scale=cfg.scale, run_name=out.name
        )
    rows = [("checkpoint", str(checkpoint)), ("protocol", result.info["protocol"])]
    rows += [(k, f"{v:.4f}") for k, v in sorted(result.metrics.items())]
    rows += [(f"artifact {k}", v) for k, v in sorted(result.artifacts.items())]
    print(table(rows))
    return 0
