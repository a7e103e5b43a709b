"""Which precision a CPU trains fastest in.

bf16 autocast pays off on a CPU only with matrix units for it: Intel's AMX (``amx_bf16``)
runs bf16 matmuls several times faster than fp32. With AVX512-BF16 alone (e.g. AMD EPYC
here) the casts around each op cost more than the narrower math saves: a `small` stage-1
step measured 2x slower in bf16 (``make bench``, ``stage1_small_step_bf16_vs_fp32_cpu``).
So CPU training uses bf16 only where AMX is present; never a slower default.
"""

from __future__ import annotations

import functools
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The first processor's feature flags (empty where /proc/cpuinfo is not readable)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@functools.cache
def cpu_trains_faster_in_bf16() -> bool:
    """True on CPUs with AMX bf16 tiles."""
    return "amx_bf16" in cpu_flags()
