"""MLflow tracking on a SQLite store in a temp dir, no Ray: run states, the epoch logger's
de-duplication, registry aliases, lineage queries (orphans included), URI resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from stars.tracking import lineage, registry
from stars.tracking import runs as tr
from stars.tracking.config import is_local_store, resolve_uri
from stars.tracking.epoch_metrics import EpochLogger, RunRef


@pytest.fixture()
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, tr.client(uri)


def _run(c, name: str, stage: str, **tags: str) -> tr.StageRun:
    return tr.StageRun.create(c, "exp", name, stage, {"a": 1}, tags)


def test_runs_end_failed_or_killed_never_running(store):
    _, c = store
    failed = _run(c, "f", "stage1")
    with pytest.raises(ValueError), failed.active():
        raise ValueError("boom\nsecond line")
    killed = _run(c, "k", "stage1")
    with pytest.raises(KeyboardInterrupt), killed.active():
        raise KeyboardInterrupt
    ok = _run(c, "ok", "stage1")
    with ok.active():
        pass
    status = {r.info.run_name: r.info.status for r in c.search_runs([failed_exp(c)])}
    assert status == {"f": "FAILED", "k": "KILLED", "ok": "FINISHED"}
    assert c.get_run(failed.run_id).data.tags[tr.ERROR] == "boom"


def failed_exp(c) -> str:
    return c.get_experiment_by_name("exp").experiment_id


def test_experiment_is_a_training_experiment_and_names_are_unique(store):
    _, c = store
    a, b = _run(c, "same", "stage1"), _run(c, "same", "stage1")
    assert c.get_run(b.run_id).info.run_name == "same #2" and a.name == "same"
    exp = c.get_experiment_by_name("exp")
    assert exp.tags[tr.EXPERIMENT_KIND] == tr.TRAINING_KIND


def test_epoch_logger_skips_epochs_already_logged(store):
    uri, c = store
    run = _run(c, "r", "stage1")
    ref = RunRef(uri, run.run_id)
    first = EpochLogger(ref, rank=0)
    for epoch in range(3):
        first.log({"loss": 1.0 / (epoch + 1)}, epoch)
    resumed = EpochLogger(ref, rank=0)  # a restarted job replays epochs 1 and 2
    for epoch in range(1, 5):
        resumed.log({"loss": 0.1}, epoch)
    steps = [m.step for m in c.get_metric_history(run.run_id, "loss")]
    assert sorted(steps) == [0, 1, 2, 3, 4]
    assert not EpochLogger(ref, rank=1).enabled
    assert not EpochLogger(RunRef(), rank=0).enabled


def test_stage2_best_moves_only_on_improvement(store):
    _, c = store
    uri_of = lambda run: f"{run.artifact_uri}/checkpoint"  # noqa: E731
    name = registry.registered_name("synthetic", "xsub_train")
    better, worse = _run(c, "better", "stage2"), _run(c, "worse", "stage2")
    better.log_metrics({"knn_top1": 0.6})
    worse.log_metrics({"knn_top1": 0.4})
    for run, value in ((better, 0.6), (worse, 0.4)):
        if registry.alias_beats(c, name, registry.stage2_alias("knn_top1"), "knn_top1", value):
            registry.register_encoder(
                c, name, uri_of(run), run.run_id, registry.stage2_alias("knn_top1")
            )
    assert (
        c.get_model_version_by_alias(name, registry.stage2_alias("knn_top1")).run_id
        == better.run_id
    )
    assert not registry.alias_beats(c, name, registry.stage2_alias("knn_top1"), "knn_top1", 0.6)
    assert registry.alias_beats(c, name, registry.stage2_alias("knn_top1"), "knn_top1", 0.61)


def test_lineage_queries_with_orphans_and_sweeps(store):
    _, c = store
    s1 = _run(c, "s1", "stage1")
    other = _run(c, "s1b", "stage1")
    t1 = _run(c, "t1", "stage2", **{tr.SOURCE_RUN: s1.run_id})
    t2 = _run(c, "t2", "stage2", **{tr.SOURCE_RUN: s1.run_id})
    sweep = _run(c, "sw", "sweep", **{tr.SWEEP: "sw"})
    trial = _run(c, "tr", "stage2", **{tr.SOURCE_RUN: s1.run_id, tr.SWEEP: "sw"})
    orphan = _run(c, "o", "stage2", **{tr.SOURCE_RUN: "gone"})
    t1.log_metrics({"knn_top1": 0.3})
    t2.log_metrics({"knn_top1": 0.5})
    ids = lambda runs: [r.info.run_id for r in runs]  # noqa: E731
    assert ids(lineage.descendants(c, s1.run_id)) == [t1.run_id, t2.run_id, trial.run_id]
    assert c.get_run(t2.run_id).data.tags[tr.SOURCE_RUN] == s1.run_id
    assert tr.SOURCE_RUN not in c.get_run(s1.run_id).data.tags
    assert lineage.best_descendant(c, s1.run_id, "knn_top1").info.run_id == t2.run_id
    assert lineage.best_descendant(c, other.run_id, "knn_top1") is None
    tree = lineage.lineage_tree(c)
    roots = {n.run_id: n for n in tree}
    assert set(roots) == {s1.run_id, other.run_id, orphan.run_id}
    children = [n.run_id for n in roots[s1.run_id].children]
    assert children == [t1.run_id, t2.run_id, sweep.run_id]  # the sweep groups its trial
    assert [n.run_id for n in roots[s1.run_id].children[2].children] == [trial.run_id]
    text = lineage.format_tree(tree)
    assert "sweep" in text and "o [" in text


def test_uri_resolution(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_uri("") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolve_uri("sqlite:///x/m.db") == f"sqlite:///{tmp_path / 'x' / 'm.db'}"
    assert resolve_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert resolve_uri("http://host:5000") == "http://host:5000"
    assert resolve_uri("store") == str(Path(tmp_path / "store"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_uri("") == "http://env:5000"
    assert is_local_store("sqlite:////a.db") and not is_local_store("http://h:1")


def test_trials_that_tie_or_score_worse_leave_the_alias_and_add_no_version(tmp_path, tiny_dataset):
    """What a sweep's trials do through ``Tracker.offer_stage2_best``: the first moves
    ``stage2-best-<metric>``; one that ties, or scores worse, or whose lower bound does not
    clear the holder, leaves the alias on the same version and registers nothing."""
    from stars.model.checkpoint import write_random_init
    from stars.model.config import preset
    from stars.tracking.config import TrackingConfig
    from stars.workflow.tracker import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(TrackingConfig(uri=uri), tiny_dataset, "xsub_train")
    checkpoint = str(write_random_init(preset("tiny"), 0, tmp_path / "enc.pt"))
    metric = "fewshot_val_5shot_mean"
    name = registry.registered_name(tracker.dataset, tracker.split)
    alias = registry.stage2_alias(metric)

    def offer(value: float, low: float) -> bool:
        run = tr.StageRun.create(
            tracker.client, tracker.experiment, f"trial {value}", "stage2", {"a": 1},
            {tr.CHECKPOINT: checkpoint},
        )  # fmt: skip
        return tracker.offer_stage2_best(run.run_id, metric, value, low)

    def state() -> tuple[str, int]:
        held = tracker.client.get_model_version_by_alias(name, alias)
        versions = tracker.client.search_model_versions(f"name='{name}'")
        return held.version, len(versions)

    assert offer(0.50, 0.45)
    first = state()
    assert first[1] == 1
    for value, low in ((0.50, 0.50), (0.40, 0.35), (0.60, 0.49), (0.55, 0.50)):
        assert not offer(value, low), (value, low)  # ties, worse, inside the holder's noise
        assert state() == first
    assert offer(0.70, 0.51)  # its lower bound clears the holder's value
    held, versions = state()
    assert versions == 2 and held != first[0]


def test_code_version_reads_the_checkout_and_says_unknown_outside_one(tmp_path):
    import subprocess

    from stars.tracking.runs import code_version

    assert code_version(tmp_path)["stars.git_sha"] == "unknown"

    def run(*a):
        return subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)

    run("init", "-q")
    (tmp_path / "f.py").write_text("x = 1\n")
    run("add", "f.py")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    sha = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    clean = code_version(tmp_path)
    assert clean == {
        "stars.git_sha": sha,
        "stars.git_dirty": "false",
        "mlflow.source.git.commit": sha,
    }
    (tmp_path / "f.py").write_text("x = 2\n")
    assert code_version(tmp_path)["stars.git_dirty"] == "true"
