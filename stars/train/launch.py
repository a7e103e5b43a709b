"""Building and running ``TorchTrainer`` jobs: scaling, storage, failures, checkpoints."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stars import storage
from stars.config import ConfigError, to_dict
from stars.data.config import DataConfig
from stars.data.job_data import pretrain_split
from stars.data.local_rows import LocalRows
from stars.data.pipeline import build_base_dataset, build_dataset, fits_in_memory
from stars.data.shards import SkeletonDataset
from stars.interrupts import wait_in_main_thread
from stars.location import Location
from stars.model.checkpoint import CHECKPOINT_FILE
from stars.model.checkpoint import read as read_checkpoint
from stars.paths import check_kept
from stars.tracking.epoch_metrics import RunRef
from stars.train.config import ScaleConfig, Stage1JobConfig, Stage2Config, Stage2JobConfig
from stars.train.faults import Fault
from stars.train.in_process import ReportHook, run_in_process
from stars.train.placement import check_data_readable, check_resources, check_shared
from stars.train.progress import progress_queue
from stars.train.watchdog import LostNodeWatchdog


def monitor_metric(s2: Stage2Config) -> str | None:
    """The per-epoch metric stage 2 keeps its best checkpoint by (None: the last epoch)."""
    if s2.monitor == "none":
        return None
    if s2.monitor == "fewshot_val":
        return f"monitor_fewshot_val_{s2.monitor_shots}shot_mean"
    return "monitor_knn_weighted_k20_top1"


def check_storage(scale: ScaleConfig) -> str:
    """Storage path for Ray Train: kept after the job; a URI this machine can write to, or a
    directory that, on several nodes, all of them see."""
    flag = "--set scale.storage_path"
    path = check_kept("scale.storage_path", scale.storage_path, flag)
    storage.check_writable(path, "scale.storage_path", flag)  # a URI is probed now
    check_shared(path, "scale.storage_path", "Set --set scale.storage_path to")
    return path


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
    callbacks: list[Any] | None = None,
) -> Any:
    """A TorchTrainer; ``split_only`` names the datasets sharded over ranks (the others reach
    every worker whole, e.g. monitoring sets that rank 0 evaluates); ``callbacks`` are Ray
    Train callbacks (a sweep's trial passes Tune's report relay)."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    check_resources(scale)
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
            callbacks=callbacks or None,
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=split_only or "all"),
    )


def fit_watched(trainer: Any, scale: ScaleConfig, name: str) -> Any:
    """``trainer.fit()``, stopped with a clear error when a lost node leaves too little room
    for the workers (:mod:`stars.train.watchdog`)."""
    per_worker = {"CPU": scale.cpus_per_worker}
    if scale.use_gpu:
        per_worker["GPU"] = scale.gpus_per_worker
    with LostNodeWatchdog(per_worker, scale.num_workers, scale.lost_node_timeout_s, name):
        return wait_in_main_thread(trainer.fit)


_shared_rows: dict[tuple[str, str], Any] | None = None
_shared_lock = threading.Lock()


@contextlib.contextmanager
def shared_training_rows() -> Iterator[None]:
    """Within this block, the training jobs on one dataset split that keep their rows in
    memory read them once (a group of seeds): the rows are read into Ray's object store by
    the first job and handed to every later one."""
    global _shared_rows
    _shared_rows = {}
    try:
        yield
    finally:
        _shared_rows = None


def train_dataset(data: SkeletonDataset, split: str, cfg: DataConfig, in_memory: bool) -> Any:
    """The ``train`` dataset: raw rows (workers keep them and make the views) or the
    streaming, transformed pipeline."""
    if not in_memory:
        return build_dataset(data, split, "train", cfg)
    if _shared_rows is None:
        return build_base_dataset(data, split)
    with _shared_lock:
        key = (data.digest, split)
        if key not in _shared_rows:
            _shared_rows[key] = build_base_dataset(data, split).materialize()
        return _shared_rows[key]


@dataclass
class StageResult:
    """Where a finished stage left its selected checkpoint, and its per-epoch metrics.
    Locations are under ``scale.storage_path``: paths, or URIs when it is one."""

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
    progress: bool = False,
) -> StageResult:
    """Pre-train with the resolved ``cfg`` (:func:`stars.train.resolve.resolve_stage1`), or
    resume when ``name`` already has checkpoints under the storage path."""
    from stars.train.stage1 import stage1_worker

    split, in_memory, loop_config = _common_loop_config(cfg, data, mlflow_run)
    loop_config.update({"data_digest": data.digest, "split": split})
    datasets = {"train": train_dataset(data, split, cfg.data, in_memory)}
    run = StageRun(stage1_worker, loop_config, cfg, name, datasets, "[stage 1]", cfg.stage1.epochs)
    return _fit_stage(run, fault, progress)


