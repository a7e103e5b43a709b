"""A training worker's device set-up: autocast precision, TF32 and deterministic kernels."""

from __future__ import annotations

import contextlib

import torch


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on CUDA; on a CPU, bf16 only where it trains faster (AMX), else
    fp32 (see :func:`stars.train.precision.cpu_trains_faster_in_bf16`)."""
    from stars.train.precision import cpu_trains_faster_in_bf16

    if amp == "none":
        return contextlib.nullcontext()
    if device.type == "cpu":
        if amp == "bf16" and cpu_trains_faster_in_bf16():
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def configure_device(device: torch.device, tf32: bool, deterministic: bool = False) -> None:
    """TF32 on CUDA, and (``scale.deterministic``) torch's deterministic algorithms: an
    operation without a deterministic implementation then fails naming itself."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    if deterministic:
        import os

        # cuBLAS needs a fixed workspace to reduce in a fixed order (CUDA >= 10.2).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
