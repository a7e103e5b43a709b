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
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from stars.data import transforms
from stars.data.config import DataConfig
from stars.data.rows import RaggedJoints, joints_per_frame
from stars.data.shards import JOINTS, SkeletonDataset

if TYPE_CHECKING:
    import ray.data
    import torch

Mode = Literal["train", "eval"]
READ_COLUMNS = ["sample_index", "label", "num_frames", "split_mask", JOINTS]


HOLDOUT_MODULUS = 10  # every 10th sample of a split (by sample_index) is held out


def split_rows(batch: dict[str, np.ndarray], split_bit: int | None, holdout: str) -> np.ndarray:
    """(B,) bool: the rows of a batch in the split (and holdout part) asked for."""
    keep = np.ones(len(batch["sample_index"]), dtype=bool)
    if split_bit is not None:
        keep &= (batch["split_mask"] & (1 << split_bit)) != 0
    if holdout != "all":
        held = batch["sample_index"] % HOLDOUT_MODULUS == 0
        keep &= held if holdout == "query" else ~held
    return keep


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
        batch: ``joints`` (:class:`RaggedJoints`, or (B, T, M, V, 3) zero padded),
            ``num_frames``, ``label``, ``sample_index``, ``split_mask`` (B,).
        holdout: ``all``; ``query`` keeps only every 10th sample (by index), ``bank`` the
            rest: a labelled held-out part of a training split for monitoring.
    Returns:
        ``x`` (B', M, T, V, 3) float32, ``label`` and ``sample_index`` (B',) int64.
    """
    keep = split_rows(batch, split_bit, holdout)
    joints = _take(batch[JOINTS], keep)
    lengths = batch["num_frames"][keep].astype(np.int64)
    index = batch["sample_index"][keep].astype(np.int64)
    if len(index) == 0:  # a block with no row of this split
        M, V = _bodies_and_joints(batch[JOINTS])
        return {
            "x": np.zeros((0, M, cfg.num_frames, V, 3), np.float32),
            "label": np.zeros(0, np.int64),
            "sample_index": index,
        }
    if mode == "train":
        # Fresh randomness on every pass: a Ray Data task cannot tell which epoch it serves,
        # and views seeded by the block would repeat every epoch. The streaming path seeds
        # the order (``epoch_seed``); the in-memory path seeds the views too.
        x = transforms.train_view(
            joints,
            lengths,
            np.random.default_rng(),
            out_frames=cfg.num_frames,
            ratio=cfg.train_crop,
            min_frames=cfg.min_crop_frames,
            max_angle=cfg.rotation,
        )
    else:
        x = transforms.eval_view(joints, lengths, out_frames=cfg.num_frames, ratio=cfg.eval_crop)
    return {"x": x, "label": batch["label"][keep].astype(np.int64), "sample_index": index}


def tensor_column(x: np.ndarray) -> pa.Array:
    """(B, ...) float32 -> Arrow's ``fixed_shape_tensor`` column, empty batches included
    (Ray Data stores it natively instead of pickling ndarray cells)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    width = int(np.prod(x.shape[1:]))
    storage = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), width)
    return pa.ExtensionArray.from_storage(
        pa.fixed_shape_tensor(pa.float32(), list(x.shape[1:])), storage
    )


def _take(joints: np.ndarray | RaggedJoints, rows: np.ndarray) -> np.ndarray | RaggedJoints:
    return joints.take(rows) if isinstance(joints, RaggedJoints) else joints[rows]


def _bodies_and_joints(joints: np.ndarray | RaggedJoints) -> tuple[int, int]:
    if isinstance(joints, RaggedJoints):
        return joints.num_bodies, joints.num_joints
    return joints.shape[2], joints.shape[3]


def stored_rows(table: pa.Table, num_bodies: int) -> dict[str, Any]:
    """A block of stored rows as arrays: the metadata columns as numpy, ``joints`` as
    :class:`RaggedJoints` over the block's own buffer (no copy, no padding)."""
    out: dict[str, Any] = {
        name: table.column(name).to_numpy(zero_copy_only=False)
        for name in table.column_names
        if name != JOINTS
    }
    column = table.column(JOINTS)
    num_joints = joints_per_frame(column.type)
    out[JOINTS] = RaggedJoints.from_arrow(column, out["num_frames"], num_joints, num_bodies)
    return out


