"""The shard datasource: every stored row once, one block per shard, a fresh shard order per
training epoch, and a shard that cannot be read named in the error."""

from __future__ import annotations

import pytest

from stars.data.manifest import DataError
from stars.data.pipeline import READ_COLUMNS
from stars.data.shard_source import ShardSource, read_shard, read_task_count


def test_read_shard_names_a_shard_it_cannot_read(tmp_path):
    broken = tmp_path / "shard-00000.parquet"
    broken.write_bytes(b"PAR1 not a parquet file")
    with pytest.raises(DataError, match=r"shard-00000\.parquet: cannot be read"):
        read_shard(str(broken), ["label"], None)


def test_read_tasks_cover_every_shard_with_its_row_count(tiny_dataset):
    source = ShardSource(tiny_dataset, ["sample_index"])
    tasks = source.get_read_tasks(parallelism=1000)
    assert len(tasks) == len(tiny_dataset.shard_paths)
    assert [t.metadata.num_rows for t in tasks] == [s.rows for s in tiny_dataset.manifest.shards]
    fewer = source.get_read_tasks(parallelism=2)
    assert len(fewer) == min(2, len(tasks))
    assert sum(t.metadata.num_rows for t in fewer) == tiny_dataset.num_samples
    ids = [i for t in fewer for block in t() for i in block.column("sample_index").to_pylist()]
    assert sorted(ids) == sorted(range(tiny_dataset.num_samples))


@pytest.mark.ray
def test_every_row_once_and_a_fresh_shard_order_per_epoch(ray_local, tiny_dataset):
    """Through Ray Data: every row of the three shards once per execution, and the shard
    order drawn afresh on each execution of a training read (not once per dataset)."""
    import ray.data

    ds = ray.data.read_datasource(ShardSource(tiny_dataset, READ_COLUMNS, shuffle=True))
    orders = set()
    for _ in range(6):
        blocks = list(ds.iter_batches(batch_size=None, batch_format="pyarrow"))
        ids = [i for block in blocks for i in block.column("sample_index").to_pylist()]
        assert sorted(ids) == list(range(tiny_dataset.num_samples))
        assert all(block.column_names == READ_COLUMNS for block in blocks)
        orders.add(tuple(block.column("sample_index")[0].as_py() for block in blocks))
    # 6 draws of 3! = 6 orders all alike has probability 6**-5.
    assert len(orders) > 1, "six epochs read the shards in one order"


@pytest.mark.ray
def test_training_pipeline_reads_and_transforms_each_shard_in_one_task(ray_local, tiny_dataset):
    """The transforms are fused into the read (one task per shard): a read split into several
    blocks, or a map that re-batches, would send every stored row through the object store."""
    from stars.data.config import DataConfig
    from stars.data.pipeline import build_dataset

    assert len(tiny_dataset.shard_paths) == 3
    half = -(-tiny_dataset.num_samples // 2)
    cfg = DataConfig(num_frames=16, map_batch_size=5, rows_per_read_task=half)
    ds = build_dataset(tiny_dataset, None, "train", cfg)
    rows = sum(len(b["label"]) for b in ds.iter_batches(batch_size=None, batch_format="numpy"))
    assert rows == tiny_dataset.num_samples
    stats = ds.stats()
    assert "ReadStarsShards->MapBatches(transform_shard)" in stats, stats
    assert "2 tasks executed" in stats, stats  # three shards in tasks of about half the rows


def test_read_tasks_group_shards_by_rows(tiny_dataset):
    shards, rows = len(tiny_dataset.shard_paths), tiny_dataset.num_samples
    assert read_task_count(tiny_dataset, None) == shards
    assert read_task_count(tiny_dataset, rows) == 1
    assert read_task_count(tiny_dataset, 10 * rows) == 1
    assert read_task_count(tiny_dataset, 1) == shards  # never more than one per shard
    assert read_task_count(tiny_dataset, -(-rows // 2)) == 2
