"""One entry to every evaluation protocol, for ``jobs/evaluate.py`` and the training jobs.

``evaluate(checkpoint, data, cfg, out_dir)`` extracts the features a protocol needs once
(cached under ``out_dir/features``), runs the requested protocols, draws the pictures and
writes ``out_dir/eval.json``: a flat dict of stable metric names (``knn_top1``,
``linear_top1``, ``fewshot_5shot_mean``, ``silhouette``, ``finetune_top1``, ...) plus what
was evaluated (checkpoint, dataset digest, protocol, seeds).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stars.config import to_dict
from stars.data.config import DataConfig
from stars.data.shards import SkeletonDataset
from stars.eval.cluster import cluster_quality
from stars.eval.config import TRAINING_PROTOCOLS, EvalConfig
from stars.eval.features import FeatureSet, encode_split_set, extract_features
from stars.eval.fewshot import fewshot_report
from stars.eval.knn import weighted_knn_report
from stars.eval.linear import linear_probe
from stars.eval.pictures import plot_confusion, plot_tsne
from stars.eval.raw_pose import raw_pose_features
from stars.model.checkpoint import encoder_state, load_encoder, read
from stars.train.config import ScaleConfig

RESULTS_FILE = "eval.json"
RAW_POSE = "raw"  # as a checkpoint: the raw-pose baseline (no encoder) through the same protocols
RAW_POSE_FRAMES = 64


@dataclass
class EvalResult:
    """Metrics (flat, stable names), artifact paths by name, and the features computed."""

    metrics: dict[str, float]
    info: dict[str, Any]
    artifacts: dict[str, str] = field(default_factory=dict)
    features: dict[str, FeatureSet] = field(default_factory=dict)


class FeatureCache:
    """Features of each split of one (checkpoint, dataset), computed at most once."""

    def __init__(
        self,
        checkpoint: Path,
        data: SkeletonDataset,
        cfg: EvalConfig,
        data_cfg: DataConfig,
        out_dir: Path,
        use_gpu: bool = False,
    ):
        self.checkpoint, self.data, self.cfg, self.data_cfg = checkpoint, data, cfg, data_cfg
        self.dir = out_dir / "features"
        self.raw = str(checkpoint) == RAW_POSE
        self.model_cfg = None if self.raw else encoder_state(read(checkpoint), checkpoint)[0]
        self.use_gpu = use_gpu
        self.sets: dict[str, FeatureSet] = {}
        self._encoder = None
        self._all: FeatureSet | None = None

    def __call__(self, split: str) -> FeatureSet:
        """Features of ``split``. The Ray path encodes the whole dataset in one pass the first
        time (a pass has a fixed cost of seconds; protocols need most splits anyway) and
        serves every split from it."""
        if split in self.sets:
            return self.sets[split]
        if self.raw:
            a = self.data.read_split(split, ["joints", "num_frames", "label", "sample_index"])
            feats = raw_pose_features(a["joints"], a["num_frames"], RAW_POSE_FRAMES)
            fs = FeatureSet(
                feats.astype(np.float32),
                a["label"].astype(np.int64),
                a["sample_index"].astype(np.int64),
            )
        elif self.cfg.in_process:
            if self._encoder is None:
                self._encoder = load_encoder(self.checkpoint)
            fs = encode_split_set(self._encoder, self.data, split, self.data_cfg)
        else:
            if self._all is None:
                self._all = extract_features(
                    self.checkpoint,
                    self.data,
                    None,
                    self.data_cfg,
                    num_frames=self.model_cfg.num_frames,
                    dim=self.model_cfg.dim,
                    actors=self.cfg.feature_actors,
                    use_gpu=self.use_gpu,
                    batch_size=self.cfg.feature_batch_size,
                    precision=self.cfg.feature_precision,
                )
            ids = self.data.read_split(split, ["sample_index"])["sample_index"]
            fs = self._all.subset(np.flatnonzero(np.isin(self._all.sample_index, ids)))
            if len(fs) != len(ids):
                raise RuntimeError(
                    f"feature extraction returned {len(fs)} of the {len(ids)} samples of {split}"
                )
        fs.save(
            self.dir / f"{split}.npz",
            {"checkpoint": str(self.checkpoint), "data_digest": self.data.digest, "split": split},
        )
        self.sets[split] = fs
        return fs


def fewshot_parts(data: SkeletonDataset, test_split: str) -> tuple[str, str | None, str]:
    """(gallery split, query split or None, description): the dataset's held-out-class
    split when it has one, else exemplars and queries both from the test split."""
    fewshot = data.manifest.get("fewshot") or {}
    if fewshot.get("gallery"):
        return fewshot["gallery"], fewshot.get("query"), "novel classes"
    return test_split, None, "test split (classes seen in pre-training)"


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
    checkpoint = Path(checkpoint) if str(checkpoint) == RAW_POSE else Path(checkpoint).resolve()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_cfg = data_cfg or DataConfig()
    scale = scale or ScaleConfig()
    protocol = data.protocol(cfg.protocol or None)
    train_split, test_split = protocol["train"], protocol["test"]
    features = FeatureCache(checkpoint, data, cfg, data_cfg, out, scale.use_gpu)
    if features.raw and set(cfg.protocols) & set(TRAINING_PROTOCOLS):
        raise ValueError("the raw-pose baseline has no encoder to fine-tune")
    if not features.raw and features.model_cfg.num_joints != data.num_joints:
        raise ValueError(
            f"{checkpoint}: the encoder expects V={features.model_cfg.num_joints} joints, "
            f"dataset {data.root} has V={data.num_joints}"
        )
    metrics: dict[str, float] = {}
    info: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "data": str(data.root),
        "data_digest": data.digest,
        "protocol": protocol["name"],
        "train_split": train_split,
        "test_split": test_split,
        "protocols": list(cfg.protocols),
        "config": to_dict(cfg),
    }
    result = EvalResult(metrics, info)
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], None]) -> None:
        start = time.perf_counter()
        fn()
        timings[name] = round(time.perf_counter() - start, 2)
        log(f"[eval] {name}: {timings[name]:.1f} s")

    if "knn" in cfg.protocols:

        def knn() -> None:
            bank, query = features(train_split), features(test_split)
            metrics.update(
                weighted_knn_report(
                    *bank.tensors(), *query.tensors(), cfg.knn_ks, cfg.knn_temperature
                )
            )

        timed("knn", knn)
    if "linear" in cfg.protocols:

        def linear() -> None:
            bank, query = features(train_split), features(test_split)
            scores, confusion = linear_probe(
                *bank.tensors(), *query.tensors(), data.num_classes, cfg.linear
            )
            metrics.update(scores)
            path = plot_confusion(confusion, out / "confusion.png", data.class_names)
            result.artifacts["confusion"] = str(path)

        timed("linear", linear)
    if "fewshot" in cfg.protocols:

        def fewshot() -> None:
            gallery_split, query_split, source = fewshot_parts(data, test_split)
            gallery = features(gallery_split)
            query = features(query_split) if query_split else None
            scores, seeds = fewshot_report(
                gallery, query, cfg.fewshot_shots, cfg.fewshot_episodes, cfg.seed
            )
            metrics.update(scores)
            info["fewshot"] = {
                "gallery": gallery_split,
                "query": query_split,
                "source": source,
                "episode_seeds": seeds,
            }
            path = out / "fewshot_episodes.json"
            path.write_text(json.dumps(info["fewshot"], indent=2))
            result.artifacts["fewshot_episodes"] = str(path)

        timed("fewshot", fewshot)
    if "cluster" in cfg.protocols:

        def cluster() -> None:
            test = features(test_split)
            metrics.update(cluster_quality(test.features, test.labels, cfg.seed))

        timed("cluster", cluster)
    if "tsne" in cfg.protocols:

        def tsne() -> None:
            panels = dict(compare or {})
            panels[label] = features(test_split)
            path = plot_tsne(
                panels,
                out / "tsne.png",
                data.class_names,
                cfg.tsne_classes,
                cfg.tsne_per_class,
                cfg.seed,
            )
            result.artifacts["tsne"] = str(path)

        timed("tsne", tsne)
    if set(cfg.protocols) & set(TRAINING_PROTOCOLS):
        from stars.eval.training import TrainingJob, run_finetune, run_semi_supervised

        job = TrainingJob(
            checkpoint,
            data,
            train_split,
            test_split,
            cfg,
            data_cfg,
            scale,
            features.model_cfg.num_frames,
        )
        for name in ("finetune", "transfer"):
            if name in cfg.protocols:

                def finetune(name: str = name) -> None:
                    scores = run_finetune(job, f"{run_name}-{name}")
                    metrics.update({f"{name}_{k}": v for k, v in scores.items()})

                timed(name, finetune)
        if "semi" in cfg.protocols:

            def semi() -> None:
                scores, subsets = run_semi_supervised(job, f"{run_name}-semi", out / "semi_subsets")
                metrics.update(scores)
                result.artifacts.update(subsets)

            timed("semi", semi)
    info["timings_s"] = timings
    result.features = dict(features.sets)
    path = out / RESULTS_FILE
    path.write_text(json.dumps({"metrics": metrics, **info}, indent=2, sort_keys=True))
    result.artifacts["results"] = str(path)
    return result


def finetune_data_config(data_cfg: DataConfig, cfg: EvalConfig, num_frames: int) -> DataConfig:
    return dataclasses.replace(data_cfg, num_frames=num_frames, batch_size=cfg.finetune.batch_size)
