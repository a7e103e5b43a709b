"""What a job prints: its own lines only. Ray's and MLflow's logs (and Python warnings) go to a
log file whose path is printed once; ``--verbose`` shows them live. A job that dies still
shows why: the one-line error, the last lines of the failure and the log's path."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from stars.errors import StarsError

# Libraries whose logs are not the job's output (Ray Data, Train and Tune configure their own
# loggers, so they are named too).
QUIET_LOGGERS = (
    "stars",  # the project's own log lines (e.g. a crash's traceback) belong in the file too
    "ray",
    "ray._private",  # ray.init clears the "ray" logger's handlers; its own messages come here
    "ray.data",
    "ray.train",
    "ray.tune",
    "mlflow",
    "alembic",
    "urllib3",
    "py.warnings",
    "filelock",
    "fsspec",
)
TAIL_LINES = 15


def route_library_logs(log_file: Path | None, verbose: bool) -> None:
    """Send the libraries' loggers to ``log_file`` (and the terminal when ``verbose``)."""
    handlers: list[logging.Handler] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(handler)
    if verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
    else:
        # Tune's new output engine prints its experiment table whatever the verbosity; the
        # classic reporter at verbose=0 prints nothing (our sweep prints its own lines).
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        # With a tracking server MLflow writes "View run ... at" to stdout at each run's end;
        # the job prints its own runs/compare links.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        # Reading a cached baseline or a stage-1 checkpoint back drew tqdm bars on stdout.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Ray, Ray Data and MLflow configure their loggers on import: import them before routing.
    import mlflow  # noqa: F401
    import ray
    import ray.data  # noqa: F401

    global _ROUTED
    _ROUTED = (log_file, verbose)
    logging.captureWarnings(True)
    for name in QUIET_LOGGERS:
        log = logging.getLogger(name)
        for old in list(log.handlers):
            log.removeHandler(old)
        for handler in handlers:
            log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    if not verbose:
        _route_raylet_messages(logging.getLogger("ray.raylet"))


_ROUTED: tuple[Path | None, bool] | None = None


def reroute_after_ray_init() -> None:
    """``ray.init`` clears the "ray" logger's handlers: route again if a job console is on."""
    if _ROUTED is not None:
        route_library_logs(*_ROUTED)


def _route_raylet_messages(log: logging.Logger) -> None:
    """The driver prints the raylet's warnings (e.g. "N PYTHON worker processes have been
    started") straight to the terminal, outside logging; in quiet mode they go to the log
    file. Ray has no setting for it, so its printer is wrapped (left alone if it moved)."""
    import ray._private.worker as ray_worker

    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "_stars_routed", False):
        return

    def printer(data, ignore_prefix: bool = False):
        if data.get("pid") == "raylet":
            for line in data.get("lines", []):
                log.warning(line)
            return None
        return original(data, ignore_prefix)

    printer._stars_routed = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = printer


def failure_tail(err: BaseException, lines: int = TAIL_LINES) -> list[str]:
    """The last lines of an error's text: a Ray worker failure carries the worker's
    traceback there, which is what a user needs to see."""
    text = [ln.rstrip() for ln in str(err).splitlines() if ln.strip()]
    return text[-lines:]


@contextlib.contextmanager
def job_console(
    prog: str, log_file: Path | None, verbose: bool = False, publish_to: str = ""
) -> Iterator[None]:
    """Quiet libraries for the block; a crash ends as ``prog: error: ...``, the tail of the
    failure and where the full logs are, with exit status 1 (2 for bad input).

    ``publish_to``: a URI the log file is copied to when the block ends, however it ends."""
    from stars import storage
    from stars.location import Location

    route_library_logs(log_file, verbose)
    kept = publish_to if publish_to and Location(publish_to).remote else ""
    if log_file is not None and not verbose:
        also = f", copied to {storage.shown(kept)} at the end" if kept else ""
        print(f"[stars] Ray and MLflow logs: {log_file}{also} (--verbose shows them here)")
    try:
        yield
    except (StarsError, SystemExit, KeyboardInterrupt):
        raise
    except Exception as err:
        # An unexpected error may be our bug: its traceback belongs in the log a user reports.
        logging.getLogger("stars").error("%s failed", prog, exc_info=err)
        print(f"{prog}: error: {type(err).__name__}: {_first_line(err)}", file=sys.stderr)
        tail = failure_tail(err)
        if len(tail) > 1:
            print("last lines of the failure:", file=sys.stderr)
            for line in tail:
                print(f"  {line}", file=sys.stderr)
        if log_file is not None:
            print(f"full logs: {log_file} and Ray's session logs", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        if kept and log_file is not None and log_file.is_file():
            try:
                storage.publish(log_file, kept)
            except storage.StorageError as err:
                print(f"[stars] the job log stays at {log_file}: {err}", file=sys.stderr)


def _first_line(err: BaseException) -> str:
    for line in str(err).splitlines():
        if line.strip():
            return line.strip()[:300]
    return repr(err)
