"""The main job: data -> stage 1 -> evaluation -> stage 2 -> evaluation -> summary, with
every run, metric, checkpoint and lineage link in MLflow (issue #7).

``jobs/pretrain.py`` is a thin front end to :func:`run_main`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stars.data.shards import SkeletonDataset
from stars.errors import JobError
from stars.eval.config import EvalConfig
from stars.eval.features import FeatureSet
from stars.eval.runner import EvalResult, evaluate
from stars.tracking import registry
from stars.tracking import runs as tr
from stars.tracking.config import TrackingConfig, is_local_store, resolve_uri
from stars.tracking.epochs import RUN_KEY, URI_KEY
from stars.train.config import PretrainConfig, TuneConfig
from stars.train.launch import (
    StageResult,
    pretrain_split,
    resolve_checkpoint,
    resolve_data,
    run_stage1,
    run_stage2,
)

SUMMARY_METRICS = ("knn_top1", "fewshot_1shot_mean", "fewshot_5shot_mean", "silhouette")
MAIN_EVAL_PROTOCOLS = ("knn", "linear", "fewshot", "cluster", "tsne")


@dataclass(frozen=True)
class MainConfig:
    """The whole job. Stage 2 shares stage 1's data source and scaling."""

    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    eval: EvalConfig = field(default_factory=lambda: EvalConfig(protocols=MAIN_EVAL_PROTOCOLS))
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def tune_config_for(cfg: MainConfig) -> TuneConfig:
    """Stage 2 reads the same dataset (path or synthetic spec, protocol) and scales the same."""
    data = dataclasses.replace(
        cfg.tune.data,
        path=cfg.pretrain.data.path,
        protocol=cfg.pretrain.data.protocol,
        synthetic=cfg.pretrain.data.synthetic,
    )
    return dataclasses.replace(cfg.tune, data=data, scale=cfg.pretrain.scale)


def dataset_name(data: SkeletonDataset) -> str:
    source = data.manifest.get("source") or {}
    return "synthetic" if source.get("format") == "synthetic" else Path(data.root).name


@dataclass
class StageOutcome:
    stage: str
    run_id: str
    checkpoint: str
    metrics: dict[str, float]
    eval: EvalResult | None = None


class Tracker:
    """MLflow side of the job (or nothing, when tracking is disabled)."""

    def __init__(self, cfg: TrackingConfig, data: SkeletonDataset, split: str):
        self.enabled = cfg.enabled
        self.uri = resolve_uri(cfg.uri) if cfg.enabled else ""
        self.data, self.split = data, split
        self.experiment = cfg.experiment or f"stars-{dataset_name(data)}"
        self.register = cfg.register
        self.client = tr.client(self.uri) if cfg.enabled else None

    def start(self, name: str, stage: str, cfg: Any, tags: dict[str, str]) -> tr.StageRun | None:
        if not self.enabled:
            return None
        run = tr.StageRun.create(
            self.client,
            self.experiment,
            name,
            stage,
            cfg,
            {tr.DATA_DIGEST: self.data.digest, **tags},
        )
        tr.log_dataset(self.client, run.run_id, self.data, self.split)
        return run

    def extra(self, run: tr.StageRun | None) -> dict[str, str]:
        return {URI_KEY: self.uri, RUN_KEY: run.run_id} if run else {}

    def finish_stage(
        self,
        run: tr.StageRun | None,
        stage: str,
        result: StageResult,
        evaluation: EvalResult | None,
    ) -> None:
        """Checkpoint and evaluation artifacts, evaluation metrics, lineage tag, registry."""
        if run is None:
            return
        run.log_artifact(result.checkpoint_file, "checkpoint")
        run.set_tags({tr.CHECKPOINT: result.checkpoint_file})
        if evaluation is not None:
            run.log_metrics(evaluation.metrics, step=len(result.history))
            for path in evaluation.artifacts.values():
                run.log_artifact(path, "eval")
        if not self.register:
            return
        name = registry.registered_name(dataset_name(self.data), self.split)
        uri = f"{run.artifact_uri}/checkpoint"
        metric = (evaluation.metrics if evaluation else {}).get("knn_top1")
        if stage == "stage1":
            registry.register_encoder(self.client, name, uri, run.run_id, registry.STAGE1_ALIAS)
        elif metric is None or registry.alias_beats(
            self.client, name, registry.STAGE2_ALIAS, "knn_top1", metric
        ):
            registry.register_encoder(self.client, name, uri, run.run_id, registry.STAGE2_ALIAS)


