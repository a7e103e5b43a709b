"""Search-space files: valid spaces load into Ray Tune domains; every kind of mistake is an
error naming the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from stars.config import ConfigError
from stars.sweep.config import objective_monitor
from stars.sweep.space import load_space

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["stage1", "stage2", "tiny", "masking", "small"])
def test_shipped_spaces_load(name):
    space = load_space(ROOT / "search_spaces" / f"{name}.yaml")
    assert space.params and space.to_tune()
    if space.job == "stage1":
        assert len(space.grid()) >= 2


def _space(tmp_path, body: str, job: str = "stage2") -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(f"job: {job}\nspace:\n{body}")
    return path


def test_domains_follow_the_distributions(tmp_path):
    path = _space(
        tmp_path,
        "  stage2.queue_size: {choice: [64, 128]}\n"
        "  stage2.layer_decay: {uniform: [0.1, 0.7]}\n"
        "  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
        "  stage2.frozen_blocks: {randint: [1, 3]}\n"
        "  stage2.topk: {grid: [1, 2]}\n",
    )
    space = load_space(path)
    domains = space.to_tune()
    assert domains["stage2.queue_size"].categories == [64, 128]
    assert (domains["stage2.layer_decay"].lower, domains["stage2.layer_decay"].upper) == (0.1, 0.7)
    assert "LogUniform" in type(domains["optim.lr"].sampler).__name__
    assert domains["stage2.topk"] == {"grid_search": [1, 2]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("  stage2.nope: {choice: [1]}\n", "stage2.nope: unknown key"),
        ("  stage2.queue_size: {choice: []}\n", "choice has no values"),
        ("  stage2.layer_decay: {uniform: [0.7, 0.1]}\n", "empty range"),
        ("  stage2.layer_decay: {normal: [0, 1]}\n", "unknown distribution 'normal'"),
        ("  stage2.queue_size: {choice: [big]}\n", "stage2.queue_size: expected an integer"),
        ("  optim.lr: {loguniform: [0, 1]}\n", "loguniform needs low > 0"),
        ("  stage2.queue_size: {uniform: [1, 10]}\n", "draws real numbers"),
        ("  stage2: {choice: [1]}\n", "is a section"),
        ("  stage2.augment: [true]\n", "expected one distribution"),
    ],
)
def test_mistakes_name_the_file_and_key(tmp_path, body, message):
    path = _space(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_space(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_wrong_job_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="a stage1 space where a stage2 space"):
        load_space(_space(tmp_path, "  model.motion_tau: {grid: [0.0]}\n", "stage1"), "stage2")
    with pytest.raises(ConfigError, match="cannot read search space"):
        load_space(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("job: stage2\nspace: {a: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_space(bad)


def test_a_stage1_range_cannot_be_enumerated(tmp_path):
    space = load_space(_space(tmp_path, "  model.motion_tau: {uniform: [0, 1]}\n", "stage1"))
    with pytest.raises(ConfigError, match="use choice or grid"):
        space.grid()


def test_objectives_are_validation_metrics():
    assert objective_monitor("fewshot_val_5shot_mean") == {
        "stage2.monitor": "fewshot_val",
        "stage2.monitor_shots": 5,
    }
    assert objective_monitor("knn_val_top1") == {"stage2.monitor": "holdout"}
    with pytest.raises(ConfigError, match="not a validation metric"):
        objective_monitor("knn_top1")
    with pytest.raises(ConfigError, match="no protocol produces"):
        objective_monitor("banana")


def test_space_path_follows_the_preset_and_the_repository(tmp_path, monkeypatch):
    from stars.sweep.space import SPACES_DIR, space_path

    monkeypatch.chdir(tmp_path)
    assert space_path(None, "tiny") == SPACES_DIR / "tiny.yaml"
    assert space_path("", "paper") == SPACES_DIR / "stage2.yaml"
    assert space_path("search_spaces/small.yaml", "tiny") == SPACES_DIR / "small.yaml"
    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "small.yaml").write_text("mine")
    assert space_path("search_spaces/small.yaml", "tiny").resolve() == (
        tmp_path / "search_spaces" / "small.yaml"
    )
    for preset in ("tiny", "small", "paper"):
        load_space(space_path(None, preset), job="stage2")
