"""The main job's config and its one resolution step.

The main job's YAML file has four sections: ``stage1`` (a stage-1 job config), ``stage2`` (a
stage-2 job config), ``eval`` and ``tracking``. Stage 2 shares stage 1's data, scaling and
seed: every ``data.*`` and ``scale.*`` key and ``seed`` that was not set for stage 2 takes
stage 1's value; the dataset itself (``data.path``, ``data.protocol``, ``data.synthetic``)
cannot differ. The evaluation's seed is the job's (stage 1's), so both stages are evaluated
on the same few-shot episodes and their difference is paired.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stars.config import Layered, flatten, pin, set_dotted
from stars.data.shards import SkeletonDataset
from stars.eval.config import EvalConfig
from stars.model.config import ModelConfig
from stars.tracking.config import TrackingConfig
from stars.train.config import Stage1JobConfig, Stage2JobConfig
from stars.train.resolve import resolve_stage1, resolve_stage2

SECTIONS = ("stage1", "stage2", "eval", "tracking")
SHARED_SECTIONS = ("data.", "scale.")
SHARED_KEYS = ("seed",)
SAME_DATASET = ("data.path", "data.protocol", "data.synthetic.")


@dataclass(frozen=True)
class MainConfig:
    """The whole job, resolved: what each stage's workers receive and MLflow logs."""

    stage1: Stage1JobConfig = field(default_factory=Stage1JobConfig)
    stage2: Stage2JobConfig = field(default_factory=Stage2JobConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def share_with_stage1(
    layered: Layered[Stage2JobConfig], stage1: Stage1JobConfig
) -> Layered[Stage2JobConfig]:
    """Stage 2's data and scale keys not set for stage 2 take stage 1's resolved values;
    the dataset keys are pinned to stage 1's."""
    cfg = layered.config
    same: dict[str, object] = {}
    for key, value in flatten(stage1).items():
        if not (key.startswith(SHARED_SECTIONS) or key in SHARED_KEYS):
            continue
        if key.startswith(SAME_DATASET):
            same[key] = value
        elif not layered.was_set(key):
            cfg = set_dotted(cfg, key, value)
    path = str(same["data.path"])
    if layered.was_set("data.path") and Path(cfg.data.path).resolve() == Path(path):
        cfg = set_dotted(cfg, "data.path", path)  # the same directory, written differently
    why = "the main job tunes on stage 1's dataset (jobs/stage2.py tunes on another)"
    return pin(Layered(cfg, layered.explicit), same, why)


def evaluation_seeded(evaluation: EvalConfig | Layered[EvalConfig], seed: int) -> EvalConfig:
    """The evaluation of a job whose seed is ``seed``; an evaluation seed set to another
    value is refused, naming the key."""
    layered = evaluation if isinstance(evaluation, Layered) else Layered(evaluation, frozenset())
    return pin(layered, {"seed": seed}, f"the job's seed ({seed}; --seed)").config


def resolve_main(
    stage1: Layered[Stage1JobConfig],
    stage2: Layered[Stage2JobConfig],
    evaluation: EvalConfig | Layered[EvalConfig],
    tracking: TrackingConfig,
    data: SkeletonDataset,
    source_encoder: ModelConfig | None = None,
    source: str = "",
) -> MainConfig:
    """Resolve both stages before anything runs. ``source_encoder``: the encoder stage 2
    starts from when it is not this job's stage 1 (``--stage1``)."""
    s1 = resolve_stage1(stage1, data)
    encoder = source_encoder or s1.model
    s2 = resolve_stage2(share_with_stage1(stage2, s1), data, encoder, source or "stage 1")
    return MainConfig(
        stage1=s1, stage2=s2, eval=evaluation_seeded(evaluation, s1.seed), tracking=tracking
    )
