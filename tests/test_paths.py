"""Paths that outlive a ``ray job submit``: inside its package copy they are refused, naming
the key and the flag; elsewhere they are made absolute."""

from __future__ import annotations

import re

import pytest

from stars.paths import StorageError, check_kept, check_tracking_uri, job_package_dir


def test_paths_inside_a_job_package_are_refused(tmp_path):
    package = tmp_path / "session" / "runtime_resources" / "working_dir_files" / "_ray_pkg_ab12"
    package.mkdir(parents=True)
    assert job_package_dir(package) == package.resolve()
    with pytest.raises(StorageError, match=r"scale.storage_path='runs'.*set --set scale"):
        check_kept("scale.storage_path", "runs", "--set scale.storage_path", cwd=package)
    with pytest.raises(StorageError, match="tracking URI"):
        check_tracking_uri("sqlite:///mlflow.db", cwd=package)
    kept = tmp_path / "shared" / "runs"
    assert check_kept("x", str(kept), "--x", cwd=package) == str(kept.resolve())
    # A URI is kept as given (query included: it is how every reader opens it)...
    uri = "s3://b/runs?region=us-east-1"
    assert check_kept("scale.storage_path", uri, "--set scale.storage_path", cwd=package) == uri
    # ...once pyarrow can open it: an unknown scheme or option fails before any work.
    for bad, reason in [("s3://b/runs?colour=blue", "colour"), ("foo://b/runs", "foo")]:
        with pytest.raises(
            StorageError,
            match=rf"scale.storage_path={re.escape(bad)}: cannot be opened as "
            rf"storage .*{reason}.*; set --set scale.storage_path to a directory",
        ):
            check_kept("scale.storage_path", bad, "--set scale.storage_path", cwd=package)
    check_tracking_uri(f"sqlite:///{tmp_path / 'shared' / 'm.db'}", cwd=package)


def test_outside_a_job_relative_paths_become_absolute(tmp_path):
    assert job_package_dir(tmp_path) is None
    assert check_kept("x", "runs", "--x", cwd=tmp_path) == str((tmp_path / "runs").resolve())


def test_a_deleted_working_directory_is_named_with_its_cause(tmp_path, monkeypatch):
    """Two nodes on one machine sharing a temp dir delete each other's job package: the job
    says so instead of a bare FileNotFoundError."""
    gone = tmp_path / "pkg"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(StorageError, match=r"working directory was deleted.*--temp-dir"):
        check_kept("scale.storage_path", "runs", "--set scale.storage_path")
