"""Training in this process instead of on a Ray Train worker group: the path of a
single-worker sweep trial, whose Tune actor already holds the CPUs (and GPU) one worker
would take, so starting a controller and a worker process and a Ray Data pipeline for each
trial (about 20 s on a 2-core machine) buys nothing.

What stays the same as on Ray Train: the loop (:func:`stars.train.loop.run_loop`), the
checkpoint payloads and their cadence, resume from the latest registered checkpoint (after a
failure, ``scale.max_failures`` times, as Ray Train restarts its workers; or when the trial
starts again under the same name), ``num_to_keep`` with the best checkpoint by the monitor
metric, the per-epoch MLflow metrics, and the :class:`~stars.train.launch.StageResult`.
Checkpoints are registered in a :class:`~stars.model.checkpoint_index.CheckpointIndex`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from stars import storage
from stars.config import ConfigError
from stars.data.local_rows import LocalRows
from stars.model import checkpoint as ckpt
from stars.model.checkpoint_index import CheckpointIndex
from stars.train.config import ScaleConfig
from stars.train.session import Session

# Called after every epoch's report with its metrics and its checkpoint folder (or None).
ReportHook = Callable[[dict[str, float], "str | None"], None]


class LocalSession(Session):
    """Rank 0 of 1 on ``device``; checkpoints go to ``index``."""

    def __init__(
        self,
        device: torch.device,
        datasets: dict[str, LocalRows],
        index: CheckpointIndex,
        on_report: ReportHook | None = None,
    ):
        self.device, self.datasets, self.index, self.on_report = device, datasets, index, on_report
        self.last_metrics: dict[str, float] = {}

    def placement(self) -> tuple[torch.device, int, int]:
        return self.device, 0, 1

    def restored(self) -> dict[str, Any] | None:
        latest = self.index.latest()
        if latest is None:
            return None
        return ckpt.read(storage.join(self.index.location(latest), ckpt.CHECKPOINT_FILE))

    def prepare(self, model: nn.Module, ddp_kwargs: dict[str, Any]) -> nn.Module:
        return model  # one process: nothing to synchronise

    def dataset(self, name: str) -> LocalRows:
        return self.datasets[name]

    def report(self, metrics: dict[str, float], payload: dict[str, Any] | None) -> None:
        folder = None
        if payload is not None:
            folder = self.index.add(int(metrics["epoch"]), payload, metrics)
        self.last_metrics = dict(metrics)
        if self.on_report is not None:
            self.on_report(self.last_metrics, folder)


def local_device(scale: ScaleConfig) -> torch.device:
    """This process's device for ``scale``: the GPU Ray gave it, or the CPU."""
    if not scale.use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("scale.use_gpu=true but this process sees no CUDA device")
    return torch.device("cuda", torch.cuda.current_device())


def run_in_process(
    entry: Callable[[dict[str, Any], Session], None],
    loop_config: dict[str, Any],
    scale: ScaleConfig,
    run_dir: str,
    datasets: dict[str, LocalRows],
    best_metric: str | None = None,
    on_report: ReportHook | None = None,
) -> tuple[CheckpointIndex, dict[str, float]]:
    """Run ``entry`` (a stage's worker function) here to the end, starting again from the
    latest registered checkpoint after a failure up to ``scale.max_failures`` times; the
    run's checkpoint index and its last reported metrics."""
    device = local_device(scale)
    failures = 0
    while True:
        index = CheckpointIndex.open(run_dir, scale.num_to_keep, best_metric)
        session = LocalSession(device, datasets, index, on_report)
        try:
            entry(loop_config, session)
            break
        except Exception:
            failures += 1
            if failures > scale.max_failures:
                raise
    latest = index.latest()
    if latest is None:
        raise RuntimeError("training finished without a checkpoint")
    # A run that had already finished reports nothing when started again: its last record.
    return index, session.last_metrics or dict(latest["metrics"])