def transform_block(table: pa.Table, *, num_bodies: int, **kwargs: Any) -> pa.Table:
    """:func:`transform_batch` of a block of stored rows, as an Arrow table."""
    out = transform_batch(stored_rows(table, num_bodies), **kwargs)
    return pa.table(
        {"x": tensor_column(out["x"]), "label": out["label"], "sample_index": out["sample_index"]}
    )


def transform_shard(table: pa.Table, *, rows_per_call: int, **kwargs: Any) -> Iterator[pa.Table]:
    """A shard's stored rows -> transformed tables of at most ``rows_per_call`` rows each (what
    the Ray Data pipeline emits; the slices bound the transform's temporaries)."""
    for lo in range(0, max(table.num_rows, 1), rows_per_call):
        yield transform_block(table.slice(lo, rows_per_call), **kwargs)


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
    from stars.data.shard_source import read_shards

    bit = data.split_bit(split) if split is not None else None
    ds = read_shards(
        data, READ_COLUMNS, shuffle=mode == "train", rows_per_task=cfg.rows_per_read_task
    )
    fn = functools.partial(
        transform_shard,
        rows_per_call=cfg.map_batch_size,
        num_bodies=data.num_bodies,
        split_bit=bit,
        mode=mode,
        cfg=cfg,
        holdout=holdout,
    )
    # Whole blocks (batch_size=None): Ray Data fuses a read only with a map that takes its
    # blocks as they come, so each shard is read and transformed in one task and only the
    # transformed rows cross the object store.
    return ds.map_batches(
        fn, batch_format="pyarrow", batch_size=None, zero_copy_batch=True, **map_kwargs
    )


def select_block(table: pa.Table, *, split_bit: int | None, holdout: str = "all") -> pa.Table:
    """The stored rows of one split, untransformed and unpadded (the in-memory training
    path's input)."""
    batch = {name: table.column(name).to_numpy() for name in ("sample_index", "split_mask")}
    keep = split_rows(batch, split_bit, holdout)
    rows = table.filter(pa.array(keep))
    # int64 like the streaming path's batches: torch's losses take Long labels only.
    ints = {name: rows.column(name).cast(pa.int64()) for name in INDEX_COLUMNS}
    return pa.table({JOINTS: rows.column(JOINTS), **ints})


INDEX_COLUMNS = ("num_frames", "label", "sample_index")


def build_base_dataset(data: SkeletonDataset, split: str | None) -> ray.data.Dataset:
    """Lazy Ray Dataset of one split's stored rows, not transformed: a worker reads its
    shard once and applies the random training views itself each epoch
    (:class:`InMemoryTrainSet`)."""
    from stars.data.shard_source import read_shards

    bit = data.split_bit(split) if split is not None else None
    return read_shards(data, READ_COLUMNS).map_batches(
        functools.partial(select_block, split_bit=bit),
        batch_format="pyarrow",
        batch_size=None,  # fused with the read, as in build_dataset
        zero_copy_batch=True,
    )


def fits_in_memory(data: SkeletonDataset, split: str, cfg: DataConfig, workers: int) -> bool:
    """``data.in_memory``, or (unset) whether a worker's share of ``split`` decodes to at most
    ``data.in_memory_max_bytes`` (larger shares stream through Ray Data every epoch)."""
    if cfg.in_memory is not None:
        return cfg.in_memory
    return split_content_bytes(data, split) / max(workers, 1) <= cfg.in_memory_max_bytes


def split_content_bytes(data: SkeletonDataset, split: str) -> int:
    """Bytes the split's joints hold as stored (frames x actors x V x 3 float32, unpadded):
    what workers keep in memory. Reads two integer columns, not the joints."""
    sizes = data.read_split(split, ["num_frames", "num_bodies"])
    actor_frames = int((sizes["num_frames"].astype(np.int64) * sizes["num_bodies"]).sum())
    return actor_frames * data.num_joints * 3 * 4


@runtime_checkable
class HeldRows(Protocol):
    """Rows already in this process (:class:`~stars.data.local_rows.LocalRows`), not a Ray
    Data shard to stream."""

    def tables(self) -> list[pa.Table]: ...


