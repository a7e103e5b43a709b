"""A sweep end to end: stage-1 sources (existing runs, a checkpoint, or trained per point of a
stage-1 space), the Tuner over stage-2 trials, and the sweep run's results in MLflow."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from stars.config import ConfigError, Layered, apply_dotted, flatten, pin, set_dotted, to_dict
from stars.data.job_data import pretrain_split
from stars.data.shards import SkeletonDataset
from stars.errors import JobError
from stars.eval.config import EvalConfig
from stars.interrupts import JobInterrupted, received
from stars.metrics.intervals import SUFFIX_HIGH, SUFFIX_LOW
from stars.model.checkpoint import encoder_state, read
from stars.paths import check_kept
from stars.storage import join, local_dir, parent, publish, shown
from stars.sweep import results as res
from stars.sweep.config import SweepConfig, monitor_metric_of, objective_monitor
from stars.sweep.space import SearchSpace
from stars.sweep.tracking import SweepProgress, close_interrupted, find_sweep_run
from stars.sweep.trial import TrialPlan, stage2_trial
from stars.tracking import runs as tr
from stars.tracking.config import TrackingConfig
from stars.train.config import ScaleConfig, Stage1JobConfig, Stage2JobConfig
from stars.train.placement import DATA_TASK_CPUS
from stars.train.resolve import resolve_stage1, resolve_stage2
from stars.workflow.config import evaluation_seeded
from stars.workflow.stages import Stage1Ref, stage1_from_checkpoint, stage1_from_run, tracked_stage1
from stars.workflow.tracker import Tracker, command_line


@dataclass
class SweepRequest:
    """Everything the sweep command line resolved."""

    name: str
    sweep: SweepConfig
    space: SearchSpace
    stage2: Layered[Stage2JobConfig]
    evaluation: EvalConfig
    tracking: TrackingConfig
    stage1: Layered[Stage1JobConfig] | None = None
    stage1_space: SearchSpace | None = None
    stage1_runs: list[str] = field(default_factory=list)
    stage1_checkpoint: str = ""
    preset: str = ""
    resume: bool = False


@dataclass
class SweepOutcome:
    run_id: str
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None
    artifacts: dict[str, str]
    sources: list[Stage1Ref]
    table: str = ""


def trial_evaluation(evaluation: EvalConfig, objective: str) -> EvalConfig:
    """Each trial's evaluation: the protocol behind the objective, with validation metrics."""
    import dataclasses

    protocols = list(evaluation.protocols)
    needed = "knn" if objective.startswith("knn") else "fewshot"
    if needed not in protocols:
        protocols.append(needed)
    shots = tuple(evaluation.fewshot_shots)
    monitor = objective_monitor(objective)
    if "stage2.monitor_shots" in monitor and monitor["stage2.monitor_shots"] not in shots:
        shots = (*shots, int(monitor["stage2.monitor_shots"]))
    return dataclasses.replace(
        evaluation,
        protocols=tuple(p for p in protocols if p != "tsne"),
        fewshot_shots=shots,
        validation=True,
        in_process=True,  # the trial process already holds the data path; no actor pool to start
    )


def trial_resources(scale: ScaleConfig, sweep: SweepConfig, in_process: bool) -> dict[str, float]:
    """What one trial's Tune process reserves: its driver's CPUs; or, when it trains in that
    process, one worker's CPUs (a whole core at least: it computes) and GPUs."""
    if not in_process:
        return {"cpu": sweep.trial_cpus}
    need = {"cpu": max(sweep.trial_cpus, scale.cpus_per_worker, 1.0)}
    if scale.use_gpu:
        need["gpu"] = scale.gpus_per_worker
    return need


