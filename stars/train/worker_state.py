"""The state a training worker carries across a restart: device set-up, RNG, the resume
position, checkpoint payloads and their reporting, and the fault hook of the resume tests."""

from __future__ import annotations

import contextlib
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stars.model import checkpoint as ckpt
from stars.model.checkpoint import CHECKPOINT_FILE


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on CUDA; on a CPU, bf16 only where it trains faster (AMX), else
    fp32 (see :func:`stars.train.precision.cpu_trains_faster_in_bf16`)."""
    from stars.train.precision import cpu_trains_faster_in_bf16

    if amp == "none":
        return contextlib.nullcontext()
    if device.type == "cpu":
        if amp == "bf16" and cpu_trains_faster_in_bf16():
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def configure_device(device: torch.device, tf32: bool, deterministic: bool = False) -> None:
    """TF32 on CUDA, and (``scale.deterministic``) torch's deterministic algorithms: an
    operation without a deterministic implementation then fails naming itself."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    if deterministic:
        import os

        # cuBLAS needs a fixed workspace to reduce in a fixed order (CUDA >= 10.2).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


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
