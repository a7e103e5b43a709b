"""Building and running ``TorchTrainer`` jobs: scaling, storage, failures, checkpoints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stars.config import to_dict
from stars.data.config import DataConfig
from stars.data.pipeline import build_dataset
from stars.data.prepare import ensure_synthetic
from stars.data.shards import SkeletonDataset, open_dataset
from stars.train.config import PretrainConfig, ScaleConfig


class StorageError(ValueError):
    """A storage path that the cluster's nodes cannot all reach."""


def resolve_data(cfg: DataConfig, progress: bool = True) -> SkeletonDataset:
    """The dataset of a job: ``data.path`` or the cached embedded synthetic set."""
    root = Path(cfg.path) if cfg.path else ensure_synthetic(cfg.synthetic, progress=progress)
    return open_dataset(root)


def pretrain_split(data: SkeletonDataset, protocol: str = "") -> str:
    """The split stage 1 trains on: the few-shot protocol's pre-training split when the
    dataset has one (novel classes never seen), else the protocol's training split."""
    fewshot = data.manifest.get("fewshot") or {}
    if not protocol and fewshot.get("pretrain_split"):
        return str(fewshot["pretrain_split"])
    return data.protocol(protocol or None)["train"]


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
        raise ValueError(
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
) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
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
    cfg: PretrainConfig, name: str, extra: dict[str, Any] | None = None, progress: bool = True
) -> StageResult:
    """Pre-train (or resume, when ``name`` already has checkpoints under the storage path)."""
    from stars.train.stage1 import stage1_worker

    data = resolve_data(cfg.data, progress=progress)
    split = pretrain_split(data, cfg.data.protocol)
    model_cfg = dataclasses.replace(cfg.model, num_joints=data.num_joints)
    cfg = dataclasses.replace(cfg, model=model_cfg)
    steps = steps_per_epoch(data.split_size(split), cfg.scale.num_workers, cfg.data.batch_size)
    trainer = make_trainer(
        stage1_worker,
        {
            "job": to_dict(cfg),
            "steps_per_epoch": steps,
            "extra": extra or {},
            "data_digest": data.digest,
            "split": split,
        },
        cfg.scale,
        name,
        {"train": build_dataset(data, split, "train", cfg.data)},
    )
    result = trainer.fit()
    return _stage_result(result)


def _stage_result(result: Any) -> StageResult:
    from stars.model.checkpoint import read
    from stars.train.loop import CHECKPOINT_FILE

    if result.error is not None:
        raise result.error
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    with result.checkpoint.as_directory() as directory:
        local = Path(directory) / CHECKPOINT_FILE
        payload = read(local)
    return StageResult(
        checkpoint_dir=result.checkpoint.path,
        checkpoint_file=str(Path(result.checkpoint.path) / CHECKPOINT_FILE),
        metrics=dict(result.metrics or {}),
        history=payload.get("history", []),
        storage_dir=str(result.path),
    )
