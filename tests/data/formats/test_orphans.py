"""Parser workers end when the conversion that started them is killed (SIGKILL included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CONVERSION = """
import os, sys, time
from stars.data.formats.convert import _parsed_stream

def slow_parse(item):
    time.sleep(0.5)
    return item

items = [(str(i), i) for i in range(400)]
for n, (name, result) in enumerate(_parsed_stream(slow_parse, items, workers=2)):
    if n == 0:
        print("parsing", flush=True)
"""


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killing_a_conversion_leaves_no_parser_worker():
    proc = subprocess.Popen([sys.executable, "-c", CONVERSION], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "parsing"
        workers = _children(proc.pid)
        assert len(workers) == 2
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.2)
    left = [w for w in workers if _alive(w)]
    for w in left:  # never leave them behind, even when the test fails
        os.kill(w, signal.SIGKILL)
    assert not left, f"parser workers {left} outlived their conversion"
