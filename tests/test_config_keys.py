"""No config key is silently dropped: every key of every job config, set to a valid
non-default value, either reaches the config the workers (or protocols) receive or is
rejected with an error that names the key. And every config field is read somewhere."""

from __future__ import annotations

import ast
import dataclasses
import json
import typing
from pathlib import Path

import pytest
import torch

from stars.config import ConfigError, flatten, get_dotted, load_layers, to_dict
from stars.data.job_data import resolve_data
from stars.eval.config import EvalConfig, EvalJobConfig
from stars.eval.resolve import resolve_eval
from stars.model import checkpoint as ckpt
from stars.model.config import preset
from stars.model.mamp import MAMP
from stars.presets import job_preset
from stars.sweep.config import SweepConfig
from stars.tracking.config import TrackingConfig
from stars.train import launch
from stars.train.config import Stage1JobConfig, Stage2JobConfig
from stars.train.resolve import resolve_stage1, resolve_stage2
from stars.workflow.config import resolve_main

# Valid non-default values where "default + something" would break an invariant.
SPECIAL: dict[str, object] = {
    "data.protocol": "xview",
    "data.train_crop": [0.6, 0.9],
    "data.eval_crop": 0.9,
    "data.num_frames": 64,
    "model.num_frames": 64,
    "model.dim": 64,
    "model.num_heads": 4,
    "model.decoder_dim": 64,
    "model.decoder_heads": 4,
    "model.patch_frames": 2,
    "model.mask_ratio": 0.75,
    "model.motion_tau": 0.5,
    "model.target": "coords",
    "model.in_channels": 2,
    "data.synthetic.num_base_classes": 5,
    "data.synthetic.num_classes": 9,
    "optim.betas": [0.8, 0.9],
    "optim.schedule": "constant",
    "stage2.monitor": "test",
    "stage2.frozen_blocks": 1,
    "eval.protocols": ["knn"],
    "eval.protocol": "xview",
    "eval.feature_precision": "fp32",
    "eval.in_process": True,
    "data.in_memory": True,
    "eval.finetune.amp": "none",
    "stage1.amp": "fp16",
    "stage2.amp": "fp16",
    "uri": "sqlite:////tmp/other.db",
    "eval.semi_fractions": [0.01, 0.2],  # the generic alternative (1.1) is no fraction
}


def alternative(key: str, default: object, tp: object) -> object:
    """A valid value of ``key`` that differs from ``default``."""
    if key in SPECIAL:
        return SPECIAL[key]
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1 if default >= 0 else 1
    if isinstance(default, float):
        return round(default * 0.5, 6) if default else 0.5
    if default is None:
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return 7 if inner and inner[0] is int else 2.5
    if isinstance(default, str):
        return default + "-x" if default else "custom"
    if isinstance(default, list):
        return [*default[:-1], default[-1] + 1] if default else [1]
    raise AssertionError(f"no alternative for {key}={default!r}")


def leaf_types(cls: type, prefix: str = "") -> dict[str, object]:
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(leaf_types(tp, key + "."))
        else:
            out[key] = tp
    return out


def cases(cls: type, preset_tree: dict, dataset_dir: Path, tmp_path: Path):
    """(key, non-default value) for every leaf key of ``cls`` under ``preset_tree``."""
    base = flatten(load_layers(cls, preset_tree).config)
    types = leaf_types(cls)
    out = []
    for key in base:
        value = alternative(key, base[key], types[key])
        if key == "data.path":
            value = str(dataset_dir)
        elif key == "data.synthetic.cache_dir":
            value = str(tmp_path / "other-cache")
        out.append((key, value))
    return out


def same(got: object, wanted: object) -> bool:
    return to_dict(got) == to_dict(wanted) or (
        isinstance(wanted, (int, float)) and got == pytest.approx(wanted)
    )


def check(key: str, value: object, resolve) -> str:
    """``reached`` or ``rejected``; fails when the value was silently replaced or dropped."""
    try:
        cfg = resolve(f"{key}={json.dumps(value)}")
    except ConfigError as err:
        assert key in str(err), f"{key}: the error does not name the key: {err}"
        return "rejected"
    got = get_dotted(cfg, key)
    if key.endswith(("data.path", "scale.storage_path")):  # made absolute, the same place
        assert Path(got) == Path(value).resolve(), key
    else:
        assert same(got, value), f"{key}={value!r} was replaced by {got!r}"
    return "reached"


