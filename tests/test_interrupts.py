"""Ctrl-C and SIGTERM end a job with one line and status 130, from the main thread even
while work runs in a helper thread (where Ray Train and Tune install no handlers)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from stars.interrupts import interrupted_line, resume_command, wait_in_main_thread

JOB = """
import sys, time
from stars.interrupts import interruptible, wait_in_main_thread
with interruptible("job.py", "kept here", ["python", "job.py", "--name", "n1"]):
    print("ready", flush=True)
    wait_in_main_thread(lambda: time.sleep(60))
print("not interrupted")
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_the_job_with_one_line_and_status_130(sig):
    proc = subprocess.Popen(
        [sys.executable, "-c", JOB], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "not interrupted" not in out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == [
        f"job.py: interrupted ({sig.name}): kept here; resume with: python job.py --name n1"
    ]


def test_work_in_the_helper_thread_returns_or_raises_as_it_would_here():
    assert wait_in_main_thread(lambda: 41 + 1) == 42

    def boom():
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        wait_in_main_thread(boom)


def test_the_resume_command_is_the_command_as_typed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "jobs" / "pretrain.py"
    assert resume_command([str(script), "--name", "a b"]) == "python jobs/pretrain.py --name 'a b'"
    line = interrupted_line("p.py", "SIGTERM", "", ["x.py"])
    assert line == "p.py: interrupted (SIGTERM): resume with: python x.py"
