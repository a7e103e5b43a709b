"""Seeds end to end on the tiny preset: a group of two seeds (one group run, each seed's
lineage nested under it, aggregates with intervals, paired deltas on every tuned run), and
the same command with the same seed giving identical metrics while another seed does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from stars.cli.pretrain import main as pretrain_main
from stars.cli.stage2 import main as stage2_main
from stars.tracking.runs import PARENT, STAGE, client
from stars.workflow.group_run import GROUP_RUN

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FAST_EVAL = ["--eval-set", "fewshot_shots=[1,2]", "--eval-set", "fewshot_episodes=3"]
COMPARED = ("knn_top1", "linear_top1", "fewshot_1shot_mean", "fewshot_2shot_mean")


def _job(data: Path, tmp: Path, uri: str, name: str, *extra: str) -> list[str]:
    return [
        "--preset",
        "tiny",
        "--data",
        str(data),
        "--name",
        name,
        "--set",
        f"scale.storage_path={tmp / 'runs'}",
        "--tracking-uri",
        uri,
        "--protocols",
        "knn,linear,fewshot",
        *FAST_EVAL,
        *extra,
    ]


def _runs(mlflow_client, **tags: str) -> list:
    exp = mlflow_client.get_experiment_by_name("stars-synthetic")
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return list(mlflow_client.search_runs([exp.experiment_id], filter_string=query))


def test_a_group_of_seeds_and_reproducible_single_runs(
    ray_local, tiny_dataset_dir, tmp_path, capsys
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = client(uri)
    job = _job(tiny_dataset_dir, tmp_path, uri, "grp", "--seeds", "0,1")
    assert pretrain_main(job) == 0
    printed = capsys.readouterr().out
    assert "2 seeds (0, 1)" in printed and "differences paired by seed" in printed
    assert "comparison: http://127.0.0.1:5000/#/experiments/" in printed

    (group,) = _runs(c, **{STAGE: "group"})
    assert group.info.status == "FINISHED"
    assert group.data.params["seeds"] == "0,1" and group.data.metrics["n_seeds"] == 2
    for stage in ("control", "stage1", "stage2"):
        for m in COMPARED:
            assert f"{stage}/{m}_ci95_low" in group.data.metrics, (stage, m)
            lo, hi = (group.data.metrics[f"{stage}/{m}_ci95_{s}"] for s in ("low", "high"))
            assert lo <= group.data.metrics[f"{stage}/{m}"] <= hi
    for m in COMPARED:
        assert f"stage2/delta_{m}_ci95_high" in group.data.metrics
        assert f"stage1/delta_{m}_ci95_high" in group.data.metrics
    artifacts = {f.path for f in c.list_artifacts(group.info.run_id)}
    assert {"comparison.png", "per_seed.csv"} <= artifacts

    members = _runs(c, **{GROUP_RUN: group.info.run_id})
    by_stage: dict[str, list] = {}
    for run in members:
        by_stage.setdefault(run.data.tags[STAGE], []).append(run)
    assert len(by_stage["stage1"]) == len(by_stage["stage2"]) == len(by_stage["baseline"]) == 2
    for run in by_stage["stage1"] + by_stage["baseline"]:
        assert run.data.tags[PARENT] == group.info.run_id  # each lineage nests under it
    stage1_ids = {r.info.run_id for r in by_stage["stage1"]}
    seeds = {}
    for run in by_stage["stage2"]:
        assert run.data.tags[PARENT] in stage1_ids
        assert run.info.status == "FINISHED"
        for m in COMPARED:  # the paired difference to its stage-1 source, with its interval
            assert {f"delta_{m}", f"delta_{m}_ci95_low", f"delta_{m}_ci95_high"} <= set(
                run.data.metrics
            )
            assert f"{m}_ci95_low" in run.data.metrics
        seeds[run.data.params["seed"]] = run
    assert set(seeds) == {"0", "1"}
    s1_by_seed = {r.data.params["seed"]: r for r in by_stage["stage1"]}
    # Another seed: other data order, initialisation and masking, so other numbers.
    assert s1_by_seed["0"].data.metrics["loss"] != s1_by_seed["1"].data.metrics["loss"]

    # The same command with seed 0 alone gives the group's seed-0 numbers exactly.
    assert pretrain_main(_job(tiny_dataset_dir, tmp_path, uri, "single", "--seed", "0")) == 0
    single = {
        r.data.tags[STAGE]: r
        for r in _runs(c, **{STAGE: "stage1"}) + _runs(c, **{STAGE: "stage2"})
        if GROUP_RUN not in r.data.tags
    }
    for stage, grouped in (("stage1", s1_by_seed["0"]), ("stage2", seeds["0"])):
        alone = single[stage]
        assert alone.data.params["seed"] == "0"
        for m in (*COMPARED, "loss"):
            assert alone.data.metrics[m] == grouped.data.metrics[m], (stage, m)
    printed = capsys.readouterr().out
    assert "stage2 - stage1" in printed and "95 % intervals over this seed's" in printed

    # jobs/stage2.py takes --seeds too: a group of tuned runs of one stage-1 run.
    source = s1_by_seed["1"].info.run_id
    tune = [
        "--from-run",
        source,
        "--preset",
        "tiny",
        "--data",
        str(tiny_dataset_dir),
        "--name",
        "tuned",
        "--set",
        f"scale.storage_path={tmp_path / 'runs'}",
        "--tracking-uri",
        uri,
        "--protocols",
        "knn,fewshot",
        "--seeds",
        "2",
        *FAST_EVAL,
    ]
    assert stage2_main(tune) == 0
    groups = [g for g in _runs(c, **{STAGE: "group"}) if g.info.run_id != group.info.run_id]
    (tuned_group,) = groups
    assert "stage2/delta_knn_top1_ci95_low" in tuned_group.data.metrics
    assert "stage1/knn_top1" not in tuned_group.data.metrics  # one stage-1 run: no spread
    tuned = _runs(c, **{GROUP_RUN: tuned_group.info.run_id})
    assert tuned_group.data.tags[PARENT] == source  # stage 1 -> its group of tuned runs
    assert len(tuned) == 2 and all(r.data.tags[PARENT] == tuned_group.info.run_id for r in tuned)
    assert all("delta_knn_top1_ci95_low" in r.data.metrics for r in tuned)
