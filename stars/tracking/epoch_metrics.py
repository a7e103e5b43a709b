"""Per-epoch metrics from rank 0 of a training job into its MLflow run.

The run travels to the workers as a :class:`RunRef` (and is stored in every checkpoint): a
resumed job keeps logging into the same run, and epochs already logged are skipped, so a
resume never duplicates a step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from stars.tracking.runs import client, log_metrics


@dataclass(frozen=True)
class RunRef:
    """Which MLflow run a job logs into, as plain values a worker and a checkpoint carry."""

    tracking_uri: str = ""
    run_id: str = ""

    def __bool__(self) -> bool:
        return bool(self.tracking_uri and self.run_id)

    def to_dict(self) -> dict[str, str]:
        return asdict(self) if self else {}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None) -> RunRef:
        value = value or {}
        return cls(str(value.get("tracking_uri") or ""), str(value.get("run_id") or ""))


class EpochLogger:
    """``log(metrics, epoch)`` with ``step=epoch``; a no-op without a run or off rank 0."""

    def __init__(self, run: RunRef, rank: int, probe_key: str = "loss"):
        self.run_id = run.run_id
        self.enabled = bool(run) and rank == 0
        self.last_step = -1
        if self.enabled:
            self.client = client(run.tracking_uri)
            history = self.client.get_metric_history(self.run_id, probe_key)
            self.last_step = max((m.step for m in history), default=-1)

    def log(self, metrics: Mapping[str, Any], epoch: int) -> None:
        if not self.enabled or epoch <= self.last_step:
            return
        log_metrics(self.client, self.run_id, metrics, step=epoch)
        self.last_step = epoch
