"""Named presets: one entry per name holds every job's settings at that size.

A preset is plain data (dotted-key sections of the job configs), so adding one cannot miss
the stage-2 or evaluation table: :func:`job_preset` builds each job's base from the same entry,
and ``tests/test_presets.py`` validates every (preset, job) pair against the config classes.
Precedence in every job: dataclass defaults < preset < YAML file < ``--set`` < explicit flags.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from stars.config import ConfigError

Job = Literal["stage1", "stage2", "eval"]


@dataclass(frozen=True)
class Preset:
    """Settings of one size.

    Attributes:
        model: ModelConfig fields (stage 1 builds the model; later jobs read it from the
            checkpoint).
        data: DataConfig fields shared by every job (``num_frames`` comes from the model).
        scale: ScaleConfig fields shared by every job.
        stage1: the stage-1 job's other sections (``optim``, ``stage1``).
        stage2: the stage-2 job's other sections (``optim``, ``stage2``).
        eval: EvalConfig fields.
    """

    description: str
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    scale: dict[str, Any] = field(default_factory=dict)
    stage1: dict[str, Any] = field(default_factory=dict)
    stage2: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)


_SMALL_MODEL = {
    "dim": 64,
    "depth": 4,
    "num_heads": 4,
    "decoder_dim": 64,
    "decoder_depth": 2,
    "decoder_heads": 4,
    "num_frames": 32,
}

PRESETS: dict[str, Preset] = {
    "paper": Preset(
        "the paper's settings (NTU-60: 8 encoder and 5 decoder blocks, T=120, 400 + 10 epochs)",
        data={"batch_size": 32},
    ),
    "paper_dec3": Preset(
        "the paper's settings with a 3-block decoder (some NTU-60 configs)",
        model={"decoder_depth": 3},
        data={"batch_size": 32},
    ),
    "small": Preset(
        "the CPU demo: minutes on 2 cores (dim 64, 4 blocks, T=32)",
        # Departures from the paper that make MAMP learn in ~1,200 CPU steps (docs/training.md,
        # "What the method does on the embedded data"): raw motion targets, no augmentation,
        # lr 2e-3.
        model={**_SMALL_MODEL, "norm_target": False},
        data={
            "batch_size": 32,
            "min_crop_frames": 16,
            "train_crop": [1.0, 1.0],
            "rotation": 0.0,
            "synthetic": {"num_classes": 40, "samples_per_class": 60, "num_base_classes": 20},
        },
        scale={"torch_threads": 2, "checkpoint_every": 5},
        stage1={
            "stage1": {"epochs": 65},
            "optim": {"lr": 2e-3, "warmup_epochs": 2, "min_lr": 1e-4},
        },
        # ~60 held-out queries make a noisy selection signal: the demo keeps the last epoch.
        stage2={
            "stage2": {
                "epochs": 30,
                "queue_size": 1024,
                "predictor_hidden": 1024,
                "monitor": "none",
            }
        },
        eval={"finetune": {"epochs": 20, "warmup_epochs": 2}, "semi_seeds": 3},
    ),
    "tiny": Preset(
        "seconds: tests and smoke runs",
        model={
            "dim": 32,
            "depth": 2,
            "num_heads": 2,
            "decoder_dim": 32,
            "decoder_depth": 1,
            "decoder_heads": 2,
            "num_frames": 32,
        },
        data={
            "batch_size": 8,
            "min_crop_frames": 16,
            "shuffle_buffer": 32,
            "map_batch_size": 64,
            "synthetic": {"num_classes": 10, "samples_per_class": 12, "num_base_classes": 6},
        },
        stage1={"stage1": {"epochs": 2}, "optim": {"warmup_epochs": 0.5}},
        stage2={"stage2": {"epochs": 2, "queue_size": 64, "predictor_hidden": 64}},
        eval={
            "finetune": {"epochs": 2, "warmup_epochs": 0.5, "batch_size": 8},
            "linear": {"epochs": 20},
            "semi_fractions": [0.5],
            "semi_seeds": 2,
            "fewshot_shots": [1, 5],  # 5-shot: the column the summary and the plots lead with
            "fewshot_episodes": 3,
            "tsne_classes": 4,
            "tsne_per_class": 10,
            "eval_every": 1,
        },
    ),
}

DEFAULT_PRESET = "small"


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def job_preset(name: str, job: Job) -> dict[str, Any]:
    """The nested preset dict of ``job`` (``stage1``, ``stage2`` or ``eval``) for ``name``."""
    p = get_preset(name)
    common = {"data": p.data, "scale": p.scale}
    if job == "stage1":
        tree = {**common, "model": p.model, **p.stage1}
    elif job == "stage2":
        tree = {**common, **p.stage2}
    else:
        tree = {**common, "eval": p.eval}
    return copy.deepcopy(tree)  # callers may edit their copy