@pytest.fixture()
def capture_launch(monkeypatch):
    """Run the real launch code up to the TorchTrainer and keep the loop config it gets."""
    seen: dict = {}

    class CapturedError(Exception):
        pass

    def fake_trainer(loop_fn, loop_config, *args, **kwargs):
        seen["loop_config"] = loop_config
        raise CapturedError

    monkeypatch.setattr(launch, "make_trainer", fake_trainer)
    monkeypatch.setattr(launch, "build_dataset", lambda *a, **k: None)
    monkeypatch.setattr(launch, "build_base_dataset", lambda *a, **k: None)
    return seen, CapturedError


@pytest.fixture(scope="module")
def masking_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    ckpt.save(path, ckpt.stage1_payload(MAMP(preset("tiny")), epoch=0, global_step=0))
    return path


def _tree(job: str, tmp_path: Path) -> dict:
    """The tiny preset of ``job``, its synthetic cache and storage under ``tmp_path`` (as
    preset values: not set by the user)."""
    tree = job_preset("tiny", job)
    tree["data"].setdefault("synthetic", {})["cache_dir"] = str(tmp_path / "cache")
    tree["scale"]["storage_path"] = str(tmp_path)
    return tree


def test_every_stage1_key_reaches_the_workers_or_is_rejected(
    tmp_path, tiny_dataset_dir, capture_launch
):
    seen, captured = capture_launch
    tree = _tree("stage1", tmp_path)
    outcomes = {}

    def resolve(override: str):
        layered = load_layers(Stage1JobConfig, tree, None, [override])
        data = resolve_data(layered.config.data, progress=False)
        cfg = resolve_stage1(layered, data)
        with pytest.raises(captured):
            launch.run_stage1(cfg, "walk", data)
        assert seen["loop_config"]["job"] == to_dict(cfg), "the workers get another config"
        return cfg

    for key, value in cases(Stage1JobConfig, tree, tiny_dataset_dir, tmp_path):
        outcomes[key] = check(key, value, resolve)
    rejected = sorted(k for k, v in outcomes.items() if v == "rejected")
    # Derived from the dataset / model, or an invalid combination for this dataset.
    # Derived from the model (T) and the dataset (V, xyz).
    assert rejected == ["data.num_frames", "model.in_channels", "model.num_joints"], rejected


def test_every_stage2_key_reaches_the_workers_or_is_rejected(
    tmp_path, tiny_dataset_dir, masking_checkpoint, capture_launch
):
    seen, captured = capture_launch
    tree = _tree("stage2", tmp_path)
    encoder = preset("tiny")
    outcomes = {}

    def resolve(override: str):
        layered = load_layers(Stage2JobConfig, tree, None, [override])
        data = resolve_data(layered.config.data, progress=False)
        cfg = resolve_stage2(layered, data, encoder, str(masking_checkpoint))
        with pytest.raises(captured):
            launch.run_stage2(cfg, masking_checkpoint, "walk", data)
        assert seen["loop_config"]["job"] == to_dict(cfg), "the workers get another config"
        return cfg

    for key, value in cases(Stage2JobConfig, tree, tiny_dataset_dir, tmp_path):
        outcomes[key] = check(key, value, resolve)
    rejected = sorted(k for k, v in outcomes.items() if v == "rejected")
    # Fixed by the checkpoint (T) and by the unaltered view of stage 2.
    assert rejected == [
        "data.min_crop_frames",
        "data.num_frames",
        "data.rotation",
        "data.train_crop",
    ], rejected


def test_every_eval_key_reaches_the_protocols_or_is_rejected(tmp_path, tiny_dataset_dir):
    tree = _tree("eval", tmp_path)
    outcomes = {}

    def resolve(override: str):
        layered = load_layers(EvalJobConfig, tree, None, [override])
        data = resolve_data(layered.config.data, progress=False)
        return resolve_eval(layered, data, preset("tiny"), "tiny")

    for key, value in cases(EvalJobConfig, tree, tiny_dataset_dir, tmp_path):
        outcomes[key] = check(key, value, resolve)
    rejected = sorted(k for k, v in outcomes.items() if v == "rejected")
    assert rejected == ["data.batch_size", "data.num_frames"], rejected


