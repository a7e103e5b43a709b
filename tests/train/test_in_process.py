"""Stage 2 trained in this process (a single-worker sweep trial's path) against the same run on
a TorchTrainer: the same losses, monitor metrics, weights, checkpoints and MLflow records;
and a failure resumed from the latest registered checkpoint."""

from __future__ import annotations

import pytest
import torch

from stars.eval.config import EvalConfig
from stars.model.checkpoint import read, write_random_init
from stars.model.checkpoint_index import INDEX, read_entries
from stars.model.config import preset
from stars.tracking import runs as tr
from stars.tracking.config import TrackingConfig
from stars.train.faults import Fault
from stars.train.launch import run_stage2
from stars.train.resolve import stage2_config
from stars.workflow.stages import Stage1Ref, tracked_stage2
from stars.workflow.tracker import Tracker

pytestmark = pytest.mark.ray

# Per-epoch values that measure time, not the computation.
TIMINGS = {"epoch_time_s", "throughput_seq_per_s", "monitor_time_s"}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    torch.manual_seed(0)
    return str(write_random_init(preset("tiny"), 0, tmp_path_factory.mktemp("s1") / "enc.pt"))


def _config(data, source, storage, *extra):
    overrides = [f"scale.storage_path={storage}", "scale.torch_threads=1", "stage2.epochs=3"]
    return stage2_config("tiny", data, source, [*overrides, "stage2.monitor=fewshot_val", *extra])


def _without_timings(history):
    return [{k: v for k, v in h.items() if k not in TIMINGS} for h in history]


@pytest.mark.slow
def test_in_process_records_match_a_torchtrainer_run(ray_local, tiny_dataset, source, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(TrackingConfig(uri=uri), tiny_dataset, "xsub_train")
    evaluation = EvalConfig(protocols=("knn",))
    outcomes = {}
    for in_process in (True, False):
        cfg = _config(tiny_dataset, source, tmp_path / "runs")
        outcomes[in_process] = tracked_stage2(
            cfg,
            Stage1Ref(source),
            tiny_dataset,
            f"run-{in_process}",
            tracker,
            evaluation,
            log=lambda _: None,
            parent_run_id="",
            run_name="same",
            in_process=in_process,
        )
    here, trainer = outcomes[True], outcomes[False]
    assert _without_timings(here.result.history) == _without_timings(trainer.result.history)
    assert set(here.result.metrics) == set(trainer.result.metrics)
    # The best epoch by the monitor metric is the same checkpoint, weights and all.
    a, b = read(here.result.checkpoint_file), read(trainer.result.checkpoint_file)
    assert a["epoch"] == b["epoch"] and sorted(a) == sorted(b)
    for key, value in a["encoder"].items():
        assert torch.equal(value, b["encoder"][key]), key
    assert torch.equal(a["queue"]["ids"], b["queue"]["ids"])
    # num_to_keep=2 of the tiny preset: the best and the latest stay, like Ray Train's.
    kept = [e["epoch"] for e in read_entries(str(tmp_path / "runs" / "run-True"))]
    assert len(kept) <= 2 and 2 in kept
    c = tracker.client
    runs = {k: c.get_run(o.run_id) for k, o in outcomes.items()}
    assert runs[True].data.params == runs[False].data.params
    assert set(runs[True].data.tags) == set(runs[False].data.tags)
    assert set(runs[True].data.metrics) == set(runs[False].data.metrics)
    for name in ("loss", "monitor_fewshot_val_5shot_mean", "knn_top1"):
        assert runs[True].data.metrics[name] == runs[False].data.metrics[name], name
        steps = [[m.step for m in c.get_metric_history(r.info.run_id, name)] for r in runs.values()]
        assert steps[0] == steps[1], name
    assert runs[True].data.tags[tr.CHECKPOINT].startswith(str(tmp_path / "runs" / "run-True"))
    assert all(r.info.status == "FINISHED" for r in runs.values())


def test_in_process_run_resumes_after_a_failure_as_if_uninterrupted(tiny_dataset, source, tmp_path):
    cfg = _config(tiny_dataset, source, tmp_path / "a")
    whole = run_stage2(cfg, source, "whole", tiny_dataset, in_process=True)
    cfg = _config(tiny_dataset, source, tmp_path / "b", "scale.max_failures=1")
    steps = whole.history[0]["steps"]
    fault = Fault(at_step=steps + 1, marker=str(tmp_path / "failed-once"))  # inside epoch 1
    cut = run_stage2(cfg, source, "cut", tiny_dataset, fault=fault, in_process=True)
    assert (tmp_path / "failed-once").exists()
    assert [h["resumes"] for h in cut.history] == [0, 1, 1]
    assert [h["loss"] for h in cut.history] == [h["loss"] for h in whole.history]
    a, b = read(cut.checkpoint_file), read(whole.checkpoint_file)
    for key, value in a["encoder"].items():
        assert torch.equal(value, b["encoder"][key]), key
    # Without retries the failure ends the run, and the index names only complete epochs.
    fault = Fault(at_step=steps + 1, marker=str(tmp_path / "fails"))
    once = _config(tiny_dataset, source, tmp_path / "c")
    with pytest.raises(RuntimeError, match="injected failure"):
        run_stage2(once, source, "stop", tiny_dataset, fault=fault, in_process=True)
    assert [e["epoch"] for e in read_entries(str(tmp_path / "c" / "stop"))] == [0]
    assert (tmp_path / "c" / "stop" / INDEX).is_file()
    # Started again under the same name, the run goes on from epoch 1.
    again = run_stage2(once, source, "stop", tiny_dataset, in_process=True)
    assert [h["resumes"] for h in again.history] == [0, 1, 1]
    assert [h["loss"] for h in again.history] == [h["loss"] for h in whole.history]
