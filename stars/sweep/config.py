"""Typed configuration of a sweep, and the objectives a sweep may optimise."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from stars.config import ConfigError

FEWSHOT_OBJECTIVE = re.compile(r"^fewshot_val_(\d+)shot_mean$")
KNN_OBJECTIVE = "knn_val_top1"


@dataclass(frozen=True)
class SweepConfig:
    """How the search runs.

    Attributes:
        num_samples: trials per stage-1 source (random / optuna search); grid search runs
            every grid point this many times.
        objective: the validation metric to maximise: ``fewshot_val_{n}shot_mean`` (n-shot
            episodes on half of the novel classes) or ``knn_val_top1`` (1-NN on a held-out
            tenth of the training split). Never a test-split metric.
        scheduler: ``asha`` stops weak trials early (by ``epoch``), ``none`` runs all.
        search: ``random`` and ``grid`` (Ray's variant generator) or ``optuna`` (TPE; needs
            the optional ``optuna`` package).
        grace_period, reduction_factor: ASHA's minimum epochs and halving rate.
        max_concurrent: trials at once; 0 derives it from the cluster's resources.
        trial_cpus: CPUs each trial's driver reserves (its Ray Train workers take their own).
        in_process: a single-worker trial whose training rows fit in memory trains inside its
            own Tune process (:mod:`stars.train.in_process`: the same loop, checkpoints,
            resume and MLflow records, without a TorchTrainer's processes and Ray Data
            pipelines to start per trial); it then reserves one worker's CPUs (at least one)
            and GPUs. False: every trial runs its own TorchTrainer.
        max_trial_failures: Tune retries of a failed trial (it resumes its TorchTrainer).
        seed: seed of the search's draws.
        repeats: seeds each configuration is trained with (the stage-2 ``seed``, +1, ...);
            its objective is their mean, with a t-interval over them. 1: one seed, whose
            interval is over its few-shot episodes only. More than 1 needs
            ``scheduler=none`` (ASHA would compare one seed's curve).
    """

    num_samples: int = 8
    objective: str = "fewshot_val_5shot_mean"
    scheduler: Literal["asha", "none"] = "none"
    search: Literal["random", "grid", "optuna"] = "random"
    grace_period: int = 1
    reduction_factor: int = 2
    max_concurrent: int = 0
    trial_cpus: float = 0.1
    in_process: bool = True
    max_trial_failures: int = 0
    seed: int = 0
    repeats: int = 1

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError("num_samples must be >= 1")
        if not self.trial_cpus > 0:
            raise ValueError("trial_cpus must be > 0 (Ray refuses an empty reservation)")
        if self.repeats < 1:
            raise ValueError("repeats must be >= 1")
        if self.repeats > 1 and self.scheduler == "asha":
            raise ValueError(
                "repeats > 1 with scheduler=asha: ASHA stops trials on one seed's curve; "
                "use scheduler=none, or repeats=1"
            )


def objective_monitor(objective: str) -> dict[str, object]:
    """The stage-2 monitoring that measures ``objective`` every epoch (for ASHA and the kept
    checkpoint): ``{"stage2.monitor": ..., "stage2.monitor_shots": ...}``."""
    match = FEWSHOT_OBJECTIVE.match(objective)
    if match:
        return {"stage2.monitor": "fewshot_val", "stage2.monitor_shots": int(match.group(1))}
    if objective == KNN_OBJECTIVE:
        return {"stage2.monitor": "holdout"}
    from stars.eval.protocols import protocol_for_metric

    valid = f"fewshot_val_<n>shot_mean (e.g. fewshot_val_5shot_mean) or {KNN_OBJECTIVE}"
    if protocol_for_metric(objective) is None:
        raise ConfigError(f"sweep.objective={objective!r}: no protocol produces it; use {valid}")
    raise ConfigError(
        f"sweep.objective={objective!r} is not a validation metric (selecting on the test "
        f"split overstates the result); use {valid}"
    )


def monitor_metric_of(objective: str) -> str:
    """The per-epoch ``monitor_*`` metric that tracks ``objective``."""
    if objective == KNN_OBJECTIVE:
        return "monitor_knn_top1"
    return f"monitor_{objective}"


SECTIONS = ("sweep", "stage1", "stage2", "eval", "tracking")  # of a sweep's --config file
