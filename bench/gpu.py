"""The stage-1 training step on one accelerator, for sizing a job: torch and this package only
(no Ray, no MLflow), so it runs on any machine with a GPU and torch.

    python -m bench.gpu                         # paper preset, every mode, batches to the limit
    python -m bench.gpu --record                # also adds the rows to bench-results.json
    python -m bench.gpu --preset tiny --device cpu --batches 2,4 --loss-steps 5   # a dry run

It reports, for the paper preset (``--preset``): step time and sequences/s in fp32, bf16
autocast and ``torch.compile`` (bf16), at batch sizes doubling up to the memory limit (or
``--batches``); FLOP per step (counted by ``torch.utils.flop_counter``), the achieved TFLOP/s
and its fraction of the device's bf16 peak measured in the same run with a large matmul; peak
memory; the encoder's evaluation feature throughput; and fp32 against bf16 losses over
``--loss-steps`` steps on the same fixed batches (their relative gap). The step is the one
training runs: the MAMP model, its parameter groups and AdamW (``build_adamw``: fused on CUDA;
``--optimizer foreach`` measures torch's multi-tensor AdamW instead, rows named ``..._foreach``).

``--record`` refuses to write CPU figures as GPU rows: a CPU run is a dry run of the script.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from stars.model.config import ModelConfig, preset
from stars.model.mamp import MAMP
from stars.train.config import OptimConfig
from stars.train.optim import build_adamw, param_groups

MODES = ("fp32", "bf16", "compile")
RESULTS_FILE = Path(__file__).resolve().parents[1] / "bench-results.json"


@dataclass
class Row:
    """One figure of the benchmark, as ``bench-results.json`` holds it."""

    name: str
    value: float
    unit: str
    note: str = ""
    device: str = ""


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Seconds per call of ``fn`` over ``repeats`` calls, after one untimed call."""
    fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def matmul_peak_tflops(device: torch.device, size: int, repeats: int = 10) -> float:
    """Achieved TFLOP/s of a ``size``^3 bf16 matmul: the ceiling the step is compared to."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    seconds = timed(lambda: a @ b, device, repeats)
    return 2 * size**3 / seconds / 1e12


def precision(mode: str, device: torch.device):
    if mode == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def sample_batch(cfg: ModelConfig, batch: int, device: torch.device, seed: int) -> torch.Tensor:
    """(batch, 2, T, V, 3) skeleton-shaped noise: the step's cost does not depend on values."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 2, cfg.num_frames, cfg.num_joints, 3, generator=g)
    return x.to(device)


class Step:
    """One stage-1 training step (MAMP loss, backward, AdamW) of a fresh model."""

    def __init__(
        self,
        cfg: ModelConfig,
        mode: str,
        device: torch.device,
        seed: int = 0,
        optimizer: str = "fused",
    ):
        torch.manual_seed(seed)
        self.model = MAMP(cfg).to(device)
        self.mode, self.device = mode, device
        optim = OptimConfig(lr=1e-4)
        groups = param_groups(self.model, optim.weight_decay)
        # The training code's optimiser: fused on CUDA unless asked for torch's foreach one.
        self.optimizer = build_adamw(groups, optim, fused=None if optimizer == "fused" else False)
        # dynamic=False: a job trains at one batch size, and MAMP's masking draws
        # (torch.rand over a symbolic batch) do not trace with dynamic shapes.
        compiled = mode == "compile"
        self.forward = torch.compile(self.model, dynamic=False) if compiled else self.model

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        with precision(self.mode, self.device):
            return self.forward(x)["loss"]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        loss = self.loss(x)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def step_flop(cfg: ModelConfig, batch: int, device: torch.device) -> float:
    """FLOP of one forward + backward at ``batch`` (fp32 graph; bf16 runs the same ops)."""
    from torch.utils.flop_counter import FlopCounterMode

    step = Step(cfg, "fp32", device)
    x = sample_batch(cfg, batch, device, 0)
    with FlopCounterMode(display=False) as counter:
        step.loss(x).backward()
    return float(counter.get_total_flops())


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process, so far


