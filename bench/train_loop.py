"""Loop efficiency: the main job's training loop against its isolated step, same run, same
machine. ``small`` preset, embedded synthetic data, one Ray Train worker with 2 torch threads
(the CPU demo's settings). The loop figure is the median of the epochs after the first
(the first pays the workers' start-up)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import Result


def _isolated_rate(step, batch: int, seconds: float = 6.0) -> float:
    for _ in range(3):
        step()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        done += batch
    return done / (time.perf_counter() - start)


def _stage1_step(cfg):
    from stars.model.mamp import MAMP
    from stars.train.optim import build_adamw, param_groups

    model = MAMP(cfg.model)
    opt = build_adamw(param_groups(model, cfg.optim.weight_decay), cfg.optim)
    x = torch.randn(cfg.data.batch_size, 2, cfg.model.num_frames, cfg.model.num_joints, 3)

    def step() -> None:
        loss = model(x)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _stage2_step(cfg, source: str):
    from stars.model.checkpoint import load_encoder
    from stars.train.nnclr import SupportQueue
    from stars.train.optim import build_adamw, param_groups
    from stars.train.stage2 import TunedModel, contrastive_step

    encoder = load_encoder(source)
    s2 = cfg.stage2
    model = TunedModel(encoder, s2.frozen_blocks, s2.predictor_hidden)
    queue = SupportQueue(s2.queue_size, encoder.cfg.dim)
    groups = param_groups(model, cfg.optim.weight_decay, s2.layer_decay)
    opt = build_adamw(groups, cfg.optim)
    batch = cfg.data.batch_size
    x = torch.randn(batch, 2, cfg.data.num_frames, encoder.cfg.num_joints, 3)
    ids = torch.arange(batch)

    def step() -> None:
        loss = contrastive_step(model, queue, x, ids, s2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        opt.step()

    return step


def _loop_rate(history: list[dict]) -> float:
    return statistics.median(h["throughput_seq_per_s"] for h in history[1:])


def bench_loop_efficiency(epochs: int = 8) -> list[Result]:
    import ray

    from stars.data.job_data import resolve_data
    from stars.model.checkpoint import write_random_init
    from stars.train.launch import run_stage1, run_stage2
    from stars.train.resolve import stage1_config, stage2_config

    with tempfile.TemporaryDirectory(prefix="stars-bench-loop-") as tmp:
        tmp = Path(tmp)
        common = [f"scale.storage_path={tmp / 'runs'}"]
        data = resolve_data(_small_data(tmp), progress=False)
        cfg1 = stage1_config("small", data, [*common, f"stage1.epochs={epochs}"])
        overrides = [*common, f"stage2.epochs={epochs}"]
        # This machine's speed drifts between minutes (up to 1.5x for the same step), so each
        # isolated step is timed before and after the loops and the two averaged (before the
        # loops stage 2 starts from a random-init encoder: same architecture, same cost).
        torch.set_num_threads(cfg1.scale.torch_threads)
        iso1_before = _isolated_rate(_stage1_step(cfg1), cfg1.data.batch_size)
        random_init = write_random_init(cfg1.model, 0, tmp / "random-init.pt")
        cfg2_before = stage2_config("small", data, str(random_init), overrides)
        iso2_before = _isolated_rate(
            _stage2_step(cfg2_before, str(random_init)), cfg2_before.data.batch_size
        )
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            s1 = run_stage1(cfg1, "bench-s1", data)
            cfg2 = stage2_config("small", data, s1.checkpoint_file, overrides)
            s2 = run_stage2(cfg2, s1.checkpoint_file, "bench-s2", data)
        finally:
            ray.shutdown()
        torch.set_num_threads(cfg1.scale.torch_threads)
        iso2_after = _isolated_rate(_stage2_step(cfg2, s1.checkpoint_file), cfg2.data.batch_size)
        iso1_after = _isolated_rate(_stage1_step(cfg1), cfg1.data.batch_size)
    loop1, loop2 = _loop_rate(s1.history), _loop_rate(s2.history)
    target = "ratio >= 0.8"
    out = []
    for stage, loop, before, after in (
        (1, loop1, iso1_before, iso1_after),
        (2, loop2, iso2_before, iso2_after),
    ):
        note = (
            "small preset, 1 worker x 2 threads, embedded data; baseline: the isolated step, "
            f"mean of {before:.0f} seq/s before and {after:.0f} after the loops"
        )
        out.append(
            Result(
                f"loop_stage{stage}_seq_per_s",
                loop,
                "seq/s",
                baseline=(before + after) / 2,
                target=target,
                note=note,
            )
        )
    return out


def _small_data(tmp: Path):
    from stars.data.config import DataConfig, SyntheticConfig
    from stars.presets import get_preset

    spec = get_preset("small").data["synthetic"]
    return DataConfig(synthetic=SyntheticConfig(**spec, cache_dir=str(tmp)))


BENCHMARKS = {"train_loop": bench_loop_efficiency}
