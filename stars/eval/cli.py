"""``jobs/evaluate.py``: every evaluation protocol on any encoder checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from stars.config import ConfigError, add_overrides_argument, from_dict, load_config
from stars.errors import reported
from stars.eval.config import ALL_PROTOCOLS, EVAL_PRESETS, EvalJobConfig, eval_job_preset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Evaluate an encoder checkpoint (stage 1, stage 2, published MAMP/STARS).",
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
        default="knn,linear,fewshot,cluster,tsne",
        help=f"comma-separated, from: {','.join(ALL_PROTOCOLS)}",
    )
    parser.add_argument("--protocol", help="the dataset's train/test pair (default: its own)")
    parser.add_argument("--preset", default="small", choices=sorted(EVAL_PRESETS))
    parser.add_argument("--config", help="YAML file applied over the preset")
    parser.add_argument("--out", help="results directory (default: eval/ beside the checkpoint)")
    add_overrides_argument(
        parser, help="dotted override, e.g. eval.fewshot_episodes=20 or scale.use_gpu=true"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    overrides.append(f"eval.protocols=[{args.protocols}]")
    if args.protocol:
        overrides.append(f"eval.protocol={args.protocol}")
    if args.data:
        overrides.append(f"data.path={args.data}")
    try:
        base = from_dict(EvalJobConfig, eval_job_preset(args.preset))
        cfg = load_config(EvalJobConfig, args.config, overrides, base=base)
    except (ConfigError, ValueError) as err:
        parser.error(str(err))

    from stars.eval.runner import RAW_POSE, evaluate
    from stars.train.jobs import init_ray, table
    from stars.train.launch import resolve_checkpoint, resolve_data

    raw = args.checkpoint == RAW_POSE
    if raw and not args.out:
        parser.error("--checkpoint raw needs --out DIR")
    try:
        checkpoint = Path(RAW_POSE) if raw else resolve_checkpoint(args.checkpoint)
    except FileNotFoundError as err:
        parser.error(str(err))
    with reported(parser.prog):
        data = resolve_data(cfg.data)
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
