"""Where results are kept: a directory every node mounts, or an object-store URI
(``s3://bucket/stars/runs``, ``gs://...``; pyarrow's query options such as
``?endpoint_override=host:9000&scheme=http`` for an S3-compatible store).

Ray Train writes checkpoints to either, and every checkpoint reader accepts either
(:func:`stars.model.checkpoint.read`). Files the driver writes (evaluation outputs, the
random-init control, the job log) are written to a local directory first: the storage
directory itself, or, for a URI, its *mirror* under ``~/.cache/stars/mirror`` (or
``$STARS_MIRROR_DIR``); :func:`publish` then copies them to the URI. The mirror is a
working copy: what the job reports as kept is always the storage location.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from stars.errors import StarsError
from stars.location import Location, LocationError, is_uri

MIRROR_ENV = "STARS_MIRROR_DIR"


class StorageError(StarsError):
    """A storage location that would lose results, or that cannot be read or written."""


def join(location: str, *parts: str) -> str:
    """``location/part/...`` for a directory or a URI (its query kept at the end)."""
    if not is_uri(location):
        return str(Path(location, *parts))
    head, sep, query = location.partition("?")
    tail = "/".join(p.strip("/") for p in parts if p.strip("/"))
    return head.rstrip("/") + (f"/{tail}" if tail else "") + sep + query


def parent(location: str) -> str:
    """The directory that holds ``location``."""
    if not is_uri(location):
        return str(Path(location).parent)
    head, sep, query = location.partition("?")
    return head.rstrip("/").rsplit("/", 1)[0] + sep + query


def shown(location: str) -> str:
    """``location`` for messages and tables: a URI without its query."""
    return location.partition("?")[0] if is_uri(location) else location


def uri_of(fs_path: str, like: str) -> str:
    """A path inside ``like``'s file system (what Ray Train reports, e.g.
    ``bucket/runs/job/checkpoint_000003``) as a URI with ``like``'s scheme and query."""
    if not is_uri(like):
        return fs_path
    scheme = like.split("://", 1)[0]
    query = like.partition("?")[2]
    return f"{scheme}://{fs_path.strip('/')}" + (f"?{query}" if query else "")


def mirror_root() -> Path:
    return Path(os.environ.get(MIRROR_ENV) or Path.home() / ".cache" / "stars" / "mirror")


def local_dir(location: str) -> Path:
    """The local directory whose files belong at ``location``: the directory itself, or the
    URI's mirror (``<mirror>/<scheme>/<bucket>/<path>``)."""
    if not is_uri(location):
        return Path(location)
    scheme, rest = shown(location).split("://", 1)
    return mirror_root() / scheme / rest.strip("/")


def _open(location: str) -> Location:
    try:
        return Location.of(location, "a storage location")
    except LocationError as err:
        raise StorageError(str(err)) from None


def exists(location: str) -> bool:
    """Whether a file exists at ``location``."""
    if not is_uri(location):
        return Path(location).is_file()
    loc = _open(location)
    try:
        return loc.filesystem.get_file_info(loc.base).type == pafs.FileType.File
    except (pa.ArrowException, OSError) as err:
        raise StorageError(f"{shown(location)}: cannot be read ({err})") from None


def read_bytes(location: str) -> bytes:
    """The bytes of the file at ``location``."""
    if not is_uri(location):
        return Path(location).read_bytes()
    loc = _open(location)
    try:
        with loc.filesystem.open_input_stream(loc.base) as f:
            return f.read()
    except (pa.ArrowException, OSError) as err:
        raise StorageError(f"{shown(location)}: cannot be read ({err})") from None


def subdirectories(location: str) -> list[str]:
    """Names of the directories directly under ``location`` (none when it does not exist)."""
    if not is_uri(location):
        root = Path(location)
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    loc = _open(location)
    try:
        infos = loc.filesystem.get_file_info(pafs.FileSelector(loc.base, allow_not_found=True))
    except (pa.ArrowException, OSError) as err:
        raise StorageError(f"{shown(location)}: cannot be listed ({err})") from None
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def fetch(location: str) -> Path:
    """A local copy of the file at ``location`` (the file itself when it is local; for a URI
    its mirror, downloaded when missing or of another size)."""
    if not is_uri(location):
        return Path(location)
    local = local_dir(location)
    loc = _open(location)
    try:
        size = loc.filesystem.get_file_info(loc.base).size
        if not (local.is_file() and local.stat().st_size == size):
            local.parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(loc.base, str(local), source_filesystem=loc.filesystem)
    except (pa.ArrowException, OSError) as err:
        raise StorageError(f"{shown(location)}: cannot be downloaded ({err})") from None
    return local


def publish(local: Path, location: str) -> None:
    """Copy the file or directory tree ``local`` to ``location``; nothing to do when
    ``location`` is a directory (``local`` is then that directory: :func:`local_dir`)."""
    if not is_uri(location):
        return
    loc = _open(location)
    try:
        if local.is_dir():
            loc.filesystem.create_dir(loc.base, recursive=True)
        pafs.copy_files(str(local), loc.base, destination_filesystem=loc.filesystem)
    except (pa.ArrowException, OSError) as err:
        raise StorageError(f"cannot copy {local} to {shown(location)} ({err})") from None


def write_probe(location: str) -> str:
    """Write and delete a probe object at the URI ``location``: "" when that works, else why
    not (a missing bucket, missing credentials, ...)."""
    try:
        loc = _open(location)
        probe = f"{loc.base}/.stars-probe-{uuid.uuid4().hex}"
        with loc.filesystem.open_output_stream(probe) as f:
            f.write(b"probe")
        loc.filesystem.delete_file(probe)
    except (pa.ArrowException, OSError, StorageError) as err:
        return " ".join(str(err).split())[:300] or type(err).__name__
    return ""


def check_writable(location: str, what: str, flag: str) -> None:
    """A URI ``location`` this machine cannot write to fails now (a missing bucket or
    missing credentials), not after training; nothing to check for a directory."""
    if not is_uri(location):
        return
    reason = write_probe(location)
    if reason:
        raise StorageError(
            f"{what}={shown(location)} cannot be written from this machine ({reason}). Check "
            f"the bucket exists and the credentials (AWS_* variables, an instance role, "
            f"GOOGLE_APPLICATION_CREDENTIALS), or set {flag} to another location"
        )
