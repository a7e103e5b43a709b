"""Where results are kept, for the string-valued settings that name it (``scale.storage_path``,
checkpoint paths in MLflow tags, ``data.synthetic.cache_dir``): a directory every node mounts,
or an object-store URI (``s3://bucket/stars/runs``, ``gs://...``; pyarrow's query options
such as ``?endpoint_override=host:9000&scheme=http`` for an S3-compatible store).

Each helper reads its argument as a :class:`stars.location.Location` and asks it: Ray Train
writes checkpoints to either kind, every checkpoint reader accepts either
(:func:`stars.model.checkpoint.read`), and files the driver writes go to the location's local
working copy first (:attr:`Location.local_dir`), then :func:`publish` copies them.
"""

from __future__ import annotations

from pathlib import Path

from stars.location import (
    MIRROR_ENV,
    Location,
    LocationError,
    StorageError,
    mirror_root,
)

__all__ = [
    "MIRROR_ENV",
    "StorageError",
    "check_writable",
    "exists",
    "fetch",
    "join",
    "local_dir",
    "mirror_root",
    "parent",
    "publish",
    "read_bytes",
    "shown",
    "subdirectories",
    "uri_of",
    "write_probe",
]


def _at(location: str) -> Location:
    try:
        return Location.of(location, "a storage location")
    except LocationError as err:
        raise StorageError(str(err)) from None


def join(location: str, *parts: str) -> str:
    """``location/part/...`` for a directory or a URI (its query kept at the end)."""
    return Location(str(location)).join(*parts).text


def parent(location: str) -> str:
    """The directory that holds ``location``."""
    return Location(str(location)).parent.text


def shown(location: str) -> str:
    """``location`` for messages and tables: a URI without its query."""
    return Location(str(location)).shown


def uri_of(fs_path: str, like: str) -> str:
    """A path inside ``like``'s file system (what Ray Train reports) in ``like``'s form."""
    return Location(str(like)).uri_of(fs_path)


def local_dir(location: str) -> Path:
    """The local directory whose files belong at ``location`` (itself, or its mirror)."""
    return Location(str(location)).local_dir


def exists(location: str) -> bool:
    """Whether a file exists at ``location``."""
    try:
        return _at(location).exists()
    except LocationError as err:
        raise StorageError(str(err)) from None


def read_bytes(location: str) -> bytes:
    """The bytes of the file at ``location``."""
    try:
        return _at(location).read()
    except LocationError as err:
        raise StorageError(str(err)) from None


def subdirectories(location: str) -> list[str]:
    """Names of the directories directly under ``location`` (none when it does not exist)."""
    return _at(location).subdirectories()


def fetch(location: str) -> Path:
    """A local copy of the file at ``location`` (itself, or its downloaded mirror)."""
    return _at(location).fetch()


def publish(local: Path, location: str) -> None:
    """Copy ``local`` (a file or a tree) to ``location``; nothing to do for a directory."""
    _at(location).publish(local)


def write_probe(location: str) -> str:
    """ "" when a probe object can be written and deleted at ``location``, else why not."""
    try:
        return _at(location).write_probe()
    except StorageError as err:
        return " ".join(str(err).split())[:300]


def check_writable(location: str, what: str, flag: str) -> None:
    """A URI this machine cannot write to fails now, naming ``what`` and the ``flag``."""
    Location(str(location)).check_writable(what, flag)
