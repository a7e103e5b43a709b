"""``jobs/evaluate.py`` in MLflow: each evaluation is a run nested under the run that trained
the checkpoint (found by its ``stars.checkpoint`` tag, in any experiment), or a top-level run
of the dataset's experiment for an outside checkpoint; the same metric names and lineage tags
as the main job's stage runs, so fine-tune, semi-supervised and transfer results sit beside
the kNN and linear numbers of the same lineage."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stars import storage
from stars.errors import JobError
from stars.eval.runner import EvalResult
from stars.tracking import runs as tr
from stars.workflow.tracker import Tracker

EVALUATION_STAGE = "evaluation"


def run_of_checkpoint(tracker: Tracker, checkpoint: str) -> Any | None:
    """The MLflow run whose ``stars.checkpoint`` tag is ``checkpoint`` (newest first), in
    any experiment of the store; None for a checkpoint no tracked run wrote."""
    if not tracker.enabled or not checkpoint:
        return None
    ids = [e.experiment_id for e in tracker.client.search_experiments()]
    if not ids:
        return None
    quoted = checkpoint.replace("'", "\\'")
    found = tracker.client.search_runs(
        ids, f"tags.`{tr.CHECKPOINT}` = '{quoted}'", order_by=["start_time DESC"], max_results=1
    )
    return found[0] if found else None


def checkpoint_of_run(tracker: Tracker, run_id: str) -> str:
    """The checkpoint an MLflow run (any stage) recorded, for ``--checkpoint RUN_ID``."""
    run = tracker.named_run(run_id, "--checkpoint RUN_ID")
    checkpoint = run.data.tags.get(tr.CHECKPOINT, "")
    if not checkpoint:
        raise JobError(f"MLflow run {run_id} recorded no checkpoint (its {tr.CHECKPOINT} tag)")
    return checkpoint


@contextmanager
def evaluation_run(
    tracker: Tracker, checkpoint: str, cfg: Any, name: str, seed: int
) -> Iterator[tr.StageRun | None]:
    """An MLflow run for one evaluation of ``checkpoint`` (None without tracking): nested
    under the run that wrote it, ended FINISHED / FAILED / KILLED like every stage run."""
    if not tracker.enabled:
        yield None
        return
    parent = run_of_checkpoint(tracker, checkpoint)
    experiment = tracker.experiment
    tags = {
        tr.SOURCE_CHECKPOINT: checkpoint,
        tr.DATA_DIGEST: tracker.data.digest,
        "stars.seed": str(seed),
    }
    if parent is not None:
        experiment = tracker.client.get_experiment(parent.info.experiment_id).name
        tags[tr.SOURCE_RUN] = parent.info.run_id
    run = tr.StageRun.create(
        tracker.client,
        experiment,
        name,
        EVALUATION_STAGE,
        cfg,
        tags,
        parent.info.run_id if parent is not None else "",
    )
    tr.log_dataset(tracker.client, run.run_id, tracker.data, tracker.split)
    with run.active():
        yield run


def record(run: tr.StageRun | None, result: EvalResult, out: Path) -> None:
    """The evaluation's metrics (step 0, as the stage runs log theirs), ``eval.json`` and
    its pictures and files."""
    if run is None:
        return
    run.log_metrics(result.metrics, step=0)
    for path in sorted({*result.artifacts.values(), str(out / "eval.json")}):
        if Path(path).is_file():
            run.log_artifact(path, "eval")
    shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(result.metrics.items())[:6])
    run.describe(
        f"**Evaluation** of `{storage.shown(result.info.get('checkpoint', ''))}`\n\n{shown}"
    )
