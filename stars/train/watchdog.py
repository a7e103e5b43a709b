"""A run that lost a node never waits forever.

When a node dies, Ray Train restarts the worker group from the last checkpoint
(``scale.max_failures``) on whatever the cluster has left. If what is left cannot hold the
group, Ray Train retries the start every minute, indefinitely (it cannot tell a cluster that
will scale up from one that will not). The watchdog notices that case: a node that was alive
when the run started is gone and the remaining nodes cannot hold the workers for
``scale.lost_node_timeout_s``. It then raises :class:`NodeLostError` in the main thread
(a SIGUSR2 handler interrupts the driver's blocking ``get``; Ray Train's own Ctrl-C abort
would wait on a controller busy retrying the start) and the job fails
naming the lost node. The run's actors go with the driver; its checkpoints stay where they
are, so the same command resumes once capacity is back.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable
from types import TracebackType

from stars.errors import StarsError
from stars.train.placement import alive_nodes


class NodeLostError(StarsError):
    """A node the run was using is gone and the rest of the cluster cannot hold its workers."""


class _StopRun(KeyboardInterrupt):
    """What the signal handler raises: Ray's blocking ``get`` passes only a KeyboardInterrupt
    on at once (anything else waits until the get returns, which here is never)."""


def fits(nodes: list[dict], per_worker: dict[str, float], workers: int) -> bool:
    """Whether ``workers`` bundles of ``per_worker`` resources fit on ``nodes`` (their total
    resources: a restarted group gets back what the failed one held)."""
    placed = 0
    for node in nodes:
        have = node.get("Resources", {})
        counts = [math.floor(have.get(k, 0.0) / v + 1e-9) for k, v in per_worker.items() if v > 0]
        placed += min(counts) if counts else workers
    return placed >= workers


class LostNodeWatchdog:
    """Context manager around ``trainer.fit()``. Active in the main thread only (a signal
    handler needs it); elsewhere, e.g. in a sweep's trial thread, Ray Train decides alone."""

    def __init__(
        self,
        per_worker: dict[str, float],
        workers: int,
        timeout_s: float,
        run_name: str,
        poll_s: float = 2.0,
        nodes: Callable[[], list[dict]] = alive_nodes,
        interrupt: Callable[[], None] | None = None,
    ):
        self.per_worker, self.workers, self.timeout_s = per_worker, workers, timeout_s
        self.run_name, self.poll_s, self.nodes = run_name, poll_s, nodes
        self.interrupt = interrupt or (lambda: os.kill(os.getpid(), signal.SIGUSR2))
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started: dict[str, str] = {}
        self._previous: object = signal.SIG_DFL

    def __enter__(self) -> LostNodeWatchdog:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._started = {n["NodeID"]: n.get("NodeManagerAddress", "?") for n in self.nodes()}
        self._previous = signal.signal(signal.SIGUSR2, self._stop_run)
        self._thread = threading.Thread(target=self._watch, name="stars-node-watchdog", daemon=True)
        self._thread.start()
        return self

    def _stop_run(self, signum: int, frame: object) -> None:
        raise _StopRun(self.reason)

    def _watch(self) -> None:
        short_since: float | None = None
        while not self._stop.wait(self.poll_s):
            try:
                alive = self.nodes()
            except Exception:  # a GCS hiccup is not a verdict; look again next time
                continue
            ids = {n["NodeID"] for n in alive}
            lost = {i: ip for i, ip in self._started.items() if i not in ids}
            # A lost node with room left elsewhere is Ray Train's to handle (it restarts the
            # group there); only a lost node and no room, for the whole timeout, stops the run,
            # so a node that comes back or an autoscaler that adds one in time lets it go on.
            if not lost or fits(alive, self.per_worker, self.workers):
                short_since = None
                continue
            short_since = short_since if short_since is not None else time.monotonic()
            if time.monotonic() - short_since < self.timeout_s:
                continue
            names = ", ".join(f"{i[:12]} ({ip})" for i, ip in lost.items())
            need = " + ".join(f"{v:g} {k}" for k, v in self.per_worker.items())
            self.reason = (
                f"{self.run_name}: node {names} was lost and the {len(alive)} node(s) left "
                f"cannot hold {self.workers} worker(s) x {need} for {self.timeout_s:g} s "
                "(scale.lost_node_timeout_s), so the run was stopped. Its checkpoints are "
                "kept: the same command (same --name) resumes from the last one once the "
                "cluster has room, or set scale.num_workers / scale.cpus_per_worker to fit"
            )
            # A thread cannot raise in another one; a signal to our own process runs its
            # handler in the main thread, inside the blocking get of trainer.fit().
            self.interrupt()
            return

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            signal.signal(signal.SIGUSR2, self._previous)
        # The handler's _StopRun (a KeyboardInterrupt, so Ray lets it through) becomes the
        # named error here, whatever Ray wrapped it in on the way out of fit().
        if self.reason is not None:
            raise NodeLostError(self.reason) from None
        return False
