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

MONITOR_METRIC = "monitor_wknn_k20_top1"  # stage 2 keeps the checkpoint that maximises it


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


def resolve_checkpoint(source: str | Path) -> Path:
    """A checkpoint file from a file, a checkpoint directory, or a run directory (its
    latest ``checkpoint_*``)."""
    from stars.train.loop import CHECKPOINT_FILE

    path = Path(source)
    if path.is_file():
        return path
    if (path / CHECKPOINT_FILE).is_file():
        return path / CHECKPOINT_FILE
    found = sorted(path.glob(f"checkpoint_*/{CHECKPOINT_FILE}")) if path.is_dir() else []
    if not found:
        raise FileNotFoundError(
            f"no checkpoint at {source} (expected a checkpoint file, a "
            "checkpoint directory or a run directory)"
        )
    return found[-1]


def tune_data_config(cfg: DataConfig, num_frames: int, augment: bool) -> DataConfig:
    """Stage 2 sees one unaltered view (crop ratio 1.0, no rotation) unless ``augment``."""
    changes: dict[str, Any] = {"num_frames": num_frames}
    if not augment:
        changes.update(train_crop=(1.0, 1.0), rotation=0.0)
    return dataclasses.replace(cfg, **changes)


def run_stage2(
    cfg: Any,
    source: str | Path,
    name: str,
    extra: dict[str, Any] | None = None,
    progress: bool = True,
) -> StageResult:
    """Tune the encoder of a stage-1 checkpoint (ours or published) with STARS."""
    from stars.data.shards import sha256_file
    from stars.model.checkpoint import encoder_state, read
    from stars.train.stage2 import stage2_worker

    source_file = resolve_checkpoint(source).resolve()
    model_cfg, _ = encoder_state(read(source_file), source_file)
    data = resolve_data(cfg.data, progress=progress)
    if data.num_joints != model_cfg.num_joints:
        raise ValueError(
            f"the checkpoint's encoder has V={model_cfg.num_joints} joints, the "
            f"dataset {data.root} has {data.num_joints}"
        )
    data_cfg = tune_data_config(cfg.data, model_cfg.num_frames, cfg.stage2.augment)
    cfg = dataclasses.replace(cfg, data=data_cfg)
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
    steps = steps_per_epoch(data.split_size(split), cfg.scale.num_workers, cfg.data.batch_size)
    trainer = make_trainer(
        stage2_worker,
        {
            "job": to_dict(cfg),
            "source": str(source_file),
            "source_sha256": sha256_file(source_file),
            "steps_per_epoch": steps,
            "monitor": monitor != "none",
            "extra": extra or {},
        },
        cfg.scale,
        name,
        datasets,
        metric=MONITOR_METRIC if monitor != "none" else None,
        mode="max",
        split_only=["train"],
    )
    return _stage_result(trainer.fit(), best_metric=MONITOR_METRIC if monitor != "none" else None)


def _stage_result(result: Any, best_metric: str | None = None) -> StageResult:
    from stars.model.checkpoint import read
    from stars.train.loop import CHECKPOINT_FILE

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
