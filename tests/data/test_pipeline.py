"""Ray Data streaming into a 2-worker TorchTrainer: every sample once per epoch, equal steps."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from stars.data.config import DataConfig
from stars.data.pipeline import select_block, stored_rows, transform_batch
from stars.data.stream_check import run_stream_check


@pytest.mark.ray
def test_eval_stream_delivers_every_sample_exactly_once(ray_local, tiny_dataset, tmp_path):
    # Ray Train splits with equal=True: an even count is split without dropping anything.
    split = next(s for s, n in tiny_dataset.manifest.splits.items() if n % 2 == 0)
    expected = set(tiny_dataset.read_split(split, ["sample_index"])["sample_index"].tolist())
    records = run_stream_check(
        tiny_dataset, split, "eval", DataConfig(batch_size=7), tmp_path, epochs=2
    )
    for per_rank in records:
        ids = per_rank[0]["ids"] + per_rank[1]["ids"]
        assert len(ids) == len(set(ids)), "a sample arrived twice in one epoch"
        assert set(ids) == expected
        assert per_rank[0]["steps"] == per_rank[1]["steps"]


@pytest.mark.ray
def test_train_stream_gives_equal_steps_per_rank(ray_local, tiny_dataset, tmp_path):
    records = run_stream_check(
        tiny_dataset, "xsub_train", "train", DataConfig(batch_size=8, shuffle_buffer=16), tmp_path
    )
    n = tiny_dataset.split_size("xsub_train")
    rank0, rank1 = records[0]
    assert rank0["steps"] == rank1["steps"] == (n // 2) // 8
    ids = rank0["ids"] + rank1["ids"]
    assert len(ids) == len(set(ids))
    train_ids = set(tiny_dataset.read_split("xsub_train", ["sample_index"])["sample_index"])
    assert set(ids) <= train_ids


def test_transform_batch_filters_split_and_shapes(tiny_dataset):
    cols = ["sample_index", "label", "num_frames", "split_mask", "joints"]
    batch = tiny_dataset.read_split(None, cols)
    bit = tiny_dataset.split_bit("xview_test")
    out = transform_batch(batch, split_bit=bit, mode="eval", cfg=DataConfig(num_frames=60))
    expected = tiny_dataset.read_split("xview_test", ["sample_index"])["sample_index"]
    np.testing.assert_array_equal(out["sample_index"], expected)
    assert out["x"].shape == (len(expected), 2, 60, 25, 3)
    assert out["x"].dtype == np.float32 and out["label"].dtype == np.int64
    cfg = DataConfig(num_frames=60)
    train = transform_batch(batch, split_bit=bit, mode="train", cfg=cfg)
    again = transform_batch(batch, split_bit=bit, mode="train", cfg=cfg)
    # Streamed views are drawn afresh on every pass (a task cannot tell the epoch it serves).
    assert not np.array_equal(train["x"], again["x"])
    assert not np.array_equal(train["x"], out["x"])
    none = {k: v[:0] for k, v in batch.items()}
    empty = transform_batch(none, split_bit=bit, mode="train", cfg=cfg)
    assert empty["x"].shape == (0, 2, 60, 25, 3) and empty["label"].shape == (0,)


class _Shard:
    """Stands in for a worker's Ray Data shard: hands out the split's stored rows (what
    ``select_block`` makes of each shard) in Arrow batches of 5."""

    def __init__(self, data, split: str):
        bit = data.split_bit(split)
        blocks = [select_block(pq.read_table(p), split_bit=bit) for p in data.shard_paths]
        self.table, self.reads = pa.concat_tables(blocks), 0

    def iter_batches(self, batch_format: str, batch_size: int):
        assert batch_format == "pyarrow"
        self.reads += 1
        for lo in range(0, self.table.num_rows, 5):
            yield self.table.slice(lo, 5)


def test_in_memory_training_set_reads_once_and_permutes_each_epoch(tiny_dataset):
    from stars.data.pipeline import InMemoryTrainSet

    cols = ["joints", "num_frames", "num_bodies", "label", "sample_index"]
    rows = tiny_dataset.read_split("xsub_train", cols)
    M = tiny_dataset.num_bodies

    def train_shard():
        return _Shard(tiny_dataset, "xsub_train")

    shard = train_shard()
    cfg = DataConfig(num_frames=32, batch_size=8, min_crop_frames=16)
    train = InMemoryTrainSet(shard, cfg, rank=0, seed=5, num_bodies=M)
    # What a worker keeps is the rows' content, not rows padded to T_max.
    kept = train.load()["joints"]
    assert kept.nbytes == int((rows["num_frames"] * rows["num_bodies"]).sum()) * 25 * 3 * 4
    np.testing.assert_array_equal(kept.padded(tiny_dataset.t_max), rows["joints"])
    epochs = [[b["sample_index"].tolist() for b in train.epoch(e)] for e in (0, 1)]
    assert shard.reads == 1  # read once, transformed every epoch
    n = len(rows["label"])
    for batches in epochs:
        assert len(batches) == n // 8 and all(len(b) == 8 for b in batches)
        ids = [i for b in batches for i in b]
        assert len(set(ids)) == len(ids) and set(ids) <= set(rows["sample_index"].tolist())
    assert epochs[0] != epochs[1]  # a fresh order every epoch
    again = InMemoryTrainSet(train_shard(), cfg, rank=0, seed=5, num_bodies=M)
    replay = list(again.epoch(1))
    assert [b["sample_index"].tolist() for b in replay] == epochs[1]  # seeded: resumable
    first = next(iter(InMemoryTrainSet(train_shard(), cfg, rank=0, seed=5, num_bodies=M).epoch(1)))
    np.testing.assert_array_equal(first["x"].numpy(), replay[0]["x"].numpy())  # views too
    other_rank = InMemoryTrainSet(train_shard(), cfg, rank=1, seed=5, num_bodies=M)
    assert [b["sample_index"].tolist() for b in other_rank.epoch(1)] != epochs[1]
    other_seed = InMemoryTrainSet(train_shard(), cfg, rank=0, seed=6, num_bodies=M)
    assert [b["sample_index"].tolist() for b in other_seed.epoch(1)] != epochs[1]
    batch = next(iter(train.epoch(2)))
    assert tuple(batch["x"].shape) == (8, rows["joints"].shape[2], 32, 25, 3)
    # The dtypes of the streaming path's batches: losses take Long labels only.
    assert batch["label"].dtype == batch["sample_index"].dtype == torch.int64


def test_streaming_order_is_seeded_per_epoch_and_rank():
    """A seeded streaming run shuffles each epoch and rank differently, and the same epoch
    the same way again (a resumed epoch sees its own order, not epoch 0's)."""
    from stars.data.pipeline import StreamingTrainSet, epoch_seed

    cfg = DataConfig()
    seeds = {(e, r): epoch_seed(7, e, r) for e in range(3) for r in range(2)}
    assert len(set(seeds.values())) == 6
    assert epoch_seed(7, 2, 1) == seeds[(2, 1)]
    assert epoch_seed(8, 2, 1) != seeds[(2, 1)]

    class Shard:
        def iter_torch_batches(self, **kwargs):
            self.kwargs = kwargs
            return iter(())

    shard = Shard()
    list(StreamingTrainSet(shard, cfg, rank=1, seed=7).epoch(2))
    assert shard.kwargs["local_shuffle_seed"] == seeds[(2, 1)]


def test_stored_rows_give_the_views_of_the_padded_rows(tiny_dataset):
    """The pipeline reads rows unpadded; its views equal those of the same rows padded."""
    table = pq.read_table(tiny_dataset.shard_paths[0])
    ragged = stored_rows(table, tiny_dataset.num_bodies)
    padded = {**ragged, "joints": ragged["joints"].padded(tiny_dataset.t_max)}
    cfg = DataConfig(num_frames=48)
    bit = tiny_dataset.split_bit("xsub_train")
    a = transform_batch(ragged, split_bit=bit, mode="eval", cfg=cfg)
    b = transform_batch(padded, split_bit=bit, mode="eval", cfg=cfg)
    np.testing.assert_array_equal(a["x"], b["x"])
    np.testing.assert_array_equal(a["sample_index"], b["sample_index"])
    assert ragged["joints"].nbytes < padded["joints"].nbytes
