"""The main job end to end on the tiny preset, tracked in MLflow (SQLite and a real server)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import mlflow_server

from stars.cli.lineage import main as lineage_main
from stars.cli.pretrain import main as pretrain_main
from stars.cli.stage2 import main as stage2_main
from stars.model.checkpoint import read
from stars.tracking import lineage
from stars.tracking.runs import (
    CHECKPOINT,
    ERROR,
    PARENT,
    SOURCE_CHECKPOINT,
    SOURCE_RUN,
    STAGE,
    client,
    params_of,
)
from stars.workflow.main_job import cached_stage1_features

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FAST_EVAL = ["--eval-set", "fewshot_shots=[1,2]", "--eval-set", "fewshot_episodes=2"]


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
        *FAST_EVAL,
        *extra,
    ]


def _runs(mlflow_client, stage: str) -> list:
    exp = mlflow_client.get_experiment_by_name("stars-synthetic")
    return list(
        mlflow_client.search_runs([exp.experiment_id], filter_string=f"tags.`{STAGE}` = '{stage}'")
    )


def test_main_job_links_stages_in_mlflow(
    ray_local, tiny_dataset, tiny_dataset_dir, tmp_path, capsys, monkeypatch
):
    from stars.model.checkpoint import load_encoder

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert pretrain_main(_job(tiny_dataset_dir, tmp_path, uri, "demo")) == 0
    printed = capsys.readouterr().out
    assert "knn_top1" in printed and "mlflow ui --backend-store-uri" in printed
    c = client(uri)
    (s1,), (s2,) = _runs(c, "stage1"), _runs(c, "stage2")
    assert s1.info.status == s2.info.status == "FINISHED"
    (baseline,) = _runs(c, "baseline")  # the random-init control, in the summary too
    assert "knn_top1" in baseline.data.metrics and "baseline" in printed
    assert s2.data.tags[SOURCE_RUN] == s1.info.run_id
    assert s2.data.tags[SOURCE_CHECKPOINT] == s1.data.tags[CHECKPOINT]
    for run in (s1, s2):
        for metric in (
            "knn_top1",
            "linear_top1",
            "fewshot_1shot_mean",
            "cluster_silhouette",
            "loss",
        ):
            assert metric in run.data.metrics, (run.info.run_name, metric)
        load_encoder(run.data.tags[CHECKPOINT])
        names = {a.path for a in c.list_artifacts(run.info.run_id, "eval")}
        assert {"eval/tsne.png", "eval/eval.json", "eval/confusion.png"} <= names
        assert [a.path for a in c.list_artifacts(run.info.run_id, "checkpoint")]
        assert run.data.params["data.path"] == str(tiny_dataset_dir)
        assert run.inputs.dataset_inputs, "dataset input not logged"
        assert "stars.git_sha" in run.data.tags
    steps = [m.step for m in c.get_metric_history(s1.info.run_id, "loss")]
    assert steps == [0, 1]
    # The params are exactly what the workers received (the job config in each checkpoint).
    for run in (s1, s2):
        assert run.data.params == params_of(read(run.data.tags[CHECKPOINT])["job_config"])
    assert s2.data.params["data.num_frames"] == "32"
    assert s2.data.params["data.train_crop"] == "[1.0, 1.0]"
    assert s2.data.params["data.rotation"] == "0.0"
    assert s2.data.params["data.batch_size"] == s1.data.params["data.batch_size"]
    assert s2.data.tags[PARENT] == s1.info.run_id  # nested under its stage-1 run
    # Lineage queries.
    assert [r.info.run_id for r in lineage.descendants(c, s1.info.run_id)] == [s2.info.run_id]
    assert c.get_run(s2.info.run_id).data.tags[SOURCE_RUN] == s1.info.run_id
    assert lineage.best_descendant(c, s1.info.run_id, "knn_top1").info.run_id == s2.info.run_id
    tree = lineage.lineage_tree(c)
    assert [n.run_id for n in tree] == [s1.info.run_id]
    assert [ch.run_id for ch in tree[0].children] == [s2.info.run_id]
    model = c.search_registered_models()[0]
    assert set(model.aliases) == {"stage1-latest", "stage2-best-knn"}
    # The registered version is an MLflow model: its features are the evaluation's.
    import mlflow.pyfunc

    from stars.tracking.encoder_model import EncoderFeatures

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    loaded = mlflow.pyfunc.load_model(f"models:/{model.name}@stage2-best-knn")
    joints = tiny_dataset.read_split("xsub_test", ["joints"])["joints"][:3]
    direct = EncoderFeatures()
    direct.encoder = load_encoder(s2.data.tags[CHECKPOINT]).eval()
    x = joints.transpose(0, 2, 1, 3, 4)
    np.testing.assert_allclose(loaded.predict(x), direct.predict(None, x), rtol=1e-5, atol=1e-6)
    assert load_encoder(f"models:/{model.name}@stage2-best-knn").cfg == direct.encoder.cfg
    assert lineage_main(["--tracking-uri", uri, "--plot", str(tmp_path / "compare.png")]) == 0
    assert s2.info.run_id in capsys.readouterr().out
    assert (tmp_path / "compare.png").stat().st_size > 0
    # A second tuning of the same stage-1 run, by its MLflow id.
    assert (
        pretrain_main(_job(tiny_dataset_dir, tmp_path, uri, "again", "--from-run", s1.info.run_id))
        == 0
    )
    assert len(lineage.descendants(c, s1.info.run_id)) == 2
    # jobs/stage2.py from the same run: its params are what its workers received too.
    args = ["--from-run", s1.info.run_id, "--preset", "tiny", "--data", str(tiny_dataset_dir)]
    args += ["--set", f"scale.storage_path={tmp_path / 'runs'}", "--tracking-uri", uri]
    assert stage2_main([*args, "--set", "stage2.queue_size=24", "--name", "solo"]) == 0
    solo = [r for r in _runs(c, "stage2") if r.data.params["stage2.queue_size"] == "24"]
    assert len(solo) == 1 and solo[0].data.tags[PARENT] == s1.info.run_id
    assert solo[0].data.params == params_of(read(solo[0].data.tags[CHECKPOINT])["job_config"])
    assert cached_stage1_features(s1.data.tags[CHECKPOINT], tiny_dataset, "") is not None
    assert len(_runs(c, "stage1")) == 1


def test_crash_ends_failed_and_resume_continues_the_same_run(ray_local, tiny_dataset, tmp_path):
    from stars.config import load_layers
    from stars.eval.config import EvalConfig
    from stars.presets import job_preset
    from stars.tracking.config import TrackingConfig
    from stars.train.config import Stage1JobConfig, Stage2JobConfig
    from stars.train.faults import Fault
    from stars.workflow.config import resolve_main
    from stars.workflow.main_job import run_main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    stage1 = load_layers(
        Stage1JobConfig,
        job_preset("tiny", "stage1"),
        overrides=[
            "stage1.epochs=3",
            "scale.num_to_keep=10",
            f"scale.storage_path={tmp_path / 'runs'}",
        ],
    )
    stage2 = load_layers(Stage2JobConfig, job_preset("tiny", "stage2"))
    cfg = resolve_main(
        stage1, stage2, EvalConfig(protocols=()), TrackingConfig(uri=uri), tiny_dataset
    )
    marker = tmp_path / "failed-once"
    with pytest.raises(Exception, match="injected failure"):
        run_main(cfg, tiny_dataset, "crash", stage1_only=True, fault=Fault(14, str(marker)))
    c = client(uri)
    (run,) = _runs(c, "stage1")
    assert run.info.status == "FAILED"
    logged = [m.step for m in c.get_metric_history(run.info.run_id, "loss")]
    assert logged and logged == sorted(set(logged))
    assert run_main(cfg, tiny_dataset, "crash", stage1_only=True)  # resumes the Ray run
    (again,) = _runs(c, "stage1")
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert [m.step for m in c.get_metric_history(run.info.run_id, "loss")] == [0, 1, 2]
    # The loss steps look the same after a restart from scratch (the logger skips logged
    # epochs); the checkpoints do not: resumed, each epoch was checkpointed exactly once.
    ckpts = (tmp_path / "runs" / "crash-stage1").glob("checkpoint_*/checkpoint.pt")
    assert sorted(read(p)["epoch"] for p in ckpts) == [0, 1, 2]


def test_main_job_against_a_real_mlflow_server(ray_local, tiny_dataset_dir, tmp_path):
    store = f"sqlite:///{tmp_path / 'server.db'}"
    with mlflow_server(store, tmp_path / "server.log", tmp_path / "artifacts") as uri:
        args = _job(tiny_dataset_dir, tmp_path, uri, "http", "--protocols", "knn")
        assert pretrain_main(args) == 0
        c = client(uri)
        (s1,), (s2,) = _runs(c, "stage1"), _runs(c, "stage2")
        assert s2.data.tags[SOURCE_RUN] == s1.info.run_id
        assert "knn_top1" in s2.data.metrics
        stored = list((tmp_path / "artifacts").rglob("checkpoint.pt"))
        assert len(stored) == 2  # both checkpoints went through the server
        result = json.loads(next((tmp_path / "artifacts").rglob("eval.json")).read_text())
        assert "knn_top1" in result["metrics"]


def test_a_crashed_job_prints_the_error_and_the_failure_tail(
    ray_local, tiny_dataset_dir, tmp_path, capsys
):
    """Quiet by default never hides why a job died: a stage-2 worker that fails at start
    (99 frozen blocks of a 2-block encoder) ends the job with the error, the tail of the
    worker's traceback and where the logs are; exit status 1; the stage-2 run ends FAILED."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = _job(tiny_dataset_dir, tmp_path, uri, "crash", "--protocols", "")
    with pytest.raises(SystemExit) as exit_info:
        pretrain_main([*args, "--stage2-set", "stage2.frozen_blocks=99"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("pretrain.py: error: ")
    assert "last lines of the failure:" in err and "frozen_blocks must be in 0..2" in err
    assert "full logs:" in err
    log_file = err.split("full logs: ", 1)[1].split(" and Ray", 1)[0]
    logged = Path(log_file).read_text()
    assert "pretrain.py failed" in logged and "Traceback" in logged  # for a bug report
    c = client(uri)
    (failed,) = _runs(c, "stage2")
    assert failed.info.status == "FAILED"
    assert "frozen_blocks" in failed.data.tags[ERROR]