def batch_sizes(requested: str, device: torch.device) -> Iterator[int]:
    if requested != "auto":
        yield from (int(b) for b in requested.split(","))
        return
    batch = 32
    while batch <= (8192 if device.type == "cuda" else 64):
        yield batch
        batch *= 2


def is_out_of_memory(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err)


def measure_steps(
    cfg: ModelConfig,
    mode: str,
    batches: str,
    device: torch.device,
    repeats: int,
    peak: float,
    optimizer: str = "fused",
) -> list[Row]:
    """Step time, sequences/s, TFLOP/s and peak memory of ``mode`` at each batch size that
    fits; the first that does not ends the list (an ``auto`` run's memory limit)."""
    rows, flop_at_1 = [], None
    name = device_name(device)
    label = mode if optimizer == "fused" else f"{mode}_{optimizer}"
    for batch in batch_sizes(batches, device):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        try:
            step = Step(cfg, mode, device, optimizer=optimizer)
            x = sample_batch(cfg, batch, device, 1)
            seconds = timed(lambda s=step, x=x: s(x), device, repeats)
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
            largest = batch // 2 if rows else 0
            note = f"batch {batch} does not fit in memory" + (
                f"; the largest measured is {largest}" if largest else ""
            )
            rows.append(Row(f"gpu_stage1_{label}_max_batch", largest, "sequences", note, name))
            break
        memory = peak_memory_mb(device)
        del step, x
        if flop_at_1 is None:  # FLOP grow linearly with the batch (a fixed masking ratio);
            # counted on a small batch: the counter runs fp32, which fits less than bf16 does.
            counted = min(batch, 32)
            flop_at_1 = step_flop(cfg, counted, device) / counted
        tflops = flop_at_1 * batch / seconds / 1e12
        prefix = f"gpu_stage1_{label}_b{batch}"
        where = f"{cfg_name(cfg)}, batch {batch} (x2 actors), fwd+bwd+AdamW"
        rows += [
            Row(f"{prefix}_step_s", seconds, "s/step", where, name),
            Row(f"{prefix}_seq_per_s", batch / seconds, "seq/s", where, name),
            Row(
                f"{prefix}_tflop_s",
                tflops,
                "TFLOP/s",
                f"{flop_at_1 * batch / 1e9:.4g} GFLOP per step; {tflops / peak:.1%} of the "
                f"measured bf16 matmul peak {peak:.3g} TFLOP/s",
                name,
            ),
            Row(f"{prefix}_peak_memory_mb", memory, "MiB", where, name),
        ]
    return rows


def cfg_name(cfg: ModelConfig) -> str:
    return f"dim {cfg.dim}, depth {cfg.depth}, T {cfg.num_frames}, V {cfg.num_joints}"


def feature_throughput(cfg: ModelConfig, device: torch.device, batch: int, repeats: int) -> Row:
    """Sequences/s of the encoder's pooled features in eval mode under bf16 autocast (what
    the evaluation protocols extract)."""
    torch.manual_seed(0)
    encoder = MAMP(cfg).encoder.to(device).eval()
    x = sample_batch(cfg, batch, device, 2)

    def features() -> torch.Tensor:
        with torch.inference_mode(), precision("bf16", device):
            return encoder.forward_features(x)

    seconds = timed(features, device, repeats)
    note = f"{cfg_name(cfg)}, batch {batch}, eval mode, bf16 autocast"
    return Row("gpu_features_bf16_seq_per_s", batch / seconds, "seq/s", note, device_name(device))


def loss_agreement(
    cfg: ModelConfig, device: torch.device, steps: int, batch: int, num_batches: int = 8
) -> list[Row]:
    """fp32 and bf16 training from the same initialisation on the same fixed batches, with the
    same masking draws: the mean loss of the last steps of each and their relative gap."""
    batches = [sample_batch(cfg, batch, device, 100 + i) for i in range(num_batches)]
    tails = {}
    for mode in ("fp32", "bf16"):
        step = Step(cfg, mode, device, seed=0)
        torch.manual_seed(1)  # the masking noise: the same sequence of draws in both runs
        losses = [float(step(batches[i % num_batches])) for i in range(steps)]
        tail = losses[-min(10, steps) :]
        tails[mode] = sum(tail) / len(tail)
    gap = abs(tails["bf16"] - tails["fp32"]) / abs(tails["fp32"])
    name, span = device_name(device), f"mean of the last {min(10, steps)} of {steps} steps"
    note = f"{cfg_name(cfg)}, batch {batch}, {num_batches} fixed batches; {span}"
    return [
        Row("gpu_loss_fp32", tails["fp32"], "loss", note, name),
        Row("gpu_loss_bf16", tails["bf16"], "loss", note, name),
        Row("gpu_loss_bf16_vs_fp32_gap", gap, "fraction", f"|bf16 - fp32| / fp32; {note}", name),
    ]


