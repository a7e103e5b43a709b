"""The fault suite: jobs interrupted, killed and misdirected as users do it, each checked for
the MLflow states it leaves and for leaving nothing running. Every job runs as its own
process session (tiny preset), killed by its group at the end whatever happens."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stars.model.checkpoint import SNAPSHOT, resolve_checkpoint
from stars.tracking import liveness
from stars.tracking import runs as tr

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"
TINY_SPACE = str(ROOT / "search_spaces" / "tiny.yaml")
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


class Job:
    """A job in its own process session; ``stop()`` kills whatever of it is left."""

    def __init__(self, script: str, args: list[str], cwd: Path):
        self.log = cwd / f"{script}-{time.monotonic_ns()}.log"
        self.out = self.log.open("w")
        env = {**os.environ, "RAY_ADDRESS": "", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(JOBS / script), *args],
            cwd=cwd,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, what, timeout: float = 400) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if what():
                return
            assert self.proc.poll() is None, f"the job ended first:\n{self.text()[-3000:]}"
            time.sleep(1)
        raise AssertionError(f"timed out waiting:\n{self.text()[-3000:]}")

    def wait(self, timeout: float = 600) -> int:
        return self.proc.wait(timeout=timeout)

    def session_pids(self) -> list[int]:
        return [pid for pid in _pids() if _sid(pid) == self.proc.pid]

    def stop(self) -> None:
        for pid in self.session_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=60)
        self.out.close()


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _stat(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return []


def _sid(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[3]) if len(fields) > 3 and fields[0] != "Z" else -1


def _left_running(job: Job, grace: float = 20) -> list[int]:
    """Processes of the job's session still alive ``grace`` seconds after it ended."""
    deadline = time.time() + grace
    while time.time() < deadline and job.session_pids():
        time.sleep(0.5)
    return job.session_pids()


