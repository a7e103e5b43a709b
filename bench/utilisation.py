"""How close the stage-1 step runs to the hardware: FLOPs counted per step, achieved FLOP/s
against the machine's peak (a measured GEMM and an estimate from the clock and the vector
units), and bf16 against fp32 where the precision is chosen per machine."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from bench.common import Result
from stars.model.config import preset
from stars.model.mamp import MAMP
from stars.train.precision import cpu_flags, cpu_trains_faster_in_bf16

aten = torch.ops.aten

# PyTorch's counter knows the CUDA attention kernels; the CPU flash kernel is added here with
# the same formulas (4 b h s^2 d forward, 2.5x that backward).
CPU_ATTENTION_FLOPS = {
    aten._scaled_dot_product_flash_attention_for_cpu: (
        lambda q, k, v, *_, out_shape=None, **__: sdpa_flop_count(q, k, v)
    ),
    aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        lambda g, q, k, v, *_, out_shape=None, **__: sdpa_backward_flop_count(g, q, k, v)
    ),
}


def step_flops(model: MAMP, x: torch.Tensor) -> tuple[int, dict[str, int]]:
    """FLOPs of one forward + backward (matmuls and attention; AdamW's elementwise work is
    not counted), with the per-operator split."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        model(x)["loss"].backward()
    model.zero_grad(set_to_none=True)
    per_op = {str(k): int(v) for k, v in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops(), per_op


def seconds_per_call(fn: Callable[[], None], calls: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - start) / calls


def gemm_peak(device: str, dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """Measured FLOP/s of large square matmuls: the practical ceiling for this step's
    matmul-bound work."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    calls = max(1, int(seconds / max(seconds_per_call(lambda: a @ b, 1, sync), 1e-6)))
    return 2 * n**3 / seconds_per_call(lambda: a @ b, calls, sync)


def cpu_peak_estimate() -> tuple[float, str]:
    """fp32 peak = cores x clock x FLOPs per cycle, from /proc/cpuinfo. FLOPs per cycle: two
    FMA pipes x lanes x 2; AVX-512 runs on 256-bit pipes on AMD (Zen 4), 512-bit on Intel.
    The clock is the nominal one /proc/cpuinfo shows: turbo can put a measured GEMM above
    this estimate, which is why the measured GEMM is the baseline."""
    flags = cpu_flags()
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    mhz = [float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
    clock = (max(mhz) if mhz else 2000.0) * 1e6
    amd = "AuthenticAMD" in text
    if "avx512f" in flags and not amd:
        per_cycle, how = 64, "2 x 512-bit FMA"
    elif "fma" in flags:
        per_cycle, how = 32, "2 x 256-bit FMA" + (" (AVX-512 double-pumped)" if amd else "")
    else:
        per_cycle, how = 8, "SSE"
    cores = os.cpu_count() or 1
    peak = cores * clock * per_cycle
    return peak, f"{cores} cores x {clock / 1e9:.2f} GHz x {per_cycle} FLOP/cycle ({how})"


def _paper_step(device: str, amp: bool, batch: int = 32):
    torch.manual_seed(0)
    cfg = preset("paper")
    model = MAMP(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 2, cfg.num_frames, cfg.num_joints, 3, device=device)

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            loss = model(x)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return model, x, step


def bench_utilisation() -> list[Result]:
    torch.set_num_threads(os.cpu_count() or 1)
    model, x, step = _paper_step("cpu", amp=False)
    step_s = seconds_per_call(step, 2, lambda: None)
    flops, per_op = step_flops(model, x)
    achieved = flops / step_s
    measured = gemm_peak("cpu", torch.float32)
    estimate, how = cpu_peak_estimate()
    attention = sum(v for k, v in per_op.items() if "attention" in k)
    results = [
        Result(
            "stage1_paper_step_gflop",
            flops / 1e9,
            "GFLOP",
            None,
            "",
            f"paper preset, batch 32 (x2 actors), forward + backward, counted by "
            f"torch.utils.flop_counter; attention {attention / flops:.0%} of it",
        ),
        Result(
            "stage1_paper_achieved_gflop_s_cpu",
            achieved / 1e9,
            "GFLOP/s",
            measured / 1e9,
            "",
            f"{step_s:.2f} s/step; baseline: measured fp32 2048^3 GEMM; that is "
            f"{achieved / measured:.0%} of the GEMM ceiling and {achieved / estimate:.0%} of "
            f"the estimated peak {estimate / 1e9:.0f} GFLOP/s ({how}, nominal clock)",
        ),
    ]
    results.append(_bf16_vs_fp32_small())
    if torch.cuda.is_available():
        results.append(_gpu_utilisation())
    return results


def _bf16_vs_fp32_small() -> Result:
    cfg = preset("small")
    torch.manual_seed(0)
    model = MAMP(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(32, 2, cfg.num_frames, cfg.num_joints, 3)

    def step(amp: bool) -> Callable[[], None]:
        def run() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                loss = model(x)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return run

    fp32 = seconds_per_call(step(False), 10, lambda: None)
    bf16 = seconds_per_call(step(True), 10, lambda: None)
    flags = cpu_flags()
    units = ", ".join(f for f in ("avx512_bf16", "amx_bf16") if f in flags) or "none"
    chosen = "bf16" if cpu_trains_faster_in_bf16() else "fp32"
    return Result(
        "stage1_small_step_bf16_vs_fp32_cpu",
        bf16,
        "s/step",
        fp32,
        "training's CPU default is the faster one",
        f"small preset, batch 32; bf16 autocast vs fp32 (baseline); bf16 units: {units}; "
        f"training on this CPU uses {chosen}",
    )


def _gpu_utilisation() -> Result:
    model, x, step = _paper_step("cuda", amp=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        flops, _ = step_flops(model, x)
    step_s = seconds_per_call(step, 20, torch.cuda.synchronize)
    peak = gemm_peak("cuda", torch.bfloat16, n=8192)
    return Result(
        "stage1_paper_achieved_tflop_s_gpu_bf16",
        flops / step_s / 1e12,
        "TFLOP/s",
        peak / 1e12,
        "",
        f"{torch.cuda.get_device_name()}: bf16 autocast, SDPA flash attention, batch 32, "
        f"{step_s * 1000:.1f} ms/step; baseline: measured bf16 8192^3 GEMM",
    )


BENCHMARKS = {"utilisation": bench_utilisation}
