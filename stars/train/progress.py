"""Training progress from rank 0 to the job's console: a bar that updates in place on a
terminal, a line every 10 % of the stage (and one at its end) in a log.

Rank 0 puts a small dict on a Ray queue at most every ``interval_s``; a thread on the driver
reads it while ``trainer.fit()`` blocks. Without a queue (tests, library use) nothing happens.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

_PREFIX: contextvars.ContextVar[str] = contextvars.ContextVar("progress_prefix", default="")


@contextlib.contextmanager
def progress_prefix(prefix: str) -> Iterator[None]:
    """Within this block (this thread), progress comes as lines that start with ``prefix``
    (``[seed 3] ``): bars updated in place would overwrite each other's."""
    token = _PREFIX.set(prefix)
    try:
        yield
    finally:
        _PREFIX.reset(token)


def current_prefix() -> str:
    return _PREFIX.get()


def prefixed_print(line: str) -> None:
    """``print`` with this thread's progress prefix (a group's per-seed log lines)."""
    print(current_prefix() + line, flush=True)


class ProgressSender:
    """Worker side: ``update(...)`` after each step; cheap when called more often than the
    interval."""

    def __init__(self, queue: Any, interval_s: float = 0.5):
        self.queue, self.interval_s, self.last = queue, interval_s, 0.0

    def update(self, done_steps: int, epoch: int, loss: float, seq_per_s: float, final=False):
        if self.queue is None:
            return
        now = time.monotonic()
        if not final and now - self.last < self.interval_s:
            return
        self.last = now
        with contextlib.suppress(Exception):  # a full or gone queue never stops training
            self.queue.put_nowait(
                {"done": done_steps, "epoch": epoch, "loss": loss, "rate": seq_per_s}
            )


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class ProgressDisplay:
    """Driver side: renders what the queue delivers for one stage of ``total`` steps."""

    def __init__(self, label: str, total: int, epochs: int, stream=None, tty: bool | None = None):
        self.label, self.total, self.epochs = label, max(total, 1), epochs
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.start = time.monotonic()
        self.next_mark = 10
        self.last: dict[str, Any] | None = None

    def text(self, item: dict[str, Any]) -> str:
        done = min(int(item["done"]), self.total)
        pct = 100 * done / self.total
        elapsed = time.monotonic() - self.start
        eta = elapsed / done * (self.total - done) if done else 0.0
        return (
            f"{self.label} {pct:3.0f}%  epoch {int(item['epoch']) + 1}/{self.epochs}  "
            f"step {done}/{self.total}  loss {item['loss']:.4f}  "
            f"{item['rate']:.0f} seq/s  elapsed {_duration(elapsed)}  eta {_duration(eta)}"
        )

    def show(self, item: dict[str, Any]) -> None:
        self.last = item
        if self.tty:
            self.stream.write("\r\033[K" + self.text(item))
            self.stream.flush()
            return
        pct = 100 * min(int(item["done"]), self.total) / self.total
        if pct >= self.next_mark and pct < 100:
            print(self.text(item), file=self.stream, flush=True)
            while self.next_mark <= pct:
                self.next_mark += 10

    def close(self) -> None:
        """End the stage: the bar's line stays (terminal), or one last line (log)."""
        if self.last is None:
            return
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
        else:
            print(self.text(self.last), file=self.stream, flush=True)


@contextlib.contextmanager
def progress_queue(
    label: str, total_steps: int, epochs: int, enabled: bool = True
) -> Iterator[Any]:
    """A queue for rank 0 to report into (None when disabled), displayed while the block
    runs; the display ends with the stage's last line."""
    if not enabled:
        yield None
        return
    from ray.util.queue import Queue

    queue = Queue(maxsize=64, actor_options={"num_cpus": 0})
    prefix = current_prefix()
    display = ProgressDisplay(prefix + label, total_steps, epochs, tty=False if prefix else None)
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            try:
                item = queue.get(timeout=0.5)
            except Exception:  # Empty after the timeout, or the queue is gone
                continue
            display.show(item)

    thread = threading.Thread(target=pump, name=f"progress-{label}", daemon=True)
    thread.start()
    try:
        yield queue
    finally:
        time.sleep(0.6)  # the last update may still be on its way
        stop.set()
        thread.join(timeout=5)
        display.close()
        with contextlib.suppress(Exception):
            queue.shutdown()
