"""One entry to every evaluation protocol, for ``jobs/evaluate.py`` and the training jobs.

``evaluate(checkpoint, data, cfg, out_dir)`` extracts the features the protocols need once
(cached under ``out_dir/features``), runs the requested protocols in the order of
:data:`stars.eval.protocols.PROTOCOLS`, draws the pictures and writes ``out_dir/eval.json``:
a flat dict of stable metric names (``knn_top1``, ``linear_top1``, ``fewshot_5shot_mean``,
``cluster_silhouette``, ``finetune_top1``, ...) plus what was evaluated (checkpoint, dataset
digest, protocol, seeds, the exact config).

Every kNN, linear and few-shot metric comes with its 95 % interval
(``<metric>_ci95_low`` / ``_ci95_high``: a bootstrap over the test samples, a t-interval over
the episodes), computed from the per-sample and per-episode outcomes, which are kept in
``out_dir/outcomes.npz`` so that a later evaluation can be paired with this one
(``delta_<metric>``, :meth:`stars.metrics.outcomes.Outcomes.deltas`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stars.config import ConfigError, to_dict
from stars.data.config import DataConfig
from stars.data.shards import SkeletonDataset
from stars.eval.config import EvalConfig
from stars.eval.feature_cache import RAW_POSE, FeatureCache
from stars.eval.protocols import PROTOCOLS, TRAINING_PROTOCOLS, EvalContext
from stars.location import Location
from stars.metrics.feature_set import FeatureSet
from stars.metrics.outcomes import OUTCOMES_FILE, Outcomes
from stars.storage import shown
from stars.train.config import ScaleConfig

RESULTS_FILE = "eval.json"


@dataclass
class EvalResult:
    """Metrics (flat, stable names, with their intervals), artifact paths by name, the
    features computed, the per-item outcomes behind the metrics and, per protocol, the
    sample ids it fitted on and scored (``{"knn": {"fitted": ids, "scored": ids}, ...}``)."""

    metrics: dict[str, float]
    info: dict[str, Any]
    artifacts: dict[str, str] = field(default_factory=dict)
    features: dict[str, FeatureSet] = field(default_factory=dict)
    outcomes: Outcomes = field(default_factory=Outcomes)
    sets: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def evaluate(
    checkpoint: str | Path,
    data: SkeletonDataset,
    cfg: EvalConfig,
    out_dir: str | Path,
    *,
    data_cfg: DataConfig | None = None,
    scale: ScaleConfig | None = None,
    compare: dict[str, FeatureSet] | None = None,
    run_name: str = "eval",
    label: str = "this encoder",
    log: Callable[[str], None] = print,
) -> EvalResult:
    """Run ``cfg.protocols`` on the encoder of ``checkpoint`` over ``data``.

    Args:
        compare: test-split features of other encoders (e.g. ``{"stage 1": ...}``) drawn
            beside this one in the t-SNE picture.
        run_name: prefix of the Ray Train runs of the training protocols.
        label: this encoder's title in the t-SNE picture.
    """
    if str(checkpoint) != RAW_POSE and not Location(str(checkpoint)).remote:
        checkpoint = Path(checkpoint).resolve()
    checkpoint = str(checkpoint)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_cfg = data_cfg or DataConfig()
    scale = scale or ScaleConfig()
    protocol = data.protocol(cfg.protocol or None)
    features = FeatureCache(checkpoint, data, cfg, data_cfg, out, scale.use_gpu)
    if features.raw and set(cfg.protocols) & set(TRAINING_PROTOCOLS):
        raise ConfigError("the raw-pose baseline has no encoder to fine-tune")
    if not features.raw and features.model_cfg.num_joints != data.num_joints:
        raise ConfigError(
            f"{shown(checkpoint)}: the encoder expects V={features.model_cfg.num_joints} joints, "
            f"dataset {data.root} has V={data.num_joints}"
        )
    ctx = EvalContext(
        checkpoint=checkpoint,
        data=data,
        cfg=cfg,
        data_cfg=data_cfg,
        scale=scale,
        features=features,
        out=out,
        train_split=protocol["train"],
        test_split=protocol["test"],
        run_name=run_name,
        label=label,
        compare=dict(compare or {}),
    )
    ctx.info.update(
        {
            "checkpoint": str(checkpoint),
            "data": str(data.root),
            "data_digest": data.digest,
            "protocol": protocol["name"],
            "train_split": ctx.train_split,
            "test_split": ctx.test_split,
            "protocols": list(cfg.protocols),
            "config": to_dict(cfg),
            "data_config": to_dict(data_cfg),
        }
    )
    timings: dict[str, float] = {}
    for name, proto in PROTOCOLS.items():
        if name not in cfg.protocols:
            continue
        start = time.perf_counter()
        proto.run(ctx)
        timings[name] = round(time.perf_counter() - start, 2)
    ctx.metrics.update(ctx.outcomes.intervals(cfg.bootstrap_resamples, cfg.seed))
    if ctx.outcomes.metric_names():
        ctx.artifacts["outcomes"] = str(ctx.outcomes.save(out / OUTCOMES_FILE))
    ctx.info["intervals"] = {
        "level": 0.95,
        "samples": f"percentile bootstrap over the test samples, {cfg.bootstrap_resamples} "
        "resamples",
        "episodes": "Student-t over the episodes",
    }
    ctx.info["timings_s"] = timings
    if timings:
        parts = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
        log(f"[eval] {label}: {parts}")
    path = out / RESULTS_FILE
    path.write_text(json.dumps({"metrics": ctx.metrics, **ctx.info}, indent=2, sort_keys=True))
    ctx.artifacts["results"] = str(path)
    return EvalResult(
        ctx.metrics, ctx.info, ctx.artifacts, dict(features.sets), ctx.outcomes, ctx.sets
    )