def max_concurrent_trials(scale: ScaleConfig, sweep: SweepConfig, in_process: bool = False) -> int:
    """How many trials fit at once: each reserves its driver's CPUs, its workers' CPUs (and
    GPUs) and room for its Ray Data tasks, or, trained in its own process, what
    :func:`trial_resources` says; so trials never wait on each other's resources."""
    import ray

    if sweep.max_concurrent > 0:
        return sweep.max_concurrent
    total = ray.cluster_resources()
    if in_process:
        need = trial_resources(scale, sweep, True)
        need_cpu, need_gpu = need["cpu"], need.get("gpu", 0.0)
        what = f"{need_cpu:g} CPUs{' and GPUs' if scale.use_gpu else ''} (its one worker)"
    else:
        need_cpu = sweep.trial_cpus + scale.num_workers * scale.cpus_per_worker + DATA_TASK_CPUS
        need_gpu = scale.num_workers * scale.gpus_per_worker if scale.use_gpu else 0.0
        what = (
            f"{need_cpu:g} CPUs{' and GPUs' if scale.use_gpu else ''} "
            f"(driver {sweep.trial_cpus:g} + {scale.num_workers} workers x "
            f"{scale.cpus_per_worker:g} + data {DATA_TASK_CPUS:g})"
        )
    fits = math.floor(total.get("CPU", 0) / need_cpu + 1e-9)
    if need_gpu:
        fits = min(fits, math.floor(total.get("GPU", 0) / need_gpu + 1e-9))
    if fits < 1:
        raise JobError(
            f"one trial needs {what}; the cluster has "
            f"{total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs: lower "
            "scale.num_workers or scale.cpus_per_worker (--set), or add nodes"
        )
    return fits


def trains_in_process(sweep: SweepConfig, cfg: Stage2JobConfig, data: SkeletonDataset) -> bool:
    """Whether a trial of ``cfg`` trains in its own process (``sweep.in_process``, one
    worker, the training split in memory)."""
    from stars.data.pipeline import fits_in_memory

    if not sweep.in_process or cfg.scale.num_workers != 1:
        return False
    return fits_in_memory(data, pretrain_split(data, cfg.data.protocol), cfg.data, 1)


def check_space(
    space: SearchSpace,
    layered: Layered[Stage2JobConfig],
    pins: dict[str, Any],
    data: SkeletonDataset,
    source: Stage1Ref,
) -> None:
    """Resolve one trial per swept key (its first value) before any trial starts, so a key
    the job fixes or an invalid combination fails now, naming the file and the key."""
    encoder = encoder_state(read(source.checkpoint), source.checkpoint)[0]
    for key, dist in space.params.items():
        if key in pins:
            raise ConfigError(f"{space.source}: {key} is fixed by sweep.objective; remove it")
        cfg = set_dotted(layered.config, key, dist.values[0])
        try:
            resolve_stage2(Layered(cfg, layered.explicit | {key}), data, encoder, source.checkpoint)
        except ConfigError as err:
            raise ConfigError(f"{space.source}: {key}: {err}") from None


def stage1_point_config(
    stage1: Layered[Stage1JobConfig],
    point: dict[str, Any],
    storage: str,
    data: SkeletonDataset,
    space_file: str,
) -> Stage1JobConfig:
    """The resolved stage-1 config of one point of a stage-1 space: the sweep's base config
    with the point's values, which count as set by the user."""
    cfg = stage1.config
    for key, value in point.items():
        cfg = set_dotted(cfg, key, value)
    cfg = set_dotted(cfg, "scale.storage_path", storage)
    try:
        return resolve_stage1(Layered(cfg, stage1.explicit | set(point)), data)
    except ConfigError as err:
        raise ConfigError(f"{space_file}: {err}") from None


def stage1_sources(
    req: SweepRequest,
    data: SkeletonDataset,
    tracker: Tracker,
    sweep_run_id: str,
    log: Callable[[str], None],
) -> list[Stage1Ref]:
    """The stage-1 checkpoints the trials start from."""
    if req.stage1_runs:
        return [stage1_from_run(tracker, run_id) for run_id in req.stage1_runs]
    if req.stage1_checkpoint:
        return [stage1_from_checkpoint(req.stage1_checkpoint)]
    if req.stage1_space is None or req.stage1 is None:
        raise JobError("give --stage1 (run ids or a checkpoint) or --stage1-space")
    sources = []
    existing = _stage1_runs_of(tracker, req.name)
    for i, point in enumerate(req.stage1_space.grid()):
        run = existing.get(str(i))
        if run is not None and run.info.status == "FINISHED":
            log(f"[sweep] stage-1 point {i} {point}: reusing run {run.info.run_id}")
            sources.append(stage1_from_run(tracker, run.info.run_id))
            continue
        storage = join(sweep_storage(req), "stage1")
        cfg = stage1_point_config(req.stage1, point, storage, data, req.stage1_space.source)
        log(f"[sweep] stage-1 point {i} {point}: training")
        outcome = tracked_stage1(
            cfg,
            data,
            f"point-{i}",
            tracker,
            EvalConfig(protocols=()),
            log=log,
            tags={tr.SWEEP: req.name, tr.SWEEP_POINT: str(i)},
            parent_run_id=sweep_run_id,
            progress=True,
        )
        sources.append(Stage1Ref(outcome.checkpoint, outcome.run_id, outcome.run_name))
    return sources


