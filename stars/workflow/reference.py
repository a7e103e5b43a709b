"""The stage-1 source's outcomes a tuned run is paired with (``delta_<metric>``).

A tuned run's difference to its source must be measured on the same test samples and the
same few-shot episodes. The main job has its stage-1 evaluation at hand; a tuned run started
from an existing run or checkpoint (``--stage1``, ``jobs/stage2.py``, sweep trials)
evaluates the source once with the tuned run's own evaluation settings, and keeps the
outcomes under ``<scale.storage_path>/references/<key>/`` (key: the source checkpoint's
SHA-256, the dataset digest and the evaluation settings), so trials of one source share it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable

from stars import storage
from stars.config import to_dict
from stars.data.config import DataConfig
from stars.data.shards import SkeletonDataset
from stars.eval.config import EvalConfig
from stars.metrics.outcomes import OUTCOMES_FILE, Outcomes
from stars.train.config import ScaleConfig

PAIRED_PROTOCOLS = ("knn", "linear", "fewshot")


def paired_evaluation(cfg: EvalConfig) -> EvalConfig:
    """The part of ``cfg`` that produces outcomes (no pictures, no training protocols)."""
    return dataclasses.replace(
        cfg, protocols=tuple(p for p in cfg.protocols if p in PAIRED_PROTOCOLS)
    )


def reference_key(source_sha256: str, data: SkeletonDataset, cfg: EvalConfig, data_cfg) -> str:
    doc = {
        "source": source_sha256,
        "data": data.digest,
        "eval": to_dict(paired_evaluation(cfg)),
        "frames_crop": [data_cfg.num_frames, data_cfg.eval_crop],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def reference_outcomes(
    source_checkpoint: str,
    data: SkeletonDataset,
    cfg: EvalConfig,
    data_cfg: DataConfig,
    scale: ScaleConfig,
    *,
    log: Callable[[str], None] = print,
) -> Outcomes | None:
    """The source's outcomes under ``cfg`` (evaluated once, then read back); None when
    ``cfg`` has no protocol that pairs."""
    from stars.eval.runner import evaluate

    paired = paired_evaluation(cfg)
    if not paired.protocols:
        return None
    digest = hashlib.sha256(storage.read_bytes(source_checkpoint)).hexdigest()
    kept = storage.join(
        scale.storage_path, "references", reference_key(digest, data, cfg, data_cfg)
    )
    outcomes_file = storage.join(kept, OUTCOMES_FILE)
    if storage.exists(outcomes_file):
        return Outcomes.load(storage.fetch(outcomes_file))
    out = storage.local_dir(kept)
    result = evaluate(
        source_checkpoint,
        data,
        paired,
        out,
        data_cfg=data_cfg,
        scale=scale,
        run_name=f"reference-{digest[:8]}",
        label="stage-1 source",
        log=log,
    )
    storage.publish(out, kept)
    return result.outcomes
