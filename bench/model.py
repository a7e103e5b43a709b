"""Stage-1 training-step benchmarks: throughput and peak memory against the straightforward
reference, each variant measured in its own process so the peaks do not mix."""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import time

import torch

from bench.common import Result
from stars.model.config import preset
from stars.model.mamp import MAMP

NTU60_TRAIN_SEQUENCES = 40_091  # NTU-60 x-sub training samples (80k actor sequences)


def _step_rate(
    variant: str, preset_name: str, batch: int, steps: int, compile_: bool, queue: mp.Queue
) -> None:
    torch.set_num_threads(os.cpu_count() or 1)  # whole machine, both variants alike
    torch.manual_seed(0)
    cfg = preset(preset_name)
    if variant == "reference":
        from bench.model_reference import ReferenceMAMP

        model = ReferenceMAMP(cfg)
    else:
        model = MAMP(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step_fn = model
    if compile_:
        step_fn = torch.compile(model)
    x = torch.randn(batch, 2, cfg.num_frames, cfg.num_joints, 3)

    def step() -> None:
        loss = step_fn(x)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up (and compilation)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((batch * steps / elapsed, elapsed / steps, peak_mb))


def measure(
    variant: str,
    preset_name: str = "paper",
    batch: int = 32,
    steps: int = 3,
    compile_: bool = False,
) -> tuple[float, float, float]:
    """(sequences/s, seconds/step, peak RSS MB) of a fresh process."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_step_rate, args=(variant, preset_name, batch, steps, compile_, queue)
    )
    proc.start()
    out = queue.get()
    proc.join()
    return out


def bench_stage1_step() -> list[Result]:
    ref_rate, ref_step, ref_mem = measure("reference", steps=1)
    rate, step, mem = measure("ours", steps=2)
    small_rate, small_step, _ = measure("ours", "small", batch=32, steps=5)
    epoch_h = NTU60_TRAIN_SEQUENCES / rate / 3600
    return [
        Result(
            "stage1_paper_train_seq_per_s_cpu",
            rate,
            "seq/s",
            ref_rate,
            ">= 2.5x the straightforward version",
            f"paper preset, batch 32 (x2 actors), fwd+bwd+AdamW; {step:.2f} s/step vs "
            f"{ref_step:.2f} s/step (explicit attention, per-sample masking)",
        ),
        Result(
            "stage1_paper_peak_rss_mb_cpu",
            mem,
            "MB",
            ref_mem,
            "lower is better",
            "peak resident memory of the benchmark process",
        ),
        Result(
            "stage1_small_step_s_cpu",
            small_step,
            "s/step",
            None,
            "",
            f"small preset, batch 32: {small_rate:.1f} seq/s",
        ),
        Result(
            "stage1_paper_ntu60_epoch_h_cpu",
            epoch_h,
            "h/epoch",
            None,
            "",
            f"estimate: {NTU60_TRAIN_SEQUENCES} sequences at {rate:.1f} seq/s on this CPU",
        ),
    ]


def _tune_step_rate(frozen_blocks: int, batch: int, steps: int, queue: mp.Queue) -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    from stars.model.encoder import SkeletonEncoder
    from stars.train.config import OptimConfig, Stage2Config
    from stars.train.nnclr import SupportQueue
    from stars.train.optim import build_adamw, param_groups
    from stars.train.stage2 import TunedModel, contrastive_step

    torch.manual_seed(0)
    cfg = preset("paper")
    model = TunedModel(SkeletonEncoder(cfg), frozen_blocks, hidden=4096)
    opt = build_adamw(param_groups(model, 0.01, 0.45), OptimConfig())
    memory = SupportQueue(32768, cfg.dim)
    s2 = Stage2Config()
    x = torch.randn(batch, 2, cfg.num_frames, cfg.num_joints, 3)
    ids = torch.arange(batch)

    def step() -> None:
        loss = contrastive_step(model, memory, x, ids, s2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    queue.put(
        (
            batch * steps / elapsed,
            elapsed / steps,
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        )
    )


def _measure_tune(frozen_blocks: int, batch: int = 32, steps: int = 3) -> tuple:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_tune_step_rate, args=(frozen_blocks, batch, steps, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def bench_stage2_step() -> list[Result]:
    _, partial_step, partial_mem = _measure_tune(frozen_blocks=-1)
    _, full_step, full_mem = _measure_tune(frozen_blocks=0)
    _, stage1_step, _ = measure("ours", steps=2)
    return [
        Result(
            "stage2_partial_step_s_cpu",
            partial_step,
            "s/step",
            full_step,
            "<= 0.7x full tuning",
            "paper preset, batch 32 (x2 actors): embeddings + blocks 0-3 frozen under "
            "no_grad; baseline: all blocks trainable (full tuning)",
        ),
        Result(
            "stage2_partial_vs_stage1_step",
            partial_step,
            "s/step",
            stage1_step,
            "",
            "same partial-tuning step against one stage-1 (MAMP) step, same run",
        ),
        Result(
            "stage2_partial_peak_rss_mb_cpu",
            partial_mem,
            "MB",
            full_mem,
            "",
            "peak resident memory, partial vs full tuning",
        ),
    ]


BENCHMARKS = {"stage1_step": bench_stage1_step, "stage2_step": bench_stage2_step}
