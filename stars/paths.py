"""Paths that outlive the job.

Under ``ray job submit --working-dir .`` the driver runs inside Ray's temporary copy of the
working directory, which Ray deletes after the job: relative storage, data-cache and SQLite
paths would land there and be lost. Every job resolves its paths here, once, on the driver.
"""

from __future__ import annotations

from pathlib import Path

from stars.location import Location, LocationError
from stars.storage import StorageError

__all__ = ["StorageError", "check_kept", "check_tracking_uri", "job_package_dir"]

JOB_PACKAGE_MARK = "runtime_resources/working_dir_files"


def job_package_dir(cwd: Path | None = None) -> Path | None:
    """The temporary working-directory copy this driver runs in (``ray job submit``), or None."""
    cwd = (cwd or working_dir()).resolve()
    return cwd if JOB_PACKAGE_MARK in str(cwd) else None


def working_dir() -> Path:
    """The current directory; a clear error when it was deleted under the running job."""
    try:
        return Path.cwd()
    except FileNotFoundError:
        # Seen with two `ray start` nodes on one machine sharing a --temp-dir: one node's
        # runtime-env cleanup deletes the job package the driver runs in.
        raise StorageError(
            "the job's working directory was deleted while it ran: Ray removed its copy of "
            "--working-dir. Nodes on one machine must not share a temp dir: start each with "
            "its own `ray start --temp-dir=...`"
        ) from None


def check_kept(key: str, value: str, flag: str, cwd: Path | None = None) -> str:
    """``value`` as an absolute path or a URI that outlives the job; refuses a path inside a
    ``ray job submit`` package copy, naming the key and the ``flag`` that sets it."""
    if Location(value).remote:
        try:
            Location.of(value, "storage")  # a bad scheme or query fails now, not after training
        except LocationError as err:
            raise StorageError(f"{key}={err}; set {flag} to a directory or a URI") from None
        return value
    package = job_package_dir(cwd)
    path = (Path(value) if Path(value).is_absolute() else (cwd or working_dir()) / value).resolve()
    if package is not None and (path == package or package in path.parents):
        raise StorageError(
            f"{key}={value!r} resolves to {path}, inside the temporary copy of the working "
            f"directory that ray job submit runs in (Ray deletes it after the job): set {flag} "
            "to an absolute path on storage every node mounts"
        )
    return str(path)


def check_tracking_uri(uri: str, cwd: Path | None = None) -> None:
    """A SQLite store inside a ``ray job submit`` package copy would be deleted with it."""
    if not uri.startswith("sqlite:"):
        return
    path = uri.split(":///", 1)[-1]
    check_kept("tracking URI", path, "--tracking-uri (sqlite:////abs/path.db or a server)", cwd)
