"""The commented examples in ``configs/``: each loads, round-trips through --print-config,
agrees with what it says it is (the demo preset, a recipe), and runs at tiny sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from stars.cli.pretrain import main as pretrain_main
from stars.cli.sweep import main as sweep_main
from stars.data.formats.pyskl import convert_pyskl, write_annotation_file
from stars.recipes import RECIPES

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
MAIN_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("sweep"))
RECIPE_DATA = {
    "ntu60-xsub": "ntu60",
    "ntu60-xview": "ntu60",
    "ntu120-xsub": "ntu120",
    "ntu120-xset": "ntu120",
    "pku2-xsub": "pku2",
    "fewshot-ntu60-ntu120": "ntu120",
}
# Small enough to train in seconds whatever the file says (the sizes, not the values tested).
TINY = [
    "stage1.epochs=1", "stage2.epochs=1", "stage1.model.dim=32", "stage1.model.depth=2",
    "stage1.model.num_heads=2", "stage1.model.decoder_dim=32", "stage1.model.decoder_depth=1",
    "stage1.model.decoder_heads=2", "stage1.model.num_frames=32", "stage1.scale.num_workers=1",
    "stage1.scale.use_gpu=false", "stage1.data.batch_size=8", "stage1.data.min_crop_frames=16",
    "stage2.queue_size=64", "stage2.predictor_hidden=64", "eval.fewshot_episodes=2",
]  # fmt: skip


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, pyskl_ntu_file, pyskl_annotation):
    root = tmp_path_factory.mktemp("config-data")
    out = {}
    for variant in ("ntu60", "ntu120"):
        pyskl_ntu_file(root / f"{variant}.pkl", variant, per_action=3)
        convert_pyskl(root / f"{variant}.pkl", root / variant, progress=False)
        out[variant] = root / variant
    rng = np.random.default_rng(0)
    anns = [
        pyskl_annotation(f"A{a + 1:02d}N{k:02d}-{s}", a, 40, 1, rng)
        for a in range(51)
        for k in range(2)
        for s in "LR"
    ]
    split = {
        "xsub_train": [x["frame_dir"] for x in anns if x["frame_dir"].endswith("L")],
        "xsub_val": [x["frame_dir"] for x in anns if x["frame_dir"].endswith("R")],
    }
    write_annotation_file(root / "pku2.pkl", anns, split)
    convert_pyskl(root / "pku2.pkl", root / "pku2", progress=False)
    out["pku2"] = root / "pku2"
    return out


def _data_args(path: Path, datasets) -> list[str]:
    if path.stem in RECIPE_DATA:
        return ["--preset", "paper", "--data", str(datasets[RECIPE_DATA[path.stem]])]
    return []


def _printed(capsys, args: list[str]) -> str:
    assert pretrain_main([*args, "--print-config"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("path", MAIN_CONFIGS, ids=lambda p: p.stem)
def test_config_round_trips_through_print_config(path, datasets, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = _printed(capsys, [*_data_args(path, datasets), "--config", str(path)])
    again = tmp_path / "again.yaml"
    again.write_text(first)
    assert _printed(capsys, [*_data_args(path, datasets), "--config", str(again)]) == first


def test_demo_config_is_the_small_preset(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from_file = _printed(capsys, ["--config", str(CONFIGS / "demo.yaml")])
    assert from_file == _printed(capsys, ["--preset", "small"])


@pytest.mark.parametrize("name", sorted(RECIPE_DATA))
def test_recipe_config_equals_the_recipe(name, datasets, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = ["--data", str(datasets[RECIPE_DATA[name]])]
    from_file = _printed(
        capsys, [*data, "--preset", "paper", "--config", str(CONFIGS / f"{name}.yaml")]
    )
    assert yaml.safe_load(from_file) == yaml.safe_load(_printed(capsys, [*data, "--recipe", name]))
    assert name in RECIPES


# The recipe files differ only in values (checked above against the recipes): one NTU
# protocol recipe and the few-shot one run, with the demo, to keep CI's time in bounds.
RUN_CONFIGS = [CONFIGS / f"{name}.yaml" for name in ("demo", "ntu60-xsub", "fewshot-ntu60-ntu120")]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.stem)
def test_config_runs_at_tiny_sizes(path, datasets, ray_local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [*_data_args(path, datasets), "--config", str(path), "--no-tracking"]
    args += [a for kv in TINY for a in ("--set", kv)]
    if path.stem == "demo":
        args += ["--set", "stage1.data.synthetic.samples_per_class=12"]
    assert pretrain_main([*args, "--name", path.stem]) == 0


@pytest.mark.slow
@pytest.mark.ray
def test_sweep_config_runs(ray_local, tiny_dataset_dir, tmp_path, monkeypatch):
    from stars.model import checkpoint as ckpt
    from stars.model.config import preset
    from stars.model.mamp import MAMP

    monkeypatch.chdir(tmp_path)
    source = tmp_path / "checkpoint.pt"
    ckpt.save(source, ckpt.stage1_payload(MAMP(preset("tiny")), epoch=0, global_step=0))
    args = ["--preset", "tiny", "--stage1", str(source), "--data", str(tiny_dataset_dir)]
    args += ["--config", str(CONFIGS / "sweep-tiny.yaml"), "--name", "cfg"]
    args += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]  # a sweep is tracked
    args += ["--set", "sweep.num_samples=1", "--set", f"scale.storage_path={tmp_path / 'runs'}"]
    assert sweep_main(args) == 0
    assert (tmp_path / "runs" / "sweeps" / "cfg" / "results" / "best_stage2.yaml").exists()
