"""A Ray Data source for a dataset's shards: one read task per shard, each one pyarrow read.

``ray.data.read_parquet`` is general: every execution lists the files, samples some of them to
estimate their in-memory size, and reads each in row batches that are then concatenated. The
manifest already knows each shard's path and row count, and a shard (a few hundred rows) is
the natural block, so a read task here is a single ``pyarrow.parquet.read_table`` of the
columns asked for, and a training epoch spends its CPU on decoding rows rather than on
planning the read (``bench.data``'s ``ray_row_epoch`` measures both).

:func:`read_shards` tells Ray Data how many read tasks to make (``override_num_blocks``): one
per shard, or whole shards grouped into tasks of about ``rows_per_task`` rows, since each task
costs Ray Data a roughly fixed amount of CPU. Left to itself, Ray Data splits each task's
output into several blocks when a dataset has fewer read tasks than its default minimum
number of blocks (200), and a split read cannot be fused with the map that follows it: every
row would then cross the object store twice, once as stored and once transformed, in blocks
of a few dozen rows.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.data import Datasource

from stars.data.manifest import DataError

if TYPE_CHECKING:
    import pyarrow as pa

    from stars.data.shards import SkeletonDataset


def read_shards(
    data: SkeletonDataset,
    columns: Sequence[str],
    shuffle: bool = False,
    rows_per_task: int | None = None,
) -> Any:
    """A lazy :class:`ray.data.Dataset` of the dataset's shards, one block per shard
    (see :class:`ShardSource`), so that a ``map_batches(batch_size=None)`` after it runs in
    the same task as the read.

    Args:
        rows_per_task: shards are grouped into read tasks of about this many rows (at least
            one shard each); None: one task per shard.
    """
    import ray.data

    tasks = read_task_count(data, rows_per_task)
    source = ShardSource(data, columns, shuffle=shuffle)
    return ray.data.read_datasource(source, override_num_blocks=tasks)


def read_task_count(data: SkeletonDataset, rows_per_task: int | None) -> int:
    """Read tasks for ``rows_per_task`` rows each: between 1 and one per shard."""
    shards = len(data.shard_paths)
    if rows_per_task is None:
        return shards
    return max(1, min(shards, -(-data.num_samples // max(rows_per_task, 1))))


def read_shard(path: str, columns: Sequence[str], filesystem: Any) -> list[pa.Table]:
    """One shard's ``columns`` as a single Arrow table (one block); a shard that cannot be
    read is a :class:`DataError` naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return [pq.read_table(path, columns=list(columns), filesystem=filesystem)]
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"shard {path}: cannot be read ({err})") from err


class ShardSource(Datasource):
    """The shards of an opened dataset as Ray Data read tasks.

    Args:
        data: the dataset (local directory or URI); its manifest gives paths and row counts.
        columns: the columns to read.
        shuffle: a fresh random shard order on every execution (a training epoch), as
            ``read_parquet(shuffle="files")`` gives.
    """

    def __init__(self, data: SkeletonDataset, columns: Sequence[str], shuffle: bool = False):
        super().__init__()
        self._paths = data.shard_paths
        self._rows = [shard.rows for shard in data.manifest.shards]
        # Ray Data sizes blocks and back-pressure from this. Compressed bytes understate a
        # decoded block; half of T_max frames of one actor is the right order for recordings
        # (the exact content needs reading the rows).
        self._bytes = [
            max(shard.bytes, shard.rows * data.t_max * data.num_joints * 3 * 4 // 2)
            for shard in data.manifest.shards
        ]
        self._columns = list(columns)
        self._filesystem = data.filesystem
        self._shuffle = shuffle

    def get_name(self) -> str:
        return "StarsShards"

    def estimate_inmemory_data_size(self) -> int:
        return int(sum(self._bytes))

    def get_read_tasks(
        self,
        parallelism: int,
        per_task_row_limit: int | None = None,
        data_context: Any = None,
    ) -> list[Any]:
        from ray.data.block import BlockMetadata
        from ray.data.datasource import ReadTask

        order = np.arange(len(self._paths))
        if self._shuffle:
            order = np.random.default_rng().permutation(order)
        # One task per shard unless fewer are asked for; then neighbours in the order share one.
        groups = np.array_split(order, max(1, min(parallelism, len(order))))
        tasks = []
        for group in groups:
            if not len(group):
                continue
            paths = [self._paths[i] for i in group]
            tasks.append(
                ReadTask(
                    functools.partial(_read_shards, paths, self._columns, self._filesystem),
                    BlockMetadata(
                        num_rows=int(sum(self._rows[i] for i in group)),
                        size_bytes=int(sum(self._bytes[i] for i in group)),
                        exec_stats=None,
                        input_files=paths,
                    ),
                    per_task_row_limit=per_task_row_limit,
                )
            )
        return tasks


def _read_shards(paths: list[str], columns: list[str], filesystem: Any) -> Iterable[pa.Table]:
    for path in paths:
        yield from read_shard(path, columns, filesystem)
