"""The range of every numeric config value, checked when a config is resolved: a job with
``stage1.epochs=-1`` or ``optim.lr=0`` is refused in one line naming the key, before Ray
starts, instead of failing after training.

The table is keyed by (config class name, field); a class nested under several keys
(``optim`` in both stage jobs) is checked wherever it appears."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """``low``/``high`` bounds, each inclusive or not; ``None`` is unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None:
            return not (value >= self.high if self.high_open else value > self.high)
        return True

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts) or "finite"


AT_LEAST_1 = Range(1)
AT_LEAST_0 = Range(0)
POSITIVE = Range(0, low_open=True)
RATIO = Range(0, 1, low_open=True)  # (0, 1]
FRACTION = Range(0, 1, high_open=True)  # [0, 1)
UNIT = Range(0, 1)  # [0, 1]

RANGES: dict[tuple[str, str], Range] = {
    # model
    ("ModelConfig", "dim"): AT_LEAST_1,
    ("ModelConfig", "depth"): AT_LEAST_1,
    ("ModelConfig", "num_heads"): AT_LEAST_1,
    ("ModelConfig", "decoder_dim"): AT_LEAST_1,
    ("ModelConfig", "decoder_depth"): AT_LEAST_1,
    ("ModelConfig", "decoder_heads"): AT_LEAST_1,
    ("ModelConfig", "mlp_ratio"): POSITIVE,
    ("ModelConfig", "num_frames"): AT_LEAST_1,
    ("ModelConfig", "patch_frames"): AT_LEAST_1,
    ("ModelConfig", "num_joints"): AT_LEAST_1,
    ("ModelConfig", "in_channels"): AT_LEAST_1,
    ("ModelConfig", "mask_ratio"): FRACTION,
    ("ModelConfig", "motion_tau"): AT_LEAST_0,  # 0: uniform random masking
    ("ModelConfig", "motion_stride"): AT_LEAST_1,
    ("ModelConfig", "drop_path"): FRACTION,
    # optimiser
    ("OptimConfig", "lr"): POSITIVE,
    ("OptimConfig", "min_lr"): AT_LEAST_0,
    ("OptimConfig", "warmup_epochs"): AT_LEAST_0,
    ("OptimConfig", "weight_decay"): AT_LEAST_0,
    ("OptimConfig", "betas"): FRACTION,
    ("OptimConfig", "clip_grad"): POSITIVE,
    # scale
    ("ScaleConfig", "num_workers"): AT_LEAST_1,
    ("ScaleConfig", "cpus_per_worker"): POSITIVE,
    ("ScaleConfig", "gpus_per_worker"): POSITIVE,
    ("ScaleConfig", "max_failures"): Range(-1),  # -1: retry forever (Ray Train's meaning)
    ("ScaleConfig", "num_to_keep"): AT_LEAST_1,
    ("ScaleConfig", "checkpoint_every"): AT_LEAST_1,
    ("ScaleConfig", "torch_threads"): AT_LEAST_0,
    ("ScaleConfig", "lost_node_timeout_s"): POSITIVE,
    ("ScaleConfig", "scale_up_timeout_s"): AT_LEAST_0,
    # loops
    ("Stage1Config", "epochs"): AT_LEAST_1,
    ("Stage2Config", "epochs"): AT_LEAST_1,
    ("Stage2Config", "head_warmup_epochs"): AT_LEAST_0,
    ("Stage2Config", "frozen_blocks"): Range(-1),  # -1: half the blocks
    ("Stage2Config", "layer_decay"): RATIO,
    ("Stage2Config", "queue_size"): AT_LEAST_1,
    ("Stage2Config", "topk"): AT_LEAST_1,
    ("Stage2Config", "temperature"): POSITIVE,
    ("Stage2Config", "predictor_hidden"): AT_LEAST_1,
    ("Stage2Config", "monitor_shots"): AT_LEAST_1,
    ("Stage2Config", "monitor_episodes"): AT_LEAST_1,
    # data
    ("DataConfig", "num_frames"): AT_LEAST_1,
    ("DataConfig", "train_crop"): RATIO,
    ("DataConfig", "min_crop_frames"): AT_LEAST_1,
    ("DataConfig", "eval_crop"): RATIO,
    ("DataConfig", "rotation"): AT_LEAST_0,
    ("DataConfig", "batch_size"): AT_LEAST_1,
    ("DataConfig", "shuffle_buffer"): AT_LEAST_1,
    ("DataConfig", "map_batch_size"): AT_LEAST_1,
    ("DataConfig", "rows_per_read_task"): AT_LEAST_1,
    ("DataConfig", "in_memory_max_bytes"): AT_LEAST_0,
    ("SyntheticConfig", "num_classes"): AT_LEAST_1,
    ("SyntheticConfig", "samples_per_class"): AT_LEAST_1,
    ("SyntheticConfig", "num_base_classes"): AT_LEAST_1,
    ("SyntheticConfig", "seed"): AT_LEAST_0,
    # evaluation
    ("EvalConfig", "knn_ks"): AT_LEAST_1,
    ("EvalConfig", "knn_temperature"): POSITIVE,
    ("EvalConfig", "fewshot_shots"): AT_LEAST_1,
    ("EvalConfig", "fewshot_episodes"): AT_LEAST_1,
    ("EvalConfig", "seed"): AT_LEAST_0,
    ("EvalConfig", "bootstrap_resamples"): Range(100),
    ("EvalConfig", "semi_fractions"): RATIO,
    ("EvalConfig", "semi_seeds"): AT_LEAST_1,
    ("EvalConfig", "tsne_classes"): AT_LEAST_1,
    ("EvalConfig", "tsne_per_class"): AT_LEAST_1,
    ("EvalConfig", "feature_actors"): AT_LEAST_1,
    ("EvalConfig", "feature_batch_size"): AT_LEAST_1,
    ("EvalConfig", "eval_every"): AT_LEAST_1,
    ("LinearProbeConfig", "epochs"): AT_LEAST_1,
    ("LinearProbeConfig", "batch_size"): AT_LEAST_1,
    ("LinearProbeConfig", "lr"): POSITIVE,
    ("LinearProbeConfig", "momentum"): FRACTION,
    ("LinearProbeConfig", "weight_decay"): AT_LEAST_0,
    ("FinetuneConfig", "epochs"): AT_LEAST_1,
    ("FinetuneConfig", "batch_size"): AT_LEAST_1,
    ("FinetuneConfig", "lr"): POSITIVE,
    ("FinetuneConfig", "min_lr"): AT_LEAST_0,
    ("FinetuneConfig", "warmup_epochs"): AT_LEAST_0,
    ("FinetuneConfig", "weight_decay"): AT_LEAST_0,
    ("FinetuneConfig", "layer_decay"): RATIO,
    ("FinetuneConfig", "drop_path"): FRACTION,
    ("FinetuneConfig", "label_smoothing"): FRACTION,
    ("FinetuneConfig", "head_dropout"): FRACTION,
    ("FinetuneConfig", "clip_grad"): AT_LEAST_0,  # 0: no clipping
    # sweeps
    ("SweepConfig", "num_samples"): AT_LEAST_1,
    ("SweepConfig", "grace_period"): AT_LEAST_1,
    ("SweepConfig", "reduction_factor"): Range(2),
    ("SweepConfig", "max_concurrent"): AT_LEAST_0,
    ("SweepConfig", "trial_cpus"): POSITIVE,
    ("SweepConfig", "max_trial_failures"): Range(-1),
    ("SweepConfig", "seed"): AT_LEAST_0,
    ("SweepConfig", "repeats"): AT_LEAST_1,
    # the jobs' one seed
    ("Stage1JobConfig", "seed"): AT_LEAST_0,
    ("Stage2JobConfig", "seed"): AT_LEAST_0,
    ("FinetuneJobConfig", "seed"): AT_LEAST_0,
}


def problem(owner: str, name: str, value: Any, key: str) -> str:
    """``key=value: must be ...`` when ``value`` of field ``name`` of config class ``owner``
    is outside its range in :data:`RANGES` (every item of a tuple), else ""."""
    bound = RANGES.get((owner, name))
    if bound is None or value is None or isinstance(value, bool):
        return ""
    for item in value if isinstance(value, (tuple, list)) else (value,):
        numeric = isinstance(item, (int, float)) and not isinstance(item, bool)
        if numeric and not bound.holds(float(item)):
            return f"{key}={value}: must be {bound.describe()}"
    return ""


def out_of_range(config: Any, prefix: str = "") -> list[str]:
    """:func:`problem` for every numeric value of the dataclass ``config``, nested ones
    included."""
    problems: list[str] = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            problems += out_of_range(value, key + ".")
        elif text := problem(type(config).__name__, f.name, value, key):
            problems.append(text)
    return problems