def _listeners(pids: list[int]) -> list[tuple[str, int, int, str]]:
    """(address, port, pid, process name) of every listening TCP socket of ``pids``."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                continue
            hex_ip, hex_port = cols[1].split(":")
            raw = bytes.fromhex(hex_ip)
            # /proc/net stores the address as 32-bit words in host order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            ip = socket.inet_ntop(family, raw)
            pid = inodes[cols[9]]
            name = (
                Path(f"/proc/{pid}/comm").read_text().strip()
                if Path(f"/proc/{pid}").exists()
                else "?"
            )
            found.append((ip, int(hex_port, 16), pid, name))
    return found


def _runs(uri: str, stage: str = "") -> list:
    c = tr.client(uri)
    exp = c.get_experiment_by_name("stars-synthetic")
    if exp is None:
        return []
    query = f"tags.`{tr.STAGE}` = '{stage}'" if stage else ""
    return list(c.search_runs([exp.experiment_id], query))


@pytest.fixture
def place(tmp_path, tiny_dataset_dir):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--preset", "tiny", "--data", str(tiny_dataset_dir), "--tracking-uri", uri]
    common += ["--set", f"scale.storage_path={tmp_path / 'runs'}"]
    return {"uri": uri, "common": common, "tmp": tmp_path}


def _epoch_started(job: Job):
    return lambda: "[stage 1]" in job.text() and "epoch" in job.text()


def test_ctrl_c_ends_runs_killed_then_resume_clears_the_record(place):
    # Stage 1 alone: the interruption and the resume are the point, not stage 2.
    args = [*place["common"], "--name", "cc", "--stage1-only", "--protocols", ""]
    args += ["--set", "stage1.epochs=8"]
    job = Job("pretrain.py", args, place["tmp"])
    run_dir = place["tmp"] / "runs" / "cc-stage1"
    try:
        job.wait_for(lambda: (run_dir / SNAPSHOT).exists())  # a checkpoint is registered
        # Loopback only while the job trains: every Ray service and worker. The one
        # exception is torch's process-group store in each training worker (torch binds it
        # to every interface; README says so).
        open_ports = _listeners(job.session_pids())
        assert open_ports, "no listening socket found: the check saw nothing"
        wide = [p for p in open_ports if p[0] not in LOOPBACK]
        assert all(name.startswith("ray::RayTrainWo") for *_, name in wide), wide
        assert len(wide) <= 1, wide
        job.proc.send_signal(signal.SIGINT)
        assert job.wait(120) == 130
        assert not _left_running(job)
    finally:
        job.stop()
    lines = [ln for ln in job.text().splitlines() if "interrupted" in ln]
    assert len(lines) == 1 and "resume with:" in lines[0] and "--name cc" in lines[0]
    (stage1,) = _runs(place["uri"], "stage1")
    assert stage1.info.status == "KILLED"
    assert stage1.data.tags[liveness.ENDED_BY] == "SIGINT"
    # Only checkpoints Ray Train registered are taken from the run directory.
    registered = json.dumps(json.loads((run_dir / SNAPSHOT).read_text()))
    picked = Path(resolve_checkpoint(run_dir)).parent.name
    assert picked.startswith("checkpoint_") and picked in registered

    again = Job("pretrain.py", args, place["tmp"])
    try:
        assert again.wait(900) == 0, again.text()[-3000:]
    finally:
        again.stop()
    (stage1,) = _runs(place["uri"], "stage1")
    assert stage1.info.status == "FINISHED"
    assert tr.ERROR not in stage1.data.tags and liveness.ENDED_BY not in stage1.data.tags


def test_a_killed_driver_is_found_by_the_next_job(place):
    job = Job("pretrain.py", [*place["common"], "--name", "gone", "--stage1-only"], place["tmp"])
    try:
        job.wait_for(_epoch_started(job))
        os.kill(job.proc.pid, signal.SIGKILL)
        job.wait(60)
    finally:
        job.stop()
    (stage1,) = _runs(place["uri"], "stage1")
    assert stage1.info.status == "RUNNING"
    lineage = subprocess.run(
        [sys.executable, str(JOBS / "lineage.py"), "--tracking-uri", place["uri"]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert lineage.returncode == 0, lineage.stderr
    assert "was left RUNNING: ended FAILED" in lineage.stdout
    (stage1,) = _runs(place["uri"], "stage1")
    assert stage1.info.status == "FAILED"
    assert f"pid {job.proc.pid}" in stage1.data.tags[tr.ERROR]


def test_a_killed_training_worker_is_retried_and_the_run_ends_clean(place):
    args = [*place["common"], "--name", "wk", "--stage1-only", "--protocols", ""]
    args += ["--set", "scale.max_failures=1", "--set", "stage1.epochs=3"]
    job = Job("pretrain.py", args, place["tmp"])
    run_dir = place["tmp"] / "runs" / "wk-stage1"
    try:
        job.wait_for(lambda: (run_dir / SNAPSHOT).exists(), timeout=400)
        workers = [
            p for p in job.session_pids() if "RayTrainWo" in Path(f"/proc/{p}/comm").read_text()
        ]
        assert workers
        os.kill(workers[0], signal.SIGKILL)
        assert job.wait(900) == 0, job.text()[-3000:]
        assert not _left_running(job)
    finally:
        job.stop()
    (stage1,) = _runs(place["uri"], "stage1")
    assert stage1.info.status == "FINISHED"
    assert tr.ERROR not in stage1.data.tags


def test_an_interrupted_sweep_says_so_and_resume_finishes_it(place):
    base = Job(
        "pretrain.py",
        [*place["common"], "--name", "b", "--stage1-only", "--protocols", ""],
        place["tmp"],
    )
    try:
        assert base.wait(900) == 0, base.text()[-3000:]
    finally:
        base.stop()
    (stage1,) = _runs(place["uri"], "stage1")
    args = [*place["common"], "--stage1-runs", stage1.info.run_id, "--space", TINY_SPACE]
    args += ["--num-samples", "3", "--name", "cut"]
    sweep = Job("sweep_stage2.py", args, place["tmp"])
    try:
        sweep.wait_for(lambda: "done:" in sweep.text(), timeout=600)
        sweep.proc.send_signal(signal.SIGINT)
        assert sweep.wait(300) == 130, sweep.text()[-3000:]
        assert not _left_running(sweep)
    finally:
        sweep.stop()
    text = sweep.text()
    assert "PARTIAL: interrupted after" in text and "best trial:" not in text
    (run,) = _runs(place["uri"], "sweep")
    assert run.info.status == "KILLED"
    assert run.data.tags["stars.partial"].endswith("of 3 trials")
    assert "stars.best_trial" not in run.data.tags
    results = place["tmp"] / "runs" / "sweeps" / "cut" / "results"
    assert (results / "results.csv").exists() and not (results / "best_stage2.yaml").exists()
    trials = _runs(place["uri"], "stage2")
    assert trials and all(t.info.status in ("FINISHED", "KILLED") for t in trials)
    assert any(t.info.status == "KILLED" for t in trials)

    resumed = Job("sweep_stage2.py", [*args, "--resume"], place["tmp"])
    try:
        assert resumed.wait(900) == 0, resumed.text()[-3000:]
    finally:
        resumed.stop()
    trials = _runs(place["uri"], "stage2")
    assert len(trials) == 3 and len({t.data.tags[tr.TRIAL] for t in trials}) == 3
    assert all(t.info.status == "FINISHED" for t in trials)
    assert all(
        tr.PLACEHOLDER not in t.data.tags and "queue_size" in str(t.data.params) for t in trials
    )
    (run,) = _runs(place["uri"], "sweep")
    assert run.info.status == "FINISHED" and (results / "best_stage2.yaml").exists()


def test_a_dead_tracking_server_is_refused_before_ray_starts(place):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [a.replace(place["uri"], f"http://127.0.0.1:{port}") for a in place["common"]]
    start = time.monotonic()
    job = Job("pretrain.py", args, place["tmp"])
    try:
        assert job.wait(120) == 2
        took = time.monotonic() - start
        assert not _left_running(job, grace=5)
    finally:
        job.stop()
    errors = [ln for ln in job.text().splitlines() if "error:" in ln]
    assert len(errors) == 1 and "does not answer" in errors[0]
    assert "Traceback" not in job.text() and "[stage 1]" not in job.text()
    assert took < 60  # start-up included; the server check itself gives up after 12 s


def test_two_jobs_on_one_new_store_both_finish(place):
    jobs = [
        Job(
            "pretrain.py",
            [*place["common"], "--stage1-only", "--protocols", "", "--set", "stage1.epochs=1"],
            place["tmp"],
        )
        for _ in range(2)
    ]
    try:
        codes = [job.wait(900) for job in jobs]
    finally:
        for job in jobs:
            job.stop()
    assert codes == [0, 0], [job.text()[-2000:] for job in jobs]
    runs = _runs(place["uri"], "stage1")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags[tr.CHECKPOINT] for r in runs}) == 2  # names did not collide
