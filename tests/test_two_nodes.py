"""The README's ``ray job submit`` on a real two-node Ray cluster (two ``ray start`` nodes on
loopback, token auth, CPUs limited so the work spans both), with an MLflow server: the main
job and a sweep succeed, and every result is under the storage root the job named, none in
Ray's temporary package copy. Nodes and server are stopped by their process ids."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import S3_CREDENTIALS, free_port, mlflow_server, s3_bucket

from stars.paths import JOB_PACKAGE_MARK
from stars.tracking import runs as tr

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
JOB_TIMEOUT_S = 900


def _stop(process: subprocess.Popen) -> None:
    """``ray start --block`` stops its node on SIGTERM; whatever is left of its process
    group (its session) is killed after a grace period."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _ray(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RAY, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def _wait_for_cpus(env: dict[str, str], gcs: str, cpus: float, deadline_s: float = 120) -> None:
    deadline = time.time() + deadline_s
    while True:
        status = _ray(env, "status", "--address", gcs)
        if status.returncode == 0 and f"/{cpus:.1f} CPU" in status.stdout:
            return
        if time.time() > deadline:
            raise RuntimeError(f"cluster did not reach {cpus} CPUs: {status.stdout[-800:]}")
        time.sleep(2)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_endpoint) -> Iterator[dict]:
    """Head (1 CPU) + worker node (2 CPUs), each with its own temp dir (nodes sharing one on
    a machine delete each other's job packages), token auth, loopback only; both nodes have
    credentials for the test S3 server."""
    tmp = tmp_path_factory.mktemp("two-nodes")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    env.update(S3_CREDENTIALS)
    env.update(
        STARS_MIRROR_DIR=str(tmp / "mirror"),
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        RAY_USAGE_STATS_ENABLED="0",
        # a job runs the python that `ray start` finds first on its PATH
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    # Ray's socket paths must stay short: temp dirs directly under /tmp.
    head_tmp = tempfile.mkdtemp(prefix="rh-", dir="/tmp")
    worker_tmp = tempfile.mkdtemp(prefix="rw-", dir="/tmp")
    gcs, dashboard = free_port(), free_port()
    common = ["--node-ip-address=127.0.0.1", "--block"]
    started: list[subprocess.Popen] = []
    try:
        with (tmp / "head.log").open("w") as log:
            started.append(
                subprocess.Popen(
                    [RAY, "start", "--head", "--num-cpus=1", f"--port={gcs}",
                     f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1",
                     f"--ray-client-server-port={free_port()}",
                     f"--dashboard-agent-listen-port={free_port()}",
                     f"--temp-dir={head_tmp}", *common],
                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            )  # fmt: skip
        _wait_for_cpus(env, f"127.0.0.1:{gcs}", 1)
        with (tmp / "worker.log").open("w") as log:
            started.append(
                subprocess.Popen(
                    [RAY, "start", f"--address=127.0.0.1:{gcs}", "--num-cpus=2",
                     f"--dashboard-agent-listen-port={free_port()}",
                     f"--temp-dir={worker_tmp}", *common],
                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
            )  # fmt: skip
        _wait_for_cpus(env, f"127.0.0.1:{gcs}", 3)
        with mlflow_server(
            f"sqlite:///{tmp / 'mlflow.db'}", tmp / "mlflow.log", tmp / "artifacts"
        ) as tracking:
            yield {
                "env": env,
                "worker": started[1],
                "address": f"http://127.0.0.1:{dashboard}",
                "tracking": tracking,
                "tmp": tmp,
                "head_tmp": Path(head_tmp),
                "worker_tmp": Path(worker_tmp),
                "s3": s3_endpoint,
            }
    finally:
        for process in reversed(started):
            _stop(process)
        shutil.rmtree(head_tmp, ignore_errors=True)
        shutil.rmtree(worker_tmp, ignore_errors=True)


def _submit(cluster: dict, *entrypoint: str) -> str:
    """``ray job submit --working-dir .`` exactly as the README writes it; its console."""
    done = _ray(
        cluster["env"], "job", "submit", "--address", cluster["address"], "--working-dir", ".",
        "--", "python", *entrypoint, timeout=JOB_TIMEOUT_S,
    )  # fmt: skip
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-4000:]
    return console


def _results_outside_packages(cluster: dict) -> None:
    """Nothing the job keeps was written into a job package copy on either node."""
    for node_tmp in (cluster["head_tmp"], cluster["worker_tmp"]):
        kept = [
            p
            for p in node_tmp.rglob("*")
            if JOB_PACKAGE_MARK in str(p)
            and (p.name in ("checkpoint.pt", "mlflow.db", "eval.json") or p.name == "mlruns")
        ]
        assert not kept, kept


def _actors_by_class(cluster: dict, class_name: str) -> list[dict]:
    listed = _ray(
        cluster["env"], "list", "actors", "--address", cluster["address"], "--detail",
        "--format", "json", "--limit", "10000", "--filter", f"class_name={class_name}",
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-2000:]
    return json.loads(listed.stdout)


def _head_node(cluster: dict) -> str:
    listed = _ray(
        cluster["env"], "list", "nodes", "--address", cluster["address"], "--format", "json"
    )
    assert listed.returncode == 0, listed.stderr[-2000:]
    (head,) = [n["node_id"] for n in json.loads(listed.stdout) if n["is_head_node"]]
    return head


@pytest.fixture(scope="module")
def main_job(cluster) -> dict:
    """The tiny main job's stage 1 and its kNN evaluation, two 1-CPU training workers: the
    head has one CPU, so at least one worker runs on the other node and writes checkpoints
    the head's driver then reads. (Stage 2 on two nodes: the sweep below, the S3 test and
    the README's two-node recipe, which runs the whole main job.)"""
    tmp = cluster["tmp"]
    console = _submit(
        cluster, "jobs/pretrain.py", "--preset", "tiny", "--name", "two-nodes",
        "--stage1-only", "--protocols", "knn",
        "--set", "scale.num_workers=2", "--set", "scale.cpus_per_worker=1",
        "--set", f"scale.storage_path={tmp / 'runs'}",
        "--set", f"data.synthetic.cache_dir={tmp / 'data'}",
        "--tracking-uri", cluster["tracking"],
    )  # fmt: skip
    return {"console": console, "client": tr.client(cluster["tracking"])}


def _runs(client, stage: str) -> list:
    exp = client.get_experiment_by_name("stars-synthetic")
    return list(client.search_runs([exp.experiment_id], f"tags.`{tr.STAGE}` = '{stage}'"))


def test_main_job_on_two_nodes_keeps_every_result(cluster, main_job):
    console, c = main_job["console"], main_job["client"]
    assert "[stage 1] 100%" in console and "[stage 2]" not in console
    assert "compare:" in console and "Traceback" not in console
    tmp = cluster["tmp"]
    (stage1,) = _runs(c, "stage1")
    assert stage1.info.status == "FINISHED" and "knn_top1" in stage1.data.metrics
    checkpoint = Path(stage1.data.tags[tr.CHECKPOINT])
    assert checkpoint.is_file() and (tmp / "runs") in checkpoint.parents
    # artifacts went through the server to its destination, outside any package copy
    assert c.list_artifacts(stage1.info.run_id)
    assert any((tmp / "artifacts").rglob("eval.json"))
    assert any((tmp / "data").glob("synthetic-*/manifest.json"))
    _results_outside_packages(cluster)


def test_training_workers_ran_beside_the_driver_node(cluster, main_job):
    """Stage 1's checkpoints were written on the worker node and read by the head's driver
    (evaluation) and by the sweep's trials: the storage root really is shared."""
    head = _head_node(cluster)
    workers = _actors_by_class(cluster, "RayTrainWorker")
    assert workers, "no training workers recorded"
    assert any(w["node_id"] != head for w in workers)
    supervisors = _actors_by_class(cluster, "JobSupervisor")
    assert supervisors and all(s["node_id"] == head for s in supervisors)


def test_a_sweep_on_two_nodes(cluster, main_job):
    c = main_job["client"]
    (stage1,) = _runs(c, "stage1")
    tmp = cluster["tmp"]
    console = _submit(
        cluster, "jobs/sweep_stage2.py", "--stage1-runs", stage1.info.run_id,
        "--preset", "tiny", "--space", "search_spaces/tiny.yaml", "--num-samples", "1",
        "--name", "two-node-sweep", "--set", f"scale.storage_path={tmp / 'runs'}",
        "--set", f"data.synthetic.cache_dir={tmp / 'data'}",
        # A TorchTrainer per trial (not in the trial's process): that path on two nodes.
        "--set", "sweep.in_process=false",
        "--tracking-uri", cluster["tracking"],
    )  # fmt: skip
    assert "best trial:" in console
    (sweep,) = _runs(c, "sweep")
    assert sweep.info.status == "FINISHED" and sweep.data.metrics["trials_done"] == 1
    trials = [r for r in _runs(c, "stage2") if r.data.tags.get(tr.SWEEP) == "two-node-sweep"]
    assert len(trials) == 1
    assert all(t.data.tags[tr.PARENT] == sweep.info.run_id for t in trials)
    assert (tmp / "runs" / "sweeps" / "two-node-sweep" / "results" / "results.csv").is_file()
    _results_outside_packages(cluster)


def test_results_on_s3_are_kept_there_and_enough_to_go_on(cluster):
    """No shared mount at all: the dataset, checkpoints, evaluation outputs and the job log
    go to S3, stage 2 reads stage 1's checkpoint from there, and a later job tunes that
    stage-1 run again from S3 alone after the local working copies are gone."""
    from stars import storage

    root = s3_bucket(cluster["s3"], "stars-runs")
    flags = ["--set", f"scale.storage_path={storage.join(root, 'runs')}"]
    flags += ["--set", f"data.synthetic.cache_dir={storage.join(root, 'data')}"]
    flags += ["--tracking-uri", cluster["tracking"], "--experiment", "on-s3"]
    console = _submit(
        cluster, "jobs/pretrain.py", "--preset", "tiny", "--name", "s3", "--protocols",
        "knn,fewshot", "--set", "scale.num_workers=2", "--set", "scale.cpus_per_worker=1",
        *flags,
    )  # fmt: skip
    assert (
        "[stars] results: checkpoints, Ray state and evaluation in s3://stars-runs/runs/s3"
        in console
    )
    assert "[stage 2] 100%" in console and "Traceback" not in console
    c = tr.client(cluster["tracking"])
    exp = c.get_experiment_by_name("on-s3")
    runs = {r.data.tags[tr.STAGE]: r for r in c.search_runs([exp.experiment_id])}
    assert set(runs) == {"baseline", "stage1", "stage2"}
    for stage, run in runs.items():
        assert run.info.status == "FINISHED", stage
        kept = run.data.tags[tr.CHECKPOINT]
        assert kept.startswith("s3://stars-runs/runs/") and storage.exists(kept), kept
        # evaluation outputs beside the checkpoint (a stage's run directory holds several)
        run_dir = storage.parent(kept)
        if stage != "baseline":
            run_dir = storage.parent(run_dir)
        assert storage.exists(storage.join(run_dir, "eval", "eval.json")), stage
    stage1, stage2 = runs["stage1"], runs["stage2"]
    assert stage2.data.tags[tr.SOURCE_CHECKPOINT] == stage1.data.tags[tr.CHECKPOINT]
    assert storage.exists(storage.join(root, "runs", "s3.log"))
    assert storage.subdirectories(storage.join(root, "data"))[0].startswith("synthetic-")
    _results_outside_packages(cluster)

    shutil.rmtree(cluster["tmp"] / "mirror")  # the head's working copies: not needed
    console = _submit(
        cluster, "jobs/pretrain.py", "--preset", "tiny", "--name", "s3-again", "--protocols",
        "knn", "--from-run", stage1.info.run_id, *flags,
    )  # fmt: skip
    assert "[stage 2] 100%" in console and "Traceback" not in console
    again = [
        r
        for r in c.search_runs([exp.experiment_id])
        if r.data.tags.get(tr.STAGE) == "stage2" and r.info.run_id != stage2.info.run_id
    ]
    assert len(again) == 1 and again[0].info.status == "FINISHED"
    assert again[0].data.tags[tr.SOURCE_CHECKPOINT] == stage1.data.tags[tr.CHECKPOINT]

    # A sweep from that stage-1 run, its Tune state and trial runs in the bucket too.
    console = _submit(
        cluster, "jobs/sweep_stage2.py", "--stage1-runs", stage1.info.run_id,
        "--preset", "tiny", "--space", "search_spaces/tiny.yaml", "--num-samples", "1",
        "--name", "s3-sweep", *flags,
    )  # fmt: skip
    assert "best trial:" in console and "Traceback" not in console
    sweep_root = storage.join(root, "runs", "sweeps", "s3-sweep")
    assert "results: s3://stars-runs/runs/sweeps/s3-sweep/results/results.csv" in console
    assert storage.exists(storage.join(sweep_root, "results", "results.csv"))
    assert storage.exists(storage.join(sweep_root, "sweep.log"))
    trials = [
        r
        for r in c.search_runs([exp.experiment_id])
        if r.data.tags.get(tr.SWEEP) == "s3-sweep" and r.data.tags.get(tr.STAGE) == "stage2"
    ]
    assert len(trials) == 1 and all(t.info.status == "FINISHED" for t in trials)
    assert all(
        t.data.tags[tr.CHECKPOINT].startswith("s3://stars-runs/runs/sweeps/") for t in trials
    )


def test_a_lost_node_fails_the_job_in_bounded_time_naming_it(cluster, main_job):
    """Runs last: it kills the worker node. Stage-1 workers that need 2 CPUs can only run
    there; once it is gone the head's one CPU cannot hold them, so instead of Ray Train's
    endless restart attempts the job fails within its lost-node timeout, naming the node,
    and the MLflow run ends FAILED with its checkpoints kept."""
    tmp = cluster["tmp"]
    command = [
        RAY, "job", "submit", "--address", cluster["address"], "--working-dir", ".", "--",
        "python", "jobs/pretrain.py", "--preset", "tiny", "--name", "lost-node",
        "--stage1-only", "--protocols", "", "--set", "stage1.epochs=500",
        "--set", "scale.cpus_per_worker=2", "--set", "scale.max_failures=1",
        "--set", "scale.lost_node_timeout_s=20",
        "--set", f"scale.storage_path={tmp / 'runs'}",
        "--set", f"data.synthetic.cache_dir={tmp / 'data'}",
        "--tracking-uri", cluster["tracking"],
    ]  # fmt: skip
    with (tmp / "lost-node.log").open("w") as log:
        job = subprocess.Popen(
            command, cwd=ROOT, env=cluster["env"], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.time() + 300
        while not list((tmp / "runs" / "lost-node-stage1").glob("checkpoint_*")):
            assert job.poll() is None, (tmp / "lost-node.log").read_text()[-3000:]
            assert time.time() < deadline, "no checkpoint within 5 minutes"
            time.sleep(1)
        os.killpg(cluster["worker"].pid, signal.SIGKILL)
        lost_at = time.time()
        job.wait(timeout=300)  # never a hang: node death (~15 s) + the 20 s timeout
        waited = time.time() - lost_at
    finally:
        if job.poll() is None:
            job.kill()
            job.wait(timeout=30)
    console = (tmp / "lost-node.log").read_text()
    assert job.returncode != 0, console[-3000:]
    assert "was lost" in console and "scale.lost_node_timeout_s" in console, console[-3000:]
    assert waited < 240
    c = main_job["client"]
    (run,) = [r for r in _runs(c, "stage1") if r.info.run_id != _main_stage1(c)]
    assert run.info.status == "FAILED" and "was lost" in run.data.tags[tr.ERROR]
    assert list((tmp / "runs" / "lost-node-stage1").glob("checkpoint_*/checkpoint.pt"))


def _main_stage1(client) -> str:
    runs = [r for r in _runs(client, "stage1") if r.info.status == "FINISHED"]
    (main,) = runs
    return main.info.run_id