def run_stage2(
    cfg: Stage2JobConfig,
    source: str | Path,
    name: str,
    data: SkeletonDataset,
    *,
    mlflow_run: RunRef | None = None,
    fault: Fault | None = None,
    callbacks: list[Any] | None = None,
    objective_metric: str = "",
    progress: bool = False,
    in_process: bool = False,
    on_report: ReportHook | None = None,
) -> StageResult:
    """Tune the encoder of the stage-1 checkpoint file ``source`` (ours or published) with
    the resolved ``cfg`` (:func:`stars.train.resolve.resolve_stage2`).

    Args:
        callbacks: Ray Train callbacks (a sweep trial relays reports to Tune).
        objective_metric: a monitor metric also reported as ``objective`` every epoch.
        in_process: train in this process (one worker, rows in memory;
            :mod:`stars.train.in_process`) instead of on a ``TorchTrainer``.
        on_report: in-process only: called with every epoch's metrics and checkpoint folder.
    """
    import hashlib

    from stars.train.stage2 import stage2_worker

    # Workers on any node read the source where it is kept: a shared path or a URI.
    source_file = Location(str(source)).absolute
    split, in_memory, loop_config = _common_loop_config(cfg, data, mlflow_run, not in_process)
    monitor = cfg.stage2.monitor
    monitors = monitor_splits(cfg, data, split)
    if in_process:
        if cfg.scale.num_workers != 1 or not in_memory:
            raise ConfigError(
                "an in-process stage 2 runs one worker with its rows in memory "
                f"(scale.num_workers={cfg.scale.num_workers}, in memory: {in_memory})"
            )
        datasets: dict[str, Any] = {"train": LocalRows.read(data, split)}
        datasets.update({n: LocalRows.read(data, s, h) for n, (s, h) in monitors.items()})
    else:
        datasets = {"train": train_dataset(data, split, cfg.data, in_memory)}
        for n, (s, h) in monitors.items():
            datasets[n] = build_dataset(data, s, "eval", cfg.data, holdout=h)
    loop_config.update(
        {
            "source": source_file,
            "source_sha256": hashlib.sha256(storage.read_bytes(source_file)).hexdigest(),
            "monitor": monitor,
            "monitor_datasets": [name for name in datasets if name.startswith("monitor_")],
            "objective_metric": objective_metric,
        }
    )
    epochs = cfg.stage2.epochs + cfg.stage2.head_warmup_epochs
    run = StageRun(stage2_worker, loop_config, cfg, name, datasets, "[stage 2]", epochs)
    if in_process:
        return _run_here(run, fault, progress, monitor_metric(cfg.stage2), on_report)
    return _fit_stage(
        run,
        fault,
        progress,
        best_metric=monitor_metric(cfg.stage2),
        split_only=["train"],
        callbacks=callbacks,
    )


def monitor_splits(
    cfg: Stage2JobConfig, data: SkeletonDataset, split: str
) -> dict[str, tuple[str | None, str]]:
    """The monitoring sets of ``cfg.stage2.monitor``: dataset name -> (split, holdout part)."""
    monitor = cfg.stage2.monitor
    if monitor == "holdout":
        return {"monitor_bank": (split, "bank"), "monitor_query": (split, "query")}
    if monitor == "test":
        protocol = data.protocol(cfg.data.protocol or None)
        return {
            "monitor_bank": (protocol["train"], "all"),
            "monitor_query": (protocol["test"], "all"),
        }
    if monitor == "fewshot_val":
        fewshot = data.fewshot
        if fewshot is None:
            raise ConfigError(
                f"stage2.monitor=fewshot_val needs held-out few-shot classes; {data.root} has "
                "none (use stage2.monitor=holdout)"
            )
        sets = {"monitor_bank": (fewshot.gallery, "all")}
        if fewshot.query:
            sets["monitor_query"] = (fewshot.query, "all")
        return sets
    return {}


