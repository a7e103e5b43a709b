"""Where the training loop's run-level calls go: the rank and device, the checkpoint to
resume from, the model's wrapping, the datasets and the per-epoch report.

:class:`RaySession` is a Ray Train worker's (``ray.train``); the in-process runner of
single-worker sweep trials has its own (:class:`stars.train.in_process.LocalSession`), so
:func:`stars.train.loop.run_loop` is the same code on both paths.
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import nn


class Session(abc.ABC):
    """The run a training loop reports to."""

    @abc.abstractmethod
    def placement(self) -> tuple[torch.device, int, int]:
        """(device, world rank, world size) of this worker."""

    @abc.abstractmethod
    def restored(self) -> dict[str, Any] | None:
        """The payload of the run's latest registered checkpoint (None: a fresh start)."""

    @abc.abstractmethod
    def prepare(self, model: nn.Module, ddp_kwargs: dict[str, Any]) -> nn.Module:
        """``model`` ready to train here (DDP-wrapped on several workers)."""

    @abc.abstractmethod
    def dataset(self, name: str) -> Any:
        """This worker's part of the dataset ``name`` the run was given."""

    @abc.abstractmethod
    def report(self, metrics: dict[str, float], payload: dict[str, Any] | None) -> None:
        """One epoch's metrics, with the checkpoint payload when this epoch writes one."""


class RaySession(Session):
    """A Ray Train worker's session (``ray.train`` calls)."""

    def placement(self) -> tuple[torch.device, int, int]:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        return ray.train.torch.get_device(), ctx.get_world_rank(), ctx.get_world_size()

    def restored(self) -> dict[str, Any] | None:
        from stars.train import resume

        return resume.load_resume_state()

    def prepare(self, model: nn.Module, ddp_kwargs: dict[str, Any]) -> nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model, parallel_strategy_kwargs=ddp_kwargs)

    def dataset(self, name: str) -> Any:
        import ray.train

        return ray.train.get_dataset_shard(name)

    def report(self, metrics: dict[str, float], payload: dict[str, Any] | None) -> None:
        from stars.train import resume

        resume.report(metrics, payload)
