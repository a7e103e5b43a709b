"""Typed configuration of the two training jobs (stage 1 and stage 2).

Presets live in :mod:`stars.presets`; the values a job derives (frames from a checkpoint, the
unaltered stage-2 view, the dataset path) are fixed by :mod:`stars.train.resolve`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from stars.data.config import DataConfig
from stars.model.config import ModelConfig


def check_seed(seed: int) -> None:
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


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
        storage_path: where checkpoints, Ray run state and evaluation outputs go. A local
            path is fine on one machine (made absolute when the job starts); on several nodes
            it must be a mount they all see (checked with a probe file from each node). Not a
            URI: checkpoints are read back as files (``--data`` may be one).
        cpus_per_worker: on a 2-core machine keep it at 0.5 so Ray Data's read tasks run.
        torch_threads: Ray limits a worker's torch threads to its whole CPUs (1 for 0.5);
            a single CPU worker on a small machine can use more.
        checkpoint_every: write a checkpoint every this many epochs (and after the last);
            a failure loses at most the epochs since.
        lost_node_timeout_s: after a node the run used is lost, how long the nodes left may
            lack room for the workers before the run is stopped (never wait forever).
        scale_up_timeout_s: on a cluster with an autoscaler (``ray up``), how long a job
            that does not fit the nodes up now asks for more and waits, with a progress line
            every 30 s. 0 (default): fail in seconds saying what to change.
        deterministic: torch's deterministic algorithms in every worker
            (``torch.use_deterministic_algorithms``, cuDNN benchmarking off, a fixed cuBLAS
            workspace): slower on GPUs, and an operation without a deterministic
            implementation fails naming itself. CPU training is deterministic without it.
    """

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 0.5
    gpus_per_worker: float = 1.0
    storage_path: str = "runs"
    max_failures: int = 0
    num_to_keep: int = 2
    checkpoint_every: int = 1
    torch_threads: int = 0  # > 0: intra-op threads per worker (Ray's default follows its CPUs)
    lost_node_timeout_s: float = 300.0
    scale_up_timeout_s: float = 0.0
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.num_workers < 1 or self.checkpoint_every < 1 or self.num_to_keep < 1:
            raise ValueError("num_workers, checkpoint_every and num_to_keep must be >= 1")
        if self.lost_node_timeout_s <= 0:
            raise ValueError("lost_node_timeout_s must be > 0")
        if self.scale_up_timeout_s < 0:
            raise ValueError("scale_up_timeout_s must be >= 0")


@dataclass(frozen=True)
class Stage1Config:
    """Stage-1 loop settings; ``amp``, ``tf32`` and ``compile`` apply on CUDA.

    ``compile``: the training forward through ``torch.compile`` (static shapes); on an H200
    it trained 1.41x faster than bf16 eager at batch 512 (``bench-results.json``, ``gpu``).
    """

    epochs: int = 400
    amp: Literal["bf16", "fp16", "none"] = "bf16"
    tf32: bool = True
    compile: bool = True


@dataclass(frozen=True)
class Stage1JobConfig:
    """The stage-1 job: data, model, optimiser, loop and scaling. ``data.num_frames`` is the
    model's and ``model.num_joints`` the dataset's (fixed at resolution).

    ``seed`` is the job's one seed: the data order and views, the initialisation and the
    masking of every worker (rank r seeds ``seed + r``), and in the main job the random-init
    control and the evaluation's draws (few-shot episodes, probe, clustering)."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    scale: ScaleConfig = field(default_factory=ScaleConfig)

    def __post_init__(self) -> None:
        check_seed(self.seed)


@dataclass(frozen=True)
class Stage2Config:
    """STARS contrastive tuning (STARS paper Sec. 3.2; defaults = the released code).

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
        monitor: per-epoch monitoring on rank 0, which also selects the kept checkpoint:
            ``holdout`` (weighted kNN on a held-out tenth of the training split),
            ``fewshot_val`` (few-shot episodes on the validation half of the novel classes:
            what sweeps optimise), ``test`` (explicit opt-in: selects checkpoints on the test
            split as the released code does) or ``none`` (the last epoch).
        monitor_shots, monitor_episodes: n and episodes of ``fewshot_val`` monitoring.
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
    monitor: Literal["holdout", "fewshot_val", "test", "none"] = "holdout"
    monitor_shots: int = 5
    monitor_episodes: int = 10
    amp: Literal["bf16", "fp16", "none"] = "bf16"
    tf32: bool = True


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
class Stage2JobConfig:
    """The stage-2 job. The encoder comes from the stage-1 checkpoint, which fixes
    ``data.num_frames``; without ``stage2.augment`` the view is unaltered (crop 1.0, no
    rotation). ``seed``: the job's one seed (data order, heads' initialisation, neighbour
    picks, the evaluation's draws)."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=_stage2_optim)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    scale: ScaleConfig = field(default_factory=ScaleConfig)

    def __post_init__(self) -> None:
        check_seed(self.seed)
