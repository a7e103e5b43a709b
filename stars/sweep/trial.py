"""One sweep trial: a small driver function that Tune runs, which resolves the trial's
stage-2 config, trains it on its own ``TorchTrainer`` (stable name ``trial-<id>``, so a retried
trial resumes), evaluates it and reports the validation objective.

Per-epoch worker reports reach Tune through ``TuneReportCallback`` (rank 0's metrics, with
``epoch`` and ``objective``); the final report adds the evaluation's validation and test
metrics and ``trial_done``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from stars.config import Layered, from_dict, set_dotted
from stars.eval.config import EvalConfig
from stars.metrics.intervals import SUFFIX_HIGH, SUFFIX_LOW
from stars.tracking import runs as tr
from stars.tracking.config import TrackingConfig
from stars.train.config import Stage2JobConfig

TRIAL_DONE = "trial_done"  # in a trial's final result: it ran to the end (not stopped early)
REPEAT_SEED = "stars.repeat_seed"  # the seed of one of a repeated trial's runs


@dataclass(frozen=True)
class TrialPlan:
    """What every trial of a sweep shares (passed once through Ray's object store)."""

    sweep_name: str
    sweep_run_id: str
    data_path: str
    storage_path: str
    stage2: dict[str, Any]
    explicit: list[str]
    eval: dict[str, Any]
    tracking: dict[str, Any]
    objective: str
    objective_monitor: str
    preset: str = ""
    repeats: int = 1
    in_process: bool = False  # single-worker trials train in their own process

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trial_config(plan: TrialPlan, params: dict[str, Any]) -> Layered[Stage2JobConfig]:
    """The sweep's base stage-2 config with the trial's values, which count as set by the
    user (so a value the job must fix is refused, not replaced)."""
    cfg = from_dict(Stage2JobConfig, plan.stage2)
    for key, value in params.items():
        cfg = set_dotted(cfg, key, value)
    cfg = set_dotted(cfg, "scale.storage_path", plan.storage_path)
    return Layered(cfg, frozenset(plan.explicit) | set(params))


def find_trial_run(
    mlflow_client, experiment: str, sweep: str, trial_id: str, seed: int | None = None
) -> str:
    """The MLflow run of a retried trial (of one of its seeds), so a retry never opens a
    second run."""
    tags = {tr.SWEEP: sweep, tr.TRIAL: trial_id}
    if seed is not None:
        tags[REPEAT_SEED] = str(seed)
    hits = tr.find_runs(mlflow_client, experiment, **tags)
    return hits[0].info.run_id if hits else ""


def stage2_trial(config: dict[str, Any], plan: dict[str, Any]) -> None:
    """Tune trainable. ``config``: ``params`` (dotted stage-2 keys -> values) and ``source``
    (the stage-1 checkpoint and run); ``plan``: a :class:`TrialPlan` dict.

    With ``repeats`` > 1 the configuration trains once per seed (the base ``seed``, +1, ...)
    and reports the mean objective with its t-interval over the seeds."""
    import dataclasses

    from ray import tune

    from stars.data.job_data import pretrain_split
    from stars.data.pipeline import quiet_ray_data
    from stars.data.shards import open_dataset
    from stars.model.checkpoint import encoder_state, read
    from stars.train.resolve import resolve_stage2
    from stars.workflow.stages import Stage1Ref
    from stars.workflow.tracker import Tracker

    quiet_ray_data()
    p = TrialPlan(**plan)
    trial_id = tune.get_context().get_trial_id()
    source = Stage1Ref(**config["source"])
    data = open_dataset(p.data_path)
    encoder = encoder_state(read(source.checkpoint), source.checkpoint)[0]
    cfg = resolve_stage2(trial_config(p, config["params"]), data, encoder, source.checkpoint)
    tracking = from_dict(TrackingConfig, p.tracking)
    tracker = Tracker(tracking, data, pretrain_split(data, cfg.data.protocol), p.preset)
    evaluation = from_dict(EvalConfig, p.eval)
    if p.repeats <= 1:
        metrics, run_id = _one_seed(p, cfg, evaluation, source, data, tracker, trial_id, True)
        tune.report(final_report(metrics, p.objective, run_id))
        return
    per_seed, run_ids = [], []
    for seed in range(cfg.seed, cfg.seed + p.repeats):
        seeded = dataclasses.replace(cfg, seed=seed)
        metrics, run_id = _one_seed(
            p,
            seeded,
            dataclasses.replace(evaluation, seed=seed),
            source,
            data,
            tracker,
            trial_id,
            False,
            seed,
        )
        per_seed.append(metrics)
        run_ids.append(run_id)
    final = repeats_report(per_seed, p.objective, run_ids)
    # The configuration's best seed stands for it in the registry, judged on its interval
    # over all seeds.
    best = max(range(len(per_seed)), key=lambda i: per_seed[i][p.objective])
    low = final.get("objective" + SUFFIX_LOW, final["objective"])
    tracker.offer_stage2_best(run_ids[best], p.objective, final["objective"], low)
    tune.report(final)


def _one_seed(
    p: TrialPlan,
    cfg: Stage2JobConfig,
    evaluation: EvalConfig,
    source: Any,
    data: Any,
    tracker: Any,
    trial_id: str,
    relay: bool,
    seed: int | None = None,
) -> tuple[dict[str, Any], str]:
    """One tracked stage-2 run of the trial (of its ``seed`` when repeated): its metrics
    (with ``epoch``, the epochs run) and MLflow run id. ``relay``: every epoch's report
    goes on to Tune (the scheduler's input)."""
    from stars.data.job_data import pretrain_split
    from stars.data.pipeline import fits_in_memory
    from stars.workflow.stages import tracked_stage2

    # The sweep checked its base config; a trial's own values may change the answer.
    split = pretrain_split(data, cfg.data.protocol)
    in_process = p.in_process and cfg.scale.num_workers == 1
    in_process = in_process and fits_in_memory(data, split, cfg.data, 1)
    callbacks, on_report = None, None
    if relay and in_process:
        on_report = _report_to_tune
    elif relay:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks = [TuneReportCallback()]

    run_id = find_trial_run(tracker.client, tracker.experiment, p.sweep_name, trial_id, seed)
    if run_id:
        done = tracker.client.get_run(run_id)
        if done.info.status == "FINISHED" and p.objective in done.data.metrics:
            # Finished before the sweep was interrupted (Tune's saved state lagged behind):
            # report what it measured instead of training again.
            metrics = dict(done.data.metrics)
            metrics["epoch"] = metrics.get("epoch", -1) + 1  # epochs run, like a fresh trial
            return metrics, run_id
    tags = {tr.SWEEP: p.sweep_name, tr.TRIAL: trial_id}
    suffix, ray_name = "", f"trial-{trial_id}"
    if seed is not None:
        tags[REPEAT_SEED] = str(seed)
        suffix, ray_name = f" seed={seed}", f"{ray_name}-seed{seed}"
    outcome = tracked_stage2(
        cfg,
        source,
        data,
        ray_name,
        tracker,
        evaluation,
        log=lambda _: None,
        tags=tags,
        parent_run_id=p.sweep_run_id,
        run_name=trial_run_name(cfg, source, trial_id) + suffix,
        registry_metric=p.objective,
        callbacks=callbacks,
        objective_metric=p.objective_monitor if relay else "",
        run_id=run_id,
        register=seed is None,  # a repeated configuration is judged on all its seeds
        in_process=in_process,
        on_report=on_report,
    )
    metrics = dict(outcome.metrics)
    metrics["epoch"] = len(outcome.result.history) if outcome.result else 0
    return metrics, outcome.run_id


def _report_to_tune(metrics: dict[str, float], checkpoint_dir: str | None) -> None:
    """An in-process trial's epoch report to Tune, as Ray Train's ``TuneReportCallback``
    relays a worker's (with the checkpoint's location)."""
    from ray import tune

    tune.report({**metrics, "checkpoint_path": checkpoint_dir} if checkpoint_dir else metrics)


def final_report(metrics: dict[str, Any], objective: str, run_id: str) -> dict[str, Any]:
    """A trial's last result: its evaluation metrics, the objective with its interval (over
    the episodes of its one seed), ``trial_done``."""
    final = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    final.update({"objective": metrics[objective], TRIAL_DONE: 1, "mlflow_run_id": run_id})
    for suffix in (SUFFIX_LOW, SUFFIX_HIGH):
        if objective + suffix in metrics:
            final["objective" + suffix] = metrics[objective + suffix]
    final["repeats"] = 1
    return final


def repeats_report(
    per_seed: list[dict[str, Any]], objective: str, run_ids: list[str]
) -> dict[str, Any]:
    """A repeated trial's last result: each evaluation metric's mean over the seeds, the
    objective's t-interval over them, the seeds' runs."""
    import numpy as np

    from stars.metrics.intervals import t_interval

    names = set.intersection(
        *({k for k, v in m.items() if isinstance(v, (int, float))} for m in per_seed)
    )
    final: dict[str, Any] = {k: float(np.mean([m[k] for m in per_seed])) for k in names}
    values = [m[objective] for m in per_seed]
    iv = t_interval(values, "seeds")
    final.update({"objective": float(np.mean(values)), TRIAL_DONE: 1, "repeats": len(values)})
    final["epoch"] = int(min(m.get("epoch", 0) for m in per_seed))
    if iv is not None:
        final["objective" + SUFFIX_LOW], final["objective" + SUFFIX_HIGH] = iv.low, iv.high
    final["mlflow_run_id"] = ",".join(run_ids)
    return final


def trial_run_name(cfg: Stage2JobConfig, source: Any, trial_id: str) -> str:
    s2 = cfg.stage2
    return f"trial {trial_id[-5:]} alpha={s2.layer_decay:.3g} q={s2.queue_size} <- {source.short}"
