"""Runs left RUNNING by a driver that died are found and ended FAILED with the reason; runs
whose driver lives are left alone."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from stars.tracking import liveness
from stars.tracking import runs as tr


def _dead_pid() -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    start = liveness.process_start(proc.pid)
    proc.kill()
    proc.wait()
    return proc.pid, start


def test_a_local_driver_is_alive_until_its_process_ends():
    here = liveness.Driver.parse(liveness.this_driver())
    assert here is not None and here.alive_here()
    pid, start = _dead_pid()
    assert not liveness.Driver(socket.gethostname(), pid, start).alive_here()


def test_a_reused_pid_is_not_mistaken_for_the_driver():
    import os

    me = liveness.Driver(socket.gethostname(), os.getpid(), "1")  # another start time
    assert not me.alive_here()


def test_stale_reason_by_process_here_and_by_heartbeat_elsewhere():
    now = time.time()
    host = socket.gethostname()
    pid, start = _dead_pid()
    dead_here = {liveness.DRIVER: f"{host}:{pid}:{start}", liveness.HEARTBEAT: str(int(now))}
    assert "ended without closing the run" in liveness.stale_reason(dead_here, now, host)
    alive_here = {liveness.DRIVER: liveness.this_driver(), liveness.HEARTBEAT: "0"}
    assert liveness.stale_reason(alive_here, now, host) == ""
    old = str(int(now - liveness.STALE_AFTER_S - 5))
    elsewhere = {liveness.DRIVER: "other-host:123:456", liveness.HEARTBEAT: old}
    assert "no heartbeat" in liveness.stale_reason(elsewhere, now, host)
    fresh = {**elsewhere, liveness.HEARTBEAT: str(int(now - 60))}
    assert liveness.stale_reason(fresh, now, host) == ""
    assert liveness.stale_reason({}, now, host) == ""  # no driver tag: nothing to judge by


def test_end_stale_runs_ends_only_the_orphans(tmp_path):
    c = tr.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    orphan = tr.StageRun.create(c, "e", "orphan", "stage1", {})
    live = tr.StageRun.create(c, "e", "live", "stage1", {})
    pid, start = _dead_pid()
    c.set_tag(orphan.run_id, liveness.DRIVER, f"{socket.gethostname()}:{pid}:{start}")
    liveness.beat(c, live.run_id)
    try:
        ended = liveness.end_stale_runs(c)
    finally:
        liveness.stop_beating(live.run_id)
    assert [name for name, _ in ended] == ["orphan"]
    run = c.get_run(orphan.run_id)
    assert run.info.status == "FAILED"
    assert f"pid {pid}" in run.data.tags[tr.ERROR]
    assert run.data.tags[liveness.ENDED_BY] == "driver lost"
    assert c.get_run(live.run_id).info.status == "RUNNING"


def test_active_marks_interruptions_killed_and_a_later_success_clears_the_error(tmp_path):
    import pytest

    c = tr.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = tr.StageRun.create(c, "e", "r", "stage1", {})
    with pytest.raises(KeyboardInterrupt), run.active():
        raise KeyboardInterrupt
    got = c.get_run(run.run_id)
    assert got.info.status == "KILLED" and got.data.tags[tr.ERROR] == "interrupted by SIGINT"
    with pytest.raises(SystemExit), run.active():
        raise SystemExit(130)
    assert c.get_run(run.run_id).info.status == "KILLED"
    with run.active():  # the resumed run goes on to finish
        pass
    got = c.get_run(run.run_id)
    assert got.info.status == "FINISHED"
    assert tr.ERROR not in got.data.tags and liveness.ENDED_BY not in got.data.tags
    with pytest.raises(RuntimeError), run.active():
        raise RuntimeError("boom")
    got = c.get_run(run.run_id)
    assert got.info.status == "FAILED" and got.data.tags[tr.ERROR] == "boom"
