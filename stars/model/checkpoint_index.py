"""The checkpoints of a run that trains in its caller's process (no Ray Train controller to
register them): ``checkpoint_<epoch>/checkpoint.pt`` folders under the run directory and an
index file that records each one once it is complete.

The index is the commit point, as Ray Train's ``checkpoint_manager_snapshot.json`` is for its
runs: a folder is written first, then the index that names it, so a run stopped mid-write
resumes from the last checkpoint the index holds and never from a partial one. Retention
follows Ray Train's: the ``num_to_keep`` best by the score metric (the latest when there is
none), and always the latest.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from stars import storage
from stars.location import Location
from stars.model.checkpoint import CHECKPOINT_FILE, INDEX, read_entries, save

__all__ = ["INDEX", "CheckpointIndex", "read_entries"]


@dataclass
class CheckpointIndex:
    """The registered checkpoints of the run directory ``run_dir`` (a path or a URI).

    Attributes:
        entries: ``{"name", "epoch", "metrics"}`` per kept checkpoint, oldest first.
        num_to_keep: checkpoints kept besides the latest.
        metric: score to keep the best by (higher is better); None keeps the newest.
    """

    run_dir: str
    num_to_keep: int
    metric: str | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def open(cls, run_dir: str, num_to_keep: int, metric: str | None = None) -> CheckpointIndex:
        """The run's index as recorded (empty for a new run)."""
        return cls(run_dir, num_to_keep, metric, read_entries(run_dir))

    def latest(self) -> dict[str, Any] | None:
        return self.entries[-1] if self.entries else None

    def best(self) -> dict[str, Any] | None:
        """The best checkpoint by ``metric`` (the latest when there is no metric or none has
        it)."""
        scored = [e for e in self.entries if self.metric and self.metric in e["metrics"]]
        if not scored:
            return self.latest()
        return max(scored, key=lambda e: e["metrics"][self.metric])

    def location(self, entry: dict[str, Any]) -> str:
        """The checkpoint folder of ``entry``."""
        return storage.join(self.run_dir, entry["name"])

    def add(self, epoch: int, payload: dict[str, Any], metrics: dict[str, Any]) -> str:
        """Write ``payload`` as the checkpoint of ``epoch``, register it, drop the ones no
        longer kept; its folder."""
        name = f"checkpoint_{epoch:06d}"
        folder = storage.join(self.run_dir, name)
        local = storage.local_dir(folder)
        local.mkdir(parents=True, exist_ok=True)
        save(local / CHECKPOINT_FILE, payload)
        storage.publish(local, folder)
        entry = {"name": name, "epoch": epoch, "metrics": _numbers(metrics)}
        self.entries = [e for e in self.entries if e["name"] != name] + [entry]
        dropped = self._retained()
        self._write()
        for old in dropped:  # after the index stops naming them
            _remove(self.location(old))
        return folder

    def _retained(self) -> list[dict[str, Any]]:
        latest = self.entries[-1]
        ranked = list(self.entries)
        if self.metric:
            ranked.sort(key=lambda e: e["metrics"].get(self.metric, float("-inf")))
        kept = ranked[-self.num_to_keep :]
        dropped = [e for e in self.entries if e not in kept and e is not latest]
        self.entries = [e for e in self.entries if e not in dropped]
        return dropped

    def _write(self) -> None:
        text = json.dumps({"checkpoints": self.entries}, indent=1)
        local = storage.local_dir(self.run_dir)
        local.mkdir(parents=True, exist_ok=True)
        tmp = local / f".{INDEX}.tmp-{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, local / INDEX)
        storage.publish(local / INDEX, storage.join(self.run_dir, INDEX))


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def _remove(folder: str) -> None:
    loc = Location(folder)
    if loc.remote:
        loc.filesystem.delete_dir(loc.base)
    shutil.rmtree(loc.local_dir, ignore_errors=True)  # the folder, or a URI's local mirror
