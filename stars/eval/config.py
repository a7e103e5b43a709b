"""Typed configuration of the evaluation protocols and of ``jobs/evaluate.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from stars.data.config import DataConfig
from stars.eval.finetune import FinetuneConfig
from stars.eval.linear import LinearProbeConfig
from stars.train.config import ScaleConfig

# Protocols that read cached encoder features (seconds) and those that fine-tune on Ray Train
# (minutes to hours); :data:`stars.eval.protocols.PROTOCOLS` holds their functions.
FEATURE_PROTOCOLS = ("knn", "linear", "fewshot", "cluster", "tsne")
TRAINING_PROTOCOLS = ("finetune", "transfer", "semi")
PROTOCOL_NAMES = FEATURE_PROTOCOLS + TRAINING_PROTOCOLS


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how.

    Attributes:
        protocols: names from :data:`stars.eval.protocols.PROTOCOLS` (default: the feature
            protocols). ``transfer`` fine-tunes on the given dataset and reports ``transfer_*``.
        protocol: the dataset's train/test pair (empty: the manifest's default).
        fewshot_shots, fewshot_episodes: n exemplars per class; episodes per n.
        seed: the evaluation's draws: few-shot episodes (recorded with the results), the
            linear probe, the fine-tuning runs and semi-supervised subsets, k-means, t-SNE,
            the bootstrap. In a training job it is the job's ``seed``.
        bootstrap_resamples: resamples of the bootstrap interval of per-sample metrics.
        semi_fractions, semi_seeds: labelled fractions of the training split and draws each.
        tsne_classes, tsne_per_class: t-SNE sample (15 classes x 100 in the paper).
        feature_actors: encoder replicas of the Ray Data feature extraction.
        feature_precision: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``bf16`` or ``fp32``.
        in_process: extract features in this process (true) or a Ray Data actor pool (false);
            unset: in process when the data and encoder are small
            (:func:`stars.eval.feature_cache.use_in_process`).
        eval_every: test the fine-tuned model every this many epochs (and at the end).
        validation: also report metrics to select hyper-parameters on, never on the test
            split: ``fewshot_val_*`` (half of the novel classes; ``fewshot_test_*`` the other
            half) and ``knn_val_top1`` (a held-out tenth of the training split).
    """

    protocols: tuple[str, ...] = FEATURE_PROTOCOLS
    protocol: str = ""
    knn_ks: tuple[int, ...] = (10, 20, 40)
    knn_temperature: float = 0.1
    fewshot_shots: tuple[int, ...] = (1, 2, 5, 10)
    fewshot_episodes: int = 10
    seed: int = 0
    bootstrap_resamples: int = 1000
    linear: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    semi_fractions: tuple[float, ...] = (0.01, 0.1)
    semi_seeds: int = 5
    tsne_classes: int = 15
    tsne_per_class: int = 100
    feature_actors: int = 1
    feature_batch_size: int = 256
    feature_precision: Literal["auto", "bf16", "fp32"] = "auto"
    in_process: bool | None = None
    eval_every: int = 10
    validation: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.protocols) - set(PROTOCOL_NAMES))
        if unknown:
            raise ValueError(
                f"unknown evaluation protocol(s) {', '.join(unknown)}; "
                f"choose from {', '.join(PROTOCOL_NAMES)}"
            )
        if self.fewshot_episodes < 1 or any(n < 1 for n in self.fewshot_shots):
            raise ValueError("few-shot needs >= 1 episode and shots >= 1")
        if self.bootstrap_resamples < 100:
            raise ValueError("bootstrap_resamples must be >= 100")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")


@dataclass(frozen=True)
class EvalJobConfig:
    """``jobs/evaluate.py``: which data, which protocols, how the training protocols scale.
    ``data.num_frames`` is the encoder's and ``data.batch_size`` the fine-tuning recipe's
    (fixed at resolution)."""

    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
