"""The one base class of user-facing errors.

Every layer raises a subclass (``ConfigError``, ``DataError``, ``CheckpointError``,
``StorageError``, ``JobError``, ...) whose message names the file, key or run and the problem.
The command-line layer prints any of them as one line and exits 2; this module knows no layer.
"""

from __future__ import annotations


class StarsError(ValueError):
    """Bad input a user can fix: the message says what and where, in one line."""


class JobError(StarsError):
    """A job cannot run as asked (e.g. an unknown or unsuitable source run)."""
