"""The fault hook of the resume tests: a worker fails once at a chosen step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Fault:
    """Test hook, never part of a job config: raise once when the global step reaches
    ``at_step``; the ``marker`` file makes it once per run, across the restart that follows."""

    at_step: int
    marker: str

    def to_dict(self) -> dict[str, Any]:
        return {"at_step": self.at_step, "marker": self.marker}


def maybe_inject_failure(step: int, fault: dict[str, Any] | None) -> None:
    if not fault or step != int(fault["at_step"]):
        return
    path = Path(fault["marker"])
    if path.exists():
        return
    path.write_text(str(step))
    raise RuntimeError(f"injected failure at step {step} (test hook)")