def test_main_job_stage2_keys_are_kept_inherited_or_rejected(tmp_path, tiny_dataset_dir):
    """In the main job, stage 2 shares stage 1's data and scale; what the user sets for stage
    2 wins, the dataset itself cannot differ."""
    s1_tree, s2_tree = _tree("stage1", tmp_path), job_preset("tiny", "stage2")
    stage1 = load_layers(Stage1JobConfig, s1_tree, None, ["data.batch_size=4"])
    data = resolve_data(stage1.config.data, progress=False)
    outcomes = {}

    def resolve(override: str):
        stage2 = load_layers(Stage2JobConfig, s2_tree, None, [override])
        return resolve_main(stage1, stage2, EvalConfig(), TrackingConfig(), data).stage2

    plain = resolve_main(
        stage1, load_layers(Stage2JobConfig, s2_tree), EvalConfig(), TrackingConfig(), data
    )
    assert plain.stage2.data.batch_size == 4  # inherited from stage 1
    assert plain.stage2.scale.storage_path == str(tmp_path)
    assert plain.stage2.data.path == plain.stage1.data.path
    for key, value in cases(Stage2JobConfig, s2_tree, tiny_dataset_dir, tmp_path):
        outcomes[key] = check(key, value, resolve)
    rejected = sorted(k for k, v in outcomes.items() if v == "rejected")
    assert rejected == [
        "data.min_crop_frames",
        "data.num_frames",
        "data.path",
        "data.protocol",
        "data.rotation",
        "data.synthetic.cache_dir",
        "data.synthetic.num_base_classes",
        "data.synthetic.num_classes",
        "data.synthetic.samples_per_class",
        "data.synthetic.seed",
        "data.train_crop",
    ], rejected


def test_a_default_never_beats_a_file_and_a_flag_beats_set(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("eval:\n  protocols: [knn]\n  fewshot_episodes: 4\n")
    from stars.cli.pretrain import build_parser, load_layered

    args = build_parser().parse_args(["--preset", "tiny", "--config", str(path)])
    *_, evaluation, _ = load_layered(args)
    assert evaluation.config.protocols == ("knn",) and evaluation.config.fewshot_episodes == 4
    args = build_parser().parse_args(
        ["--preset", "tiny", "--config", str(path), "--protocols", "linear"]
    )
    assert load_layered(args)[2].config.protocols == ("linear",)
    args = build_parser().parse_args(["--preset", "tiny", "--set", "data.path=a", "--data", "b"])
    assert load_layered(args)[0].config.data.path == "b"


def _read_attributes(root: Path) -> set[str]:
    names = set()
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                names.add(node.attr)
    return names


@pytest.mark.parametrize(
    "cls", [Stage1JobConfig, Stage2JobConfig, EvalJobConfig, TrackingConfig, SweepConfig]
)
def test_every_config_field_is_read_by_the_library(cls):
    read = _read_attributes(Path(__file__).resolve().parents[1] / "stars")
    unread = sorted(k for k in flatten(cls()) if k.rsplit(".", 1)[-1] not in read)
    assert not unread, f"fields no library code reads: {unread}"


def test_the_main_jobs_one_seed_reaches_both_stages_and_the_evaluation(tmp_path, tiny_dataset_dir):
    """``--seed`` is every stage's and the evaluation's; stage 2 takes stage 1's ``seed``
    unless it is set for stage 2; an evaluation seed that differs from the job's is refused,
    naming the key."""
    from stars.cli.pretrain import build_parser, load_layered

    def resolved(*argv: str):
        args = build_parser().parse_args(
            ["--preset", "tiny", "--data", str(tiny_dataset_dir), *argv]
        )
        stage1, stage2, evaluation, tracking = load_layered(args)
        data = resolve_data(stage1.config.data, progress=False)
        return resolve_main(stage1, stage2, evaluation, tracking, data)

    plain = resolved()
    assert (plain.stage1.seed, plain.stage2.seed, plain.eval.seed) == (0, 0, 0)
    cfg = resolved("--seed", "3")
    assert (cfg.stage1.seed, cfg.stage2.seed, cfg.eval.seed) == (3, 3, 3)
    cfg = resolved("--set", "seed=4")
    assert (cfg.stage1.seed, cfg.stage2.seed, cfg.eval.seed) == (4, 4, 4)
    cfg = resolved("--set", "seed=3", "--stage2-set", "seed=5")
    assert (cfg.stage1.seed, cfg.stage2.seed, cfg.eval.seed) == (3, 5, 3)
    cfg = resolved("--seed", "3", "--stage2-set", "seed=5")  # a flag beats --set
    assert (cfg.stage1.seed, cfg.stage2.seed, cfg.eval.seed) == (3, 3, 3)
    with pytest.raises(ConfigError, match="seed=5 cannot be set here"):
        resolved("--set", "seed=3", "--eval-set", "seed=5")
    with pytest.raises(ConfigError, match="seed=-1: must be >= 0"):
        resolved("--seed", "-1")
