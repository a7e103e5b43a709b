"""Typed configuration of the data concern: where the data is and how batches are made."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SyntheticConfig:
    """The embedded synthetic dataset, generated and cached on first use."""

    num_classes: int = 120
    samples_per_class: int = 60
    num_base_classes: int = 60
    seed: int = 0
    cache_dir: str = "data/synthetic"


@dataclass(frozen=True)
class DataConfig:
    """Input pipeline (MAMP defaults, docs/method.md §4).

    Attributes:
        path: dataset directory (``manifest.json`` + shards); empty means the embedded
            synthetic dataset described by ``synthetic``.
        protocol: train/test split pair from the manifest; empty means its default.
        num_frames: frames per sequence fed to the model (T).
        train_crop: range of the random crop ratio for training.
        min_crop_frames: shortest training crop (capped at the valid length).
        eval_crop: centred crop ratio for evaluation.
        rotation: max rotation angle (radians) about each axis for training; 0 disables.
        batch_size: per-worker batch size.
        shuffle_buffer: local shuffle buffer (rows) on each worker; 0 disables.
        map_batch_size: rows per transform call inside a Ray Data read task (each task reads
            its shards and transforms them in slices of this many rows).
        rows_per_read_task: rows a streaming Ray Data read task reads and transforms (whole
            shards, at least one): each task costs Ray Data a roughly fixed amount of CPU, so
            fewer, larger tasks cost less per row; more tasks spread an epoch over more CPUs.
        in_memory: training workers keep their share of the rows in memory and make the
            random views themselves (true), or Ray Data streams and transforms them every
            epoch (false); unset: in memory when a worker's share fits
            ``in_memory_max_bytes``.
        in_memory_max_bytes: the bytes of a worker's share of the training rows below which
            it keeps them in memory (default 2 GiB). A row counts at the size of its content,
            frames x stored actors x V x 3 float32 (30,000 bytes for 100 frames of one NTU
            actor).
    """

    path: str = ""
    protocol: str = ""
    num_frames: int = 120
    train_crop: tuple[float, float] = (0.5, 1.0)
    min_crop_frames: int = 64
    eval_crop: float = 0.95
    rotation: float = 0.3
    batch_size: int = 32
    shuffle_buffer: int = 512
    map_batch_size: int = 256
    rows_per_read_task: int = 4096
    in_memory: bool | None = None
    in_memory_max_bytes: int = 2 << 30
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self) -> None:
        lo, hi = self.train_crop
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"train_crop must satisfy 0 < lo <= hi <= 1, got {self.train_crop}")
        if not 0 < self.eval_crop <= 1:
            raise ValueError(f"eval_crop must be in (0, 1], got {self.eval_crop}")
        if min(self.num_frames, self.batch_size, self.map_batch_size, self.rows_per_read_task) < 1:
            raise ValueError(
                "num_frames, batch_size, map_batch_size and rows_per_read_task must be >= 1"
            )
