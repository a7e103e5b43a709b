"""Stage 1: MAMP pre-training as a :class:`~stars.train.loop.StageTask`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stars.config import from_dict
from stars.model.mamp import MAMP
from stars.train.config import Stage1JobConfig
from stars.train.loop import LoopSettings, StageTask, Worker, run_loop
from stars.train.optim import build_adamw, param_groups


class Stage1Task(StageTask):
    """Masked motion prediction: the loss is MAMP's masked-token motion MSE."""

    kind = "stage1"

    def __init__(self, cfg: Stage1JobConfig):
        self.cfg = cfg

    def build(self, worker: Worker) -> None:
        self.model = MAMP(self.cfg.model).to(worker.device)
        groups = param_groups(self.model, self.cfg.optim.weight_decay)
        self.optimizer = build_adamw(groups, self.cfg.optim)

    def loss(self, wrapped: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return wrapped(batch["x"])["loss"]


def stage1_settings(cfg: Stage1JobConfig) -> LoopSettings:
    return LoopSettings.for_job(
        cfg,
        epochs=cfg.stage1.epochs,
        optim=cfg.optim,
        amp=cfg.stage1.amp,
        tf32=cfg.stage1.tf32,
        compile=cfg.stage1.compile,
    )


def stage1_worker(config: dict[str, Any]) -> None:
    """Ray Train entry (see :mod:`stars.train.loop` for ``config``)."""
    cfg = from_dict(Stage1JobConfig, config["job"])
    run_loop(Stage1Task(cfg), stage1_settings(cfg), config)
