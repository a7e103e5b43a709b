"""README shell blocks marked ``<!-- run-by-test: NAME -->`` run as written.

The block runs in bash from the checkout's root, in a process group of its own that is
stopped afterwards whatever happened (its Ray nodes and MLflow server included), with only
this interpreter's directory put first on PATH (what ``.venv/bin`` is in a checkout)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def readme_block(name: str) -> str:
    match = re.search(
        rf"<!-- run-by-test: {re.escape(name)} -->\n```bash\n(.*?)```", README.read_text(), re.S
    )
    assert match, f"README has no block marked run-by-test: {name}"
    return match.group(1)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _stop_group(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
        if sig == signal.SIGTERM:
            time.sleep(2)  # let Ray's node processes leave before the group is killed


def test_readme_has_the_marked_blocks():
    assert "ray job submit" in readme_block("two-nodes")


@pytest.mark.slow
@pytest.mark.ray
def test_two_node_recipe_runs_as_written(tmp_path):
    block = readme_block("two-nodes")
    # 52365 is the agent port every Ray node takes by default (a local ray.init too): not used
    ports = (6390, 8265, 5000, 52401, 52402)
    busy = [p for p in ports if not _port_free(p)]
    assert not busy, f"the README's ports are taken here: {busy}"
    dirs = [Path("/tmp/stars-2nodes"), Path("/tmp/ray-head"), Path("/tmp/ray-node2")]
    assert not any(d.exists() for d in dirs), f"left from an earlier run: {dirs}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    log = tmp_path / "console.log"
    script = tmp_path / "two-nodes.sh"
    script.write_text("set -euo pipefail\n" + block)
    with log.open("w") as out:
        process = subprocess.Popen(
            ["bash", str(script)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        code = process.wait(timeout=1500)
    finally:
        _stop_group(process)
        console = log.read_text()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    assert code == 0, console[-4000:]
    assert "[stage 1] 100%" in console and "[stage 2] 100%" in console
    assert "succeeded" in console and "Traceback" not in console
