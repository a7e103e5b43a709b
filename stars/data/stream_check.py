"""Stream a dataset through a real ``TorchTrainer`` without a model: delivery and throughput.

Answers, on the actual cluster: does every sample arrive exactly once per epoch, does every
rank take the same number of steps, and how many sequences per second reach a worker with the
training transforms. Used by the tests and by ``make bench``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stars.config import from_dict
from stars.data.config import DataConfig
from stars.data.pipeline import Mode, build_dataset, epoch_seed, iter_worker_batches
from stars.data.shards import SkeletonDataset


def stream_worker_loop(config: dict[str, Any]) -> None:
    """Per-worker loop: iterate the ``train`` shard for ``epochs`` epochs.

    Writes ``rank{r}-epoch{e}.json`` (sample indices seen, steps, rows/s after the first
    ``warmup_batches`` batches) into ``config['out']`` and reports once per epoch.
    """
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    cfg = from_dict(DataConfig, config["data"])
    shard = ray.train.get_dataset_shard("train")
    warmup = int(config.get("warmup_batches", 2))
    for epoch in range(int(config["epochs"])):
        ids: list[int] = []
        steps, rows_after_warmup, t_warm = 0, 0, None
        seed = epoch_seed(int(config.get("seed", 0)), epoch, rank)
        for batch in iter_worker_batches(shard, cfg, mode=config["mode"], shuffle_seed=seed):
            if steps == warmup:
                t_warm = time.perf_counter()
            if steps >= warmup:
                rows_after_warmup += len(batch["sample_index"])
            ids.extend(batch["sample_index"].tolist())
            steps += 1
        elapsed = time.perf_counter() - t_warm if t_warm else 0.0
        rate = rows_after_warmup / elapsed if elapsed > 0 else 0.0
        record = {"ids": ids, "steps": steps, "rows_per_s": rate}
        Path(config["out"], f"rank{rank}-epoch{epoch}.json").write_text(json.dumps(record))
        ray.train.report({"epoch": epoch, "steps": steps, "rows_per_s": rate})


def run_stream_check(
    data: SkeletonDataset,
    split: str | None,
    mode: Mode,
    cfg: DataConfig,
    out_dir: str | Path,
    *,
    num_workers: int = 2,
    epochs: int = 1,
    cpus_per_worker: float = 0.5,
    warmup_batches: int = 2,
) -> list[list[dict[str, Any]]]:
    """Run :func:`stream_worker_loop` on ``num_workers`` CPU workers.

    Returns:
        records[epoch][rank] with keys ``ids``, ``steps``, ``rows_per_s``.
    """
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    out = Path(out_dir)
    (out / "records").mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        stream_worker_loop,
        train_loop_config={
            "out": str(out / "records"),
            "epochs": epochs,
            "mode": mode,
            "data": asdict(cfg),
            "warmup_batches": warmup_batches,
        },
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=False, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=RunConfig(storage_path=str(out / "storage"), name="stream-check"),
        datasets={"train": build_dataset(data, split, mode, cfg)},
    )
    trainer.fit()
    return [
        [
            json.loads((out / "records" / f"rank{r}-epoch{e}.json").read_text())
            for r in range(num_workers)
        ]
        for e in range(epochs)
    ]
