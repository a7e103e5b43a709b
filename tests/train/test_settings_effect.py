"""Every setting that changes the computation changes it, seen through what the job builds.

Each test goes through the objects a Ray Train worker really builds (the job config as the
worker receives it, ``Stage1Task`` / ``Stage2Task.build``, the loop's ``LrSchedule``) or the
objects a sweep hands its trials, and asserts the value's observable effect: which tokens are
masked, each parameter group's learning rate, the loss against a hand-written cross-entropy,
the queue the worker allocates. That a value sits in a config object proves nothing.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stars.config import Layered, from_dict, to_dict
from stars.model.checkpoint import write_random_init
from stars.model.config import preset
from stars.sweep.space import REPO_ROOT, load_space
from stars.sweep.trial import TrialPlan, trial_config
from stars.train.config import OptimConfig, Stage1JobConfig, Stage2Config, Stage2JobConfig
from stars.train.loop import Worker
from stars.train.optim import LrSchedule, set_lr
from stars.train.resolve import resolve_stage2
from stars.train.stage1 import Stage1Task, stage1_settings
from stars.train.stage2 import Stage2Task, stage2_settings

CPU = torch.device("cpu")
DEPTH = 8  # deep enough for every frozen_blocks value of the paper's stage-2 space


def _as_worker_receives(cls, cfg):
    """The config a worker rebuilds from its ``train_loop_config["job"]``."""
    return from_dict(cls, to_dict(cfg))


def _stage1_task(**model) -> Stage1Task:
    cfg = Stage1JobConfig(model=preset("tiny", **model))
    task = Stage1Task(_as_worker_receives(Stage1JobConfig, cfg))
    task.build(Worker(CPU, 0, 1, {}))
    return task


def _moving_and_still(n: int = 24, frames: int = 32, moving_joints: int = 5) -> torch.Tensor:
    """(n, 1, T, 25, 3): joints 0..moving_joints-1 swing widely, the rest barely move."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(frames, dtype=torch.float32)[None, :, None, None]
    phase = torch.rand(n, 1, 25, 3, generator=g) * 6.28
    amp = torch.full((1, 1, 25, 1), 1e-3)
    amp[:, :, :moving_joints] = 1.0
    x = amp * torch.sin(0.7 * t + phase) + 0.01 * torch.randn(n, frames, 25, 3, generator=g)
    return x[:, None]


