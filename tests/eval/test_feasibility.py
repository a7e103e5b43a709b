"""Small data is a message, not a mystery: protocols a dataset cannot run are dropped before
training, each with its reason."""

from __future__ import annotations

import pytest

from stars.config import from_dict
from stars.data.formats.ntu import convert_ntu
from stars.data.shards import open_dataset
from stars.eval.config import EvalConfig
from stars.eval.feasibility import check_protocols
from stars.presets import job_preset


@pytest.fixture(scope="module")
def ntu5(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ntu5") / "ds"
    convert_ntu(shared_data / "ntu_rgbd_samples", out, workers=1, progress=False)
    return open_dataset(out)


def _tiny_eval(**changes) -> EvalConfig:
    return from_dict(EvalConfig, {**job_preset("tiny", "eval")["eval"], **changes})


@pytest.mark.shared_data
def test_five_real_samples_keep_knn_and_linear_and_say_why_the_rest_cannot_run(ntu5):
    feasible = check_protocols(ntu5, _tiny_eval())
    assert feasible.eval.protocols == ("knn", "linear")
    assert set(feasible.skipped) == {"fewshot", "cluster", "tsne"}
    assert (
        "no class of split xsub_test has n exemplars and a query for n=1,5"
        in (feasible.skipped["fewshot"])
    )
    assert "2 samples" in feasible.skipped["tsne"]
    assert feasible.lines()[0].startswith("[stars] ") and " skipped: " in feasible.lines()[0]


def test_a_dataset_that_can_run_everything_is_left_alone(tiny_dataset):
    cfg = _tiny_eval()
    feasible = check_protocols(tiny_dataset, cfg)
    assert feasible.eval == cfg and feasible.skipped == {}


def test_only_the_shots_without_enough_exemplars_are_dropped(tiny_dataset):
    feasible = check_protocols(tiny_dataset, _tiny_eval(fewshot_shots=[1, 5, 500]))
    assert feasible.eval.fewshot_shots == (1, 5)
    assert "fewshot" in feasible.eval.protocols
    assert list(feasible.skipped) == ["fewshot n=500"]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.shared_data
def test_main_job_on_five_real_samples_finishes_with_notes(
    ntu5, ray_local, tmp_path, monkeypatch, capsys
):
    # ray_local: the job joins the session's Ray instead of leaving its own running when this
    # test runs alone.
    from stars.cli.pretrain import main as pretrain_main

    monkeypatch.chdir(tmp_path)
    args = ["--preset", "tiny", "--data", str(ntu5.root), "--no-tracking", "--name", "five"]
    assert pretrain_main([*args, "--set", "data.batch_size=2"]) == 0
    out = capsys.readouterr().out
    before, summary = out.split("metrics in %", 1)
    assert "[stars] fewshot skipped: no class of split xsub_test" in before
    assert "fewshot: not measured (no class of split xsub_test" in summary
    assert "knn_top1" in summary
