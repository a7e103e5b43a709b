"""The end-of-session process check sees what a test leaves behind (it lists descendants)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from conftest import _descendants


def test_the_process_check_finds_a_child_and_its_child():
    code = "import subprocess, sys, time; subprocess.Popen(['sleep', '30']); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        for _ in range(100):
            found = _descendants(os.getpid())
            if any(cmd.startswith("sleep") for cmd in found.values()):
                break
            time.sleep(0.1)
        assert child.pid in found
        assert any(cmd.startswith("sleep 30") for cmd in found.values())
    finally:
        for pid in _descendants(child.pid):
            os.kill(pid, 9)
        child.kill()
        child.wait(timeout=10)
    assert child.pid not in _descendants(os.getpid())