def _stage1_runs_of(tracker: Tracker, sweep: str) -> dict[str, Any]:
    runs = tr.find_runs(tracker.client, tracker.experiment, **{tr.SWEEP: sweep, tr.STAGE: "stage1"})
    return {r.data.tags.get(tr.SWEEP_POINT, ""): r for r in runs}


def sweep_storage(req: SweepRequest) -> str:
    """``<scale.storage_path>/sweeps/<name>``: Tune state, trial runs and stage-1 points."""
    root = check_kept(
        "scale.storage_path", req.stage2.config.scale.storage_path, "--set scale.storage_path"
    )
    return join(root, "sweeps", req.name)


def _searcher(sweep: SweepConfig, space: SearchSpace, sources: int, concurrent: int):
    """The search algorithm, limited to ``concurrent`` trials at once (Tune ignores its own
    ``max_concurrent_trials`` when given a variant generator)."""
    if sweep.search == "optuna":
        if importlib.util.find_spec("optuna") is None:
            raise ConfigError(
                "sweep.search=optuna needs the optional optuna package "
                "(pip install 'optuna>=3'); or use random / grid"
            )
        if sources > 1 or any(d.kind == "grid" for d in space.params.values()):
            raise ConfigError("sweep.search=optuna cannot expand grids: use one stage-1 source")
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=sweep.seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(max_concurrent=concurrent, random_state=sweep.seed)


def planned_trials(sweep: SweepConfig, space: SearchSpace, sources: int) -> int:
    """How many trials the sweep runs when nothing stops it."""
    per_source = sweep.num_samples
    if sweep.search == "grid":
        per_source *= math.prod(len(d.points()) for d in space.params.values())
    return per_source * max(sources, 1)


def _param_space(sweep: SweepConfig, space: SearchSpace, sources: list[Stage1Ref]) -> dict:
    from ray import tune

    if sweep.search == "grid":
        params = {k: tune.grid_search(d.points()) for k, d in space.params.items()}
    else:
        params = space.to_tune()
    plain = [to_dict(s) for s in sources]
    return {"params": params, "source": tune.grid_search(plain) if len(plain) > 1 else plain[0]}


def _scheduler(sweep: SweepConfig, epochs: int):
    if sweep.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="epoch",
        max_t=max(epochs, 1),
        grace_period=min(sweep.grace_period, max(epochs, 1)),
        reduction_factor=sweep.reduction_factor,
    )


def _start_sweep_run(req: SweepRequest, tracker: Tracker, parent: str, storage: str) -> tr.StageRun:
    existing = find_sweep_run(tracker.client, tracker.experiment, req.name)
    if existing:
        tracker.client.update_run(existing, status="RUNNING")
        return tr.StageRun(tracker.client, existing)
    cfg = {"sweep": to_dict(req.sweep), "space": req.space.to_dict()}
    tags = {tr.SWEEP: req.name, tr.PRESET: req.preset, "stars.sweep_storage": storage}
    run = tr.StageRun.create(
        tracker.client,
        tracker.experiment,
        f"sweep {req.name} {req.sweep.objective}",
        "sweep",
        req.sweep,
        tags,
        parent,
    )
    tr.log_params(
        tracker.client,
        run.run_id,
        {f"space.{k}": d.describe() for k, d in req.space.params.items()},
    )
    tracker.client.log_text(run.run_id, yaml.safe_dump(cfg, sort_keys=False), "space.yaml")
    if req.stage1_space is not None:
        tracker.client.log_text(
            run.run_id,
            yaml.safe_dump(req.stage1_space.to_dict(), sort_keys=False),
            "stage1_space.yaml",
        )
    run.describe(
        f"**Sweep** `{req.name}`: maximises `{req.sweep.objective}` (validation) over "
        f"{', '.join(req.space.params)}.\n\nReproduce: `{command_line()}`"
    )
    return run


