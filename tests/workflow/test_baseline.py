"""The random-init control: evaluated once per (dataset, architecture, evaluation), an MLflow
run of its own (``stars.stage=baseline``), reused afterwards; seeded, so reproducible."""

from __future__ import annotations

import torch

from stars.config import load_layers
from stars.eval.config import EvalConfig
from stars.model.checkpoint import read, write_random_init
from stars.model.config import preset
from stars.presets import job_preset
from stars.tracking import runs as tr
from stars.tracking.config import TrackingConfig
from stars.train.config import Stage1JobConfig
from stars.train.resolve import resolve_stage1
from stars.workflow.stages import tracked_baseline
from stars.workflow.tracker import Tracker


def test_random_init_is_seeded(tmp_path):
    a = read(write_random_init(preset("tiny"), 3, tmp_path / "a.pt"))["model"]
    b = read(write_random_init(preset("tiny"), 3, tmp_path / "b.pt"))["model"]
    c = read(write_random_init(preset("tiny"), 4, tmp_path / "c.pt"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_baseline_is_evaluated_once_and_tracked(tiny_dataset, tmp_path):
    layered = load_layers(
        Stage1JobConfig, job_preset("tiny", "stage1"), overrides=[f"scale.storage_path={tmp_path}"]
    )
    cfg = resolve_stage1(layered, tiny_dataset)
    evaluation = EvalConfig(protocols=("knn", "fewshot"), fewshot_shots=(1,), fewshot_episodes=2)
    tracker = Tracker(
        TrackingConfig(uri=f"sqlite:///{tmp_path / 'm.db'}"), tiny_dataset, "xsub_train", "tiny"
    )
    first = tracked_baseline(cfg, tiny_dataset, tracker, evaluation, log=lambda _: None)
    assert first.eval is not None and 0 <= first.metrics["knn_top1"] <= 1
    run = tracker.client.get_run(first.run_id)
    assert run.data.tags[tr.STAGE] == "baseline" and run.info.status == "FINISHED"
    assert run.data.metrics["knn_top1"] == first.metrics["knn_top1"]
    again = tracked_baseline(cfg, tiny_dataset, tracker, evaluation, log=lambda _: None)
    assert again.run_id == first.run_id  # reused, not re-evaluated: no features computed
    assert again.eval is not None and not again.eval.features
    # ... but its outcomes came back from its artifacts, for paired differences later
    assert again.eval.outcomes.metric_names() == first.eval.outcomes.metric_names()
    assert "knn_top1_ci95_low" in run.data.metrics
    other = tracked_baseline(
        cfg, tiny_dataset, tracker, EvalConfig(protocols=("knn",)), log=lambda _: None
    )
    assert other.run_id != first.run_id  # another evaluation is another baseline
    assert tracked_baseline(cfg, tiny_dataset, tracker, EvalConfig(protocols=())) is None
