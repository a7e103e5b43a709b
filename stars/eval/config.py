"""Typed configuration of the evaluation protocols (protocols.md §8)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from stars.data.config import DataConfig
from stars.eval.finetune import FinetuneConfig
from stars.eval.linear import LinearProbeConfig
from stars.train.config import ScaleConfig

# Cheap protocols work on cached features; the others train the encoder on Ray Train.
FEATURE_PROTOCOLS = ("knn", "linear", "fewshot", "cluster", "tsne")
TRAINING_PROTOCOLS = ("finetune", "semi", "transfer")
ALL_PROTOCOLS = FEATURE_PROTOCOLS + TRAINING_PROTOCOLS


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how.

    Attributes:
        protocols: any of ``ALL_PROTOCOLS``. ``transfer`` fine-tunes on the given dataset and
            reports ``transfer_*`` (use it when that dataset differs from pre-training).
        protocol: the dataset's train/test pair (empty: the manifest's default).
        fewshot_shots, fewshot_episodes, seed: n exemplars per class; episodes per n; base
            seed of the episode draws (recorded with the results).
        semi_fractions, semi_seeds: labelled fractions of the training split and draws each.
        tsne_classes, tsne_per_class: t-SNE sample (15 classes x 100 in the paper).
        feature_actors: encoder replicas of the Ray Data feature extraction.
        feature_precision: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``bf16`` or ``fp32``.
        in_process: extract features in the driver process instead of a Ray actor pool.
        eval_every: test the fine-tuned model every this many epochs (and at the end).
    """

    protocols: tuple[str, ...] = ("knn", "linear", "fewshot", "cluster", "tsne")
    protocol: str = ""
    knn_ks: tuple[int, ...] = (10, 20, 40)
    knn_temperature: float = 0.1
    fewshot_shots: tuple[int, ...] = (1, 2, 5, 10)
    fewshot_episodes: int = 10
    seed: int = 0
    linear: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    semi_fractions: tuple[float, ...] = (0.01, 0.1)
    semi_seeds: int = 5
    tsne_classes: int = 15
    tsne_per_class: int = 100
    feature_actors: int = 1
    feature_batch_size: int = 256
    feature_precision: Literal["auto", "bf16", "fp32"] = "auto"
    in_process: bool = False
    eval_every: int = 10

    def __post_init__(self) -> None:
        unknown = sorted(set(self.protocols) - set(ALL_PROTOCOLS))
        if unknown:
            raise ValueError(
                f"unknown evaluation protocol(s) {', '.join(unknown)}; "
                f"choose from {', '.join(ALL_PROTOCOLS)}"
            )
        if self.fewshot_episodes < 1 or any(n < 1 for n in self.fewshot_shots):
            raise ValueError("few-shot needs >= 1 episode and shots >= 1")


def _job_data(preset: str) -> DataConfig:
    from stars.config import from_dict
    from stars.train.config import JOB_PRESETS

    data = dict(JOB_PRESETS[preset]["data"])
    data.pop("num_frames", None)  # the encoder decides T
    return from_dict(DataConfig, data)


@dataclass(frozen=True)
class EvalJobConfig:
    """``jobs/evaluate.py``: which data, which protocols, how the training protocols scale."""

    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)


EVAL_PRESETS: dict[str, dict] = {
    "paper": {},
    "small": {
        "eval": {"finetune": {"epochs": 20, "warmup_epochs": 2}, "semi_seeds": 3},
        "scale": {"torch_threads": 2},
    },
    "tiny": {
        "eval": {
            "finetune": {"epochs": 2, "warmup_epochs": 0.5, "batch_size": 8},
            "linear": {"epochs": 20},
            "semi_fractions": (0.5,),
            "semi_seeds": 2,
            "fewshot_shots": (1, 2),
            "fewshot_episodes": 3,
            "tsne_classes": 4,
            "tsne_per_class": 10,
            "eval_every": 1,
        },
    },
}


def eval_job_preset(name: str) -> dict:
    """The evaluation preset ``name`` with the data settings of the job preset of that name."""
    from stars.config import to_dict

    out = {k: dict(v) for k, v in EVAL_PRESETS[name].items()}
    out["data"] = to_dict(_job_data(name))
    return out