class InMemoryTrainSet:
    """A worker's training rows, read once from its Ray Data shard (or, in-process, a
    :class:`~stars.data.local_rows.LocalRows`); every epoch is a fresh
    permutation (seeded by the job's seed, the epoch and the rank) whose
    batches get the random training views here, vectorised over the batch. Saves the per-epoch
    pipeline start-up that dominates small datasets. The last partial batch is dropped, as on
    the streaming path, so every rank takes the same number of steps."""

    def __init__(
        self, shard: Any, cfg: DataConfig, rank: int, seed: int, num_bodies: int | None = None
    ):
        self.shard, self.cfg, self.rank, self.seed = shard, cfg, rank, seed
        self.num_bodies = num_bodies
        self.rows: dict[str, Any] | None = None

    def load(self) -> dict[str, Any]:
        if self.rows is None:
            if isinstance(self.shard, HeldRows):
                tables = self.shard.tables()
            else:
                tables = list(self.shard.iter_batches(batch_format="pyarrow", batch_size=4096))
            tables = [t for t in tables if t.num_rows]
            if not tables:
                raise ValueError(f"rank {self.rank} received no training rows")
            # One copy into one buffer of the rows' content: what the worker keeps.
            rows = stored_rows(pa.concat_tables(tables).combine_chunks(), self.num_bodies or 1)
            # Blocks arrive in no fixed order: sorting by id makes a seeded order reproducible.
            order = np.argsort(rows["sample_index"], kind="stable")
            self.rows = {k: _take(v, order) for k, v in rows.items()}
        return self.rows

    def epoch(self, epoch: int, device: Any = "cpu") -> Iterator[dict[str, torch.Tensor]]:
        import torch

        rows, cfg = self.load(), self.cfg
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        order = rng.permutation(len(rows["label"]))
        for lo in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
            idx = order[lo : lo + cfg.batch_size]
            x = transforms.train_view(
                _take(rows[JOINTS], idx),
                rows["num_frames"][idx],
                rng,
                out_frames=cfg.num_frames,
                ratio=cfg.train_crop,
                min_frames=cfg.min_crop_frames,
                max_angle=cfg.rotation,
            )
            yield {
                "x": torch.from_numpy(x).to(device),
                "label": torch.from_numpy(rows["label"][idx]).to(device),
                "sample_index": torch.from_numpy(rows["sample_index"][idx]).to(device),
            }


class StreamingTrainSet:
    """The streaming path: Ray Data transforms every epoch (:func:`iter_worker_batches`).
    The local shuffle is seeded by the job's seed, the epoch and the rank, so a resumed epoch
    sees that epoch's order, not the first epoch's. The views are drawn afresh in Ray Data's
    tasks and the blocks arrive in no fixed order, so a streamed run is not bit-reproducible
    (``data.in_memory=true`` is, when a worker's share fits)."""

    def __init__(self, shard: Any, cfg: DataConfig, rank: int = 0, seed: int = 0):
        self.shard, self.cfg, self.rank, self.seed = shard, cfg, rank, seed

    def epoch(self, epoch: int, device: Any = "cpu") -> Iterator[dict[str, torch.Tensor]]:
        return iter_worker_batches(
            self.shard,
            self.cfg,
            "train",
            device,
            shuffle_seed=epoch_seed(self.seed, epoch, self.rank),
        )


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """One int seed per (job seed, epoch, rank)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def iter_worker_batches(
    shard: Any,
    cfg: DataConfig,
    mode: Mode,
    device: torch.device | str | None = None,
    shuffle_seed: int | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """Torch batches from a worker's dataset shard (``ray.train.get_dataset_shard``).

    Training batches are locally shuffled (seeded by ``shuffle_seed``) and the last partial
    batch is dropped, so every rank takes the same number of steps.
    """
    import torch

    train = mode == "train"
    return shard.iter_torch_batches(
        batch_size=cfg.batch_size,
        dtypes={"x": torch.float32, "label": torch.int64, "sample_index": torch.int64},
        device=device if device is not None else "cpu",
        drop_last=train,
        local_shuffle_buffer_size=cfg.shuffle_buffer if train and cfg.shuffle_buffer else None,
        local_shuffle_seed=shuffle_seed if train else None,
    )


def quiet_ray_data() -> None:
    """No per-operator progress bars or execution banners from Ray Data in this process: the
    training loops and jobs report progress themselves."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