def run(args: argparse.Namespace) -> Iterator[list[Row]]:
    """The benchmark's sections in turn, each a list of rows as soon as it is measured: the
    bf16 step (what training runs on CUDA) and the loss check first, ``torch.compile`` (the
    slowest to measure: it compiles anew per batch size) last."""
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg = preset(args.preset)
    name = device_name(device)
    peak = matmul_peak_tflops(device, args.matmul_size)
    yield [
        Row("gpu_bf16_matmul_tflop_s", peak, "TFLOP/s", f"{args.matmul_size}^3 bf16 matmul", name)
    ]
    modes = args.modes.split(",")
    for mode in modes:
        if mode not in MODES:
            raise SystemExit(f"bench.gpu: unknown mode {mode!r} (choose from {', '.join(MODES)})")
    order = [m for m in ("bf16", "fp32", "compile") if m in modes]
    for mode in order:
        batches = args.compile_batches or args.batches if mode == "compile" else args.batches
        yield measure_steps(cfg, mode, batches, device, args.repeats, peak, args.optimizer)
        if mode == order[0]:
            yield [feature_throughput(cfg, device, args.feature_batch, args.repeats)]
            if args.loss_steps > 0:
                yield loss_agreement(cfg, device, args.loss_steps, args.loss_batch)


def record(rows: list[Row], path: Path, device: torch.device, append: bool = False) -> None:
    """Put the rows in ``bench-results.json`` under ``gpu``: replacing an earlier GPU run, or
    (``append``) adding the rows it does not hold yet to one on the same device (its matmul
    peak, which earlier rows' notes quote, stays)."""
    if device.type != "cuda":
        raise SystemExit("bench.gpu: --record writes GPU rows; this run was not on a GPU")
    results = json.loads(path.read_text()) if path.exists() else {}
    earlier = results.get("gpu", {})
    kept: list[dict] = []
    if append and earlier.get("device") == device_name(device):
        kept = earlier.get("rows", [])
    held = {r["name"] for r in kept}
    results["gpu"] = {
        "device": device_name(device),
        "torch": torch.__version__,
        "unix_time": int(time.time()),
        "rows": kept + [asdict(r) for r in rows if r.name not in held],
    }
    path.write_text(json.dumps(results, indent=1) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device)
    parser.add_argument("--preset", default="paper", help="model preset (paper, small, tiny)")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES)
    )
    parser.add_argument(
        "--batches", default="auto", help="comma-separated, or auto (double to the limit)"
    )
    parser.add_argument(
        "--compile-batches",
        help="batch sizes for torch.compile (default: --batches); each compiles anew",
    )
    parser.add_argument(
        "--optimizer", choices=("fused", "foreach"), default="fused", help="AdamW's kernels"
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--matmul-size", type=int, default=8192)
    parser.add_argument("--feature-batch", type=int, default=256)
    parser.add_argument("--loss-steps", type=int, default=200)
    parser.add_argument("--loss-batch", type=int, default=32)
    parser.add_argument("--out", help="also write the rows to this JSON file")
    parser.add_argument(
        "--append",
        action="store_true",
        help="with --record: add the rows not yet recorded for this device instead of replacing",
    )
    parser.add_argument(
        "--record", action="store_true", help=f"add the rows to {RESULTS_FILE.name}"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows: list[Row] = []
    for section in run(args):
        rows += section
        for r in section:
            print(f"{r.name:34}  {r.value:12.4g} {r.unit:9}  {r.note}", flush=True)
        if args.out:  # after every section: a run cut short keeps what it measured
            Path(args.out).write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    if args.record:
        record(rows, RESULTS_FILE, torch.device(args.device), append=args.append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
