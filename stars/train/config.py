"""Typed configuration of training jobs and the named job presets."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from stars.data.config import DataConfig
from stars.model.config import PRESETS, ModelConfig


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with per-step linear warm-up then cosine decay (stage 1 defaults = the paper)."""

    lr: float = 1e-3
    min_lr: float = 5e-4
    warmup_epochs: float = 20.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    clip_grad: float | None = None
    schedule: Literal["cosine", "constant"] = "cosine"


@dataclass(frozen=True)
class ScaleConfig:
    """How the job runs on Ray.

    Attributes:
        storage_path: where Ray Train keeps checkpoints and run state. A local path is fine
            on one machine; a cluster of several nodes needs a URI all nodes reach
            (``s3://...``, ``gs://...``) or a shared file system (set ``shared_storage``).
        cpus_per_worker: on a 2-core machine keep it at 0.5 so Ray Data's read tasks run.
        torch_threads: Ray limits a worker's torch threads to its whole CPUs (1 for 0.5);
            a single CPU worker on a small machine can use more.
    """

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 0.5
    gpus_per_worker: float = 1.0
    storage_path: str = "runs"
    shared_storage: bool = False
    max_failures: int = 0
    num_to_keep: int = 2
    torch_threads: int = 0  # > 0: intra-op threads per worker (Ray's default follows its CPUs)


@dataclass(frozen=True)
class Stage1Config:
    """Stage-1 loop settings. ``fail_at_step`` / ``fail_marker`` are a test hook: raise once
    at that global step (the marker file records that it happened)."""

    epochs: int = 400
    seed: int = 0
    amp: Literal["bf16", "fp16", "none"] = "bf16"  # used on CUDA only
    tf32: bool = True
    log_every: int = 50
    fail_at_step: int = -1
    fail_marker: str = ""


@dataclass(frozen=True)
class PretrainConfig:
    """The stage-1 job: data, model, optimiser, loop and scaling."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    scale: ScaleConfig = field(default_factory=ScaleConfig)

    def __post_init__(self) -> None:
        if self.data.num_frames != self.model.num_frames:
            raise ValueError(
                f"data.num_frames={self.data.num_frames} differs from "
                f"model.num_frames={self.model.num_frames}; set both"
            )


def _model(name: str) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(PRESETS[name])


# Job presets: the paper's settings, a CPU demo that runs in minutes, and a test size.
JOB_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "model": _model("paper"),
        "data": {"num_frames": 120, "batch_size": 32},
        "stage1": {"epochs": 400},
        "optim": {"warmup_epochs": 20},
    },
    "paper_dec3": {
        "model": _model("paper_dec3"),
        "data": {"num_frames": 120},
        "stage1": {"epochs": 400},
    },
    "small": {
        "model": _model("small"),
        "data": {
            "num_frames": 32,
            "batch_size": 32,
            "min_crop_frames": 16,
            "synthetic": {"num_classes": 40, "samples_per_class": 60, "num_base_classes": 20},
        },
        "stage1": {"epochs": 25},
        "optim": {"warmup_epochs": 2, "min_lr": 1e-4},
        "scale": {"torch_threads": 2},
    },
    "tiny": {
        "model": _model("tiny"),
        "data": {
            "num_frames": 32,
            "batch_size": 8,
            "min_crop_frames": 16,
            "shuffle_buffer": 32,
            "map_batch_size": 64,
            "synthetic": {"num_classes": 8, "samples_per_class": 12, "num_base_classes": 6},
        },
        "stage1": {"epochs": 2, "log_every": 5},
        "optim": {"warmup_epochs": 0.5},
    },
}


def default_storage() -> str:
    return os.environ.get("STARS_STORAGE", "runs")


@dataclass(frozen=True)
class Stage2Config:
    """STARS contrastive tuning (protocols.md §7; defaults = the released code).

    Attributes:
        epochs: partial-tuning epochs (released: 10; paper text: 20).
        head_warmup_epochs: > 0 gives STARS-3stage: first train only the heads with the
            encoder frozen for this many epochs, then partial tuning, in one job.
        frozen_blocks: leading encoder blocks kept frozen with the embeddings (-1: half).
        layer_decay: block i of N trains at lr x layer_decay^(N - i) (released 0.45 for
            NTU-60, 0.40 NTU-120, 0.35 PKU; paper text 0.20); heads at lr.
        queue_size: support-queue entries (released: 32,768).
        topk: 1 = nearest neighbour; k > 1 = a random one of the k nearest.
        temperature: tau2 of the contrastive loss.
        augment: False = one unaltered view (crop ratio 1.0, no rotation), the method's
            default; True uses the stage-1 augmentation (ablations).
        monitor: per-epoch weighted-kNN monitoring on ``holdout`` (a held-out tenth of the
            training split), ``test`` (explicit opt-in: selects checkpoints on the test split
            as the released code does) or ``none``.
    """

    epochs: int = 10
    head_warmup_epochs: int = 0
    frozen_blocks: int = -1
    layer_decay: float = 0.45
    queue_size: int = 32768
    topk: int = 1
    temperature: float = 0.07
    symmetric: bool = False
    predictor_hidden: int = 4096
    augment: bool = False
    monitor: Literal["holdout", "test", "none"] = "holdout"
    seed: int = 0
    amp: Literal["bf16", "fp16", "none"] = "bf16"
    tf32: bool = True
    fail_at_step: int = -1
    fail_marker: str = ""


def _stage2_optim() -> OptimConfig:
    return OptimConfig(
        lr=1e-3,
        min_lr=1e-3,
        warmup_epochs=0.0,
        weight_decay=0.01,
        clip_grad=3.0,
        schedule="constant",
    )


@dataclass(frozen=True)
class TuneConfig:
    """The stage-2 job. The model comes from the stage-1 checkpoint; ``data.num_frames`` is
    set from it."""

    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=_stage2_optim)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    scale: ScaleConfig = field(default_factory=ScaleConfig)


TUNE_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"data": {"batch_size": 32}},
    "small": {
        "data": {"batch_size": 32, "synthetic": JOB_PRESETS["small"]["data"]["synthetic"]},
        # ~60 held-out queries make a noisy selection signal: the demo keeps the last epoch.
        "stage2": {"epochs": 30, "queue_size": 1024, "predictor_hidden": 1024, "monitor": "none"},
        "scale": {"torch_threads": 2},
    },
    "tiny": {
        "data": {
            "batch_size": 8,
            "shuffle_buffer": 32,
            "map_batch_size": 64,
            "synthetic": JOB_PRESETS["tiny"]["data"]["synthetic"],
        },
        "stage2": {"epochs": 2, "queue_size": 64, "predictor_hidden": 64},
    },
}