def check_sweep(req: SweepRequest, data: SkeletonDataset) -> Tracker:
    """Everything a sweep can be refused for before Ray starts and before its run exists:
    tracking, the space, the store, resume state, and the stage-1 runs or checkpoint named.
    Returns the sweep's tracker."""
    from ray import tune

    if not req.tracking.enabled:
        raise JobError("a sweep records its trials in MLflow: drop --no-tracking")
    if req.space.job != "stage2":
        raise ConfigError(f"{req.space.source}: --space takes a stage2 space")
    split = pretrain_split(data, req.stage2.config.data.protocol)
    tracker = Tracker(req.tracking, data, split, req.preset)
    experiment_path = sweep_storage(req)
    restoring = tune.Tuner.can_restore(experiment_path)
    if restoring and not req.resume:
        raise JobError(
            f"sweep {req.name!r} already exists at {shown(experiment_path)}: add --resume to "
            "continue it, or choose another --name"
        )
    if (
        req.resume
        and not restoring
        and not find_sweep_run(tracker.client, tracker.experiment, req.name)
    ):
        raise JobError(f"nothing to resume: no sweep {req.name!r} at {shown(experiment_path)}")
    for run_id in req.stage1_runs:
        stage1_from_run(tracker, run_id)
    if req.stage1_checkpoint:
        stage1_from_checkpoint(req.stage1_checkpoint)
    return tracker


