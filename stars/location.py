"""Where data and results live, as one value: a local directory or file, or a URI that pyarrow
opens (``s3://``, ``gs://``, ``hdfs://``, ...).

A URI carries what pyarrow's ``FileSystem.from_uri`` accepts, e.g.
``s3://bucket/ntu60?region=eu-west-1`` or, for an S3-compatible store,
``s3://bucket/ntu60?endpoint_override=host:9000&scheme=http``; credentials come from the
usual environment (``AWS_ACCESS_KEY_ID``..., an instance role, ``GOOGLE_APPLICATION_CREDENTIALS``).
Every reader (pyarrow on the driver, Ray Data tasks on any node) goes through the same
file-system object, so a dataset that opens here opens everywhere the credentials reach.

Files the driver writes for a URI (evaluation outputs, the random-init control, the job log)
are written to a local *mirror* first, ``~/.cache/stars/mirror/<scheme>/<bucket>/<path>`` (or
``$STARS_MIRROR_DIR``), and :meth:`Location.publish` copies them to the URI. The mirror is a
working copy: what a job reports as kept is always the location itself.

This module is the only place that tells a local path from a URI: everything else asks a
:class:`Location` (or the string helpers of :mod:`stars.storage`, which wrap it).
"""

from __future__ import annotations

import functools
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from stars.errors import StarsError

MIRROR_ENV = "STARS_MIRROR_DIR"


def is_uri(path: str | Path) -> bool:
    """``s3://...``, ``gs://...``, ``file://...``: anything pyarrow resolves by scheme."""
    return "://" in str(path)


class LocationError(StarsError):
    """A location that cannot be opened (unknown scheme, bad query, no access)."""


class StorageError(StarsError):
    """A storage location that would lose results, or that cannot be read or written."""


def mirror_root() -> Path:
    return Path(os.environ.get(MIRROR_ENV) or Path.home() / ".cache" / "stars" / "mirror")


@functools.lru_cache(maxsize=64)
def _open_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    # Opening an S3 bucket without ``?region=`` asks S3 for its region: once per process.
    fs, base = pafs.FileSystem.from_uri(uri)
    return fs, base.rstrip("/")


