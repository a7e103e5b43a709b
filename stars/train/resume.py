"""What a training worker carries across a restart: its RNG streams, the resume position,
and the checkpoint payload it reports to Ray Train every epoch."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stars.model import checkpoint as ckpt
from stars.model.checkpoint import CHECKPOINT_FILE


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_resume_state() -> dict[str, Any] | None:
    """The payload of the run's latest checkpoint when Ray restarted or resumed us."""
    import ray.train

    # Ray Train hands back only a checkpoint its controller registered (the report went
    # through), never a checkpoint directory a dying worker was still writing; after a
    # worker or node failure, or a job started again under the same name, that is the
    # newest complete epoch.
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return ckpt.read(Path(directory) / CHECKPOINT_FILE)


def resume_position(
    resumed: dict[str, Any], rank: int, seed: int
) -> tuple[int, int, list[dict[str, Any]]]:
    """(first epoch to run, global step, metric history) of a resumed run; restores the RNG.

    Only rank 0 checkpoints its RNG state; the other ranks draw fresh, distinct streams.
    """
    # Checkpoints are written after an epoch ends, so the run goes on at the next epoch:
    # the epochs since the last checkpoint run again, the ones before it never do. The
    # learning-rate schedule follows the restored global step, not the restart.
    start_epoch = int(resumed["epoch"]) + 1
    if rank == 0:
        restore_rng(resumed["rng"])
    else:
        # Not the streams of the first run (those would repeat its epoch-0 draws), and
        # distinct per rank and per resume point; 7919 (a prime) keeps them from colliding.
        seed_everything(seed + rank + 7919 * start_epoch)
    return start_epoch, int(resumed["global_step"]), list(resumed.get("history", []))


def loop_state(
    optimizer: torch.optim.Optimizer, epoch: int, step: int, history: list[dict[str, Any]]
) -> dict[str, Any]:
    """What a worker needs to resume at the next epoch (stored in every checkpoint)."""
    return {
        "optimizer": optimizer.state_dict(),
        "epoch": epoch,
        "global_step": step,
        "history": history,
        "rng": rng_state(),
    }


def report(metrics: dict[str, float], payload: dict[str, Any] | None) -> None:
    """``ray.train.report`` from every rank; rank 0 passes the checkpoint payload."""
    import ray.train

    if payload is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        ckpt.save(Path(tmp) / CHECKPOINT_FILE, payload)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
