"""A stage as a tracked unit: its MLflow run, training on Ray, evaluation, artifacts and
lineage. The main job, ``jobs/stage2.py`` and the sweep trials all run stages this way."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from stars import storage
from stars.config import to_dict
from stars.data.config import DataConfig
from stars.data.shards import SkeletonDataset
from stars.errors import JobError
from stars.eval.config import EvalConfig
from stars.eval.runner import EvalResult, evaluate
from stars.location import Location
from stars.metrics.feature_set import FeatureSet
from stars.metrics.outcomes import Outcomes
from stars.model.checkpoint import CHECKPOINT_FILE, resolve_checkpoint, write_random_init
from stars.tracking import runs as tr
from stars.train.config import Stage1JobConfig, Stage2JobConfig
from stars.train.faults import Fault
from stars.train.in_process import ReportHook
from stars.train.launch import StageResult, run_stage1, run_stage2
from stars.workflow.reference import reference_outcomes
from stars.workflow.tracker import Tracker, describe

BASELINE_KEY = "stars.baseline_key"  # architecture + evaluation + seed of a random-init run


@dataclass
class StageOutcome:
    """What a stage left: its MLflow run, selected checkpoint, evaluation metrics."""

    stage: str
    run_id: str
    checkpoint: str
    metrics: dict[str, float]
    eval: EvalResult | None = None
    run_name: str = ""
    result: StageResult | None = None


@dataclass(frozen=True)
class Stage1Ref:
    """The stage-1 checkpoint a stage-2 run starts from, and its MLflow run when known."""

    checkpoint: str
    run_id: str = ""
    run_name: str = ""

    @property
    def short(self) -> str:
        """How run names refer to it: ``stage1 3f2a`` or the checkpoint's file name."""
        if self.run_id:
            return f"stage1 {self.run_id[:4]}"
        return storage.shown(self.checkpoint).rsplit("/", 1)[-1]


def stage1_run_name(cfg: Stage1JobConfig, dataset: str, preset: str) -> str:
    m = cfg.model
    kind = "mamp" if m.target == "motion" else "mae"
    return (
        f"stage1 {kind} tau={m.motion_tau:g} mask={m.mask_ratio:g} {dataset}/{preset or 'custom'}"
    )


def stage2_run_name(cfg: Stage2JobConfig, source: Stage1Ref) -> str:
    s2 = cfg.stage2
    return f"stage2 alpha={s2.layer_decay:g} q={s2.queue_size} <- {source.short}"


def run_evaluation(
    checkpoint: str,
    data: SkeletonDataset,
    cfg: EvalConfig,
    out: str,
    data_cfg: DataConfig,
    scale,
    *,
    compare: dict[str, FeatureSet] | None = None,
    label: str,
    log: Callable[[str], None],
) -> EvalResult | None:
    """Evaluate ``checkpoint`` into ``out`` (a directory, or a URI: written to its local
    mirror, then copied there)."""
    if not cfg.protocols:
        return None
    out_dir = storage.local_dir(out)
    result = evaluate(
        checkpoint,
        data,
        cfg,
        out_dir,
        data_cfg=data_cfg,
        scale=scale,
        compare=compare,
        run_name=out_dir.parent.name + "-eval",
        label=label,
        log=log,
    )
    storage.publish(out_dir, out)
    return result


def _outcome(
    stage: str, run: tr.StageRun | None, result: StageResult, ev: EvalResult | None
) -> StageOutcome:
    return StageOutcome(
        stage,
        run.run_id if run else "",
        result.checkpoint_file,
        ev.metrics if ev else {},
        ev,
        run.name if run else "",
        result,
    )


def _active(run: tr.StageRun | None):
    return run.active() if run else contextlib.nullcontext()


