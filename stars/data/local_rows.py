"""One split's stored rows read into this process with pyarrow: the data of a training run
that runs inside its caller's process (:mod:`stars.train.in_process`), where a Ray Data
pipeline would cost more to start than the epoch it feeds.

The rows are what the in-memory training path keeps (``select_block``: unpadded joints,
``num_frames``, ``label``, ``sample_index``); evaluation views are made here, in
``batch_size`` slices, by the same :func:`~stars.data.pipeline.transform_batch` that Ray
Data's tasks run, so both paths give the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds

from stars.data.config import DataConfig
from stars.data.pipeline import READ_COLUMNS, select_block, stored_rows, transform_batch
from stars.data.shards import DataError, SkeletonDataset

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LocalRows:
    """Stored rows of one split (and holdout part) as one Arrow table, sorted by
    ``sample_index``.

    Attributes:
        table: ``joints`` (list<fixed_size_binary[V*12]>), ``num_frames``, ``label``,
            ``sample_index`` (int64).
        num_bodies: the dataset's actors per row (M of the model's input).
    """

    table: pa.Table
    num_bodies: int

    @classmethod
    def read(cls, data: SkeletonDataset, split: str | None, holdout: str = "all") -> LocalRows:
        """The rows of ``split`` (every sample for None); ``holdout`` as in
        :func:`~stars.data.pipeline.split_rows`."""
        keep = None
        if split is not None:  # the split's bit tested inside Arrow, as read_split does
            bit = pa.scalar(1 << data.split_bit(split), pa.int64())
            keep = pc.not_equal(pc.bit_wise_and(pds.field("split_mask"), bit), 0)
        try:
            shards = pds.dataset(data.shard_paths, format="parquet", filesystem=data.filesystem)
            table = shards.to_table(columns=READ_COLUMNS, filter=keep)
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"dataset {data.location.shown}: cannot be read ({err})") from err
        rows = select_block(table, split_bit=None, holdout=holdout)
        order = pc.sort_indices(rows, sort_keys=[("sample_index", "ascending")])
        return cls(rows.take(order).combine_chunks(), data.num_bodies)

    def __len__(self) -> int:
        return self.table.num_rows

    def tables(self) -> list[pa.Table]:
        """The stored rows (what :class:`~stars.data.pipeline.InMemoryTrainSet` keeps)."""
        return [self.table]

    def eval_batches(
        self, cfg: DataConfig, device: Any = "cpu"
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Evaluation views in order: ``x`` (B, M, T, V, 3) float32, ``label`` and
        ``sample_index`` (B,) int64, the last batch partial."""
        import torch

        for lo in range(0, len(self), cfg.batch_size):
            part = stored_rows(self.table.slice(lo, cfg.batch_size), self.num_bodies)
            out = transform_batch(part, split_bit=None, mode="eval", cfg=cfg)  # rows: the split's
            yield {name: torch.from_numpy(out[name]).to(device) for name in out}
