"""The plain-read baselines of ``bench.data``'s Ray Data rows: every row counted once."""

import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from bench import data as bench_data
from stars.data.prepare import write_synthetic
from stars.data.shards import open_dataset
from stars.data.synthetic import SyntheticSpec


def test_side_by_side_plain_pass_reads_every_row_once(tmp_path):
    spec = SyntheticSpec(num_classes=4, samples_per_class=5, num_base_classes=4)
    write_synthetic(tmp_path, spec, rows_per_shard=3, progress=False)
    dataset = open_dataset(tmp_path)
    shards, bodies = dataset.shard_paths, dataset.num_bodies
    assert len(shards) == 7

    cpu, rows = bench_data.plain_cpu(shards, bodies, num_frames=16)
    assert rows == 20 and cpu > 0
    assert sum(bench_data.plain_cpu(shards[i::2], bodies, 16)[1] for i in (0, 1)) == 20

    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        cpu, rows = bench_data.side_by_side_plain_pass(pool, 2, shards, bodies, 16)
    assert rows == 20 and math.isfinite(cpu) and cpu > 0
