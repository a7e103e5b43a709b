"""Small promises of the training code, each a test that fails when it breaks: the lr
schedule, fine-tuning's layer-wise decay, the RNG round trip of a resume, the best-monitor
checkpoint, few-shot episodes replaying their seeds, and ``--from-run``'s artifact fallback."""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from stars.eval.finetune import Classifier
from stars.metrics.feature_set import FeatureSet
from stars.metrics.fewshot import fewshot_report, make_episode, run_episode
from stars.model import checkpoint as ckpt
from stars.model.config import preset
from stars.model.encoder import SkeletonEncoder
from stars.model.mamp import MAMP
from stars.train import resume
from stars.train.config import OptimConfig, ScaleConfig
from stars.train.optim import param_groups, scheduled_lr


def test_schedule_warms_up_linearly_then_follows_the_cosine():
    cfg = OptimConfig(lr=1.0, min_lr=0.1, schedule="cosine")
    lrs = [scheduled_lr(s, total_steps=110, warmup_steps=10, cfg=cfg) for s in range(110)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lrs[10] == pytest.approx(1.0)
    mid = 10 + 50
    assert lrs[mid] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3) and all(
        a >= b for a, b in itertools.pairwise(lrs[10:])
    )
    const = OptimConfig(lr=0.5, schedule="constant")
    assert scheduled_lr(40, 100, 0, const) == 0.5 and scheduled_lr(2, 100, 4, const) == 0.375


def test_finetune_layer_decay_scales_each_block():
    encoder = SkeletonEncoder(preset("tiny"))
    model = Classifier(encoder, num_classes=5)
    scale = {n: g["lr_scale"] for g in param_groups(model, 0.05, 0.5) for n in g["names"]}
    depth = encoder.cfg.depth
    assert scale["head.1.weight"] == 1.0
    assert scale["encoder.norm.weight"] == pytest.approx(0.5)
    for i in range(depth):
        assert scale[f"encoder.blocks.{i}.attn.qkv.weight"] == pytest.approx(0.5 ** (depth + 1 - i))
    assert scale["encoder.joints_embed.weight"] == pytest.approx(0.5 ** (depth + 2))


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    resume.seed_everything(11)
    state = resume.rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.save(tmp_path / "c.pt", {"rng": state})
    torch.rand(5), np.random.rand(5)  # the run goes on, then fails
    resume.restore_rng(ckpt.read(tmp_path / "c.pt")["rng"])
    again = (torch.rand(3), np.random.rand(3))
    assert torch.equal(again[0], expected[0]) and np.array_equal(again[1], expected[1])


def test_the_best_monitor_checkpoint_is_selected(tmp_path):
    from stars.train.launch import stage_result

    def checkpoint(epoch: int):
        path = tmp_path / f"checkpoint_{epoch}"
        path.mkdir()
        ckpt.save(
            path / "checkpoint.pt",
            {"epoch": epoch, "history": [{"epoch": e} for e in range(epoch + 1)]},
        )
        return SimpleNamespace(path=str(path), as_directory=lambda p=path: _Dir(p))

    ckpts = {e: checkpoint(e) for e in range(3)}
    scores = {0: 0.2, 1: 0.9, 2: 0.5}
    result = SimpleNamespace(
        error=None,
        checkpoint=ckpts[2],
        metrics={},
        path=str(tmp_path),
        get_best_checkpoint=lambda metric, mode: max(
            ckpts.values(), key=lambda c: scores[int(Path(c.path).name.split("_")[1])]
        ),
    )
    scale = ScaleConfig(storage_path=str(tmp_path))
    chosen = stage_result(result, scale, best_metric="monitor_knn_weighted_k20_top1")
    assert chosen.checkpoint_dir == ckpts[1].path  # the best epoch, not the last
    assert chosen.checkpoint_file == str(Path(ckpts[1].path) / "checkpoint.pt")
    assert len(chosen.history) == 3  # the history comes from the latest checkpoint
    assert stage_result(result, scale).checkpoint_dir == ckpts[2].path


class _Dir:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        return str(self.path)

    def __exit__(self, *exc):
        return False


def test_fewshot_reports_replay_from_their_recorded_seeds():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(60, 8)).astype(np.float32)
    labels = np.repeat(np.arange(6), 10)
    gallery = FeatureSet(feats, labels, np.arange(60))
    metrics, seeds = fewshot_report(gallery, None, shots=(2,), episodes=4, seed=3)
    replay = [run_episode(gallery, None, make_episode(gallery, None, 2, s))[0] for s in seeds["2"]]
    assert metrics["fewshot_2shot_mean"] == pytest.approx(float(np.mean(replay)))
    other, _ = fewshot_report(gallery, None, shots=(2,), episodes=4, seed=4)
    assert other["fewshot_2shot_mean"] != metrics["fewshot_2shot_mean"]


def test_from_run_falls_back_to_the_mlflow_artifact(tmp_path):
    from stars.data.prepare import write_synthetic
    from stars.data.shards import open_dataset
    from stars.data.synthetic import SyntheticSpec
    from stars.tracking import runs as tr
    from stars.tracking.config import TrackingConfig
    from stars.workflow.stages import stage1_from_run
    from stars.workflow.tracker import Tracker

    spec = SyntheticSpec(num_classes=3, samples_per_class=3, num_base_classes=2, seed=1)
    write_synthetic(tmp_path / "d", spec, progress=False)
    data = open_dataset(tmp_path / "d")
    tracker = Tracker(TrackingConfig(uri=f"sqlite:///{tmp_path / 'm.db'}"), data, "xsub_train")
    local = tmp_path / "gone" / "checkpoint.pt"
    local.parent.mkdir()
    ckpt.save(local, ckpt.stage1_payload(MAMP(preset("tiny")), epoch=0, global_step=0))
    run = tr.StageRun.create(tracker.client, tracker.experiment, "s1", "stage1", {})
    run.log_artifact(local, "checkpoint")
    run.set_tags({tr.CHECKPOINT: str(local)})
    local.unlink()  # the run directory is on another machine now
    source = stage1_from_run(tracker, run.run_id)
    assert Path(source.checkpoint).is_file() and source.run_id == run.run_id
    ckpt.load_encoder(source.checkpoint)


def test_cpu_training_uses_bf16_only_where_it_is_faster(tmp_path, monkeypatch):
    from stars.train import precision
    from stars.train.device import autocast

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert {"avx512_bf16", "amx_bf16"} <= precision.cpu_flags(info)
    assert precision.cpu_flags(tmp_path / "missing") == set()
    a, b = torch.randn(4, 8), torch.randn(8, 4)
    cpu = torch.device("cpu")
    for amx, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(precision, "cpu_trains_faster_in_bf16", lambda amx=amx: amx)
        with autocast(cpu, "bf16"):
            assert (a @ b).dtype == expected
        with autocast(cpu, "none"):
            assert (a @ b).dtype == torch.float32
