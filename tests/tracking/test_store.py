"""The tracking store is checked before anything expensive, and a new SQLite store opened by
two jobs at once is set up once."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stars.tracking import runs as tr
from stars.tracking.store import TrackingStoreError, check_store, prepare_schema


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_server_is_one_line_within_seconds():
    uri = f"http://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(TrackingStoreError) as err:
        check_store(uri)
    assert time.monotonic() - start < 15  # the contract the message states, not a speed target
    text = str(err.value)
    assert "\n" not in text and "does not answer" in text and "--no-tracking" in text


def test_read_only_tools_refuse_a_store_that_does_not_exist(tmp_path):
    uri = f"sqlite:///{tmp_path / 'typo.db'}"
    with pytest.raises(TrackingStoreError, match="does not exist"):
        check_store(uri, create=False)
    assert not (tmp_path / "typo.db").exists()
    check_store(uri, create=True)  # a job may create it


def test_a_sqlite_file_given_as_a_bare_path_gets_the_uri_to_use(tmp_path):
    db = tmp_path / "mlflow.db"
    tr.client(f"sqlite:///{db}").search_experiments()
    with pytest.raises(TrackingStoreError, match=f"use sqlite:///{db}"):
        check_store(str(db), create=False)


def test_a_file_that_is_no_database_is_refused(tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_text("hello")
    with pytest.raises(TrackingStoreError, match="not a SQLite database"):
        check_store(f"sqlite:///{bad}")


def _make_read_only(path: Path) -> bool:
    """chattr +i (read-only even for root) or, failing that, chmod; False when neither
    makes the file unwritable here."""
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)]).returncode == 0:
        return True
    path.chmod(0o444)
    try:
        with path.open("ab"):
            return False
    except PermissionError:
        return True


def test_a_read_only_store_is_refused_before_the_job_starts(tmp_path):
    db = tmp_path / "mlflow.db"
    tr.client(f"sqlite:///{db}").search_experiments()
    if not _make_read_only(db):
        pytest.skip("cannot make a file read-only here")
    try:
        with pytest.raises(TrackingStoreError, match="cannot write"):
            check_store(f"sqlite:///{db}")
        check_store(f"sqlite:///{db}", create=False)  # reading it is fine
    finally:
        subprocess.run(["chattr", "-i", str(db)], capture_output=True)
        db.chmod(0o644)


MODE = "locked"  # "unlocked" shows the race the lock prevents
JOB = """
import sys, time
from stars.tracking import runs as tr
from stars.tracking.store import prepare_schema
uri, go = sys.argv[1], float(sys.argv[2])
while time.time() < go:
    time.sleep(0.001)
if sys.argv[3] == "locked":
    prepare_schema(uri)
c = tr.client(uri)
run = tr.StageRun.create(c, "e", "job", "stage1", {"a": 1})
run.end()
print("ok")
"""


@pytest.mark.parametrize("attempt", range(2))
def test_two_jobs_on_one_new_store_both_finish(tmp_path, attempt):
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    go = time.time() + 4  # both processes imported everything by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", JOB, uri, str(go), MODE],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-800:] for _, err in outs]
    runs = tr.client(uri).search_runs([tr.client(uri).get_experiment_by_name("e").experiment_id])
    assert len(runs) == 2


def test_prepare_schema_is_idempotent(tmp_path):
    uri = f"sqlite:///{tmp_path / 'x.db'}"
    prepare_schema(uri)
    prepare_schema(uri)
    assert tr.client(uri).search_experiments()
