"""Per-epoch metrics from rank 0 of a training job into its MLflow run.

The run id and tracking URI travel in the job's ``extra`` dict (and so in every checkpoint):
a resumed job keeps logging into the same run, and epochs already logged are skipped, so a
resume never duplicates a step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stars.tracking.runs import client, log_metrics

URI_KEY = "mlflow_uri"
RUN_KEY = "mlflow_run_id"


class EpochLogger:
    """``log(metrics, epoch)`` with ``step=epoch``; a no-op without a run id or off rank 0."""

    def __init__(self, extra: Mapping[str, Any], rank: int, probe_key: str = "loss"):
        self.run_id = str(extra.get(RUN_KEY) or "")
        uri = str(extra.get(URI_KEY) or "")
        self.enabled = bool(self.run_id and uri) and rank == 0
        self.last_step = -1
        if self.enabled:
            self.client = client(uri)
            history = self.client.get_metric_history(self.run_id, probe_key)
            self.last_step = max((m.step for m in history), default=-1)

    def log(self, metrics: Mapping[str, Any], epoch: int) -> None:
        if not self.enabled or epoch <= self.last_step:
            return
        log_metrics(self.client, self.run_id, metrics, step=epoch)
        self.last_step = epoch
