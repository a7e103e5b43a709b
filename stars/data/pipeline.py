"""Ray Data pipelines: sharded Parquet -> split filter -> vectorised transforms -> workers.

The driver builds a :class:`ray.data.Dataset` per role (training: random crops and rotations;
evaluation: deterministic centred crops) and hands it to a ``TorchTrainer``; inside a worker,
:func:`iter_worker_batches` turns its shard into torch batches::

    {"x": (B, M, T, V, 3) float32, "label": (B,) int64, "sample_index": (B,) int64}

Ray Train splits each dataset with ``streaming_split(equal=True)``, so every rank sees the same
number of rows; training drops the last partial batch, so every rank takes the same number of
steps and DDP never waits on a rank that ran out of data.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from stars.data import transforms
from stars.data.config import DataConfig
from stars.data.shards import JOINTS, SkeletonDataset

if TYPE_CHECKING:
    import ray.data
    import torch

Mode = Literal["train", "eval"]
READ_COLUMNS = ["sample_index", "label", "num_frames", "split_mask", JOINTS]


HOLDOUT_MODULUS = 10  # every 10th sample of a split (by sample_index) is held out


def transform_batch(
    batch: dict[str, np.ndarray],
    *,
    split_bit: int | None,
    mode: Mode,
    cfg: DataConfig,
    holdout: str = "all",
) -> dict[str, np.ndarray]:
    """One Ray Data batch of stored rows -> model-ready arrays (rows outside the split dropped).

    Args:
        batch: ``joints`` (B, T_max, M, V, 3), ``num_frames``, ``label``, ``sample_index``,
            ``split_mask`` (B,).
        holdout: ``all``; ``query`` keeps only every 10th sample (by index), ``bank`` the
            rest: a labelled held-out part of a training split for monitoring.
    Returns:
        ``x`` (B', M, T, V, 3) float32, ``label`` and ``sample_index`` (B',) int64.
    """
    keep = np.ones(len(batch["sample_index"]), dtype=bool)
    if split_bit is not None:
        keep &= (batch["split_mask"] & (1 << split_bit)) != 0
    if holdout != "all":
        held = batch["sample_index"] % HOLDOUT_MODULUS == 0
        keep &= held if holdout == "query" else ~held
    joints = batch[JOINTS][keep]
    lengths = batch["num_frames"][keep].astype(np.int64)
    index = batch["sample_index"][keep].astype(np.int64)
    if len(index) == 0:  # a block with no row of this split
        _, _, M, V, C = joints.shape
        return {
            "x": np.zeros((0, M, cfg.num_frames, V, C), np.float32),
            "label": np.zeros(0, np.int64),
            "sample_index": index,
        }
    if mode == "train":
        seed = None if cfg.seed is None else [cfg.seed, int(index[0]) if len(index) else 0]
        x = transforms.train_view(
            joints,
            lengths,
            np.random.default_rng(seed),
            out_frames=cfg.num_frames,
            ratio=cfg.train_crop,
            min_frames=cfg.min_crop_frames,
            max_angle=cfg.rotation,
        )
    else:
        x = transforms.eval_view(joints, lengths, out_frames=cfg.num_frames, ratio=cfg.eval_crop)
    return {"x": x, "label": batch["label"][keep].astype(np.int64), "sample_index": index}


def build_dataset(
    data: SkeletonDataset,
    split: str | None,
    mode: Mode,
    cfg: DataConfig,
    holdout: str = "all",
    **map_kwargs: Any,
) -> ray.data.Dataset:
    """Lazy Ray Dataset of one split, transformed for ``mode``.

    Args:
        data: an opened (validated) dataset.
        split: split name from the manifest, or None for every sample.
        holdout: ``all``, or ``bank`` / ``query`` for the two parts of a monitoring split.
        map_kwargs: extra ``map_batches`` arguments (e.g. ``num_cpus``).
    """
    import ray.data

    bit = data.split_bit(split) if split is not None else None
    ds = ray.data.read_parquet(data.shard_paths, shuffle="files" if mode == "train" else None)
    ds = ds.select_columns(READ_COLUMNS)
    fn = functools.partial(transform_batch, split_bit=bit, mode=mode, cfg=cfg, holdout=holdout)
    return ds.map_batches(
        fn, batch_format="numpy", batch_size=cfg.map_batch_size, zero_copy_batch=True, **map_kwargs
    )


def iter_worker_batches(
    shard: Any, cfg: DataConfig, mode: Mode, device: torch.device | str | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """Torch batches from a worker's dataset shard (``ray.train.get_dataset_shard``).

    Training batches are locally shuffled and the last partial batch is dropped, so every rank
    takes the same number of steps.
    """
    import torch

    train = mode == "train"
    return shard.iter_torch_batches(
        batch_size=cfg.batch_size,
        dtypes={"x": torch.float32, "label": torch.int64, "sample_index": torch.int64},
        device=device if device is not None else "cpu",
        drop_last=train,
        local_shuffle_buffer_size=cfg.shuffle_buffer if train and cfg.shuffle_buffer else None,
        local_shuffle_seed=cfg.seed if train else None,
    )