def tracked_stage1(
    cfg: Stage1JobConfig,
    data: SkeletonDataset,
    ray_name: str,
    tracker: Tracker,
    evaluation: EvalConfig,
    *,
    log: Callable[[str], None] = print,
    fault: Fault | None = None,
    tags: dict[str, str] | None = None,
    parent_run_id: str = "",
    progress: bool = False,
    name_suffix: str = "",
) -> StageOutcome:
    """Pre-train (or resume), evaluate, and record it all in one MLflow run."""
    run_name = stage1_run_name(cfg, tracker.dataset, tracker.preset) + name_suffix
    run = tracker.start(
        cfg.scale.storage_path, ray_name, "stage1", run_name, cfg, tags, parent_run_id
    )
    with _active(run):
        log(f"[stars] stage 1 (MAMP pre-training): {run_name}")
        result = run_stage1(
            cfg, ray_name, data, mlflow_run=tracker.ref(run), fault=fault, progress=progress
        )
        ev = run_evaluation(
            result.checkpoint_file,
            data,
            evaluation,
            storage.join(result.storage_dir, "eval"),
            cfg.data,
            cfg.scale,
            label="stage 1",
            log=log,
        )
        tracker.finish_stage(run, "stage1", result, ev)
    return _outcome("stage1", run, result, ev)


def tracked_stage2(
    cfg: Stage2JobConfig,
    source: Stage1Ref,
    data: SkeletonDataset,
    ray_name: str,
    tracker: Tracker,
    evaluation: EvalConfig,
    *,
    eval_data: DataConfig | None = None,
    compare: dict[str, FeatureSet] | None = None,
    log: Callable[[str], None] = print,
    fault: Fault | None = None,
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    run_name: str = "",
    registry_metric: str = "knn_top1",
    register: bool = True,
    callbacks: list | None = None,
    objective_metric: str = "",
    run_id: str = "",
    progress: bool = False,
    reference: Outcomes | None = None,
    in_process: bool = False,
    on_report: ReportHook | None = None,
) -> StageOutcome:
    """Tune from ``source``, evaluate, and record it in one MLflow run nested under the
    source's run (or ``parent_run_id``, e.g. a sweep), linked to it by ``stars.*`` tags.
    ``in_process`` and ``on_report``: as :func:`stars.train.launch.run_stage2`.

    The evaluation is paired with the source's on the same samples and episodes
    (``delta_<metric>`` with its interval): ``reference`` holds the source's outcomes under
    the same evaluation settings when the caller has them (the main job), else the source is
    evaluated once (:func:`stars.workflow.reference.reference_outcomes`)."""
    all_tags = {tr.SOURCE_CHECKPOINT: source.checkpoint, **(tags or {})}
    if source.run_id:
        all_tags[tr.SOURCE_RUN] = source.run_id
    parent = source.run_id if parent_run_id is None else parent_run_id
    run = tracker.start(
        cfg.scale.storage_path,
        ray_name,
        "stage2",
        run_name or stage2_run_name(cfg, source),
        cfg,
        all_tags,
        parent,
        run_id,
    )
    with _active(run):
        log(f"[stars] stage 2 (STARS tuning) from {source.short}: {run.name if run else ray_name}")
        result = run_stage2(
            cfg,
            source.checkpoint,
            ray_name,
            data,
            mlflow_run=tracker.ref(run),
            fault=fault,
            callbacks=callbacks,
            objective_metric=objective_metric,
            progress=progress,
            in_process=in_process,
            on_report=on_report,
        )
        ev = run_evaluation(
            result.checkpoint_file,
            data,
            evaluation,
            storage.join(result.storage_dir, "eval"),
            eval_data or cfg.data,
            cfg.scale,
            compare=compare,
            label="stage 2",
            log=log,
        )
        if ev is not None and ev.outcomes.metric_names():
            if reference is None:
                reference = reference_outcomes(
                    source.checkpoint, data, evaluation, eval_data or cfg.data, cfg.scale, log=log
                )
            if reference is not None:
                ev.metrics.update(
                    ev.outcomes.deltas(reference, evaluation.bootstrap_resamples, evaluation.seed)
                )
        lineage = (
            f"Tuned from stage-1 run `{source.run_name or source.run_id}` ({source.run_id})."
            if source.run_id
            else f"Tuned from checkpoint `{source.checkpoint}`."
        )
        tracker.finish_stage(
            run,
            "stage2",
            result,
            ev,
            lineage=lineage,
            registry_metric=registry_metric,
            register=register,
        )
    return _outcome("stage2", run, result, ev)


