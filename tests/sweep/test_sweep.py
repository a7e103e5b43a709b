"""Sweeps end to end on a local Ray instance (tiny preset): trials in the MLflow lineage,
two-level sweeps, a failing trial, resume without duplicates, ASHA stopping a trial."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stars.cli.pretrain import main as pretrain_main
from stars.cli.sweep import main as sweep_main
from stars.config import load_layers
from stars.model.checkpoint import read
from stars.tracking import registry
from stars.tracking import runs as tr
from stars.train.config import Stage2JobConfig

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TINY_SPACE = str(ROOT / "search_spaces" / "tiny.yaml")


def _runs(c, stage: str, **tags: str) -> list:
    exp = c.get_experiment_by_name("stars-synthetic")
    query = [f"tags.`{tr.STAGE}` = '{stage}'"] + [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
    return list(c.search_runs([exp.experiment_id], filter_string=" and ".join(query)))


@pytest.fixture(scope="module")
def store(ray_local, tiny_dataset_dir, tmp_path_factory):
    """A tracking store holding one tiny stage-1 run, and the common sweep arguments."""
    tmp = tmp_path_factory.mktemp("sweep")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    common = ["--preset", "tiny", "--data", str(tiny_dataset_dir), "--tracking-uri", uri]
    common += ["--set", f"scale.storage_path={tmp / 'runs'}"]
    assert pretrain_main([*common, "--stage1-only", "--protocols", "", "--name", "base"]) == 0
    c = tr.client(uri)
    (stage1,) = _runs(c, "stage1")
    return {"uri": uri, "client": c, "common": common, "stage1": stage1.info.run_id, "tmp": tmp}


def test_trials_from_one_stage1_run_are_its_tracked_descendants(
    store, capsys, tmp_path, monkeypatch
):
    c = store["client"]
    # From another directory, without --space: the tiny preset's space, found from the package.
    monkeypatch.chdir(tmp_path)
    args = [*store["common"], "--stage1", store["stage1"]]
    assert sweep_main([*args, "--num-samples", "2", "--name", "pair"]) == 0
    out = capsys.readouterr().out
    assert "best trial:" in out and "fewshot_val_5shot_mean" in out
    (sweep,) = _runs(c, "sweep", **{tr.SWEEP: "pair"})
    assert sweep.data.tags[tr.PARENT] == store["stage1"]
    assert sweep.info.status == "FINISHED" and sweep.data.metrics["trials_done"] == 2
    trials = _runs(c, "stage2", **{tr.SWEEP: "pair"})
    assert len(trials) == 2
    assert len({t.data.tags[tr.TRIAL] for t in trials}) == 2
    for t in trials:
        assert t.info.status == "FINISHED"
        assert t.data.tags[tr.PARENT] == sweep.info.run_id
        assert t.data.tags[tr.SOURCE_RUN] == store["stage1"]
        assert "fewshot_val_5shot_mean" in t.data.metrics
        assert "fewshot_test_5shot_mean" in t.data.metrics  # reported, never used to choose
        # The params are what the trial's workers received.
        assert t.data.params == tr.params_of(read(t.data.tags[tr.CHECKPOINT])["job_config"])
        assert t.data.params["stage2.monitor"] == "fewshot_val"
    # Every trial's objective carries its interval (over its episodes: one seed each) ...
    assert "interval over the evaluation of one seed only" in out
    assert "fewshot_val_5shot_mean (± 95 %)" in out
    for t in trials:
        m = t.data.metrics
        assert m["fewshot_val_5shot_mean_ci95_low"] <= m["fewshot_val_5shot_mean"]
        assert m["fewshot_val_5shot_mean"] <= m["fewshot_val_5shot_mean_ci95_high"]
    # ... and stage2-best-fewshot-val-5shot moved only to a trial whose interval lay above
    # the holder's value: no trial that finished after the holder had its lower end above it.
    name = c.search_registered_models()[0].name
    alias = c.get_model_version_by_alias(name, registry.stage2_alias("fewshot_val_5shot_mean"))
    holder = c.get_run(alias.run_id)
    value = holder.data.metrics["fewshot_val_5shot_mean"]
    assert alias.tags[registry.VALUE_TAG] == str(value)
    for t in trials:
        if t.info.end_time > holder.info.end_time:
            assert t.data.metrics["fewshot_val_5shot_mean_ci95_low"] <= value
    # The results and the best configuration, ready for jobs/stage2.py --config.
    artifacts = {a.path for a in c.list_artifacts(sweep.info.run_id, "results")}
    assert {"results/results.csv", "results/best_stage2.yaml", "results/objective.png"} <= artifacts
    results = store["tmp"] / "runs" / "sweeps" / "pair" / "results"
    assert len((results / "results.csv").read_text().strip().splitlines()) == 3
    best_cfg = load_layers(
        Stage2JobConfig, None, results / "best_stage2.yaml", section="stage2"
    ).config
    best_row = sweep.data.tags["stars.best_trial"]
    winner = next(t for t in trials if t.data.tags[tr.TRIAL] == best_row)
    assert best_cfg.stage2.queue_size == int(winner.data.params["stage2.queue_size"])


def test_two_level_sweep_gives_each_stage1_point_its_descendants(store, tmp_path):
    c = store["client"]
    args = [*store["common"], "--stage1-space", str(ROOT / "search_spaces" / "masking.yaml")]
    args += ["--space", TINY_SPACE, "--num-samples", "1", "--name", "two", "--set"]
    args += ["stage2.epochs=1", "--stage1-set", "stage1.epochs=1"]
    assert sweep_main(args) == 0
    (sweep,) = _runs(c, "sweep", **{tr.SWEEP: "two"})
    stage1 = _runs(c, "stage1", **{tr.SWEEP: "two"})
    assert sorted(r.data.params["model.motion_tau"] for r in stage1) == ["0.0", "0.8"]
    for run in stage1:
        assert run.data.tags[tr.PARENT] == sweep.info.run_id
        children = _runs(c, "stage2", **{tr.SOURCE_RUN: run.info.run_id})
        assert len(children) == 1, run.info.run_name
        assert all(ch.data.tags[tr.SWEEP] == "two" for ch in children)


def test_a_failing_trial_is_recorded_and_the_others_finish(store, tmp_path, capsys):
    c = store["client"]
    space = tmp_path / "space.yaml"
    # 99 frozen blocks of a 2-block encoder: that trial's workers fail at start.
    space.write_text("job: stage2\nspace:\n  stage2.frozen_blocks: {grid: [1, 99]}\n")
    args = [*store["common"], "--stage1-runs", store["stage1"], "--space", str(space)]
    assert (
        sweep_main([*args, "--num-samples", "1", "--name", "bad", "--set", "stage2.epochs=1"]) == 0
    )
    assert "FAILED" in capsys.readouterr().out
    trials = {
        t.data.params["stage2.frozen_blocks"]: t for t in _runs(c, "stage2", **{tr.SWEEP: "bad"})
    }
    assert trials["1"].info.status == "FINISHED"
    assert trials["99"].info.status == "FAILED"
    assert "frozen_blocks" in trials["99"].data.tags[tr.ERROR]
    (sweep,) = _runs(c, "sweep", **{tr.SWEEP: "bad"})
    assert sweep.data.metrics["trials_failed"] == 1 and sweep.data.metrics["trials_done"] == 1


def test_an_interrupted_sweep_resumes_without_duplicates(store, tiny_dataset_dir):
    c = store["client"]
    args = [*store["common"], "--stage1-runs", store["stage1"], "--space", TINY_SPACE]
    args += ["--num-samples", "2", "--name", "cut", "--set", "stage2.epochs=2"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "jobs" / "sweep_stage2.py"), *args],
        cwd=store["tmp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    try:
        deadline = time.time() + 400
        while time.time() < deadline:
            done = [
                t for t in _runs(c, "stage2", **{tr.SWEEP: "cut"}) if t.info.status == "FINISHED"
            ]
            if done:
                break
            assert proc.poll() is None, "the sweep ended before it could be interrupted"
            time.sleep(2)
        assert done, "no trial finished in time"
        first = done[0]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert sweep_main([*args, "--resume"]) == 0
    trials = _runs(c, "stage2", **{tr.SWEEP: "cut"})
    assert len(trials) == 2 and len({t.data.tags[tr.TRIAL] for t in trials}) == 2
    assert all(t.info.status == "FINISHED" for t in trials)
    again = c.get_run(first.info.run_id)
    assert again.info.end_time == first.info.end_time  # the finished trial did not run again
    steps = [m.step for m in c.get_metric_history(first.info.run_id, "loss")]
    assert steps == [0, 1]
    assert len(_runs(c, "sweep", **{tr.SWEEP: "cut"})) == 1


def _crafted_trial(config):
    """A stand-in trial whose objective is its ``level`` every epoch, with an MLflow run."""
    from ray import tune

    from stars.tracking.runs import StageRun

    ctx = tune.get_context()
    c = tr.client(config["uri"])
    StageRun.create(
        c,
        "asha",
        f"t{config['level']}",
        "stage2",
        {},
        {tr.SWEEP: "asha", tr.TRIAL: ctx.get_trial_id()},
    )
    for epoch in range(6):
        time.sleep(0.2)
        done = {"trial_done": 1} if epoch == 5 else {}
        tune.report({"epoch": epoch + 1, "objective": config["level"], **done})


def test_asha_stops_the_weak_trial_and_its_run_ends_killed(ray_local, tmp_path):
    from ray import cloudpickle, tune

    from stars.sweep.config import SweepConfig
    from stars.sweep.runner import _scheduler
    from stars.sweep.tracking import SweepProgress

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers can't import tests

    uri = f"sqlite:///{tmp_path / 'asha.db'}"
    sweep = SweepConfig(scheduler="asha", grace_period=1, reduction_factor=2)
    tuner = tune.Tuner(
        tune.with_resources(_crafted_trial, {"cpu": 0.5}),
        param_space={"level": tune.grid_search([0.9, 0.1, 0.5, 0.7]), "uri": uri},
        tune_config=tune.TuneConfig(
            metric="objective", mode="max", scheduler=_scheduler(sweep, 6), max_concurrent_trials=1
        ),
        run_config=tune.RunConfig(
            name="asha",
            storage_path=str(tmp_path),
            callbacks=[SweepProgress(uri, "asha", "asha", "objective", quiet=True)],
            verbose=0,
        ),
    )
    results = tuner.fit()
    epochs = {r.config["level"]: r.metrics["epoch"] for r in results}
    assert epochs[0.9] == 6 and epochs[0.1] < 6, epochs
    c = tr.client(uri)
    exp = c.get_experiment_by_name("asha")
    status = {r.info.run_name: r.info.status for r in c.search_runs([exp.experiment_id])}
    assert status["t0.1"] == "KILLED" and status["t0.9"] == "FINISHED"


def test_repeats_train_each_configuration_with_several_seeds(store, capsys):
    """sweep.repeats=2: each trial is a configuration trained with seeds 0 and 1, its
    objective their mean with a t-interval over them; ASHA with repeats is refused."""
    c = store["client"]
    args = [*store["common"], "--stage1-runs", store["stage1"], "--space", TINY_SPACE]
    args += ["--set", "stage2.epochs=1"]
    assert sweep_main([*args, "--num-samples", "1", "--repeats", "2", "--name", "rep"]) == 0
    out = capsys.readouterr().out
    assert "95 % interval over 2 training seeds (sweep.repeats=2)" in out
    runs = _runs(c, "stage2", **{tr.SWEEP: "rep"})
    assert len(runs) == 2
    by_trial: dict[str, dict[str, object]] = {}
    for run in runs:
        by_trial.setdefault(run.data.tags[tr.TRIAL], {})[run.data.tags["stars.repeat_seed"]] = run
        assert run.data.params["seed"] == run.data.tags["stars.repeat_seed"]
        assert "delta_fewshot_val_5shot_mean_ci95_low" in run.data.metrics
    assert all(set(seeds) == {"0", "1"} for seeds in by_trial.values())
    rows = (store["tmp"] / "runs" / "sweeps" / "rep" / "results" / "results.csv").read_text()
    header, *lines = rows.strip().splitlines()
    assert "fewshot_val_5shot_mean_ci95_low" in header and len(lines) == 1
    for row in csv.DictReader(io.StringIO(rows)):
        seeds = by_trial[row["trial"]]
        values = [seeds[s].data.metrics["fewshot_val_5shot_mean"] for s in ("0", "1")]
        assert float(row["fewshot_val_5shot_mean"]) == pytest.approx(sum(values) / 2)
        assert row["repeats"] == "2"
        low, high = (
            float(row["fewshot_val_5shot_mean_ci95_low"]),
            float(row["fewshot_val_5shot_mean_ci95_high"]),
        )
        assert low <= sum(values) / 2 <= high
    with pytest.raises(SystemExit) as refused:
        sweep_main([*args, "--repeats", "2", "--scheduler", "asha", "--name", "x"])
    assert refused.value.code == 2
    assert "repeats > 1 with scheduler=asha" in capsys.readouterr().err
