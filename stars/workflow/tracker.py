"""The MLflow side of a job's stage runs: one run per stage, named for what it is, nested
under its source, resumed when the Ray run is resumed, described, and registered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stars import storage
from stars.data.shards import SkeletonDataset
from stars.errors import JobError, StarsError
from stars.eval.runner import EvalResult
from stars.interrupts import resume_command as command_line
from stars.model.checkpoint import CheckpointError, read, resolve_checkpoint
from stars.tracking import liveness, registry, store
from stars.tracking import runs as tr
from stars.tracking.config import TrackingConfig, resolve_uri
from stars.tracking.epoch_metrics import RunRef
from stars.train.launch import StageResult

HEADLINE_METRICS = ("knn_top1", "fewshot_1shot_mean", "fewshot_5shot_mean", "linear_top1")


def dataset_name(data: SkeletonDataset) -> str:
    synthetic = data.manifest.recording.get("format") == "synthetic"
    return "synthetic" if synthetic else Path(storage.shown(data.root)).name


def previous_run_id(storage_path: str, name: str) -> str:
    """The MLflow run id stored in the latest checkpoint of an existing Ray run ``name``
    (resuming continues that MLflow run); empty when there is none."""
    try:
        payload = read(resolve_checkpoint(storage.join(storage_path, name)))
    except (CheckpointError, storage.StorageError):
        return ""
    return RunRef.from_dict(payload.get("mlflow_run")).run_id


class Tracker:
    """MLflow for one job on one dataset (or nothing, when tracking is disabled)."""

    def __init__(self, cfg: TrackingConfig, data: SkeletonDataset, split: str, preset: str = ""):
        self.enabled = cfg.enabled
        self.uri = resolve_uri(cfg.uri) if cfg.enabled else ""
        self.data, self.split, self.preset = data, split, preset
        self.dataset = dataset_name(data)
        self.experiment = cfg.experiment or f"stars-{self.dataset}"
        self.register = cfg.register
        self.client = None
        if cfg.enabled:
            store.check_store(self.uri, create=True)
            store.prepare_schema(self.uri)
            self.client = tr.client(self.uri)
            self.end_stale_runs()

    def named_run(self, run_id: str, needed_by: str) -> Any:
        """The MLflow run ``run_id`` a user named; JobError when tracking is off
        (``needed_by`` says what needs it) or when the store has no such run."""
        if not self.enabled:
            raise JobError(f"{needed_by} needs MLflow tracking (drop --no-tracking)")
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException as err:
            raise JobError(f"no MLflow run {run_id!r} in {self.uri} ({err.message})") from None

    def end_stale_runs(self) -> None:
        """Runs of this experiment left RUNNING by a driver that died end FAILED, each
        named with the reason (:mod:`stars.tracking.liveness`)."""
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            return
        for name, reason in liveness.end_stale_runs(self.client, [exp.experiment_id]):
            print(f"[stars] run {name!r} was left RUNNING: ended FAILED ({reason})")

    def ref(self, run: tr.StageRun | None) -> RunRef:
        return RunRef(self.uri, run.run_id) if run else RunRef()

    def start(
        self,
        storage: str,
        ray_name: str,
        stage: str,
        run_name: str,
        cfg: Any,
        tags: dict[str, str] | None = None,
        parent_run_id: str = "",
        run_id: str = "",
    ) -> tr.StageRun | None:
        """The run of a stage: ``run_id`` when given (a retried sweep trial), the one a
        resumed Ray run ``ray_name`` already logs into, or a new one nested under
        ``parent_run_id``."""
        if not self.enabled:
            return None
        existing = run_id or previous_run_id(storage, ray_name)
        if existing:
            self.client.update_run(existing, status="RUNNING")
            run = tr.StageRun(self.client, existing)
            run.clear_error()
            if tr.PLACEHOLDER in self.client.get_run(existing).data.tags:
                # An interrupted sweep recorded this trial before its run began: fill it in.
                run.fill(run_name, cfg, {tr.DATA_DIGEST: self.data.digest, **(tags or {})})
                tr.log_dataset(self.client, existing, self.data, self.split)
            return run
        all_tags = {tr.DATA_DIGEST: self.data.digest, **(tags or {})}
        if self.preset:
            all_tags[tr.PRESET] = self.preset
        run = tr.StageRun.create(
            self.client, self.experiment, run_name, stage, cfg, all_tags, parent_run_id
        )
        tr.log_dataset(self.client, run.run_id, self.data, self.split)
        return run

    def finish_stage(
        self,
        run: tr.StageRun | None,
        stage: str,
        result: StageResult,
        evaluation: EvalResult | None,
        *,
        lineage: str = "",
        registry_metric: str = "knn_top1",
        register: bool = True,
    ) -> None:
        """Checkpoint and evaluation artifacts, evaluation metrics, the checkpoint tag, the
        run's description and (``register``) the registry aliases."""
        if run is None:
            return
        run.log_artifact(str(storage.fetch(result.checkpoint_file)), "checkpoint")
        run.set_tags({tr.CHECKPOINT: result.checkpoint_file})
        metrics = evaluation.metrics if evaluation else {}
        if evaluation is not None:
            # Step 0, not the epoch count: evaluation metrics are one value per run, and a
            # step of 65 would chart stage 1 to the right of a 30-epoch stage 2.
            run.log_metrics(metrics, step=0)
            for path in evaluation.artifacts.values():
                run.log_artifact(path, "eval")
        shown = storage.shown(result.checkpoint_file)
        run.describe(describe(stage, lineage, metrics, shown))
        if not (self.register and register):
            return
        if stage == "stage1":
            name = registry.registered_name(self.dataset, self.split)
            uri = self.encoder_model(run.run_id, result.checkpoint_file)
            registry.register_encoder(self.client, name, uri, run.run_id, registry.STAGE1_ALIAS)
        elif stage == "stage2":
            value = metrics.get(registry_metric)
            low = metrics.get(registry_metric + "_ci95_low", value)
            self.offer_stage2_best(run.run_id, registry_metric, value, low)

    def offer_stage2_best(
        self, run_id: str, metric: str, value: float | None, low: float | None
    ) -> bool:
        """Move ``stage2-best-<metric>`` to the tuned run ``run_id`` when the lower end
        ``low`` of its interval on ``metric`` beats the current holder's value (a difference
        inside the noise does not displace it, and no version is added); the version records
        ``value``, which later candidates must beat. True when it moved."""
        if not (self.enabled and self.register):
            return False
        name = registry.registered_name(self.dataset, self.split)
        alias = registry.stage2_alias(metric)
        if value is not None and not registry.alias_beats(
            self.client, name, alias, metric, low if low is not None else value
        ):
            return False
        run = self.client.get_run(run_id)
        uri = self.encoder_model(run_id, run.data.tags.get(tr.CHECKPOINT, ""))
        tags = {}
        if value is not None:
            tags = {registry.VALUE_TAG: f"{value}", registry.METRIC_TAG: metric}
        registry.register_encoder(self.client, name, uri, run_id, alias, tags)
        return True

    def encoder_model(self, run_id: str, checkpoint: str) -> str:
        """The run's ``encoder`` pyfunc artifact (logged now unless it already is): what
        a registered version points at."""
        from stars.tracking.encoder_model import ENCODER_ARTIFACT, log_encoder_model

        if any(f.path == ENCODER_ARTIFACT for f in self.client.list_artifacts(run_id)):
            return f"{self.client.get_run(run_id).info.artifact_uri}/{ENCODER_ARTIFACT}"
        if not checkpoint:
            raise StarsError(f"run {run_id} has no {tr.CHECKPOINT} tag: nothing to register")
        run = self.client.get_run(run_id)
        crop = float(run.data.params.get("data.eval_crop", 0.95))
        return log_encoder_model(self.client, run_id, str(storage.fetch(checkpoint)), crop)


def describe(stage: str, lineage: str, metrics: dict[str, float], checkpoint: str) -> str:
    """Markdown shown as the run's description: lineage, how to reproduce, headline numbers."""
    title = {
        "stage1": "Stage 1: MAMP pre-training",
        "stage2": "Stage 2: STARS contrastive tuning",
        "baseline": "Baseline: randomly initialised encoder (no training)",
    }.get(stage, stage)
    lines = [f"**{title}**", ""]
    if lineage:
        lines += [lineage, ""]
    lines += [
        f"Reproduce: `{command_line()}` (the resolved config is the `config.yaml` artifact).",
        "",
        f"Checkpoint: `{checkpoint}`",
    ]
    shown = [(m, metrics[m]) for m in HEADLINE_METRICS if m in metrics]
    if shown:
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {m} | {v:.4f} |" for m, v in shown]
    return "\n".join(lines)
