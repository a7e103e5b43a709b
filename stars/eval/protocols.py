"""The evaluation protocols, one function each, and the table that names them.

Adding a protocol is one function taking an :class:`EvalContext` plus one :data:`PROTOCOLS`
entry. Every metric a protocol writes starts with its ``prefix`` (``knn_``, ``linear_``,
``fewshot_``, ``cluster_``, ...), so names sort together in MLflow and an objective can be
checked against the protocols that would produce it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stars.data.config import DataConfig
from stars.data.pipeline import HOLDOUT_MODULUS
from stars.data.shards import DataError, SkeletonDataset
from stars.eval.config import FEATURE_PROTOCOLS, PROTOCOL_NAMES, TRAINING_PROTOCOLS, EvalConfig
from stars.eval.feature_cache import FeatureCache
from stars.eval.finetune_runs import TrainingJob, run_finetune, run_semi_supervised
from stars.eval.linear import linear_probe
from stars.metrics.cluster import cluster_quality
from stars.metrics.feature_set import FeatureSet
from stars.metrics.fewshot import fewshot_report, fewshot_split_report
from stars.metrics.knn import knn_correct, weighted_knn_correct
from stars.metrics.outcomes import Outcomes
from stars.train.config import ScaleConfig


@dataclass
class EvalContext:
    """Everything a protocol reads, and the dicts it writes its results into."""

    checkpoint: str
    data: SkeletonDataset
    cfg: EvalConfig
    data_cfg: DataConfig
    scale: ScaleConfig
    features: FeatureCache
    out: Path
    train_split: str
    test_split: str
    run_name: str = "eval"
    label: str = "this encoder"
    compare: dict[str, FeatureSet] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    outcomes: Outcomes = field(default_factory=Outcomes)
    info: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    sets: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def record_sets(self, protocol: str, fitted: np.ndarray, scored: np.ndarray) -> None:
        """The sample ids a protocol fitted on (its bank, its training rows) and scored.

        Kept for the disjointness checks; ``info["sample_sets"]`` carries their sizes and
        overlap (0 unless something leaked), and a leak is refused outright.
        """
        shared = np.intersect1d(fitted, scored)
        if len(shared):
            raise DataError(
                f"{self.data.root}: {protocol} would fit on and score the same "
                f"{len(shared)} samples (e.g. sample_index {int(shared[0])}) of splits "
                f"{self.train_split!r} / {self.test_split!r}; the splits must be disjoint"
            )
        self.sets[protocol] = {"fitted": np.asarray(fitted), "scored": np.asarray(scored)}
        self.info.setdefault("sample_sets", {})[protocol] = {
            "fitted": len(fitted),
            "scored": len(scored),
            "shared": 0,
        }

    def record_samples(self, metric: str, sample_index: np.ndarray, correct: np.ndarray) -> None:
        """A per-sample metric: its value (the mean) and its outcomes."""
        hits = np.asarray(correct, dtype=bool)
        self.metrics[metric] = float(hits.mean()) if len(hits) else 0.0
        self.outcomes.add_samples(metric, sample_index, hits)

    def training_job(self):
        return TrainingJob(
            self.checkpoint,
            self.data,
            self.train_split,
            self.test_split,
            self.cfg,
            self.data_cfg,
            self.scale,
            self.features.model_cfg.num_frames,
        )


def fewshot_parts(data: SkeletonDataset, test_split: str) -> tuple[str, str | None, str]:
    """(gallery split, query split or None, description): the dataset's held-out-class
    split when it has one, else exemplars and queries both from the test split."""
    if data.fewshot is not None:
        return data.fewshot.gallery, data.fewshot.query, "novel classes"
    return test_split, None, "test split (classes seen in pre-training)"


def knn_validation_sets(bank: FeatureSet) -> tuple[FeatureSet, FeatureSet]:
    """(bank, queries) of ``knn_val_top1``: every tenth training sample (by sample_index, the
    same rule as stage 2's hold-out monitor) is a query against the other nine tenths, so a
    sweep's objective never looks at the test split and never finds a query in its bank."""
    held = bank.sample_index % HOLDOUT_MODULUS == 0
    return bank.subset(np.flatnonzero(~held)), bank.subset(np.flatnonzero(held))


def run_knn(ctx: EvalContext) -> None:
    """1-NN (cosine) and weighted kNN of the test split against the training split."""
    bank, query = ctx.features(ctx.train_split), ctx.features(ctx.test_split)
    ctx.record_sets("knn", bank.sample_index, query.sample_index)
    correct = weighted_knn_correct(
        *bank.tensors(), *query.tensors(), ctx.cfg.knn_ks, ctx.cfg.knn_temperature
    )
    if ctx.cfg.validation:
        val_bank, val_query = knn_validation_sets(bank)
        ctx.record_sets("knn_val", val_bank.sample_index, val_query.sample_index)
        correct["knn_val_top1"] = knn_correct(*val_bank.tensors(), *val_query.tensors())
    for name, hits in correct.items():
        ids = val_query.sample_index if name == "knn_val_top1" else query.sample_index
        ctx.record_samples(name, ids, hits.numpy())


def run_linear(ctx: EvalContext) -> None:
    """Linear probe on frozen features, with a confusion-matrix picture."""
    from stars.plots import plot_confusion  # matplotlib: imported only when drawing

    bank, query = ctx.features(ctx.train_split), ctx.features(ctx.test_split)
    result = linear_probe(bank, query, ctx.data.num_classes, ctx.cfg.linear, ctx.cfg.seed)
    ctx.record_sets("linear", result.fitted_on, query.sample_index)
    for name, hits in result.correct.items():
        ctx.record_samples(name, query.sample_index, hits)
    path = plot_confusion(result.confusion, ctx.out / "confusion.png", ctx.data.class_names)
    ctx.artifacts["confusion"] = str(path)


def run_fewshot(ctx: EvalContext) -> None:
    """n-shot episodes on classes never seen in pre-training (when the dataset has them)."""
    gallery_split, query_split, source = fewshot_parts(ctx.data, ctx.test_split)
    gallery = ctx.features(gallery_split)
    query = ctx.features(query_split) if query_split else None
    if query is not None:  # else each episode's queries are the gallery rows it did not draw
        ctx.record_sets("fewshot", gallery.sample_index, query.sample_index)
    cfg = ctx.cfg
    scores, seeds = fewshot_report(
        gallery, query, cfg.fewshot_shots, cfg.fewshot_episodes, cfg.seed, outcomes=ctx.outcomes
    )
    ctx.metrics.update(scores)
    if cfg.validation:
        ctx.metrics.update(
            fewshot_split_report(
                gallery,
                query,
                cfg.fewshot_shots,
                cfg.fewshot_episodes,
                cfg.seed,
                outcomes=ctx.outcomes,
            )
        )
    ctx.info["fewshot"] = {
        "gallery": gallery_split,
        "query": query_split,
        "source": source,
        "episode_seeds": seeds,
    }
    path = ctx.out / "fewshot_episodes.json"
    path.write_text(json.dumps(ctx.info["fewshot"], indent=2))
    ctx.artifacts["fewshot_episodes"] = str(path)


def run_cluster(ctx: EvalContext) -> None:
    """Silhouette (cosine) and k-means NMI / ARI of the test split."""
    test = ctx.features(ctx.test_split)
    ctx.metrics.update(cluster_quality(test.features, test.labels, ctx.cfg.seed))


def run_tsne(ctx: EvalContext) -> None:
    """t-SNE picture of the test split, beside any ``compare`` encoders."""
    from stars.plots import plot_tsne  # matplotlib: imported only when drawing

    panels = dict(ctx.compare)
    panels[ctx.label] = ctx.features(ctx.test_split)
    cfg = ctx.cfg
    path = plot_tsne(
        panels,
        ctx.out / "tsne.png",
        ctx.data.class_names,
        cfg.tsne_classes,
        cfg.tsne_per_class,
        cfg.seed,
    )
    ctx.artifacts["tsne"] = str(path)


def _finetune_as(name: str) -> Callable[[EvalContext], None]:
    def run(ctx: EvalContext) -> None:
        scores = run_finetune(ctx.training_job(), f"{ctx.run_name}-{name}")
        ctx.metrics.update({f"{name}_{k}": v for k, v in scores.items()})

    run.__doc__ = f"Fine-tune the encoder end to end; metrics ``{name}_*``."
    return run


def run_semi(ctx: EvalContext) -> None:
    """Fine-tune on labelled fractions of the training split, several seeded draws each."""
    scores, subsets = run_semi_supervised(
        ctx.training_job(), f"{ctx.run_name}-semi", ctx.out / "semi_subsets"
    )
    ctx.metrics.update(scores)
    ctx.artifacts.update(subsets)


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol. ``kind``: ``features`` protocols read cached encoder features
    (seconds); ``training`` protocols fine-tune the encoder on Ray Train (minutes to hours)."""

    run: Callable[[EvalContext], None]
    kind: Literal["features", "training"]
    prefix: str


PROTOCOLS: dict[str, Protocol] = {
    "knn": Protocol(run_knn, "features", "knn_"),
    "linear": Protocol(run_linear, "features", "linear_"),
    "fewshot": Protocol(run_fewshot, "features", "fewshot_"),
    "cluster": Protocol(run_cluster, "features", "cluster_"),
    "tsne": Protocol(run_tsne, "features", "tsne_"),
    "finetune": Protocol(_finetune_as("finetune"), "training", "finetune_"),
    "transfer": Protocol(_finetune_as("transfer"), "training", "transfer_"),
    "semi": Protocol(run_semi, "training", "semi_"),
}

# The names live in the config module (it validates them without importing this table);
# tests/eval/test_protocol_names.py holds the two to the same names and kinds.
__all__ = ["FEATURE_PROTOCOLS", "PROTOCOLS", "PROTOCOL_NAMES", "TRAINING_PROTOCOLS"]


def protocol_for_metric(metric: str) -> str | None:
    """The protocol whose metrics include ``metric`` (by prefix), or None."""
    for name, p in PROTOCOLS.items():
        if metric.startswith(p.prefix):
            return name
    return None