def previous_run_id(storage_path: str, name: str) -> str:
    """The MLflow run id stored in the latest checkpoint of an existing Ray run ``name``
    (resuming continues that MLflow run); empty when there is none."""
    from stars.model.checkpoint import read

    run_dir = Path(storage_path) / name
    if "://" in storage_path or not run_dir.is_dir():
        return ""
    try:
        payload = read(resolve_checkpoint(run_dir))
    except (FileNotFoundError, ValueError):
        return ""
    return str((payload.get("extra") or {}).get(RUN_KEY, ""))


def _stage_run(
    tracker: Tracker, storage: str, name: str, stage: str, cfg: Any, tags: dict[str, str]
) -> tr.StageRun | None:
    if not tracker.enabled:
        return None
    existing = previous_run_id(storage, name)
    if existing:
        tracker.client.update_run(existing, status="RUNNING")
        return tr.StageRun(tracker.client, existing)
    return tracker.start(name, stage, cfg, tags)


def _evaluate(
    cfg: MainConfig,
    data: SkeletonDataset,
    checkpoint: str,
    out_dir: Path,
    compare: dict[str, FeatureSet] | None,
    log,
    label: str,
) -> EvalResult | None:
    if not cfg.eval.protocols:
        return None
    return evaluate(
        checkpoint,
        data,
        cfg.eval,
        out_dir,
        data_cfg=cfg.pretrain.data,
        scale=cfg.pretrain.scale,
        compare=compare,
        run_name=out_dir.parent.name + "-eval",
        label=label,
        log=log,
    )


def cached_stage1_features(
    checkpoint: str, data: SkeletonDataset, protocol: str
) -> FeatureSet | None:
    """Test-split features the stage-1 run's evaluation cached beside its checkpoint (for the
    side-by-side t-SNE when tuning an existing run), or None."""
    test = data.protocol(protocol or None)["test"]
    path = Path(checkpoint).parent.parent / "eval" / "features" / f"{test}.npz"
    return FeatureSet.load(path) if path.is_file() else None


def resolve_source_run(tracker: Tracker, run_id: str) -> tuple[str, str]:
    """(checkpoint path, run id) of an existing stage-1 run, for ``--from-run``."""
    from mlflow.exceptions import MlflowException

    if not tracker.enabled:
        raise JobError("--from-run needs MLflow tracking (tracking.enabled=true)")
    try:
        run = tracker.client.get_run(run_id)
    except MlflowException as err:
        raise JobError(f"no MLflow run {run_id!r} in {tracker.uri} ({err.message})") from err
    if run.data.tags.get(tr.STAGE) != "stage1":
        raise JobError(f"MLflow run {run_id} is not a stage-1 run (stars.stage tag)")
    path = run.data.tags.get(tr.CHECKPOINT, "")
    if path and Path(path).is_file():
        return path, run_id
    from mlflow.artifacts import download_artifacts

    local = download_artifacts(run_id=run_id, artifact_path="checkpoint", tracking_uri=tracker.uri)
    return str(resolve_checkpoint(local)), run_id