def tracked_baseline(
    cfg: Stage1JobConfig,
    data: SkeletonDataset,
    tracker: Tracker,
    evaluation: EvalConfig,
    *,
    log: Callable[[str], None] = print,
    parent_run_id: str = "",
    name_suffix: str = "",
    tags: dict[str, str] | None = None,
) -> StageOutcome | None:
    """The random-init control: the stage-1 architecture, seeded, untrained, through the
    same evaluation. Computed once per (dataset, architecture, evaluation, seed) and reused
    from MLflow afterwards (its outcomes, for paired differences, from its artifacts); None
    when there is no evaluation to run."""
    if not evaluation.protocols:
        return None
    seed = cfg.seed
    key_doc = {"model": to_dict(cfg.model), "eval": to_dict(evaluation), "seed": seed}
    key = hashlib.sha256(json.dumps(key_doc, sort_keys=True).encode()).hexdigest()[:16]
    key_tags = {tr.DATA_DIGEST: data.digest, BASELINE_KEY: key}
    if tracker.enabled:
        done = [
            r
            for r in tr.find_runs(
                tracker.client, tracker.experiment, **{tr.STAGE: "baseline"}, **key_tags
            )
            if r.info.status == "FINISHED"
        ]
        reused = _reused_baseline(tracker, done)
        if reused is not None:
            return reused
    base = storage.join(cfg.scale.storage_path, "baselines", key)
    checkpoint = storage.join(base, CHECKPOINT_FILE)
    local = write_random_init(cfg.model, seed, storage.local_dir(checkpoint))
    storage.publish(local, checkpoint)
    run = None
    if tracker.enabled:
        name = f"baseline random-init {tracker.dataset}/{tracker.preset or 'custom'}"
        run = tr.StageRun.create(
            tracker.client,
            tracker.experiment,
            name + name_suffix,
            "baseline",
            {"model": cfg.model, "seed": seed},
            {**key_tags, **(tags or {})},
            parent_run_id,
        )
    with _active(run):
        ev = run_evaluation(
            checkpoint,
            data,
            evaluation,
            storage.join(base, "eval"),
            cfg.data,
            cfg.scale,
            label="random init",
            log=log,
        )
        if run is not None:
            run.set_tags({tr.CHECKPOINT: checkpoint})
            run.log_metrics(ev.metrics)
            for path in ev.artifacts.values():
                run.log_artifact(path, "eval")
            run.describe(
                describe(
                    "baseline",
                    "The control for stage 1: same architecture, no training.",
                    ev.metrics,
                    storage.shown(checkpoint),
                )
            )
    return StageOutcome(
        "baseline",
        run.run_id if run else "",
        checkpoint,
        ev.metrics,
        ev,
        run.name if run else "",
    )


def _reused_baseline(tracker: Tracker, done: list) -> StageOutcome | None:
    """A finished control run of the same key, with its outcomes (None when it has none:
    it is then evaluated again)."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    from stars.metrics.outcomes import OUTCOMES_FILE

    for run in done:
        try:
            path = download_artifacts(
                run_id=run.info.run_id,
                artifact_path=f"eval/{OUTCOMES_FILE}",
                tracking_uri=tracker.uri,
            )
        except (MlflowException, OSError):
            continue
        ev = EvalResult(dict(run.data.metrics), {}, outcomes=Outcomes.load(path))
        return StageOutcome(
            "baseline",
            run.info.run_id,
            run.data.tags.get(tr.CHECKPOINT, ""),
            dict(run.data.metrics),
            ev,
            run.info.run_name,
        )
    return None


def stage1_from_run(tracker: Tracker, run_id: str) -> Stage1Ref:
    """The stage-1 checkpoint of MLflow run ``run_id`` (its ``stars.checkpoint`` path or URI,
    or the run's checkpoint artifact when that is not reachable from here)."""
    run = tracker.named_run(run_id, "a source run")
    if run.data.tags.get(tr.STAGE) != "stage1":
        raise JobError(f"MLflow run {run_id} is not a stage-1 run (its stars.stage tag)")
    path = run.data.tags.get(tr.CHECKPOINT, "")
    if not (path and reachable(path)):
        from mlflow.artifacts import download_artifacts

        local = download_artifacts(
            run_id=run_id, artifact_path="checkpoint", tracking_uri=tracker.uri
        )
        path = str(resolve_checkpoint(local))
    return Stage1Ref(path, run_id, run.info.run_name or "")


def reachable(location: str) -> bool:
    try:
        return storage.exists(location)
    except storage.StorageError:
        return False


def stage1_from_checkpoint(path: str) -> Stage1Ref:
    found = resolve_checkpoint(path)
    return Stage1Ref(Location(found).absolute)
