"""Driver side of the training protocols: fine-tune, semi-supervised and transfer runs on
Ray Train (the worker loop is :func:`stars.eval.finetune.finetune_worker`)."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stars.config import to_dict
from stars.data.config import DataConfig
from stars.data.pipeline import build_dataset, fits_in_memory
from stars.data.shards import SkeletonDataset
from stars.eval.config import EvalConfig
from stars.eval.finetune import FinetuneJobConfig, finetune_worker, restrict_to
from stars.eval.subsets import save_subset, stratified_subset
from stars.train.config import ScaleConfig
from stars.train.launch import (
    fit_watched,
    make_trainer,
    stage_result,
    steps_per_epoch,
    train_dataset,
)


@dataclass(frozen=True)
class TrainingJob:
    """What every training protocol needs: the encoder, the data and split pair, the recipe
    and how to scale. ``num_frames`` is the encoder's input length T."""

    checkpoint: Path
    data: SkeletonDataset
    train_split: str
    test_split: str
    cfg: EvalConfig
    data_cfg: DataConfig
    scale: ScaleConfig
    num_frames: int


def run_finetune(
    job: TrainingJob, name: str, subset: np.ndarray | None = None, seed: int | None = None
) -> dict[str, float]:
    """Fine-tune the encoder on the training split (or the sample ids ``subset`` of it) and
    test on the test split.

    Returns ``{"top1", "top5"}`` of the last epoch (no selection on the test split),
    ``train_samples``, and the mean training loss of the first and last epochs.
    """
    data, scale = job.data, job.scale
    ft = job.cfg.finetune
    seed = job.cfg.seed if seed is None else seed
    dcfg = dataclasses.replace(job.data_cfg, num_frames=job.num_frames, batch_size=ft.batch_size)
    in_memory = fits_in_memory(data, job.train_split, dcfg, scale.num_workers)
    train = train_dataset(data, job.train_split, dcfg, in_memory)
    rows = data.split_size(job.train_split)
    if subset is not None:
        train = train.map_batches(
            functools.partial(restrict_to, keep=np.sort(subset)), batch_format="pyarrow"
        )
        rows = len(subset)
    batch = min(ft.batch_size, max(1, rows // scale.num_workers))
    ft = dataclasses.replace(ft, batch_size=batch)
    dcfg = dataclasses.replace(dcfg, batch_size=batch)
    job_cfg = FinetuneJobConfig(seed=seed, finetune=ft, data=dcfg, scale=scale)
    trainer = make_trainer(
        finetune_worker,
        {
            "job": to_dict(job_cfg),
            "source": str(job.checkpoint),
            "num_classes": data.num_classes,
            "steps_per_epoch": steps_per_epoch(rows, scale.num_workers, batch),
            "train_in_memory": in_memory,
            "num_bodies": data.num_bodies,
            "eval_every": job.cfg.eval_every,
        },
        scale,
        name,
        {"train": train, "test": build_dataset(data, job.test_split, "eval", dcfg)},
        split_only=["train"],
    )
    result = stage_result(fit_watched(trainer, scale, name), scale)
    final = result.metrics
    # The loss at both ends shows whether fine-tuning trained at all (e.g. a bad lr).
    losses = [float(h["loss"]) for h in result.history]
    return {
        "top1": float(final["test_top1"]),
        "top5": float(final["test_top5"]),
        "train_samples": float(rows),
        "train_loss_first": losses[0],
        "train_loss_last": losses[-1],
    }


def run_semi_supervised(
    job: TrainingJob, name: str, subset_dir: Path
) -> tuple[dict[str, float], dict[str, str]]:
    """Fine-tune on each labelled fraction x seed; mean and std over seeds.

    Subsets are drawn here, on the driver, and saved under ``subset_dir``.
    Returns ``({"semi_1pct_top1_mean", "semi_1pct_top1_std", ...}, {artifact: path})``.
    """
    arrays = job.data.read_split(job.train_split, ["sample_index", "label"])
    metrics: dict[str, float] = {}
    artifacts: dict[str, str] = {}
    for fraction in job.cfg.semi_fractions:
        tag = f"{fraction * 100:g}pct".replace(".", "_")
        scores, first, last = [], [], []
        for draw in range(job.cfg.semi_seeds):
            # Draws of another evaluation seed are other subsets (never the same "1 %").
            seed = job.cfg.seed * 1000 + draw
            ids = stratified_subset(arrays["sample_index"], arrays["label"], fraction, seed)
            path = save_subset(
                subset_dir / f"{tag}_seed{seed}.json", ids, fraction, seed, job.train_split
            )
            artifacts[f"semi_{tag}_seed{seed}"] = str(path)
            result = run_finetune(job, f"{name}-{tag}-seed{seed}", subset=ids, seed=seed)
            scores.append(result["top1"])
            first.append(result["train_loss_first"])
            last.append(result["train_loss_last"])
        metrics[f"semi_{tag}_top1_mean"] = float(np.mean(scores))
        metrics[f"semi_{tag}_top1_std"] = float(np.std(scores))
        metrics[f"semi_{tag}_train_loss_first_mean"] = float(np.mean(first))
        metrics[f"semi_{tag}_train_loss_last_mean"] = float(np.mean(last))
    return metrics, artifacts
