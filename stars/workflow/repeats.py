"""Repeats: one job's work once per seed, concurrently where the cluster has room.

Each seed's work runs in a thread of the driver (what it does there is wait on Ray: the
training runs in Ray Train workers, evaluation is seconds), so the seeds of a group share one
Ray start, one opened dataset and one MLflow client. With room for one seed at a time the
seeds run one after another in the main thread, where Ctrl-C and the lost-node watchdog act
as in a single run.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from stars.config import ConfigError
from stars.train.config import ScaleConfig
from stars.train.placement import DATA_TASK_CPUS
from stars.train.progress import progress_prefix

T = TypeVar("T")
MAX_SEEDS = 100


def parse_seeds(text: str, base: int = 0) -> list[int]:
    """``"3"`` -> ``[base, base+1, base+2]``; ``"0,3,7"`` -> those seeds.

    Raises:
        ConfigError: naming ``--seeds`` and what is wrong.
    """
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(
            f"--seeds {text!r}: give a count (--seeds 3) or seeds (--seeds 0,3,7)"
        ) from None
    if len(values) == 1 and "," not in str(text):
        count = values[0]
        if not 1 <= count <= MAX_SEEDS:
            raise ConfigError(f"--seeds {count}: a count from 1 to {MAX_SEEDS}")
        return list(range(base, base + count))
    if not values or any(v < 0 for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"--seeds {text!r}: seeds must be distinct integers >= 0")
    return values


def seeds_at_once(scale: ScaleConfig, seeds: int, limit: int = 0) -> int:
    """How many seeds fit at once: each needs its workers' CPUs (and GPUs), and together
    they leave room for a Ray Data task (they read the same rows, which queue for it);
    ``limit`` > 0 caps it. A worker told to use more torch threads than the CPUs it reserves
    (``scale.torch_threads``) counts those threads: two such workers on the same cores only
    slow each other down (measured: two `small` seeds side by side on 2 cores trained at
    38 seq/s each, one alone at 114)."""
    import ray

    total = ray.cluster_resources()
    spare = total.get("CPU", 0) - DATA_TASK_CPUS
    per_worker = max(scale.cpus_per_worker, float(scale.torch_threads))
    fits = math.floor(spare / (scale.num_workers * per_worker) + 1e-9)
    if scale.use_gpu:
        fits = min(
            fits,
            math.floor(total.get("GPU", 0) / (scale.num_workers * scale.gpus_per_worker) + 1e-9),
        )
    cap = limit if limit > 0 else seeds
    return max(1, min(seeds, fits, cap))


@dataclass
class SeedResult(Generic[T]):
    seed: int
    value: T | None = None
    error: BaseException | None = None


def run_seeds(
    seeds: list[int],
    work: Callable[[int], T],
    at_once: int,
    on_interrupt: Callable[[], None] = lambda: None,
) -> list[SeedResult[T]]:
    """``work(seed)`` for every seed, ``at_once`` at a time; an error ends that seed only.

    With ``at_once`` > 1 each seed's progress lines carry ``[seed N]``. Ctrl-C calls
    ``on_interrupt`` (mark the runs KILLED) and is raised again; the seed threads are daemons
    and end with the process.
    """
    results = {s: SeedResult[T](s) for s in seeds}

    def one(seed: int) -> None:
        try:
            results[seed].value = work(seed)
        except Exception as err:  # one seed's failure is reported, the others go on
            results[seed].error = err

    if at_once <= 1:
        try:
            for seed in seeds:
                one(seed)
        except (KeyboardInterrupt, SystemExit):  # Ray Train's Ctrl-C handler exits
            on_interrupt()
            raise
        return [results[s] for s in seeds]

    slots = threading.Semaphore(at_once)

    def threaded(seed: int) -> None:
        with slots, progress_prefix(f"[seed {seed}] "):
            one(seed)

    threads = [
        threading.Thread(target=threaded, args=(s,), daemon=True, name=f"seed-{s}") for s in seeds
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)  # a short wait keeps Ctrl-C deliverable
    except KeyboardInterrupt:
        on_interrupt()
        raise
    return [results[s] for s in seeds]
