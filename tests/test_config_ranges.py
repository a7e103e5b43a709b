"""Every numeric config value has a range, and a value outside it is refused in one line
naming the key, when the config is resolved (before Ray or any run)."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from stars.config import ConfigError, load_layers
from stars.config_ranges import RANGES, out_of_range
from stars.data.config import DataConfig, SyntheticConfig
from stars.eval.config import EvalConfig
from stars.eval.finetune import FinetuneConfig, FinetuneJobConfig
from stars.eval.linear import LinearProbeConfig
from stars.model.config import ModelConfig
from stars.presets import job_preset
from stars.sweep.config import SweepConfig
from stars.sweep.space import load_space
from stars.train.config import (
    OptimConfig,
    ScaleConfig,
    Stage1Config,
    Stage1JobConfig,
    Stage2Config,
    Stage2JobConfig,
)

ROOT = Path(__file__).resolve().parents[1]

CLASSES = [
    ModelConfig,
    OptimConfig,
    ScaleConfig,
    Stage1Config,
    Stage2Config,
    DataConfig,
    SyntheticConfig,
    EvalConfig,
    LinearProbeConfig,
    FinetuneConfig,
    SweepConfig,
    Stage1JobConfig,
    Stage2JobConfig,
    FinetuneJobConfig,
]


def _numeric(tp) -> bool:
    text = str(tp)
    return tp is not bool and ("int" in text or "float" in text) and "bool" not in text


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_numeric_field_has_a_range(cls):
    hints = typing.get_type_hints(cls)
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if _numeric(hints[f.name]) and (cls.__name__, f.name) not in RANGES
    ]
    assert not missing, f"{cls.__name__}: no range for {missing} in stars/config_ranges.py"


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_defaults_are_in_range(cls):
    assert out_of_range(cls()) == []


@pytest.mark.parametrize("preset", ["tiny", "small", "paper"])
def test_presets_are_in_range(preset):
    load_layers(Stage1JobConfig, job_preset(preset, "stage1"))
    load_layers(Stage2JobConfig, job_preset(preset, "stage2"))


@pytest.mark.parametrize(
    ("cls", "override", "message"),
    [
        (Stage1JobConfig, "stage1.epochs=-1", "stage1.epochs=-1: must be >= 1"),
        (Stage1JobConfig, "stage1.epochs=0", "stage1.epochs=0: must be >= 1"),
        (Stage1JobConfig, "optim.lr=0", "optim.lr=0.0: must be > 0"),
        (Stage1JobConfig, "model.mask_ratio=1.0", "model.mask_ratio=1.0: must be >= 0 and < 1"),
        (Stage1JobConfig, "model.motion_tau=-1", "model.motion_tau=-1.0: must be >= 0"),
        (Stage1JobConfig, "data.batch_size=0", "data.batch_size=0: must be >= 1"),
        (Stage2JobConfig, "stage2.layer_decay=1.5", "stage2.layer_decay=1.5: must be > 0"),
        (Stage2JobConfig, "stage2.queue_size=0", "stage2.queue_size=0: must be >= 1"),
        (Stage2JobConfig, "stage2.temperature=-0.1", "stage2.temperature=-0.1: must be > 0"),
        (Stage2JobConfig, "data.eval_crop=0", "data.eval_crop=0.0: must be > 0 and <= 1"),
        (Stage2JobConfig, "scale.cpus_per_worker=0", "scale.cpus_per_worker=0.0: must be > 0"),
        (Stage2JobConfig, "optim.lr=nan", "optim.lr=nan: must be > 0"),
    ],
)
def test_a_value_out_of_range_is_refused_naming_the_key(cls, override, message):
    with pytest.raises(ConfigError) as err:
        load_layers(cls, {}, None, [override])
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_ranges_reach_every_item_of_a_tuple():
    with pytest.raises(ConfigError, match=r"^fewshot_shots=\(1, 0\): must be >= 1"):
        load_layers(EvalConfig, {}, None, ["fewshot_shots=[1,0]"])


@pytest.mark.parametrize(
    "path", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_search_space_stays_in_range(path):
    load_space(path)  # refuses a point or a range end outside the key's range


def test_a_search_space_that_leaves_the_range_is_refused(tmp_path):
    space = tmp_path / "bad.yaml"
    space.write_text("job: stage2\nspace:\n  stage2.layer_decay: {uniform: [0.2, 1.4]}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: stage2.layer_decay: uniform\(0.2, 1.4\) "):
        load_space(space)
    space.write_text("job: stage1\nspace:\n  model.motion_tau: {grid: [0.0, 0.8]}\n")
    assert load_space(space).params["model.motion_tau"].points() == [0.0, 0.8]
