"""User-facing errors: the command-line jobs print these as one line and exit 2, instead of a
traceback (bad paths, bad data, bad checkpoints, bad configs, unknown runs)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class JobError(ValueError):
    """A job cannot run as asked (e.g. an unknown or unsuitable source run)."""


def user_errors() -> tuple[type[BaseException], ...]:
    from stars.config import ConfigError
    from stars.data.shards import DataError
    from stars.model.checkpoint import CheckpointError
    from stars.train.launch import StorageError

    return (ConfigError, DataError, CheckpointError, StorageError, JobError, FileNotFoundError)


@contextlib.contextmanager
def reported(prog: str) -> Iterator[None]:
    """Turn a user-facing error into ``prog: error: message`` on stderr and exit status 2."""
    try:
        yield
    except user_errors() as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