def _masked_rates(task: Stage1Task, x: torch.Tensor, moving_joints: int = 5):
    """(masked fraction of moving tokens, of still tokens, masked tokens per sequence)."""
    torch.manual_seed(1)
    with torch.no_grad():
        mask = task.model(x)["mask"]  # no explicit mask: the model's own masker chooses
    cfg = task.model.cfg
    per_token_joint = torch.arange(cfg.num_joints).repeat(cfg.num_frames // cfg.patch_frames)
    moving = per_token_joint < moving_joints
    return (
        float(mask[:, moving].float().mean()),
        float(mask[:, ~moving].float().mean()),
        mask.sum(dim=1),
    )


def test_motion_tau_makes_the_job_model_mask_the_moving_tokens():
    x = _moving_and_still()
    aware_moving, aware_still, _ = _masked_rates(_stage1_task(motion_tau=0.8, mask_ratio=0.5), x)
    flat_moving, flat_still, _ = _masked_rates(_stage1_task(motion_tau=0.0, mask_ratio=0.5), x)
    assert aware_moving - aware_still > 0.3, (aware_moving, aware_still)
    assert abs(flat_moving - flat_still) < 0.12  # uniform: motion does not matter


def test_mask_ratio_sets_how_many_tokens_the_job_model_hides():
    x = _moving_and_still()
    for ratio in (0.6, 0.9):
        task = _stage1_task(mask_ratio=ratio)
        tokens = (task.model.cfg.num_frames // task.model.cfg.patch_frames) * 25
        *_, counts = _masked_rates(task, x)
        assert (counts == tokens - int(tokens * (1 - ratio) + 1e-6)).all(), ratio


# -- stage 2 ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stage1_file(tmp_path_factory) -> str:
    cfg = preset("tiny", depth=DEPTH, num_heads=2)
    return str(write_random_init(cfg, 0, tmp_path_factory.mktemp("s1") / "stage1.pt"))


def _stage2_task(stage1_file: str, cfg: Stage2JobConfig) -> Stage2Task:
    task = Stage2Task(_as_worker_receives(Stage2JobConfig, cfg), stage1_file)
    task.build(Worker(CPU, 0, 1, {}))
    return task


def _stage2_cfg(**stage2) -> Stage2JobConfig:
    base = {"queue_size": 64, "predictor_hidden": 32}
    return Stage2JobConfig(stage2=Stage2Config(**{**base, **stage2}))


def _group_lrs(task: Stage2Task) -> dict[str, float]:
    """Parameter name -> the learning rate its optimiser group applies."""
    names = {id(p): n for n, p in task.model.named_parameters()}
    return {names[id(p)]: g["lr"] for g in task.optimizer.param_groups for p in g["params"]}


def _expected_lr(name: str, lr: float, alpha: float, depth: int) -> float:
    if name.startswith("encoder.blocks."):
        return lr * alpha ** (depth - int(name.split(".")[2]))
    return lr


@pytest.mark.parametrize("alpha", [0.2, 0.6])
def test_layer_decay_sets_each_group_lr_in_the_job_optimizer(stage1_file, alpha):
    cfg = dataclasses.replace(_stage2_cfg(layer_decay=alpha), optim=OptimConfig(lr=2e-3))
    task = _stage2_task(stage1_file, cfg)
    schedule = LrSchedule.for_run(cfg.optim, stage2_settings(cfg).epochs, 10)
    set_lr(task.optimizer, schedule.at(5))
    lr = schedule.at(5)
    lrs = _group_lrs(task)
    assert any(n.startswith("encoder.blocks.") for n in lrs)
    for name, got in lrs.items():
        assert got == pytest.approx(_expected_lr(name, lr, alpha, DEPTH)), name


def test_frozen_blocks_and_queue_size_shape_what_the_worker_trains(stage1_file):
    for frozen, queue in ((2, 96), (6, 160)):
        task = _stage2_task(stage1_file, _stage2_cfg(frozen_blocks=frozen, queue_size=queue))
        trained_blocks = {
            int(n.split(".")[2]) for n in _group_lrs(task) if n.startswith("encoder.blocks.")
        }
        assert trained_blocks == set(range(frozen, DEPTH))
        assert task.queue.feats.shape[0] == queue and task.queue.size == queue


def _hand_written_loss(task: Stage2Task, x: torch.Tensor, ids: torch.Tensor, tau: float):
    """NNCLR by hand: each projection's most similar queue entry of another sample is the
    positive of its own prediction among the batch's predictions, at temperature tau."""
    with torch.no_grad():
        _, z, p = task.model(x)
    feats, queue_ids = task.queue.feats, task.queue.ids
    positives = []
    for i in range(len(z)):
        sims = [
            float(z[i] @ feats[j]) if queue_ids[j] not in (-1, ids[i]) else -math.inf
            for j in range(len(feats))
        ]
        positives.append(feats[int(np.argmax(sims))])
    logits = torch.stack(positives) @ p.T / tau
    return float(-F.log_softmax(logits, dim=1).diagonal().mean()), torch.stack(positives)


@pytest.mark.parametrize("tau", [0.2, 0.5])
def test_the_job_loss_is_the_nnclr_cross_entropy_at_its_temperature(stage1_file, tau):
    task = _stage2_task(stage1_file, _stage2_cfg(temperature=tau, queue_size=40))
    g = torch.Generator().manual_seed(3)
    cfg = task.model.encoder.cfg
    task.queue.enqueue(F.normalize(torch.randn(40, cfg.dim, generator=g), dim=1), torch.arange(40))
    x = torch.randn(6, 2, cfg.num_frames, cfg.num_joints, 3, generator=g)
    ids = torch.tensor([0, 3, 7, 100, 101, 102])  # some also in the queue: never their own
    expected, positives = _hand_written_loss(task, x, ids, tau)
    at_one, _ = _hand_written_loss(task, x, ids, 1.0)
    assert abs(expected - at_one) > 1e-3  # the temperature matters at these values
    # The positives are queue entries of other samples, not the rows' own projections.
    rows = [int((task.queue.feats == pos).all(dim=1).nonzero()[0]) for pos in positives]
    assert all(int(task.queue.ids[r]) != int(i) for r, i in zip(rows, ids, strict=True))
    loss = task.loss(task.model, {"x": x, "sample_index": ids})
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_lr_warmup_and_cosine_reach_the_schedule_of_both_stages():
    optim = OptimConfig(lr=4e-3, min_lr=4e-5, warmup_epochs=2, schedule="cosine")
    s1 = Stage1JobConfig(
        optim=optim, stage1=dataclasses.replace(Stage1JobConfig().stage1, epochs=6)
    )
    s2 = dataclasses.replace(
        _stage2_cfg(epochs=4, head_warmup_epochs=2), optim=optim
    )  # 3-stage: the heads' epochs count in the schedule
    for settings in (stage1_settings(s1), stage2_settings(s2)):
        assert settings.epochs == 6
        schedule = LrSchedule.for_run(settings.optim, settings.epochs, 10)
        assert (schedule.total_steps, schedule.warmup_steps) == (60, 20)
        assert schedule.at(0) == pytest.approx(4e-3 / 20)
        assert schedule.at(19) == pytest.approx(4e-3)
        assert schedule.at(40) == pytest.approx(
            4e-5 + (4e-3 - 4e-5) * 0.5 * (1 + math.cos(math.pi / 2))
        )
        assert schedule.at(60) == pytest.approx(4e-5)


# -- a sweep's trials ----------------------------------------------------------------------


def test_each_trial_worker_uses_the_values_tune_sampled(stage1_file, tiny_dataset):
    """Values drawn by Tune from the paper's stage-2 space reach a trial's worker: its
    config, its queue, its frozen blocks and its optimiser's per-layer rates."""
    space = load_space(REPO_ROOT / "search_spaces" / "stage2.yaml")
    assert {"stage2.layer_decay", "stage2.queue_size", "stage2.frozen_blocks"} <= set(space.params)
    base = _stage2_cfg()
    plan = TrialPlan(
        sweep_name="s",
        sweep_run_id="",
        data_path=str(tiny_dataset.root),
        storage_path="runs",
        stage2=to_dict(base),
        explicit=[],
        eval={},
        tracking={},
        objective="knn_val_top1",
        objective_monitor="",
    )
    encoder = preset("tiny", depth=DEPTH, num_heads=2)
    for seed in range(3):
        domains = space.to_tune()
        params = {
            k: d.sample(random_state=np.random.RandomState(seed + 10 * i))
            for i, (k, d) in enumerate(domains.items())
        }
        cfg = resolve_stage2(trial_config(plan, params), tiny_dataset, encoder, stage1_file)
        worker_cfg = _as_worker_receives(Stage2JobConfig, cfg)
        for key, value in params.items():
            section, name = key.split(".")
            assert getattr(getattr(worker_cfg, section), name) == value, key
        task = _stage2_task(stage1_file, cfg)
        assert task.queue.size == params["stage2.queue_size"]
        assert task.model.frozen_blocks == params["stage2.frozen_blocks"]
        set_lr(task.optimizer, params["optim.lr"])
        alpha = params["stage2.layer_decay"]
        for name, got in _group_lrs(task).items():
            assert got == pytest.approx(_expected_lr(name, params["optim.lr"], alpha, DEPTH))


def test_each_stage1_point_worker_uses_the_point_values(tiny_dataset):
    from stars.sweep.runner import stage1_point_config

    space = load_space(REPO_ROOT / "search_spaces" / "stage1.yaml")
    base = Layered(Stage1JobConfig(model=preset("tiny")), frozenset())
    x = _moving_and_still()
    rates = {}
    for point in space.grid():
        cfg = stage1_point_config(base, point, "runs", tiny_dataset, str(space.source))
        task = Stage1Task(_as_worker_receives(Stage1JobConfig, cfg))
        task.build(Worker(CPU, 0, 1, {}))
        assert task.model.cfg.motion_tau == point["model.motion_tau"]
        assert task.model.cfg.mask_ratio == point["model.mask_ratio"]
        moving, still, counts = _masked_rates(task, x)
        tokens = (cfg.model.num_frames // cfg.model.patch_frames) * 25
        assert (counts == tokens - int(tokens * (1 - point["model.mask_ratio"]) + 1e-6)).all()
        rates[(point["model.motion_tau"], point["model.mask_ratio"])] = moving - still
    assert rates[(0.8, 0.75)] > rates[(0.0, 0.75)] + 0.1
