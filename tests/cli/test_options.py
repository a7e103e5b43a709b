"""One spelling per option across jobs: the config layout, --set SECTION.KEY, --stage1,
--print-config (round trips), --version and examples in every job's help."""

from __future__ import annotations

import importlib

import pytest
import yaml

from stars.config import ConfigError, load_layers, route_overrides
from stars.model import checkpoint as ckpt
from stars.model.config import preset
from stars.model.mamp import MAMP
from stars.sweep.results import write_best_config
from stars.train.config import Stage1JobConfig, Stage2JobConfig

JOBS = {
    "pretrain": "stars.cli.pretrain",
    "stage2": "stars.cli.stage2",
    "sweep_stage2": "stars.cli.sweep",
    "evaluate": "stars.cli.evaluate",
    "lineage": "stars.cli.lineage",
    "prepare_data": "stars.cli.prepare_data",
}


def _main(job: str):
    return importlib.import_module(JOBS[job]).main


@pytest.mark.parametrize("job", sorted(JOBS))
def test_every_job_has_version_and_examples(job, capsys):
    with pytest.raises(SystemExit) as done:
        _main(job)(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("stars 0.")
    with pytest.raises(SystemExit):
        _main(job)(["--help"])
    assert "examples:" in capsys.readouterr().out


def test_a_section_holds_its_own_keys(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("stage1:\n  epochs: 3\n  model: {dim: 16}\n")
    cfg = load_layers(Stage1JobConfig, None, path, section="stage1").config
    assert cfg.stage1.epochs == 3 and cfg.model.dim == 16
    path.write_text("stage1:\n  epochs: 3\n  stage1: {epochs: 4}\n")
    with pytest.raises(ConfigError, match="'epochs' given twice"):
        load_layers(Stage1JobConfig, None, path, section="stage1")
    # The older nested form still reads the same.
    path.write_text("stage1:\n  stage1: {epochs: 5}\n")
    assert load_layers(Stage1JobConfig, None, path, section="stage1").config.stage1.epochs == 5
    # --set spells keys as the file does.
    cfg = load_layers(
        Stage2JobConfig, None, None, ["queue_size=8", "optim.lr=0.5"], section="stage2"
    )
    assert cfg.config.stage2.queue_size == 8 and cfg.config.optim.lr == 0.5


def test_set_goes_to_the_section_it_names():
    routed = route_overrides(
        ["stage2.layer_decay=0.4", "eval.knn_ks=[1]", "model.dim=8", "stage1.epochs=2"],
        ["stage1", "stage2", "eval", "tracking"],
        "stage1",
    )
    assert routed == {
        "stage1": ["model.dim=8", "epochs=2"],
        "stage2": ["layer_decay=0.4"],
        "eval": ["knn_ks=[1]"],
        "tracking": [],
    }


@pytest.fixture
def source(tmp_path):
    path = tmp_path / "stage1" / "checkpoint.pt"
    path.parent.mkdir()
    ckpt.save(path, ckpt.stage1_payload(MAMP(preset("tiny")), epoch=0, global_step=0))
    return path


def _round_trip(capsys, main, args: list[str], tmp_path) -> dict:
    assert main([*args, "--print-config"]) == 0
    first = capsys.readouterr().out
    again = tmp_path / "again.yaml"
    again.write_text(first)
    assert main([*args, "--config", str(again), "--print-config"]) == 0
    assert capsys.readouterr().out == first
    return yaml.safe_load(first)


def test_stage2_prints_a_config_it_reads_back(source, tiny_dataset_dir, capsys, tmp_path):
    args = ["--stage1", str(source), "--preset", "tiny", "--data", str(tiny_dataset_dir)]
    args += ["--set", "stage2.queue_size=24", "--set", f"scale.storage_path={tmp_path / 'r'}"]
    cfg = _round_trip(capsys, _main("stage2"), args, tmp_path)
    assert cfg["stage2"]["stage2"]["queue_size"] == 24 and set(cfg) == {
        "stage2",
        "eval",
        "tracking",
    }


def test_evaluate_prints_a_config_it_reads_back(source, tiny_dataset_dir, capsys, tmp_path):
    args = ["--checkpoint", str(source), "--preset", "tiny", "--data", str(tiny_dataset_dir)]
    args += ["--set", "eval.fewshot_episodes=4", "--out", str(tmp_path / "o")]
    cfg = _round_trip(capsys, _main("evaluate"), args, tmp_path)
    assert cfg["eval"]["eval"]["fewshot_episodes"] == 4


def test_sweep_prints_its_config_from_another_directory(
    source, tiny_dataset_dir, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    args = ["--stage1", str(source), "--preset", "tiny", "--data", str(tiny_dataset_dir)]
    args += ["--set", "sweep.num_samples=3", "--set", "stage2.epochs=1"]
    cfg = _round_trip(capsys, _main("sweep_stage2"), args, tmp_path)
    assert cfg["sweep"]["num_samples"] == 3 and cfg["stage2"]["stage2"]["epochs"] == 1


def test_a_sweeps_best_config_is_read_by_every_job(source, tiny_dataset_dir, capsys, tmp_path):
    best = {
        "trial": "t1",
        "stage1_run": "r",
        "stage2.queue_size": 48,
        "fewshot_val_5shot_mean": 0.5,
    }
    path = write_best_config(
        best, ["stage2.queue_size"], {"stage2": {"epochs": 1}}, "fewshot_val_5shot_mean",
        tmp_path / "best_stage2.yaml",
    )  # fmt: skip
    common = ["--preset", "tiny", "--data", str(tiny_dataset_dir), "--config", str(path)]
    assert _main("pretrain")([*common, "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["stage2"]["stage2"]["queue_size"] == 48
    assert _main("stage2")([*common, "--stage1", str(source), "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["stage2"]["stage2"]["queue_size"] == 48