def _common_loop_config(
    cfg: Stage1JobConfig | Stage2JobConfig,
    data: SkeletonDataset,
    mlflow_run: RunRef | None,
    workers_read: bool = True,
) -> tuple[str, bool, dict[str, Any]]:
    """The pre-training split, whether it fits in memory, and the loop config keys every
    stage's workers read (:mod:`stars.train.loop`). ``workers_read``: workers on any node
    read the data (checked from each); false when this process alone does."""
    if workers_read:
        check_data_readable(data)
    split = pretrain_split(data, cfg.data.protocol)
    in_memory = fits_in_memory(data, split, cfg.data, cfg.scale.num_workers)
    steps = steps_per_epoch(data.split_size(split), cfg.scale.num_workers, cfg.data.batch_size)
    loop_config = {
        "job": to_dict(cfg),
        "steps_per_epoch": steps,
        "train_in_memory": in_memory,
        "num_bodies": data.num_bodies,
        "mlflow_run": (mlflow_run or RunRef()).to_dict(),
    }
    return split, in_memory, loop_config


@dataclass
class StageRun:
    """One stage's training run: its worker function, loop config, job config, name (the
    run directory under ``scale.storage_path``), datasets, progress label and epochs."""

    entry: Any
    loop_config: dict[str, Any]
    cfg: Stage1JobConfig | Stage2JobConfig
    name: str
    datasets: dict[str, Any]
    label: str
    epochs: int


def _fit_stage(
    run: StageRun,
    fault: Fault | None,
    progress: bool,
    best_metric: str | None = None,
    **trainer_options: Any,
) -> StageResult:
    """Run ``run.entry`` on Ray Train workers to the end (or the watchdog's verdict), with
    the driver's progress bar fed by the workers; the stage's result and selected checkpoint."""
    loop_config, scale = run.loop_config, run.cfg.scale
    if fault is not None:
        loop_config["fault"] = fault.to_dict()
    total_steps = loop_config["steps_per_epoch"] * run.epochs
    with progress_queue(run.label, total_steps, run.epochs, progress) as queue:
        loop_config["progress"] = queue
        ranking = {"metric": best_metric, "mode": "max"} if best_metric else {}
        trainer = make_trainer(
            run.entry, loop_config, scale, run.name, run.datasets, **ranking, **trainer_options
        )
        result = fit_watched(trainer, scale, run.name)
        return stage_result(result, scale, best_metric=best_metric)


def _run_here(
    run: StageRun,
    fault: Fault | None,
    progress: bool,
    best_metric: str | None,
    on_report: ReportHook | None,
) -> StageResult:
    """:func:`_fit_stage` in this process (:func:`stars.train.in_process.run_in_process`)."""
    loop_config, scale = run.loop_config, run.cfg.scale
    loop_config["train_in_memory"] = True
    if fault is not None:
        loop_config["fault"] = fault.to_dict()
    run_dir = storage.join(check_storage(scale), run.name)
    total_steps = loop_config["steps_per_epoch"] * run.epochs
    with progress_queue(run.label, total_steps, run.epochs, progress) as queue:
        loop_config["progress"] = queue
        index, metrics = run_in_process(
            run.entry, loop_config, scale, run_dir, run.datasets, best_metric, on_report
        )
    chosen, latest = index.best(), index.latest()
    chosen_dir = index.location(chosen)
    payload = read_checkpoint(storage.join(index.location(latest), CHECKPOINT_FILE))
    return StageResult(
        checkpoint_dir=chosen_dir,
        checkpoint_file=storage.join(chosen_dir, CHECKPOINT_FILE),
        metrics=metrics,
        history=payload.get("history", []),
        storage_dir=run_dir,
    )


def stage_result(result: Any, scale: ScaleConfig, best_metric: str | None = None) -> StageResult:
    """The selected checkpoint of a finished Ray Train ``result`` (the best by
    ``best_metric``, else the latest), located under ``scale.storage_path``."""
    from stars.model.checkpoint import read

    if result.error is not None:
        raise result.error
    chosen = result.checkpoint
    if best_metric:
        chosen = result.get_best_checkpoint(best_metric, "max") or chosen
    if chosen is None or result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")

    def kept(fs_path: str) -> str:
        # Ray reports paths inside the storage file system: for a URI, bucket/key only.
        return storage.uri_of(fs_path, scale.storage_path)

    chosen_dir = kept(chosen.path)
    payload = read(kept(result.checkpoint.path))  # the latest holds the full history
    return StageResult(
        checkpoint_dir=chosen_dir,
        checkpoint_file=storage.join(chosen_dir, CHECKPOINT_FILE),
        metrics=dict(result.metrics or {}),
        history=payload.get("history", []),
        storage_dir=kept(str(result.path)),
    )
