"""The one training loop every Ray Train worker runs (stage 1, stage 2, fine-tuning), and
an in-process stage-2 trial too (:mod:`stars.train.session`).

A stage supplies a :class:`StageTask` (its model, optimiser groups, loss of one batch and
optional per-epoch hooks, the role ``train_one_epoch`` plays in MAE/timm); :func:`run_loop`
does the rest: device and threads, seeding, resume from Ray's latest checkpoint, DDP,
the epoch loop with the lr schedule, autocast, clipping, metrics, ``ray.train.report``
with a checkpoint every ``checkpoint_every`` epochs, and per-epoch MLflow metrics from rank 0.

``train_loop_config`` of every stage holds ``job`` (the resolved job config as a dict, exactly
what MLflow logged), ``steps_per_epoch``, ``train_in_memory`` (the ``train`` dataset holds raw
rows that the worker keeps and transforms itself), ``mlflow_run`` (a :class:`RunRef` dict),
``progress`` (a queue for the driver's progress display, or None) and, in tests only, ``fault``.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from stars.data.config import DataConfig
from stars.data.pipeline import InMemoryTrainSet, StreamingTrainSet, quiet_ray_data
from stars.model import checkpoint as ckpt
from stars.tracking.epoch_metrics import EpochLogger, RunRef
from stars.train import device as dev
from stars.train import faults, resume
from stars.train.config import OptimConfig
from stars.train.optim import LrSchedule, set_lr
from stars.train.progress import ProgressSender
from stars.train.session import RaySession, Session


@dataclass(frozen=True)
class LoopSettings:
    """What the loop needs from a stage's config.

    Attributes:
        epochs: total epochs (all phases).
        optim: lr, warm-up (epochs, per-step linear), schedule, clipping.
        amp, tf32: CUDA precision (ignored on CPU).
        compile: the training forward through ``torch.compile`` on CUDA (ignored on CPU).
        torch_threads: > 0 sets the worker's intra-op threads.
        checkpoint_every: epochs between checkpoints; the last epoch always writes one.
        seed: the job's seed; rank r seeds its RNGs with ``seed + r``.
        deterministic: torch's deterministic algorithms (``scale.deterministic``).
    """

    epochs: int
    optim: OptimConfig
    data: DataConfig
    seed: int
    amp: str = "bf16"
    tf32: bool = True
    compile: bool = False
    torch_threads: int = 0
    checkpoint_every: int = 1
    deterministic: bool = False

    @classmethod
    def for_job(
        cls,
        job: Any,
        *,
        epochs: int,
        optim: OptimConfig,
        amp: str,
        tf32: bool = True,
        compile: bool = False,
    ) -> LoopSettings:
        """A stage's settings: its own epochs, optimiser and precision; data, seed and scaling
        read from the job config (any of Stage1JobConfig, Stage2JobConfig, FinetuneJobConfig)."""
        return cls(
            epochs=epochs,
            optim=optim,
            data=job.data,
            seed=job.seed,
            amp=amp,
            tf32=tf32,
            compile=compile,
            torch_threads=job.scale.torch_threads,
            checkpoint_every=job.scale.checkpoint_every,
            deterministic=job.scale.deterministic,
        )


@dataclass
class Worker:
    """Where a task runs: its device, rank, world size, the trainer's loop config and the
    session it reports to (a Ray Train worker's unless the run is in-process)."""

    device: torch.device
    rank: int
    world_size: int
    loop_config: dict[str, Any]
    session: Session = field(default_factory=RaySession)


class StageTask(abc.ABC):
    """One stage's part of the loop. ``build`` sets ``model`` (on ``worker.device``) and
    ``optimizer``; ``loss`` is one training batch; the hooks default to nothing."""

    kind: str = ""
    model: nn.Module
    optimizer: torch.optim.Optimizer

    @abc.abstractmethod
    def build(self, worker: Worker) -> None:
        """Create ``self.model`` on ``worker.device`` and ``self.optimizer``."""

    @abc.abstractmethod
    def loss(self, wrapped: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch through ``wrapped`` (the DDP-wrapped model)."""

    def load_state(self, payload: dict[str, Any]) -> None:
        """Restore the model part of a checkpoint (the loop restores the optimiser)."""
        self.model.load_state_dict(payload["model"])

    def state(self) -> dict[str, Any]:
        """Checkpoint content besides the loop state (weights, buffers, provenance)."""
        return {"model": ckpt.cpu_state(self.model)}

    def model_config(self) -> Any:
        return self.model.cfg

    def ddp_kwargs(self) -> dict[str, Any]:
        return {}

    def begin_epoch(self, epoch: int) -> dict[str, Any]:
        """Called before an epoch; returns values added to its metrics (e.g. the phase)."""
        return {}

    def end_epoch(self, epoch: int, worker: Worker) -> dict[str, float]:
        """Called after an epoch on every rank; returns extra metrics (monitoring)."""
        return {}


def run_loop(
    task: StageTask,
    settings: LoopSettings,
    loop_config: dict[str, Any],
    session: Session | None = None,
) -> None:
    """Train ``task`` for ``settings.epochs`` inside a Ray Train worker, or in this process
    with a :class:`~stars.train.in_process.LocalSession` (resuming when the run has a
    checkpoint), reporting every epoch."""
    quiet_ray_data()
    session = session or RaySession()
    worker = Worker(*session.placement(), loop_config, session)
    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    dev.configure_device(worker.device, settings.tf32, settings.deterministic)
    resume.seed_everything(settings.seed + worker.rank)

    task.build(worker)
    steps_per_epoch = int(loop_config["steps_per_epoch"])
    schedule = LrSchedule.for_run(settings.optim, settings.epochs, steps_per_epoch)
    start_epoch, step, history, resumes = 0, 0, [], 0
    resumed = session.restored()
    if resumed is not None:
        task.load_state(resumed)
        task.optimizer.load_state_dict(resumed["optimizer"])
        start_epoch, step, history = resume.resume_position(resumed, worker.rank, settings.seed)
        # Times this run went on from a checkpoint (a worker or node failure, or the same
        # --name again): a per-epoch metric, so MLflow shows where a run was interrupted.
        resumes = int(resumed.get("resumes", 0)) + 1
    wrapped = session.prepare(task.model, task.ddp_kwargs())
    # The loss goes through the compiled module; train(), clipping and checkpoints use the
    # plain one (they share parameters). dynamic=False: training batches have one shape.
    forward = (
        torch.compile(wrapped, dynamic=False)
        if settings.compile and worker.device.type == "cuda"
        else wrapped
    )
    shard = session.dataset("train")
    train_set = (
        InMemoryTrainSet(
            shard, settings.data, worker.rank, settings.seed, loop_config.get("num_bodies")
        )
        if loop_config.get("train_in_memory")
        else StreamingTrainSet(shard, settings.data, worker.rank, settings.seed)
    )
    run = RunRef.from_dict(loop_config.get("mlflow_run"))
    epoch_log = EpochLogger(run, worker.rank)
    fault = loop_config.get("fault")
    progress = ProgressSender(loop_config.get("progress") if worker.rank == 0 else None)

    for epoch in range(start_epoch, settings.epochs):
        extra = task.begin_epoch(epoch)
        wrapped.train()
        start, seen, loss_sum, epoch_steps = time.perf_counter(), 0, 0.0, 0
        lr, rate = settings.optim.lr, 0.0
        for batch in train_set.epoch(epoch, worker.device):
            lr = schedule.at(step)
            set_lr(task.optimizer, lr)
            with dev.autocast(worker.device, settings.amp):
                loss = task.loss(forward, batch)
            task.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.optim.clip_grad:
                torch.nn.utils.clip_grad_norm_(wrapped.parameters(), settings.optim.clip_grad)
            task.optimizer.step()
            faults.maybe_inject_failure(step, fault)
            step += 1
            epoch_steps += 1
            seen += len(batch["x"])
            loss_sum += float(loss.detach())
            rate = seen * worker.world_size / max(time.perf_counter() - start, 1e-9)
            progress.update(step, epoch, loss_sum / epoch_steps, rate)
        elapsed = time.perf_counter() - start
        progress.update(step, epoch, loss_sum / max(epoch_steps, 1), rate, final=True)
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "global_step": step,
            "loss": loss_sum / max(epoch_steps, 1),
            "lr": lr,
            "epoch_time_s": elapsed,
            "throughput_seq_per_s": seen * worker.world_size / max(elapsed, 1e-9),
            "steps": epoch_steps,
            "resumes": resumes,
            **extra,
        }
        metrics.update(task.end_epoch(epoch, worker))
        history.append(metrics)
        last = epoch == settings.epochs - 1
        payload = None
        if worker.rank == 0 and (last or (epoch + 1) % settings.checkpoint_every == 0):
            payload = ckpt.make_payload(
                task.kind,
                task.model_config(),
                **task.state(),
                **resume.loop_state(task.optimizer, epoch, step, history),
                job_config=loop_config["job"],
                mlflow_run=run.to_dict(),
                resumes=resumes,
            )
        session.report({k: v for k, v in metrics.items() if not isinstance(v, str)}, payload)
        epoch_log.log(metrics, epoch)
