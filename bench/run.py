"""Run the benchmarks, print a table and write ``bench-results.json`` at the repo root.

python -m bench.run [--only transforms,ray_stream] [--out bench-results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

# One core per process for the per-core figures (set before numpy/torch load their pools).
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from bench import data, evaluation, model, seeds, sweep, train_loop, utilisation  # noqa: E402
from bench.common import Result  # noqa: E402

SUITES = {
    **data.BENCHMARKS,
    **model.BENCHMARKS,
    **evaluation.BENCHMARKS,
    **train_loop.BENCHMARKS,
    **sweep.BENCHMARKS,
    **seeds.BENCHMARKS,
    **utilisation.BENCHMARKS,
}


def table(results: list[Result]) -> str:
    head = ("benchmark", "value", "unit", "baseline", "ratio", "target")
    rows = [head] + [
        (
            r.name,
            f"{r.value:,.2f}",
            r.unit,
            "" if r.baseline is None else f"{r.baseline:,.2f}",
            "" if r.ratio is None else f"{r.ratio:.2f}x",
            r.target,
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="", help=f"comma list of {', '.join(SUITES)}")
    parser.add_argument("--out", default="bench-results.json")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(SUITES)}")
    results: list[Result] = []
    for name in names:
        print(f"[bench] {name} ...", flush=True)
        results.extend(SUITES[name]())
    print(table(results))
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    kept = previous.get("benchmarks", []) if args.only else []
    merged = {r["name"]: r for r in kept}
    merged.update({r.name: r.to_dict() for r in results})
    payload = {
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        },
        "unix_time": int(time.time()),
        "benchmarks": list(merged.values()),
    }
    if "gpu" in previous:  # measured by bench.gpu on another machine: a CPU run keeps it
        payload["gpu"] = previous["gpu"]
    out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
