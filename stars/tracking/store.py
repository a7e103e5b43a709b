"""The tracking store checked before anything expensive: a server that answers within
seconds, a SQLite file this process can write (or, for read-only tools, one that exists),
and a new store's schema created once even when two jobs start together."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from stars.errors import StarsError

SERVER_WAIT_S = 12.0  # a dead server is reported within 15 s, retries included
SQLITE_MAGIC = b"SQLite format 3\x00"


class TrackingStoreError(StarsError):
    """The MLflow tracking store cannot be used as asked."""


def check_store(uri: str, *, create: bool = True) -> None:
    """Fail in seconds, in one line, when ``uri`` cannot take this job's runs.

    ``create`` False (read-only tools): a store that does not exist yet is refused instead of
    being created empty."""
    if uri.startswith(("http://", "https://")):
        check_server(uri)
    elif uri.startswith("sqlite:"):
        check_sqlite(sqlite_path(uri), uri, create)
    elif "://" not in uri or uri.startswith("file:"):
        check_directory_store(Path(uri.removeprefix("file://")), uri, create)


def sqlite_path(uri: str) -> Path:
    return Path(uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else uri[len("sqlite:") :])


def check_server(uri: str, wait_s: float = SERVER_WAIT_S) -> None:
    """The server answers MLflow's REST API (retried for ``wait_s``: one that is starting
    gets a few seconds)."""
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search"
    body = json.dumps({"max_results": 1}).encode()
    deadline = time.monotonic() + wait_s
    reason = ""
    while True:
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        _add_auth(request)
        try:
            with urllib.request.urlopen(request, timeout=3) as response:
                response.read()
            return
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise TrackingStoreError(
                    f"MLflow tracking server {uri} refused this job ({err.code} {err.reason}): "
                    "set MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD"
                ) from None
            if err.code < 500:  # it answered: an API it does not know is not our check's business
                return
            reason = f"HTTP {err.code} {err.reason}"
        except (urllib.error.URLError, OSError) as err:
            reason = str(getattr(err, "reason", err))
        if time.monotonic() >= deadline:
            raise TrackingStoreError(
                f"MLflow tracking server {uri} does not answer ({reason}; tried for "
                f"{wait_s:g} s): start it (mlflow server ...), or leave out --tracking-uri to "
                "track in sqlite:///mlflow.db, or pass --no-tracking"
            )
        time.sleep(1.0)


def _add_auth(request: urllib.request.Request) -> None:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    user, password = (
        os.environ.get("MLFLOW_TRACKING_USERNAME"),
        os.environ.get("MLFLOW_TRACKING_PASSWORD"),
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    elif user and password:
        import base64

        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {basic}")


def check_sqlite(path: Path, uri: str, create: bool) -> None:
    if path.is_dir():
        raise TrackingStoreError(f"tracking URI {uri}: {path} is a directory, not a SQLite file")
    if not path.exists():
        if not create:
            raise TrackingStoreError(
                f"tracking URI {uri}: {path} does not exist (no MLflow store there; check the "
                "path, e.g. the sqlite:///mlflow.db the jobs wrote in their working directory)"
            )
        if not path.parent.is_dir():
            raise TrackingStoreError(f"tracking URI {uri}: directory {path.parent} does not exist")
        if not os.access(path.parent, os.W_OK):
            raise TrackingStoreError(
                f"tracking URI {uri}: cannot create {path.name} in {path.parent} (not writable)"
            )
        return
    with path.open("rb") as f:
        head = f.read(len(SQLITE_MAGIC))
    if head and head != SQLITE_MAGIC:
        raise TrackingStoreError(f"tracking URI {uri}: {path} is not a SQLite database")
    if create:
        problem = sqlite_write_problem(path)
        if problem:
            raise TrackingStoreError(
                f"tracking URI {uri}: cannot write {path} ({problem}), and a job writes its "
                "runs there: use a writable copy or another --tracking-uri"
            )


def sqlite_write_problem(path: Path) -> str:
    """Why SQLite cannot write ``path`` ("" when it can): a write lock is taken and given
    back, which is what MLflow's first write needs (file and directory permissions, a
    read-only mount, a file locked by another program)."""
    import sqlite3

    if not os.access(path, os.W_OK):
        return "the file is read-only"
    if not os.access(path.parent, os.W_OK):
        return f"its directory {path.parent} is read-only; SQLite writes its journal there"
    try:
        con = sqlite3.connect(str(path), timeout=30)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.rollback()
        finally:
            con.close()
    except sqlite3.Error as err:
        return str(err)
    return ""


def check_directory_store(path: Path, uri: str, create: bool) -> None:
    if path.is_file():
        if path.read_bytes()[: len(SQLITE_MAGIC)] == SQLITE_MAGIC:
            raise TrackingStoreError(
                f"tracking URI {uri} is a SQLite file given as a plain path: use "
                f"sqlite:///{path.resolve()}"
            )
        raise TrackingStoreError(f"tracking URI {uri}: {path} is a file, not an MLflow store")
    if not create and not path.is_dir():
        raise TrackingStoreError(f"tracking URI {uri}: {path} does not exist")


def prepare_schema(uri: str) -> None:
    """Create a new SQLite store's tables under a file lock: MLflow's own first-use set-up
    races when two jobs open one new file together (``duplicate column name``)."""
    if not uri.startswith("sqlite:"):
        return
    from filelock import FileLock

    from stars.tracking.runs import client

    path = sqlite_path(uri).resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    with FileLock(os.path.join(tempfile.gettempdir(), f"stars-mlflow-{digest}.lock"), timeout=300):
        client(uri).search_experiments(max_results=1)
