"""Where a dataset or results live: a local directory, or a URI that pyarrow opens (``s3://``,
``gs://``, ``hdfs://``, ...).

A URI carries what pyarrow's ``FileSystem.from_uri`` accepts, e.g.
``s3://bucket/ntu60?region=eu-west-1`` or, for an S3-compatible store,
``s3://bucket/ntu60?endpoint_override=host:9000&scheme=http``; credentials come from the
usual environment (``AWS_ACCESS_KEY_ID``..., an instance role, ``GOOGLE_APPLICATION_CREDENTIALS``).
Every reader (pyarrow on the driver, Ray Data tasks on any node) goes through the same
file-system object, so a dataset that opens here opens everywhere the credentials reach.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from stars.errors import StarsError


def is_uri(path: str | Path) -> bool:
    """``s3://...``, ``gs://...``, ``file://...``: anything pyarrow resolves by scheme."""
    return "://" in str(path)


class LocationError(StarsError):
    """A dataset location that cannot be opened (unknown scheme, bad query, no access)."""


@dataclass(frozen=True)
class Location:
    """A dataset root: ``filesystem`` and ``base`` (the root inside it).

    ``root`` is what the user gave (a local path or a URI, query included) and is what
    configs, MLflow and messages record.
    """

    root: str
    filesystem: pafs.FileSystem
    base: str

    @classmethod
    def of(cls, root: str | Path, what: str = "a dataset location") -> Location:
        if not is_uri(root):
            return cls(str(root), pafs.LocalFileSystem(), str(root))
        try:
            fs, base = pafs.FileSystem.from_uri(str(root))
        except (pa.ArrowException, OSError, ValueError) as err:
            reason = " ".join(str(err).split())[:300]
            raise LocationError(f"{root}: cannot be opened as {what} ({reason})") from err
        return cls(str(root), fs, base.rstrip("/"))

    @property
    def remote(self) -> bool:
        return is_uri(self.root)

    def path(self, name: str) -> str:
        """``name`` (relative to the root) as a path inside :attr:`filesystem`."""
        return f"{self.base}/{name}" if self.remote else str(Path(self.base) / name)

    def show(self, name: str = "") -> str:
        """``name`` for messages: ``s3://bucket/ntu60/shard-00000.parquet`` (no query)."""
        if not self.remote:
            return str(Path(self.base) / name) if name else self.base
        scheme = self.root.split("://", 1)[0]
        return f"{scheme}://{self.base}" + (f"/{name}" if name else "")

    def size(self, name: str) -> int | None:
        """Bytes of ``name``, or None when there is no such file."""
        try:
            info = self.filesystem.get_file_info(self.path(name))
        except (pa.ArrowException, OSError) as err:
            raise LocationError(f"{self.show(name)}: cannot be read ({err})") from err
        return info.size if info.type == pafs.FileType.File else None

    def read_bytes(self, name: str) -> bytes:
        try:
            with self.filesystem.open_input_stream(self.path(name)) as f:
                return f.read()
        except (pa.ArrowException, OSError) as err:
            raise LocationError(f"{self.show(name)}: cannot be read ({err})") from err


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
