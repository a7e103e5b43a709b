"""Building and running ``TorchTrainer`` jobs: scaling, storage, failures, checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stars.config import ConfigError, to_dict
from stars.data.pipeline import build_dataset
from stars.data.shards import SkeletonDataset
from stars.data.source import pretrain_split
from stars.errors import StarsError
from stars.model.checkpoint import CHECKPOINT_FILE
from stars.tracking.epoch_metrics import RunRef
from stars.train.config import ScaleConfig, Stage1JobConfig, Stage2JobConfig
from stars.train.worker_state import Fault

MONITOR_METRIC = "monitor_knn_weighted_k20_top1"  # stage 2 keeps the checkpoint that maximises it


class StorageError(StarsError):
    """A storage path that the cluster's nodes cannot all reach."""


def check_storage(scale: ScaleConfig) -> str:
    """Storage path for Ray Train; refuse a node-local path on a multi-node cluster."""
    import ray

    path = scale.storage_path
    is_uri = "://" in path
    alive = [n for n in ray.nodes() if n.get("Alive")]
    if len(alive) > 1 and not is_uri and not scale.shared_storage:
        raise StorageError(
            f"the cluster has {len(alive)} nodes but scale.storage_path={path!r} is a local "
            "path: checkpoints written on one node are invisible to the others. Use a URI "
            "every node reaches (s3://bucket/prefix, gs://...) or an NFS mount present on all "
            "nodes with --set scale.shared_storage=true."
        )
    return path if is_uri else str(Path(path).resolve())


def steps_per_epoch(num_rows: int, workers: int, batch_size: int) -> int:
    """Ray Train splits rows equally (floor) over ranks; training drops partial batches."""
    steps = (num_rows // workers) // batch_size
    if steps < 1:
        raise ConfigError(
            f"{num_rows} training rows over {workers} workers give no full batch "
            f"of {batch_size}; lower data.batch_size"
        )
    return steps


def make_trainer(
    loop_fn: Any,
    loop_config: dict[str, Any],
    scale: ScaleConfig,
    name: str,
    datasets: dict[str, Any],
    metric: str | None = None,
    mode: str = "min",
    split_only: list[str] | None = None,
) -> Any:
    """A TorchTrainer; ``split_only`` names the datasets sharded over ranks (the others reach
    every worker whole, e.g. monitoring sets that rank 0 evaluates)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = {"CPU": scale.cpus_per_worker}
    if scale.use_gpu:
        resources["GPU"] = scale.gpus_per_worker
    return TorchTrainer(
        loop_fn,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=scale.num_workers, use_gpu=scale.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=name,
            storage_path=check_storage(scale),
            checkpoint_config=CheckpointConfig(
                num_to_keep=scale.num_to_keep,
                checkpoint_score_attribute=metric,
                checkpoint_score_order=mode,
            ),
            failure_config=FailureConfig(max_failures=scale.max_failures),
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=split_only or "all"),
    )


@dataclass
class StageResult:
    """Where a finished stage left its selected checkpoint, and its per-epoch metrics."""

    checkpoint_dir: str
    checkpoint_file: str
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    storage_dir: str


def run_stage1(
    cfg: Stage1JobConfig,
    name: str,
    data: SkeletonDataset,
    *,
    mlflow_run: RunRef | None = None,
    fault: Fault | None = None,
) -> StageResult:
    """Pre-train with the resolved ``cfg`` (:func:`stars.train.resolve.resolve_stage1`), or
    resume when ``name`` already has checkpoints under the storage path."""
    from stars.train.stage1 import stage1_worker

    split = pretrain_split(data, cfg.data.protocol)
    loop_config = {
        "job": to_dict(cfg),
        "steps_per_epoch": steps_per_epoch(
            data.split_size(split), cfg.scale.num_workers, cfg.data.batch_size
        ),
        "mlflow_run": (mlflow_run or RunRef()).to_dict(),
        "data_digest": data.digest,
        "split": split,
    }
    if fault is not None:
        loop_config["fault"] = fault.to_dict()
    trainer = make_trainer(
        stage1_worker,
        loop_config,
        cfg.scale,
        name,
        {"train": build_dataset(data, split, "train", cfg.data)},
    )
    return _stage_result(trainer.fit())


def run_stage2(
    cfg: Stage2JobConfig,
    source: str | Path,
    name: str,
    data: SkeletonDataset,
    *,
    mlflow_run: RunRef | None = None,
    fault: Fault | None = None,
) -> StageResult:
    """Tune the encoder of the stage-1 checkpoint file ``source`` (ours or published) with
    the resolved ``cfg`` (:func:`stars.train.resolve.resolve_stage2`)."""
    from stars.data.shards import sha256_file
    from stars.train.stage2 import stage2_worker

    source_file = Path(source).resolve()
    split = pretrain_split(data, cfg.data.protocol)
    datasets = {"train": build_dataset(data, split, "train", cfg.data)}
    monitor = cfg.stage2.monitor
    if monitor == "holdout":
        datasets["monitor_bank"] = build_dataset(data, split, "eval", cfg.data, holdout="bank")
        datasets["monitor_query"] = build_dataset(data, split, "eval", cfg.data, holdout="query")
    elif monitor == "test":
        protocol = data.protocol(cfg.data.protocol or None)
        datasets["monitor_bank"] = build_dataset(data, protocol["train"], "eval", cfg.data)
        datasets["monitor_query"] = build_dataset(data, protocol["test"], "eval", cfg.data)
    loop_config = {
        "job": to_dict(cfg),
        "source": str(source_file),
        "source_sha256": sha256_file(source_file),
        "steps_per_epoch": steps_per_epoch(
            data.split_size(split), cfg.scale.num_workers, cfg.data.batch_size
        ),
        "monitor": monitor != "none",
        "mlflow_run": (mlflow_run or RunRef()).to_dict(),
    }
    if fault is not None:
        loop_config["fault"] = fault.to_dict()
    best = MONITOR_METRIC if monitor != "none" else None
    trainer = make_trainer(
        stage2_worker,
        loop_config,
        cfg.scale,
        name,
        datasets,
        metric=best,
        mode="max",
        split_only=["train"],
    )
    return _stage_result(trainer.fit(), best_metric=best)


def _stage_result(result: Any, best_metric: str | None = None) -> StageResult:
    from stars.model.checkpoint import read

    if result.error is not None:
        raise result.error
    chosen = result.checkpoint
    if best_metric:
        chosen = result.get_best_checkpoint(best_metric, "max") or chosen
    if chosen is None or result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        payload = read(Path(directory) / CHECKPOINT_FILE)  # the latest holds the full history
    return StageResult(
        checkpoint_dir=chosen.path,
        checkpoint_file=str(Path(chosen.path) / CHECKPOINT_FILE),
        metrics=dict(result.metrics or {}),
        history=payload.get("history", []),
        storage_dir=str(result.path),
    )
