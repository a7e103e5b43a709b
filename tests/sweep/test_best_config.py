"""The best trial's job file: the values the sweep chose over the keys the user set, nested."""

import yaml

from stars.config import load_layers
from stars.sweep.results import write_best_config
from stars.sweep.runner import _explicit_tree
from stars.train.config import Stage2JobConfig


def test_best_config_nests_the_chosen_values_over_the_user_keys(tmp_path):
    stage2 = load_layers(
        Stage2JobConfig,
        overrides=["stage2.epochs=7", "optim.lr=0.002", "data.path=/data/ntu60"],
        flags={"scale.storage_path": "/runs"},
    )
    base = _explicit_tree(stage2)
    # Where the data and the runs live is the machine's business, not the recipe's.
    assert base == {"stage2": {"epochs": 7}, "optim": {"lr": 0.002}}
    best = {"trial": "t1", "stage1_run": "r1", "knn_val_top1": 0.5}
    best |= {"stage2.queue_size": 4096, "stage2.layer_decay": 0.8, "optim.betas": (0.9, 0.99)}
    keys = ["stage2.queue_size", "stage2.layer_decay", "optim.betas"]
    path = write_best_config(best, keys, base, "knn_val_top1", tmp_path / "best.yaml")
    tree = yaml.safe_load(path.read_text())["stage2"]
    assert tree["stage2"] == {"epochs": 7, "queue_size": 4096, "layer_decay": 0.8}
    assert tree["optim"] == {"lr": 0.002, "betas": [0.9, 0.99]}
    loaded = load_layers(Stage2JobConfig, None, path, section="stage2").config
    assert (loaded.stage2.queue_size, loaded.optim.betas) == (4096, (0.9, 0.99))