def run_sweep(
    req: SweepRequest,
    data: SkeletonDataset,
    log: Callable[[str], None] = print,
    tracker: Tracker | None = None,
) -> SweepOutcome:
    """Run (or resume) the sweep; returns its rows, best trial and artifacts. ``tracker``:
    the one :func:`check_sweep` returned (checked again here when not given)."""
    from ray import tune

    tracker = tracker or check_sweep(req, data)
    objective = req.sweep.objective
    pins = objective_monitor(objective)
    storage = sweep_storage(req)
    experiment_path = storage
    restoring = tune.Tuner.can_restore(experiment_path)
    stage2 = pin(req.stage2, pins, f"sweep.objective={objective}")
    if pins["stage2.monitor"] == "fewshot_val":
        novel = data.fewshot.classes if data.fewshot else ()
        if len(novel) < 4:
            raise ConfigError(
                f"sweep.objective={objective} needs >= 4 held-out few-shot classes (half "
                f"validate, half test); {data.root} has {len(novel)}: use knn_val_top1"
            )
    single_parent = req.stage1_runs[0] if len(req.stage1_runs) == 1 else ""
    sweep_run = _start_sweep_run(req, tracker, single_parent, storage)
    with sweep_run.active():
        sources = stage1_sources(req, data, tracker, sweep_run.run_id, log)
        check_space(req.space, stage2, pins, data, sources[0])
        in_process = trains_in_process(req.sweep, stage2.config, data)
        plan = TrialPlan(
            sweep_name=req.name,
            sweep_run_id=sweep_run.run_id,
            data_path=data.absolute_root,
            storage_path=join(storage, "train"),
            stage2=to_dict(stage2.config),
            explicit=sorted(stage2.explicit),
            eval=to_dict(
                trial_evaluation(evaluation_seeded(req.evaluation, stage2.config.seed), objective)
            ),
            tracking={
                **to_dict(req.tracking),
                "uri": tracker.uri,
                "experiment": tracker.experiment,
            },
            objective=objective,
            objective_monitor=monitor_metric_of(objective),
            preset=req.preset,
            repeats=req.sweep.repeats,
            in_process=in_process,
        )
        trainable = tune.with_resources(
            tune.with_parameters(stage2_trial, plan=plan.to_dict()),
            trial_resources(stage2.config.scale, req.sweep, in_process),
        )
        progress = SweepProgress(tracker.uri, tracker.experiment, req.name, objective)
        if restoring:
            log(f"[sweep] resuming {req.name} from {shown(experiment_path)}")
            tuner = tune.Tuner.restore(experiment_path, trainable, resume_errored=True)
        else:
            scale = stage2.config.scale
            epochs = stage2.config.stage2.epochs + stage2.config.stage2.head_warmup_epochs
            concurrent = max_concurrent_trials(scale, req.sweep, in_process)
            where = "in its own process" if in_process else "on its own TorchTrainer"
            log(
                f"[sweep] {req.name}: {req.sweep.num_samples} trial(s) x {len(sources)} stage-1 "
                f"source(s), {concurrent} at a time, each {where}, maximising {objective}; "
                f"state in {shown(storage)}"
            )
            tuner = tune.Tuner(
                trainable,
                param_space=_param_space(req.sweep, req.space, sources),
                tune_config=tune.TuneConfig(
                    metric="objective",
                    mode="max",
                    num_samples=req.sweep.num_samples,
                    scheduler=_scheduler(req.sweep, epochs),
                    search_alg=_searcher(req.sweep, req.space, len(sources), concurrent),
                    max_concurrent_trials=concurrent if req.sweep.search == "optuna" else None,
                ),
                run_config=tune.RunConfig(
                    name=req.name,
                    storage_path=parent(storage),
                    failure_config=tune.FailureConfig(max_failures=req.sweep.max_trial_failures),
                    callbacks=[progress],
                    verbose=0,
                ),
            )
        grid = tuner.fit()
        keys = list(req.space.params)
        rows = res.trial_rows(grid, keys, objective)
        planned = planned_trials(req.sweep, req.space, len(sources))
        stopped = res.mark_interrupted(rows, sorted(progress.started - progress.ended))
        partial = bool(stopped) or len(rows) < planned
        best = None if partial else res.best_row(rows, objective)
        kept = join(storage, "results")
        out = local_dir(kept)
        out.mkdir(parents=True, exist_ok=True)
        artifacts = {"results_csv": str(res.write_csv(rows, out / "results.csv"))}
        if best is not None:
            base = _explicit_tree(stage2)
            path = res.write_best_config(best, keys, base, objective, out / "best_stage2.yaml")
            artifacts["best_config"] = str(path)
        if any(r["status"] in ("DONE", "STOPPED") for r in rows):
            artifacts["plot"] = str(
                res.plot_objective(rows, keys, objective, out / "objective.png")
            )
        publish(out, kept)
        for path in artifacts.values():
            sweep_run.log_artifact(path, "results")
        done = [r for r in rows if r["status"] == "DONE"]
        summary = {
            "trials": len(rows),
            "trials_done": len(done),
            "trials_stopped": sum(r["status"] == "STOPPED" for r in rows),
            "trials_failed": sum(r["status"] == "FAILED" for r in rows),
        }
        if best is not None:
            summary[f"best_{objective}"] = best[objective]
            for suffix in (SUFFIX_LOW, SUFFIX_HIGH):
                if res.finite(best.get(objective + suffix)):
                    summary[f"best_{objective}{suffix}"] = best[objective + suffix]
            sweep_run.set_tags({"stars.best_trial": str(best["trial"])})
        sweep_run.log_metrics(summary)
        if partial:
            ended = sum(r["status"] != res.INTERRUPTED for r in rows)
            note = f"{ended} of {planned} trials"
            signal_name = received() or "SIGINT"
            sweep_run.set_tags({res.PARTIAL: note})
            close_interrupted(
                tracker.client,
                tracker.experiment,
                req.name,
                sweep_run.run_id,
                stopped,
                signal_name,
            )
            log("")
            log(f"[sweep] PARTIAL: interrupted after {note}; no best trial is named")
            log(res.trials_table(rows, objective))
            raise JobInterrupted(signal_name)
    table = res.trials_table(rows, objective)
    return SweepOutcome(sweep_run.run_id, rows, best, artifacts, sources, table)


def _explicit_tree(stage2: Layered[Stage2JobConfig]) -> dict[str, Any]:
    """The stage-2 keys the user set for the sweep (the best-config file's base)."""
    flat = flatten(stage2.config)
    kept = [k for k in sorted(stage2.explicit) if k in flat]
    chosen = [k for k in kept if not k.startswith(("data.path", "scale.storage_path"))]
    return apply_dotted({}, {key: flat[key] for key in chosen})
