"""Each recipe resolves to the released configs' values, on the dataset of its row."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from stars.cli.pretrain import main as pretrain_main
from stars.config import ConfigError
from stars.data.formats.pyskl import convert_pyskl, write_annotation_file
from stars.recipes import RECIPES, Recipe, paper_rows

# recipe -> (tau1, alpha, data protocol, dataset); the released configs' values
# (docs/method.md sections 6-7: tau1 0.80 NTU-60 / PKU, 0.75 NTU-120; alpha 0.45 / 0.40 / 0.35).
RELEASED = {
    "ntu60-xsub": (0.80, 0.45, "xsub", "ntu60"),
    "ntu60-xview": (0.80, 0.45, "xview", "ntu60"),
    "ntu120-xsub": (0.75, 0.40, "xsub", "ntu120"),
    "ntu120-xset": (0.75, 0.40, "xset", "ntu120"),
    "pku2-xsub": (0.80, 0.35, "xsub", "pku2"),
    "fewshot-ntu60-ntu120": (0.80, 0.45, "", "ntu120"),
}
# The published top-1 numbers (docs/method.md end; STARS Tables 1-3).
PUBLISHED = {
    ("ntu60-xsub", "stage2", "linear_top1"): 87.1,
    ("ntu60-xview", "stage2", "knn_top1"): 88.6,
    ("ntu120-xsub", "stage1", "linear_top1"): 78.6,
    ("ntu120-xset", "stage2", "linear_top1"): 80.8,
    ("pku2-xsub", "stage2", "linear_top1"): 52.7,
    ("ntu60-xsub", "stage2", "finetune_top1"): 93.0,
}


def test_every_recipe_is_in_the_table():
    assert set(RECIPES) == set(RELEASED)


def test_published_numbers():
    for (name, stage, metric), value in PUBLISHED.items():
        (row,) = [r for r in RECIPES[name].results if (r.stage, r.metric) == (stage, metric)]
        assert row.value == value and row.source and row.table


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("recipes")
    make = request.getfixturevalue
    out = {}
    for variant in ("ntu60", "ntu120"):
        make("pyskl_ntu_file")(root / f"{variant}.pkl", variant)
        convert_pyskl(root / f"{variant}.pkl", root / variant, progress=False)
        out[variant] = root / variant
    rng = np.random.default_rng(0)
    annotate = make("pyskl_annotation")
    anns = [annotate(f"A{a + 1:02d}N01-{s}", a, 30, 1, rng) for a in range(51) for s in "LR"]
    split = {
        "xsub_train": [x["frame_dir"] for x in anns if x["frame_dir"].endswith("L")],
        "xsub_val": [x["frame_dir"] for x in anns if x["frame_dir"].endswith("R")],
    }
    write_annotation_file(root / "pku2.pkl", anns, split)
    convert_pyskl(root / "pku2.pkl", root / "pku2", progress=False)
    out["pku2"] = root / "pku2"
    return out


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_recipe_resolves_to_the_released_values(name, datasets, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tau, alpha, protocol, dataset = RELEASED[name]
    args = ["--recipe", name, "--data", str(datasets[dataset]), "--print-config"]
    assert pretrain_main(args) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    s1, s2 = cfg["stage1"], cfg["stage2"]
    assert s1["model"]["motion_tau"] == tau and s2["stage2"]["layer_decay"] == alpha
    assert s1["data"]["protocol"] == protocol == cfg["eval"]["protocol"]
    # The paper preset: 8 encoder / 5 decoder blocks, T=120, 90 % masking, 400 + 10 epochs,
    # global batch 128 = 4 workers x 32.
    assert (s1["model"]["depth"], s1["model"]["decoder_depth"]) == (8, 5)
    assert (s1["model"]["num_frames"], s1["model"]["mask_ratio"]) == (120, 0.9)
    assert (s1["stage1"]["epochs"], s2["stage2"]["epochs"]) == (400, 10)
    assert s1["scale"]["num_workers"] * s1["data"]["batch_size"] == 128
    assert s2["stage2"]["queue_size"] == 32768 and s2["stage2"]["temperature"] == 0.07


def test_recipe_refuses_the_wrong_dataset(datasets, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--recipe", "ntu120-xset", "--data", str(datasets["ntu60"]), "--print-config"]
    with pytest.raises(SystemExit):
        pretrain_main(args)
    err = capsys.readouterr().err
    assert "recipe ntu120-xset: the dataset has 60 classes" in err and "ntu120_3danno.pkl" in err


def test_set_overrides_a_recipe(datasets, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--recipe", "ntu60-xsub", "--data", str(datasets["ntu60"]), "--print-config"]
    args += ["--set", "stage2.layer_decay=0.3", "--set", "stage1.epochs=5"]
    assert pretrain_main(args) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["stage2"]["stage2"]["layer_decay"] == 0.3 and cfg["stage1"]["stage1"]["epochs"] == 5


def test_paper_rows_put_the_measured_number_beside_the_published_one():
    recipe = RECIPES["ntu60-xsub"]
    measured = {
        "stage2": {"linear_top1": 0.85, "linear_top1_ci95_low": 0.84, "linear_top1_ci95_high": 0.86}
    }
    rows = {(r[0], r[1]): r for r in paper_rows(recipe, measured)[1:]}
    assert rows[("stage2", "linear_top1")][2:5] == ["87.1", "85.0 [84.0, 86.0]", "-2.1"]
    assert rows[("stage2", "knn_top1")][3] == "not run"
    assert isinstance(recipe, Recipe)


def test_unknown_recipe_is_named():
    from stars.recipes import get_recipe

    with pytest.raises(ConfigError, match="unknown recipe 'ntu61'"):
        get_recipe("ntu61")
