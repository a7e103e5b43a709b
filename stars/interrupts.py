"""Ctrl-C and SIGTERM end a job the same way: the runs it had open end KILLED, the job prints
one line (what was kept, the command that resumes) and exits 130.

Ray Train and Ray Tune install SIGINT handlers of their own while they run in the main
thread; Train's calls ``sys.exit`` (the job then looked FAILED with ``stars.error='1'``). So
training runs in a helper thread (:func:`wait_in_main_thread`), where neither library
touches signals, and the main thread waits where our handler can interrupt it. SIGTERM is
turned into SIGINT, so whichever SIGINT handler is current (ours, or Tune's graceful stop)
sees both the same way."""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

EXIT_INTERRUPTED = 130  # the shell's 128 + SIGINT

T = TypeVar("T")


class JobInterrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGINT or SIGTERM; ``signal_name`` says which."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


_received: list[str] = []
_installed: list[bool] = []  # one entry per active interruptible() block


def received() -> str:
    """The first signal this process was interrupted by ("" when none)."""
    return _received[0] if _received else ""


def _on_sigint(signum: int, frame: object) -> None:
    if not _received:
        _received.append("SIGINT")
    raise JobInterrupted(received())


def _on_sigterm(signum: int, frame: object) -> None:
    if not _received:
        _received.append("SIGTERM")
    signal.raise_signal(signal.SIGINT)


@contextlib.contextmanager
def interruptible(
    prog: str, kept: str = "", resume_argv: list[str] | None = None
) -> Iterator[None]:
    """SIGINT/SIGTERM raise :class:`JobInterrupted` in this (main) thread; an interruption
    ends the block with one line on stderr and exit status 130. Runs are marked KILLED by
    the ``active()`` blocks the interruption passes through on its way here.
    ``resume_argv``: the command line that resumes (default: this process's own)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint), signal.signal(signal.SIGTERM, _on_sigterm)
    _installed.append(True)
    try:
        yield
    except KeyboardInterrupt:
        line = interrupted_line(prog, received() or "SIGINT", kept, resume_argv)
        print(line, file=sys.stderr, flush=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    finally:
        _installed.pop()
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def reinstall() -> None:
    """Take the signals back after a library set handlers of its own (``ray.init`` makes
    SIGTERM exit with status 15, which would read as a failure)."""
    if _installed and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)
        signal.signal(signal.SIGTERM, _on_sigterm)


def interrupted_line(
    prog: str, signal_name: str, kept: str, resume_argv: list[str] | None = None
) -> str:
    """``prog: interrupted (SIGINT): <kept>; resume with: <command>``."""
    where = f"{kept}; " if kept else ""
    return f"{prog}: interrupted ({signal_name}): {where}resume with: {resume_command(resume_argv)}"


def resume_command(argv: list[str] | None = None) -> str:
    """The command that started this process, as a user would retype it (relative script
    path when it lies under the current directory)."""
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith(".py"):
        script = Path(argv[0])
        if script.is_absolute() and script.is_relative_to(Path.cwd()):
            script = script.relative_to(Path.cwd())
        argv = ["python", str(script), *argv[1:]]
    return shlex.join(argv)


def wait_in_main_thread(work: Callable[[], T], name: str = "stars-fit") -> T:
    """``work()`` in a helper thread while the main thread waits, so that a signal handler
    can interrupt the wait (and libraries inside ``work`` install no handlers of their own).
    Elsewhere than the main thread ``work`` simply runs here."""
    if threading.current_thread() is not threading.main_thread():
        return work()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as err:  # handed to the waiting thread as it is
            outcome["error"] = err

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(timeout=0.2)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