def run_main(
    cfg: MainConfig,
    name: str,
    *,
    stage1_only: bool = False,
    from_run: str = "",
    progress: bool = True,
    log=print,
) -> list[StageOutcome]:
    """Run the job; returns one outcome per stage that ran (or was reused)."""
    data = resolve_data(cfg.pretrain.data, progress=progress)
    split = pretrain_split(data, cfg.pretrain.data.protocol)
    tracker = Tracker(cfg.tracking, data, split)
    if tracker.enabled and is_local_store(tracker.uri):
        _check_single_node(tracker.uri)
    storage = cfg.pretrain.scale.storage_path
    outcomes: list[StageOutcome] = []
    stage1_features: dict[str, FeatureSet] = {}

    if from_run:
        checkpoint, source_run = resolve_source_run(tracker, from_run)
        metrics = dict(tracker.client.get_run(source_run).data.metrics)
        outcomes.append(StageOutcome("stage1", source_run, checkpoint, metrics))
        cached = cached_stage1_features(checkpoint, data, cfg.eval.protocol)
        if cached is not None:
            stage1_features["stage 1"] = cached
    else:
        s1_name = f"{name}-stage1"
        run = _stage_run(tracker, storage, s1_name, "stage1", cfg.pretrain, {})
        with run.active() if run else contextlib.nullcontext():
            log(f"[stars] stage 1 (MAMP): run {s1_name}")
            result = run_stage1(cfg.pretrain, s1_name, extra=tracker.extra(run), progress=progress)
            evaluation = _evaluate(
                cfg,
                data,
                result.checkpoint_file,
                Path(result.storage_dir) / "eval",
                None,
                log,
                "stage 1",
            )
            tracker.finish_stage(run, "stage1", result, evaluation)
        if evaluation is not None:
            test = evaluation.info["test_split"]
            if test in evaluation.features:
                stage1_features["stage 1"] = evaluation.features[test]
        checkpoint, source_run = result.checkpoint_file, run.run_id if run else ""
        outcomes.append(
            StageOutcome(
                "stage1",
                source_run,
                checkpoint,
                evaluation.metrics if evaluation else {},
                evaluation,
            )
        )
    if stage1_only:
        return outcomes

    tune = tune_config_for(cfg)
    s2_name = f"{name}-stage2"
    tags = {tr.SOURCE_CHECKPOINT: checkpoint}
    if source_run:
        tags[tr.SOURCE_RUN] = source_run
    run = _stage_run(tracker, storage, s2_name, "stage2", tune, tags)
    with run.active() if run else contextlib.nullcontext():
        log(f"[stars] stage 2 (STARS tuning) from {checkpoint}: run {s2_name}")
        result = run_stage2(tune, checkpoint, s2_name, extra=tracker.extra(run), progress=progress)
        evaluation = _evaluate(
            cfg,
            data,
            result.checkpoint_file,
            Path(result.storage_dir) / "eval",
            stage1_features or None,
            log,
            "stage 2",
        )
        tracker.finish_stage(run, "stage2", result, evaluation)
    outcomes.append(
        StageOutcome(
            "stage2",
            run.run_id if run else "",
            result.checkpoint_file,
            evaluation.metrics if evaluation else {},
            evaluation,
        )
    )
    return outcomes


def _check_single_node(uri: str) -> None:
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    if len(alive) > 1:
        raise JobError(
            f"tracking URI {uri} is a store on this machine, but the cluster has "
            f"{len(alive)} nodes and rank 0 may run elsewhere: point --tracking-uri (or "
            "MLFLOW_TRACKING_URI) at an MLflow tracking server every node reaches"
        )


def summary_rows(outcomes: list[StageOutcome]) -> list[list[str]]:
    header = ["stage", "MLflow run", *SUMMARY_METRICS, "checkpoint"]
    rows = [header]
    for o in outcomes:
        values = [f"{o.metrics[m]:.3f}" if m in o.metrics else "-" for m in SUMMARY_METRICS]
        rows.append([o.stage, o.run_id or "-", *values, o.checkpoint])
    return rows


def format_summary(outcomes: list[StageOutcome]) -> str:
    rows = summary_rows(outcomes)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
