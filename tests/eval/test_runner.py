"""Every protocol end to end on a tiny checkpoint and the tiny synthetic dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stars.cli.evaluate import main as evaluate_main
from stars.config import load_layers
from stars.data.shards import open_dataset
from stars.eval.config import EvalJobConfig
from stars.eval.resolve import resolve_eval
from stars.eval.runner import evaluate
from stars.eval.subsets import stratified_subset
from stars.metrics.feature_set import FeatureSet
from stars.model import checkpoint as ckpt
from stars.model.config import preset
from stars.model.mamp import MAMP
from stars.presets import job_preset


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    ckpt.save(path, ckpt.stage1_payload(MAMP(preset("tiny")), epoch=0, global_step=0))
    return path


def _job(dataset_dir, tmp_path, **eval_overrides):
    """The evaluation job config of a tiny encoder (T=32) on ``dataset_dir``, resolved."""
    tree = job_preset("tiny", "eval")
    tree["data"]["path"] = str(dataset_dir)
    tree["eval"].update(eval_overrides)
    # One checkpoint, after the last epoch: what the tests read, without a write per epoch.
    tree["scale"] = {"storage_path": str(tmp_path / "runs"), "checkpoint_every": 1000}
    layered = load_layers(EvalJobConfig, tree)
    return resolve_eval(layered, open_dataset(dataset_dir), preset("tiny"), "tiny")


@pytest.mark.ray
def test_feature_protocols_on_ray_match_in_process(
    ray_local, tiny_checkpoint, tiny_dataset, tiny_dataset_dir, tmp_path
):
    job = _job(tiny_dataset_dir, tmp_path, in_process=False)  # the Ray Data actor pool
    result = evaluate(
        tiny_checkpoint, tiny_dataset, job.eval, tmp_path / "ray", data_cfg=job.data, log=str
    )
    local_job = _job(tiny_dataset_dir, tmp_path, in_process=True, protocols=("knn",))
    local = evaluate(
        tiny_checkpoint,
        tiny_dataset,
        local_job.eval,
        tmp_path / "local",
        data_cfg=job.data,
        log=str,
    )
    for split in ("xsub_train", "xsub_test"):
        a, b = result.features[split], local.features[split]
        assert np.array_equal(a.sample_index, b.sample_index)
        np.testing.assert_allclose(a.features, b.features, rtol=1e-4, atol=1e-5)
        assert len(a) == tiny_dataset.split_size(split)
    m = result.metrics
    for name in (
        "knn_top1",
        "knn_weighted_k20_top1",
        "linear_top1",
        "fewshot_1shot_mean",
        "fewshot_5shot_std",
        "cluster_silhouette",
        "cluster_kmeans_nmi",
    ):
        assert name in m and np.isfinite(m[name]), name
    assert m["knn_top1"] == local.metrics["knn_top1"]
    saved = json.loads((tmp_path / "ray" / "eval.json").read_text())
    assert saved["metrics"] == m and saved["protocol"] == "xsub"
    assert saved["fewshot"]["source"] == "novel classes"
    for name in ("tsne", "confusion", "fewshot_episodes"):
        assert (tmp_path / "ray" / result.artifacts[name].split("/")[-1]).stat().st_size > 0
    cached = FeatureSet.load(tmp_path / "ray" / "features" / "fewshot_query.npz")
    assert len(cached) == tiny_dataset.split_size("fewshot_query")


def _separable(tmp_path):
    """5 well-separated synthetic classes, 16 sequences each (chance 0.2)."""
    from stars.data.prepare import write_synthetic
    from stars.data.synthetic import SyntheticSpec

    spec = SyntheticSpec(num_classes=5, samples_per_class=16, num_base_classes=5, seed=11)
    write_synthetic(tmp_path / "separable", spec, progress=False)
    return tmp_path / "separable", open_dataset(tmp_path / "separable")


# Long and fast enough to learn the separable set from a random encoder in seconds.
LEARNING_RECIPE = {
    "epochs": 20,
    "warmup_epochs": 1,
    "batch_size": 8,
    "lr": 3e-3,
    "drop_path": 0.0,
    "layer_decay": 1.0,
    "label_smoothing": 0.0,
}


@pytest.mark.ray
@pytest.mark.slow
def test_finetune_and_semi_supervised_on_ray_train(ray_local, tiny_checkpoint, tmp_path):
    root, data = _separable(tmp_path)
    job = _job(
        root,
        tmp_path,
        protocols=("finetune", "semi"),
        finetune=LEARNING_RECIPE,
        eval_every=20,
        semi_seeds=1,
    )
    result = evaluate(
        tiny_checkpoint,
        data,
        job.eval,
        tmp_path / "out",
        data_cfg=job.data,
        scale=job.scale,
        log=str,
    )
    m = result.metrics
    chance = 1 / data.num_classes
    assert m["finetune_train_samples"] == data.split_size("xsub_train")
    assert m["finetune_train_loss_last"] < 0.8 * m["finetune_train_loss_first"], m
    assert m["finetune_top1"] > chance + 0.1, m
    # Half the labels: still learns, and the workers trained on exactly the drawn half.
    assert m["semi_50pct_train_loss_last_mean"] < 0.9 * m["semi_50pct_train_loss_first_mean"], m
    assert m["semi_50pct_top1_mean"] > chance + 0.05, m
    assert "semi_50pct_top1_std" in m
    subset = json.loads((tmp_path / "out" / "semi_subsets" / "50pct_seed0.json").read_text())
    train = data.read_split("xsub_train", ["sample_index", "label"])
    expected = stratified_subset(train["sample_index"], train["label"], 0.5, seed=0)
    assert subset["sample_index"] == expected.tolist() and subset["split"] == "xsub_train"
    # What the fine-tuning workers received is what eval.json records.
    recorded = json.loads((tmp_path / "out" / "eval.json").read_text())
    ckpt_file = sorted((tmp_path / "runs").glob("eval-finetune/checkpoint_*/checkpoint.pt"))[-1]
    received = ckpt.read(ckpt_file)["job_config"]
    assert received["finetune"] == recorded["config"]["finetune"]
    assert received["data"] == recorded["data_config"]


def test_cli_in_process_knn(tiny_checkpoint, tiny_dataset_dir, tmp_path, capsys):
    from mlflow import MlflowClient

    from stars.tracking import runs as tr

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    trained = c.create_run(
        c.create_experiment("trained"),
        tags={tr.CHECKPOINT: str(tiny_checkpoint), tr.STAGE: "stage1"},
    )
    code = evaluate_main(
        [
            "--checkpoint",
            str(tiny_checkpoint),
            "--data",
            str(tiny_dataset_dir),
            "--preset",
            "tiny",
            "--protocols",
            "knn,fewshot",
            "--out",
            str(tmp_path / "cli"),
            "--set",
            "eval.in_process=true",
            "--tracking-uri",
            uri,
        ]
    )
    assert code == 0
    assert "knn_top1" in capsys.readouterr().out
    # The evaluation is an MLflow run nested under the run that wrote the checkpoint, with the
    # main job's metric names and lineage tags.
    (run,) = c.search_runs(
        [trained.info.experiment_id], f"tags.`{tr.STAGE}` = 'evaluation'", max_results=5
    )
    assert run.info.status == "FINISHED"
    assert run.data.tags[tr.PARENT] == run.data.tags[tr.SOURCE_RUN] == trained.info.run_id
    assert run.data.tags[tr.SOURCE_CHECKPOINT] == str(tiny_checkpoint)
    metrics = json.loads((tmp_path / "cli" / "eval.json").read_text())["metrics"]
    assert run.data.metrics == pytest.approx(metrics)
    assert json.loads(run.data.params["eval.protocols"]) == ["knn", "fewshot"]
    assert {"eval/eval.json", "eval/fewshot_episodes.json"} <= {
        a.path for a in c.list_artifacts(run.info.run_id, "eval")
    }
    # An outside checkpoint gets a run of its own in the dataset's experiment; a run id
    # names the checkpoint its run recorded.
    code = evaluate_main(
        [
            "--checkpoint",
            trained.info.run_id,
            "--data",
            str(tiny_dataset_dir),
            "--preset",
            "tiny",
            "--protocols",
            "knn",
            "--out",
            str(tmp_path / "cli2"),
            "--tracking-uri",
            uri,
        ]
    )
    assert code == 0
    runs = c.search_runs(
        [trained.info.experiment_id], f"tags.`{tr.STAGE}` = 'evaluation'", max_results=5
    )
    assert len(runs) == 2 and all(r.data.tags[tr.PARENT] == trained.info.run_id for r in runs)
    assert (
        "fewshot_1shot_mean" in json.loads((tmp_path / "cli" / "eval.json").read_text())["metrics"]
    )


def test_cli_rejects_unknown_protocol(tiny_checkpoint, capsys):
    with pytest.raises(SystemExit):
        evaluate_main(["--checkpoint", str(tiny_checkpoint), "--protocols", "knn,bogus"])
    assert "unknown evaluation protocol" in capsys.readouterr().err


def test_raw_pose_baseline_goes_through_the_same_protocols(
    tiny_dataset, tiny_dataset_dir, tmp_path
):
    from stars.eval.raw_pose import raw_pose_floor

    job = _job(tiny_dataset_dir, tmp_path, protocols=("knn", "linear", "fewshot"))
    result = evaluate("raw", tiny_dataset, job.eval, tmp_path / "raw", data_cfg=job.data, log=str)
    assert result.metrics["knn_top1"] == pytest.approx(raw_pose_floor(tiny_dataset, "xsub"))
    assert "linear_top1" in result.metrics and "fewshot_1shot_mean" in result.metrics
    with pytest.raises(ValueError, match="no encoder"):
        finetune = _job(tiny_dataset_dir, tmp_path, protocols=("finetune",))
        evaluate("raw", tiny_dataset, finetune.eval, tmp_path / "x", data_cfg=job.data, log=str)


@pytest.mark.ray
@pytest.mark.slow
def test_transfer_to_a_dataset_with_another_class_count(ray_local, tiny_checkpoint, tmp_path):
    root, other = _separable(tmp_path)
    recipe = {**LEARNING_RECIPE, "epochs": 30}
    job = _job(root, tmp_path, protocols=("transfer",), finetune=recipe, eval_every=30)
    result = evaluate(
        tiny_checkpoint,
        other,
        job.eval,
        tmp_path / "out",
        data_cfg=job.data,
        scale=job.scale,
        log=str,
    )
    assert result.metrics["transfer_train_samples"] == other.split_size("xsub_train")
    ckpt_file = sorted((tmp_path / "runs").glob("eval-transfer/checkpoint_*/checkpoint.pt"))[-1]
    state = ckpt.read(ckpt_file)
    head = [v for k, v in state["model"].items() if k.startswith("head.") and v.ndim == 2][-1]
    assert head.shape[0] == other.num_classes == 5  # the target's classes, not pre-training's
    losses = [h["loss"] for h in state["history"]]
    assert losses[-1] < losses[0] * 0.9, losses  # it learns the new classes
    assert result.metrics["transfer_top1"] > 1 / 5 + 0.1  # above chance (0.2)


def test_jobs_report_bad_input_in_one_line(tiny_checkpoint, tiny_dataset_dir, tmp_path, capsys):
    from stars.cli.pretrain import main as pretrain_main

    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--checkpoint", str(tiny_checkpoint), "--data", str(missing)])
    assert exit_info.value.code == 2
    assert f"{missing} is not a STARS dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        args = ["--checkpoint", "raw", "--out", str(tmp_path / "o"), "--protocol", "bogus"]
        evaluate_main([*args, "--data", str(tiny_dataset_dir)])
    assert "has no protocol 'bogus'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        pretrain_main(["--data", str(missing), "--no-tracking"])
    assert exit_info.value.code == 2
    assert "pretrain.py: error:" in capsys.readouterr().err
