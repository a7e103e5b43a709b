"""Which RUNNING runs still have a driver.

A driver killed with SIGKILL (or lost with its machine) cannot end its runs. Every open run
therefore carries the driver that writes it (``stars.driver``: host, pid and the process's
start time, so a reused pid is not mistaken for it) and a heartbeat (``stars.heartbeat``,
unix seconds) refreshed by a daemon thread. The next job on the same store, and
``jobs/lineage.py``, end a run FAILED, saying why, when its driver is gone: on this host,
when that process no longer exists; elsewhere, when its heartbeat is older than
:data:`STALE_AFTER_S`."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass

DRIVER = "stars.driver"
HEARTBEAT = "stars.heartbeat"
ENDED_BY = "stars.ended_by"  # the signal that stopped a run, or "driver lost"
ERROR = "stars.error"
BEAT_EVERY_S = 30.0
# A heartbeat this old from another host means its driver is gone (well above BEAT_EVERY_S:
# a store that is slow for a minute does not end live runs).
STALE_AFTER_S = 600.0

_beating: dict[str, object] = {}  # run id -> the MlflowClient writing it
_lock = threading.Lock()
_thread: threading.Thread | None = None


def process_start(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot ("" when unknown or gone):
    with the pid it names one process for the machine's uptime."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return ""
    # Field 22, counted after the parenthesised command name (which may hold spaces).
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def this_driver() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{process_start(pid)}"


@dataclass(frozen=True)
class Driver:
    host: str
    pid: int
    start: str

    @classmethod
    def parse(cls, text: str) -> Driver | None:
        parts = text.rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]), parts[2])

    def alive_here(self) -> bool:
        """Whether this (local) driver process still exists: same pid, same start time."""
        now = process_start(self.pid)
        if now:
            return not self.start or now == self.start
        try:
            os.kill(self.pid, 0)  # no /proc (not Linux): existence only
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not os.path.isdir("/proc")


def beat(client, run_id: str) -> None:
    """Tag ``run_id`` with this driver and keep its heartbeat fresh until
    :func:`stop_beating`."""
    global _thread
    client.set_tag(run_id, DRIVER, this_driver())
    client.set_tag(run_id, HEARTBEAT, str(int(time.time())))
    with _lock:
        _beating[run_id] = client
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_beat_forever, name="stars-heartbeat", daemon=True)
            _thread.start()


def stop_beating(run_id: str) -> None:
    with _lock:
        _beating.pop(run_id, None)


def _beat_forever() -> None:
    while True:
        time.sleep(BEAT_EVERY_S)
        with _lock:
            runs = list(_beating.items())
        now = str(int(time.time()))
        for run_id, client in runs:
            try:
                client.set_tag(run_id, HEARTBEAT, now)
            except Exception:  # a store hiccup: the next beat tries again
                continue


def stale_reason(tags: dict[str, str], now: float, host: str) -> str:
    """Why a RUNNING run with these tags has no driver any more ("" while it has one, or
    when it carries no driver tag to judge by)."""
    driver = Driver.parse(tags.get(DRIVER, ""))
    if driver is None:
        return ""
    try:
        last = float(tags.get(HEARTBEAT, "0"))
    except ValueError:
        last = 0.0
    seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last)) if last else "never"
    if driver.host == host:
        if driver.alive_here():
            return ""
        return (
            f"its driver (pid {driver.pid} on {driver.host}) ended without closing the run "
            f"(killed, or its machine restarted); last heartbeat {seen}"
        )
    if now - last <= STALE_AFTER_S:
        return ""
    return (
        f"no heartbeat from its driver (pid {driver.pid} on {driver.host}) since {seen}, "
        f"over {STALE_AFTER_S:g} s ago"
    )


def end_stale_runs(client, experiment_ids: list[str] | None = None) -> list[tuple[str, str]]:
    """End FAILED every RUNNING run (of ``experiment_ids``, default all) whose driver is gone;
    returns (run name, reason) for each."""
    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    ended = []
    now, host = time.time(), socket.gethostname()
    running = client.search_runs(experiment_ids, "attributes.status = 'RUNNING'", max_results=10000)
    for run in running:
        reason = stale_reason(run.data.tags, now, host)
        if not reason:
            continue
        client.set_tag(run.info.run_id, ERROR, reason)
        client.set_tag(run.info.run_id, ENDED_BY, "driver lost")
        client.set_terminated(run.info.run_id, "FAILED")
        ended.append((run.info.run_name or run.info.run_id, reason))
    return ended
