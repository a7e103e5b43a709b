"""Data-layer benchmarks: transforms per core, synthetic generation, Ray Data streaming."""

from __future__ import annotations

import functools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import Result, rate
from stars.data import transforms
from stars.data.config import DataConfig
from stars.data.prepare import write_synthetic
from stars.data.shards import open_dataset
from stars.data.synthetic import SyntheticSpec, generate


def _ntu_batch(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """NTU-shaped input: (B, 300, 2, 25, 3), valid lengths 40..300, zero padded."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, 300, 2, 25, 3)).astype(np.float32)
    lengths = rng.integers(40, 301, batch)
    x[np.arange(300)[None, :] >= lengths[:, None]] = 0
    return x, lengths


def per_sample_lean(x: np.ndarray, rng: np.random.Generator, out_frames: int = 120) -> np.ndarray:
    """A lean per-sample version: one sample at a time in our (T, M, V, C) layout, torch
    linear interpolate, one rotation matrix product."""
    out = np.empty((len(x), 2, out_frames, 25, 3), np.float32)
    for i, seq in enumerate(x):  # seq (T, M, V, C)
        valid = int((seq.reshape(len(seq), -1) != 0).any(axis=1).sum())
        crop = min(max(int(np.floor(valid * rng.uniform(0.5, 1.0))), 64), valid)
        start = rng.integers(0, valid - crop + 1)
        seg = torch.from_numpy(seq[start : start + crop]).permute(1, 2, 3, 0).reshape(1, -1, crop)
        seg = torch.nn.functional.interpolate(
            seg, size=out_frames, mode="linear", align_corners=False
        )
        seg = seg.reshape(2, 25, 3, out_frames).permute(0, 3, 1, 2)  # M T V C
        rot = torch.from_numpy(transforms.rotation_matrices(rng.uniform(-0.3, 0.3, (1, 3)))[0])
        out[i] = (seg @ rot.T).numpy()
    return out


def _rot_per_frame(angles: torch.Tensor) -> torch.Tensor:
    """(T, 3) angles -> (T, 3, 3) rotations Rz Ry Rx, built from small torch ops."""
    cos, sin = angles.cos(), angles.sin()
    zeros, ones = torch.zeros(len(angles), 1), torch.ones(len(angles), 1)
    cx, cy, cz = cos[:, 0:1], cos[:, 1:2], cos[:, 2:3]
    sx, sy, sz = sin[:, 0:1], sin[:, 1:2], sin[:, 2:3]
    rx = torch.stack(
        [
            torch.cat([ones, zeros, zeros], 1),
            torch.cat([zeros, cx, sx], 1),
            torch.cat([zeros, -sx, cx], 1),
        ],
        1,
    )
    ry = torch.stack(
        [
            torch.cat([cy, zeros, -sy], 1),
            torch.cat([zeros, ones, zeros], 1),
            torch.cat([sy, zeros, cy], 1),
        ],
        1,
    )
    rz = torch.stack(
        [
            torch.cat([cz, sz, zeros], 1),
            torch.cat([-sz, cz, zeros], 1),
            torch.cat([zeros, zeros, ones], 1),
        ],
        1,
    )
    return rz.matmul(ry).matmul(rx)


def per_sample_mamp_style(
    x: np.ndarray, rng: np.random.Generator, out_frames: int = 120
) -> np.ndarray:
    """The straightforward reading of the released MAMP/CTR-GCN data path, one sample at a
    time: (C, T, V, M) layout, valid frames counted from the data, crop, 2-D bilinear
    interpolate over (C*V*M, L), and a rotation matrix per frame built from small torch ops."""
    out = np.empty((len(x), 3, out_frames, 25, 2), np.float32)
    for i, seq in enumerate(x):
        data = np.ascontiguousarray(seq.transpose(3, 0, 2, 1))  # C T V M
        C, _, V, M = data.shape
        valid = int(np.sum(data.sum(0).sum(-1).sum(-1) != 0))
        crop = min(max(int(np.floor(valid * rng.uniform(0.5, 1.0))), 64), valid)
        start = int(rng.integers(0, valid - crop + 1))
        seg = torch.tensor(data[:, start : start + crop], dtype=torch.float)
        seg = seg.permute(0, 2, 3, 1).contiguous().view(C * V * M, crop)[None, None]
        seg = torch.nn.functional.interpolate(
            seg, size=(C * V * M, out_frames), mode="bilinear", align_corners=False
        ).squeeze()
        seg = seg.contiguous().view(C, V, M, out_frames).permute(0, 3, 1, 2)  # C T V M
        angles = torch.zeros(3).uniform_(-0.3, 0.3)
        rot = _rot_per_frame(torch.stack([angles] * out_frames, 0))
        flat = seg.permute(1, 0, 2, 3).contiguous().view(out_frames, C, V * M)
        flat = torch.matmul(rot, flat).view(out_frames, C, V, M).permute(1, 0, 2, 3)
        out[i] = flat.numpy()
    return out


def bench_transforms() -> list[Result]:
    torch.set_num_threads(1)
    x, lengths = _ntu_batch(256)
    rng = np.random.default_rng(0)

    def fast() -> int:
        transforms.train_view(x, lengths, rng)
        return len(x)

    def mamp_style() -> int:
        per_sample_mamp_style(x[:64], rng)
        return 64

    def lean() -> int:
        per_sample_lean(x[:64], rng)
        return 64

    fast_rate = rate(fast)
    mamp_rate, lean_rate = rate(mamp_style), rate(lean)
    shape = "NTU-shaped (300 x 2 x 25 x 3 -> 120 frames), random crop-resize + rotation"
    return [
        Result(
            "transforms_train_seq_per_s_per_core",
            fast_rate,
            "seq/s",
            mamp_rate,
            ">= 5400 seq/s per core and 3x per-sample",
            f"{shape}; baseline: per-sample MAMP-style data path",
        ),
        Result(
            "transforms_vs_lean_per_sample",
            fast_rate,
            "seq/s",
            lean_rate,
            "",
            f"{shape}; baseline: lean per-sample torch linear interpolate + one matmul",
        ),
    ]


def bench_synthetic_generation(num: int = 10_080) -> list[Result]:
    spec = SyntheticSpec(num_classes=120, samples_per_class=num // 120)
    start = time.perf_counter()
    count = sum(1 for _ in generate(spec))
    elapsed = time.perf_counter() - start
    return [
        Result(
            "synthetic_generate_seq_per_s",
            count / elapsed,
            "seq/s",
            None,
            "10,000 sequences < 60 s on one core",
            f"{count} sequences in {elapsed:.1f} s",
        )
    ]


def bench_ray_streaming(num_classes: int = 60, per_class: int = 70) -> list[Result]:
    import ray

    from stars.data.stream_check import run_stream_check

    with tempfile.TemporaryDirectory(prefix="stars-bench-", dir="/tmp") as tmp:
        root = Path(tmp) / "data"
        spec = SyntheticSpec(
            num_classes=num_classes, samples_per_class=per_class, num_base_classes=num_classes
        )
        write_synthetic(root, spec, progress=False)
        data = open_dataset(root)
        start = time.perf_counter()
        _local_ray(Path(tmp) / "ray")
        init_s = time.perf_counter() - start
        try:
            start = time.perf_counter()
            records = run_stream_check(
                data,
                None,
                "train",
                DataConfig(batch_size=64),
                Path(tmp) / "run",
                num_workers=1,
                epochs=2,
                cpus_per_worker=0.5,
                warmup_batches=4,
            )
            fit_s = time.perf_counter() - start
        finally:
            ray.shutdown()
    second_epoch = records[1][0]["rows_per_s"]
    return [
        Result(
            "ray_stream_train_seq_per_s",
            second_epoch,
            "seq/s",
            None,
            ">= 2000 seq/s",
            f"1 worker (0.5 CPU) on 2 cores, {data.num_samples} NTU-shaped rows, training "
            "transforms, epoch 2 after 4 warm-up batches",
        ),
        Result("ray_init_s", init_s, "s", None, "", "local ray.init (2 CPUs)"),
        Result(
            "ray_stream_fit_total_s",
            fit_s,
            "s",
            None,
            "",
            "TorchTrainer set-up + 2 epochs, including Ray Data start-up",
        ),
    ]


def _shared_data() -> Path:
    env = os.environ.get("STARS_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def bench_ntu_parse() -> list[Result]:
    """Parse + standard cleaning of the real NTU sample files, one process."""
    from stars.data.formats.ntu import NtuOptions, parse_file

    files = sorted((_shared_data() / "ntu_rgbd_samples").glob("*.skeleton"))
    if not files:
        return [
            Result(
                "ntu_parse_clean_files_per_s_per_core",
                0.0,
                "files/s",
                None,
                ">= 150 files/s per core",
                f"skipped: no NTU samples under {_shared_data()} (set STARS_SHARED_DATA)",
            )
        ]
    options = NtuOptions("ntu60")

    def parse_all() -> int:
        for f in files:
            parse_file(str(f), options)
        return len(files)

    return [
        Result(
            "ntu_parse_clean_files_per_s_per_core",
            rate(parse_all),
            "files/s",
            None,
            ">= 150 files/s per core",
            f"{len(files)} real .skeleton files (70-124 frames, 1-2 bodies)",
        )
    ]


RAY_CPUS = 2  # the local Ray instance of the Ray Data rows


def _local_ray(temp_dir: Path) -> None:
    """A local Ray instance of ``RAY_CPUS`` CPUs, quiet, its files under ``temp_dir``."""
    import ray

    ray.init(
        num_cpus=RAY_CPUS,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(temp_dir),
        configure_logging=False,
    )


def _synthetic_dataset(root: Path, num_classes: int, per_class: int):
    """An opened synthetic dataset of ``num_classes`` x ``per_class`` rows under ``root``."""
    spec = SyntheticSpec(
        num_classes=num_classes, samples_per_class=per_class, num_base_classes=num_classes
    )
    write_synthetic(root, spec, progress=False)
    return open_dataset(root)


def bench_node_sizing(num_classes: int = 60, per_class: int = 40) -> list[Result]:
    """CPU cores a GPU node needs per 1,000 training sequences/s: decoding the stored rows
    (pyarrow) plus the training transforms to the paper's T = 120, on one core."""
    import pyarrow.parquet as pq

    from stars.data.pipeline import stored_rows, transform_batch

    cfg = DataConfig(num_frames=120)
    with tempfile.TemporaryDirectory(prefix="stars-bench-", dir="/tmp") as tmp:
        data = _synthetic_dataset(Path(tmp) / "data", num_classes, per_class)
        passes = []  # (CPU s per row, decoding's share); the first pass warms the page cache
        for _ in range(4):
            rows, decode_s, transform_s = 0, 0.0, 0.0
            for path in data.shard_paths:
                start = time.process_time()
                table = pq.read_table(path)
                batch = stored_rows(table, data.num_bodies)
                middle = time.process_time()
                transform_batch(batch, split_bit=None, mode="train", cfg=cfg)
                decode_s += middle - start
                transform_s += time.process_time() - middle
                rows += table.num_rows
            passes.append(((decode_s + transform_s) / rows, decode_s / (decode_s + transform_s)))
    measured = sorted(passes[1:])
    per_row, share = measured[len(measured) // 2]
    spread = f"{measured[0][0] * 1e3:.3f}-{measured[-1][0] * 1e3:.3f}"
    return [
        Result(
            "node_cores_per_1000_train_seq_per_s",
            1000 * per_row,
            "cores",
            None,
            "",
            f"decode + training transforms (T_max {data.t_max} -> T 120) of {rows} stored "
            f"rows on one core: {per_row * 1e3:.3f} CPU-ms per row (median of 3 passes, range "
            f"{spread}), {share:.0%} of it decoding; Ray Data's own pipeline cost comes on top "
            "(ray_stream rows)",
        )
    ]


def _cpu_per_row(paths: list, step) -> float:
    """CPU seconds per row of ``step(table)`` over every shard, the best of 3 passes after a
    warm-up pass (the page cache warm, as for a streaming epoch)."""
    import pyarrow.parquet as pq

    passes = []
    for _ in range(4):
        rows, start = 0, time.process_time()
        for path in paths:
            table = pq.read_table(path)
            step(table)
            rows += table.num_rows
        passes.append((time.process_time() - start) / rows)
    return min(passes[1:])


def bench_row_format(num_classes: int = 120, per_class: int = 480) -> list[Result]:
    """Rows stored at the size of their content (schema 3) against the padded format of
    schema 1, the same rows side by side: the pipeline's decode + training transforms per
    row-epoch, against a plain pyarrow read of the same shards and against schema 1."""
    from bench.row_format_v1 import padded_rows, write_padded_copy
    from stars.data.pipeline import stored_rows, transform_batch
    from stars.data.shards import JOINTS

    cfg = DataConfig(num_frames=120)
    with tempfile.TemporaryDirectory(prefix="stars-bench-", dir="/tmp") as tmp:
        data = _synthetic_dataset(Path(tmp) / "v2", num_classes, per_class)
        v1 = write_padded_copy(data.shard_paths, Path(tmp) / "v1", data.t_max, data.num_bodies)
        M = data.num_bodies

        def pipeline_v2(table) -> None:
            transform_batch(stored_rows(table, M), split_bit=None, mode="train", cfg=cfg)

        def pipeline_v1(table) -> None:
            transform_batch(padded_rows(table), split_bit=None, mode="train", cfg=cfg)

        plain = _cpu_per_row(data.shard_paths, lambda table: None)
        ours = _cpu_per_row(data.shard_paths, pipeline_v2)
        before = _cpu_per_row(v1, pipeline_v1)
        sizes = data.read_split(None, ["num_frames", "num_bodies"])
        content = float((sizes["num_frames"] * sizes["num_bodies"]).mean()) * 25 * 3 * 4
        kept = sum(stored_rows(pq_read(p), M)[JOINTS].nbytes for p in data.shard_paths)
        decoded = kept / data.num_samples
        padded_row = data.t_max * M * data.num_joints * 3 * 4
        on_disk = sum(Path(p).stat().st_size for p in data.shard_paths) / data.num_samples
        on_disk_v1 = sum(p.stat().st_size for p in v1) / data.num_samples
    rows = f"{data.num_samples} synthetic rows, 512 per shard, one core"
    return [
        Result(
            "rows_pipeline_vs_plain_read",
            ours * 1e3,
            "CPU-ms/row",
            plain * 1e3,
            "",
            f"decode + training transforms (T 120) per row-epoch in one process; baseline: the "
            f"pyarrow read alone, so the ratio is the transforms' cost; {rows}",
        ),
        Result(
            "rows_pipeline_vs_padded_format",
            ours * 1e3,
            "CPU-ms/row",
            before * 1e3,
            "<= 0.4x",
            f"the same pipeline; baseline: the same rows padded to T_max {data.t_max} "
            f"(schema 1, fixed_shape_tensor); {rows}",
        ),
        Result(
            "rows_decoded_vs_content_bytes",
            decoded / 1e3,
            "KB/row",
            content / 1e3,
            "<= 1.3x",
            f"what a worker keeps per row (schema 1 kept {padded_row / 1e3:.0f} KB); baseline: "
            "frames x actors present x 25 x 3 float32",
        ),
        Result(
            "rows_on_disk_vs_padded_format",
            on_disk / 1e3,
            "KB/row",
            on_disk_v1 / 1e3,
            "",
            "Parquet bytes per row (schema 3: actor-frames as fixed-size binary, LZ4); "
            "baseline: schema 1's zstd of the padded rows",
        ),
    ]


def _ray_cpu_seconds() -> float:
    """CPU seconds used so far by this process and its descendants alive now, from /proc: a
    local ``ray.init`` starts the GCS and raylet as children, and Ray's workers (where Ray
    Data's tasks run) are the raylet's."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parent.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    return time.process_time() + sum(c for pid, c in cpu.items() if descends(pid))


def _ray_epochs(make_dataset, epochs: int = 4, **iter_kwargs) -> tuple[float, float]:
    """CPU seconds per row (every process) of iterating a Ray Dataset: the best and the worst
    of epochs 2.. (the first starts Ray Data's workers)."""
    per_epoch = [_ray_epoch(make_dataset(), **iter_kwargs) for _ in range(epochs)]
    return min(per_epoch[1:]), max(per_epoch[1:])


def _ray_epoch(ds, **iter_kwargs) -> float:
    """CPU seconds per row (every process) of one pass over a Ray Dataset."""
    start, rows = _ray_cpu_seconds(), 0
    for batch in ds.iter_batches(**iter_kwargs):
        rows += batch.num_rows if hasattr(batch, "num_rows") else len(batch["label"])
    return (_ray_cpu_seconds() - start) / rows


def _plain_pass(paths: list, step) -> float:
    """CPU seconds per row of one in-process pass of ``step(pyarrow table)`` over the shards."""
    import pyarrow.parquet as pq

    rows, start = 0, time.process_time()
    for path in paths:
        table = pq.read_table(path)
        step(table)
        rows += table.num_rows
    return (time.process_time() - start) / rows


def plain_cpu(paths: list, num_bodies: int, num_frames: int) -> tuple[float, int]:
    """(CPU seconds, rows) of a pyarrow read + the training transforms of ``paths`` in this
    process: one process's part of a side-by-side plain pass."""
    import pyarrow.parquet as pq

    from stars.data.pipeline import stored_rows, transform_batch

    cfg = DataConfig(num_frames=num_frames)
    rows, start = 0, time.process_time()
    for path in paths:
        table = pq.read_table(path)
        transform_batch(stored_rows(table, num_bodies), split_bit=None, mode="train", cfg=cfg)
        rows += table.num_rows
    return time.process_time() - start, rows


def side_by_side_plain_pass(
    pool, processes: int, paths: list, num_bodies: int, num_frames: int
) -> tuple[float, int]:
    """(CPU seconds, rows) of a plain pass split over ``processes`` of the pool at once (as
    many decoders as Ray Data runs tasks: cores that decode side by side each run slower)."""
    parts = [
        pool.submit(plain_cpu, paths[i::processes], num_bodies, num_frames)
        for i in range(processes)
    ]
    done = [part.result() for part in parts]
    return sum(cpu for cpu, _ in done), sum(rows for _, rows in done)


def labels_of_transformed_shard(table, **kwargs):
    """The training pipeline's map, keeping only the small columns of its output: the same
    read and transforms, without the (B, M, T, V, 3) tensors crossing the object store."""
    from stars.data.pipeline import transform_shard

    for out in transform_shard(table, **kwargs):
        yield out.select(["label", "sample_index"])


def bench_ray_row_epoch(
    num_classes: int = 120, per_class: int = 480, rounds: int = 5
) -> list[Result]:
    """CPU per row-epoch of the Ray Data training pipeline (every process), against a plain
    pyarrow read + the same transforms of the same shards, in one process and split over as
    many processes as Ray has CPUs, measured in alternation (a shared VM's speed drifts
    between minutes); and Ray Data's read of the shards alone, the project's datasource
    against ``read_parquet``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import ray
    import ray.data

    from stars.data.pipeline import READ_COLUMNS, build_dataset, stored_rows, transform_batch
    from stars.data.shard_source import read_shards

    cfg = DataConfig(num_frames=120, map_batch_size=256)
    with tempfile.TemporaryDirectory(prefix="stars-bench-", dir="/tmp") as tmp:
        data = _synthetic_dataset(Path(tmp) / "data", num_classes, per_class)
        M = data.num_bodies

        def plain_step(table) -> None:
            transform_batch(stored_rows(table, M), split_bit=None, mode="train", cfg=cfg)

        # Spawned before Ray starts: a fork would copy Ray's threads.
        pool = ProcessPoolExecutor(RAY_CPUS, mp_context=multiprocessing.get_context("spawn"))
        _local_ray(Path(tmp) / "ray")
        try:
            pipeline_ds = build_dataset(data, None, "train", cfg)
            batches = {"batch_size": cfg.map_batch_size, "batch_format": "numpy"}

            def side_by_side_plain() -> float:
                cpu, read = side_by_side_plain_pass(
                    pool, RAY_CPUS, data.shard_paths, M, cfg.num_frames
                )
                return cpu / read

            kept = functools.partial(
                labels_of_transformed_shard,
                rows_per_call=cfg.map_batch_size,
                num_bodies=M,
                split_bit=None,
                mode="train",
                cfg=cfg,
            )
            untransferred_ds = read_shards(
                data, READ_COLUMNS, shuffle=True, rows_per_task=cfg.rows_per_read_task
            ).map_batches(kept, batch_format="pyarrow", batch_size=None, zero_copy_batch=True)
            # Warm-ups: the page cache, the pool's imports, Ray Data's workers.
            _plain_pass(data.shard_paths, plain_step)
            side_by_side_plain()
            _ray_epoch(pipeline_ds, **batches)
            _ray_epoch(untransferred_ds, **batches)
            # Per round: alone, side by side, the pipeline, the pipeline without its output.
            per_round = [
                (
                    _plain_pass(data.shard_paths, plain_step),
                    side_by_side_plain(),
                    _ray_epoch(pipeline_ds, **batches),
                    _ray_epoch(untransferred_ds, **batches),
                )
                for _ in range(rounds)
            ]
            blocks = {"batch_size": None, "batch_format": "pyarrow"}
            ours, ours_worst = _ray_epochs(
                lambda: read_shards(data, READ_COLUMNS, shuffle=True), **blocks
            )
            general, general_worst = _ray_epochs(
                lambda: ray.data.read_parquet(data.shard_paths, shuffle="files").select_columns(
                    READ_COLUMNS
                ),
                **blocks,
            )
        finally:
            ray.shutdown()
            pool.shutdown()
    rows = f"{data.num_samples} rows, 512 per shard, local Ray of {RAY_CPUS} CPUs"
    one, side_by_side, pipeline, untransferred = (
        float(m) for m in np.median(np.array(per_round), axis=0)
    )

    def spread(num: int, den: int) -> str:
        ratios = sorted(t[num] / t[den] for t in per_round)
        return (
            f"per-round ratios {ratios[0]:.2f}-{ratios[-1]:.2f} "
            f"(median {np.median(ratios):.2f}) over {rounds} alternating rounds after a warm-up"
        )

    pipeline_note = (
        f"Ray Data read + training transforms (T 120), fused, read tasks of "
        f"{cfg.rows_per_read_task} rows, into batches of 256, every process; medians"
    )
    return [
        Result(
            "rows_ray_pipeline_vs_plain_read",
            pipeline * 1e3,
            "CPU-ms/row",
            one * 1e3,
            "<= 1.2x",
            f"{pipeline_note}; baseline: pyarrow read + the same transforms in one process "
            f"alone; {spread(2, 0)}; {rows}",
        ),
        Result(
            "rows_ray_pipeline_vs_plain_read_side_by_side",
            pipeline * 1e3,
            "CPU-ms/row",
            side_by_side * 1e3,
            "",
            f"{pipeline_note}; baseline: the plain read + transforms split over {RAY_CPUS} "
            f"processes running at once, as many as Ray Data's tasks, so both sides pay for "
            f"cores decoding side by side (rows_plain_read_side_by_side_vs_alone) and the "
            f"ratio is what Ray Data adds; {spread(2, 1)}; {rows}",
        ),
        Result(
            "rows_ray_pipeline_without_output_transfer",
            untransferred * 1e3,
            "CPU-ms/row",
            one * 1e3,
            "",
            f"the same Ray Data read + transforms, keeping only labels and indices of the "
            f"output (the pipeline's (B, M, T, V, 3) float32, 72 KB a row, no longer crosses "
            f"the object store): what the pipeline costs without that transfer, against "
            f"the plain read + transforms in one process alone; {spread(3, 0)}; {rows}",
        ),
        Result(
            "rows_plain_read_side_by_side_vs_alone",
            side_by_side * 1e3,
            "CPU-ms/row",
            one * 1e3,
            "",
            f"the plain read + transforms split over {RAY_CPUS} processes at once, against "
            f"one process alone: what decoding on every core costs per row on this machine "
            f"(shared caches and memory bandwidth), Ray or not; {spread(1, 0)}; {rows}",
        ),
        Result(
            "rows_ray_read_shard_source_vs_read_parquet",
            ours * 1e3,
            "CPU-ms/row",
            general * 1e3,
            "",
            f"Ray Data's read of the shards alone (blocks as read), every process, best of "
            f"epochs 2-4 (worst {ours_worst * 1e3:.3f} against {general_worst * 1e3:.3f}), "
            f"{rows}; baseline: ray.data.read_parquet(shuffle='files') of the same shards",
        ),
    ]


def pq_read(path):
    import pyarrow.parquet as pq

    return pq.read_table(path)


BENCHMARKS = {
    "row_format": bench_row_format,
    "ray_row_epoch": bench_ray_row_epoch,
    "node_sizing": bench_node_sizing,
    "transforms": bench_transforms,
    "synthetic": bench_synthetic_generation,
    "ray_stream": bench_ray_streaming,
    "ntu_parse": bench_ntu_parse,
}
