"""A node lost mid-run, with room left on the others: the main job's stage 1 resumes from its
last checkpoint on the nodes that are left and ends as an uninterrupted run would (every
epoch once, MLflow run FINISHED). The failing branch (no room left: the job fails naming the
node) is in ``tests/test_two_nodes.py``.

The cluster is Ray's own multi-node test cluster (a raylet per node on this machine: a 1-CPU
head and two 2-CPU nodes), driven from a child process that stops every node it started."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import mlflow_server

from stars.tracking import runs as tr

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EPOCHS = 24  # tiny epochs take 0.2-2.5 s: the loss lands mid-run

SCRIPT = textwrap.dedent(
    """
    import contextlib, glob, json, os, signal, sys, threading, time
    import ray
    from ray._private import ray_constants
    from ray._private import state
    from ray.cluster_utils import Cluster
    from stars.cli.pretrain import main as pretrain_main

    runs, tracking, epochs = sys.argv[1], sys.argv[2], sys.argv[3]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes = [cluster.add_node(num_cpus=2) for _ in range(2)]
    lost = {}

    def descendants(pid):
        children = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = open(f"/proc/{entry}/stat").read()
                    children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(
                        int(entry)
                    )
        found, todo = [], [pid]
        while todo:
            kids = children.get(todo.pop(), [])
            found += kids
            todo += kids
        return found

    def lose_the_training_node():
        # once Ray Train has registered a checkpoint (its snapshot lists it: a checkpoint
        # directory on disk whose report the controller has not taken yet does not count),
        # the node that runs the training worker goes
        deadline = time.time() + 600

        def registered():
            for path in glob.glob(f"{runs}/*/checkpoint_manager_snapshot.json"):
                with contextlib.suppress(OSError, ValueError):
                    return len(json.load(open(path)).get("checkpoint_results", []))
            return 0

        while not registered() and time.time() < deadline:
            time.sleep(0.2)
        workers = [
            a
            for a in state.actors().values()
            if "TrainWorker" in a["ActorClassName"] and a["State"] == "ALIVE"
        ]
        node = next(n for n in nodes if n.node_id in {a["Address"]["NodeID"] for a in workers})
        lost.update(node=node.node_id, checkpoints=registered())
        # a machine that dies takes its processes with it: removing the node alone stops its
        # raylet, and a worker process may train on to the end
        raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
        doomed = set(descendants(raylet)) | {
            a["Pid"] for a in workers if a["Address"]["NodeID"] == node.node_id
        }
        cluster.remove_node(node, allow_graceful=False)
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(1)
        alive = []  # a killed process whose parent is gone may linger as a zombie: dead
        for pid in doomed:
            with contextlib.suppress(OSError, IndexError):
                stat = open(f"/proc/{pid}/stat").read()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
        lost.update(worker_pids=[a["Pid"] for a in workers], still_alive=alive)

    try:
        ray.init(address=cluster.address, log_to_driver=False)
        threading.Thread(target=lose_the_training_node, daemon=True).start()
        code = pretrain_main([
            "--preset", "tiny", "--stage1-only", "--name", "lost-node", "--protocols", "knn",
            "--set", f"stage1.epochs={epochs}", "--set", "scale.checkpoint_every=1",
            "--set", "scale.max_failures=2", "--set", "scale.cpus_per_worker=2",
            "--set", "scale.lost_node_timeout_s=120",
            "--set", f"scale.storage_path={runs}", "--tracking-uri", tracking,
        ])
        print("RESULT " + json.dumps({"code": code, **lost}), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    """
)


def test_a_lost_node_costs_only_the_epochs_since_the_last_checkpoint(tmp_path):
    runs = tmp_path / "runs"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # one node's file: behind a server
    with mlflow_server(store, tmp_path / "mlflow.log", tmp_path / "artifacts") as tracking:
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(runs), tracking, str(EPOCHS)],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=tmp_path,
        )
    results = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and results, (out.stdout[-3000:], out.stderr[-3000:])
    result = json.loads(results[0].removeprefix("RESULT "))
    assert result["code"] == 0 and result.get("node"), result  # a node was lost, the job won
    assert result["worker_pids"] and not result["still_alive"], result
    client = tr.client(store)
    (run,) = [
        r
        for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
        if r.data.tags.get(tr.STAGE) == "stage1"
    ]
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "resumes")
    by_epoch = {m.step: m.value for m in history}
    assert sorted(m.step for m in history) == list(range(EPOCHS))  # each epoch logged once
    # The epochs up to the last checkpoint ran once, before the loss; training went on from
    # there (not from epoch 0) after one resume, on the node that was left.
    first = [e for e in range(EPOCHS) if by_epoch[e] == 0]
    assert first == list(range(len(first))) and len(first) >= result["checkpoints"] >= 1
    assert all(by_epoch[e] == 1 for e in range(len(first), EPOCHS)), by_epoch
    assert len(first) < EPOCHS, "the node was lost after the run ended"