@dataclass(frozen=True)
class Location:
    """A place that holds files: ``text`` is what the user typed (a local path, or a URI with
    its query), and is what configs, MLflow and messages record. The file system and the
    path inside it are resolved on first use."""

    text: str

    @classmethod
    def of(cls, text: str | Path, what: str = "a dataset location") -> Location:
        """The location ``text`` names; a URI that pyarrow cannot open is a LocationError
        naming ``what`` it was meant to be (checked now, not at the first read)."""
        loc = cls(str(text))
        if loc.remote:
            try:
                loc.filesystem  # noqa: B018 - opens and caches it
            except (pa.ArrowException, OSError, ValueError) as err:
                reason = " ".join(str(err).split())[:300]
                raise LocationError(f"{text}: cannot be opened as {what} ({reason})") from err
        return loc

    # -- what it is ----------------------------------------------------------------------
    @property
    def remote(self) -> bool:
        """Whether the files live behind a URI (else on this machine's file system)."""
        return is_uri(self.text)

    @property
    def filesystem(self) -> pafs.FileSystem:
        return _open_uri(self.text)[0] if self.remote else pafs.LocalFileSystem()

    @property
    def base(self) -> str:
        """The location inside :attr:`filesystem` (a local path as given, or bucket/key)."""
        return _open_uri(self.text)[1] if self.remote else self.text

    @property
    def reader_filesystem(self) -> pafs.FileSystem | None:
        """What to pass readers (pyarrow, Ray Data) as ``filesystem``: None for a local path,
        which they open themselves."""
        return self.filesystem if self.remote else None

    @property
    def shown(self) -> str:
        """For messages and tables: a URI without its query (which may hold endpoints)."""
        return self.text.partition("?")[0] if self.remote else self.text

    @property
    def absolute(self) -> str:
        """As jobs record it: a URI as given, a local path made absolute."""
        return self.text if self.remote else str(Path(self.text).resolve())

    # -- names under it ------------------------------------------------------------------
    def join(self, *parts: str) -> Location:
        """``self/part/...`` (a URI's query stays at the end)."""
        if not self.remote:
            return Location(str(Path(self.text, *parts)))
        head, sep, query = self.text.partition("?")
        tail = "/".join(p.strip("/") for p in parts if p.strip("/"))
        return Location(head.rstrip("/") + (f"/{tail}" if tail else "") + sep + query)

    @property
    def parent(self) -> Location:
        """The directory that holds this location."""
        if not self.remote:
            return Location(str(Path(self.text).parent))
        head, sep, query = self.text.partition("?")
        return Location(head.rstrip("/").rsplit("/", 1)[0] + sep + query)

    def path(self, name: str) -> str:
        """``name`` (relative to this location) as a path inside :attr:`filesystem`."""
        return f"{self.base}/{name}" if self.remote else str(Path(self.base) / name)

    def show(self, name: str = "") -> str:
        """``name`` under this location, for messages (a URI without its query)."""
        return self.join(name).shown if name else self.shown

    def uri_of(self, fs_path: str) -> str:
        """A path inside this location's file system (what Ray Train reports, e.g.
        ``bucket/runs/job/checkpoint_000003``) in the form the user wrote this location: a
        URI with its scheme and query, or the local path itself."""
        if not self.remote:
            return fs_path
        scheme = self.text.split("://", 1)[0]
        query = self.text.partition("?")[2]
        return f"{scheme}://{fs_path.strip('/')}" + (f"?{query}" if query else "")

    # -- reading -------------------------------------------------------------------------
    def _info(self, path: str) -> pafs.FileInfo:
        try:
            return self.filesystem.get_file_info(path)
        except (pa.ArrowException, OSError) as err:
            raise LocationError(f"{self.shown}: cannot be read ({err})") from err

    def size(self, name: str) -> int | None:
        """Bytes of ``name`` under this location, or None when there is no such file."""
        info = self.join(name)._info(self.path(name))
        return info.size if info.type == pafs.FileType.File else None

    def exists(self) -> bool:
        """Whether a file exists at this location."""
        if not self.remote:
            return Path(self.text).is_file()
        return self._info(self.base).type == pafs.FileType.File

    def read(self, name: str = "") -> bytes:
        """The bytes of the file at this location (or of ``name`` under it)."""
        target = self.join(name) if name else self
        try:
            if not target.remote:
                return Path(target.text).read_bytes()
            with target.filesystem.open_input_stream(target.base) as f:
                return f.read()
        except (pa.ArrowException, OSError) as err:
            raise LocationError(f"{target.shown}: cannot be read ({err})") from err

    def read_bytes(self, name: str) -> bytes:
        return self.read(name)

    def subdirectories(self) -> list[str]:
        """Names of the directories directly under this location (none when it is absent)."""
        if not self.remote:
            root = Path(self.text)
            return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        try:
            selector = pafs.FileSelector(self.base, allow_not_found=True)
            infos = self.filesystem.get_file_info(selector)
        except (pa.ArrowException, OSError) as err:
            raise StorageError(f"{self.shown}: cannot be listed ({err})") from None
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    # -- the local working copy ----------------------------------------------------------
    @property
    def local_dir(self) -> Path:
        """The local directory whose files belong here: the directory itself, or the URI's
        mirror (``<mirror>/<scheme>/<bucket>/<path>``)."""
        if not self.remote:
            return Path(self.text)
        scheme, rest = self.shown.split("://", 1)
        return mirror_root() / scheme / rest.strip("/")

    def fetch(self) -> Path:
        """A local copy of the file here: the file itself when local; for a URI its mirror,
        downloaded when missing or of another size."""
        local = self.local_dir
        if not self.remote:
            return local
        try:
            size = self.filesystem.get_file_info(self.base).size
            if not (local.is_file() and local.stat().st_size == size):
                local.parent.mkdir(parents=True, exist_ok=True)
                pafs.copy_files(self.base, str(local), source_filesystem=self.filesystem)
        except (pa.ArrowException, OSError) as err:
            raise StorageError(f"{self.shown}: cannot be downloaded ({err})") from None
        return local

    def publish(self, local: Path) -> None:
        """Copy the file or directory tree ``local`` here; nothing to do for a local location
        (``local`` is then this directory: :attr:`local_dir`)."""
        if not self.remote:
            return
        try:
            if local.is_dir():
                self.filesystem.create_dir(self.base, recursive=True)
            pafs.copy_files(str(local), self.base, destination_filesystem=self.filesystem)
        except (pa.ArrowException, OSError) as err:
            raise StorageError(f"cannot copy {local} to {self.shown} ({err})") from None

    # -- writing -------------------------------------------------------------------------
    def write_probe(self) -> str:
        """Write and delete a probe object here: "" when that works, else why not (a missing
        bucket, missing credentials, ...)."""
        try:
            fs = self.filesystem
            probe = f"{self.base}/.stars-probe-{uuid.uuid4().hex}"
            with fs.open_output_stream(probe) as f:
                f.write(b"probe")
            fs.delete_file(probe)
        except (pa.ArrowException, OSError, ValueError, StarsError) as err:
            return " ".join(str(err).split())[:300] or type(err).__name__
        return ""

    def check_writable(self, what: str, flag: str) -> None:
        """A URI this machine cannot write to fails now (a missing bucket or missing
        credentials), not after training; a local directory is created when written."""
        if not self.remote:
            return
        reason = self.write_probe()
        if reason:
            raise StorageError(
                f"{what}={self.shown} cannot be written from this machine ({reason}). Check "
                f"the bucket exists and the credentials (AWS_* variables, an instance role, "
                f"GOOGLE_APPLICATION_CREDENTIALS), or set {flag} to another location"
            )


def unsafe_name_reason(name: object) -> str:
    """Why ``name`` is not a plain file name that stays inside its directory ("" when it
    is one): names taken from data (manifest shard names, index sample ids) must not reach
    elsewhere, with ``..``, an absolute path, a separator or a drive."""
    if not isinstance(name, str) or not name:
        return "not a non-empty name"
    if "\x00" in name:
        return "contains a NUL byte"
    if name in (".", ".."):
        return "names a directory, not a file"
    if "/" in name or "\\" in name:
        return "is a path, not a plain name (contains a separator)"
    if len(name) > 1 and name[1] == ":" and name[0].isalpha():
        return "is a Windows drive path"
    if "://" in name:
        return "is a URI"
    return ""
