"""The conversion runner shared by every importer: parse, validate, write, report."""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from stars.data.manifest import Manifest
from stars.data.prepare import write_report
from stars.data.shards import DataError, DatasetSpec, Sample, SampleError, ShardWriter
from stars.text import one_line


class Rejected(Exception):  # noqa: N818 - it names an outcome, not a failure of the code
    """A source item that cannot become a sample; ``reason`` is what the report shows."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Parsed:
    """What one source item produced: samples, per-sample rejections, cleaning counters."""

    samples: list[Sample] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    cleaning: Counter = field(default_factory=Counter)


@dataclass
class ConversionResult:
    manifest: Manifest
    report: dict[str, Any]


def _safe_parse(args: tuple[Callable[[Any], Parsed], str, Any]) -> tuple[str, Parsed | str]:
    parse, name, item = args
    try:
        return name, parse(item)
    except Rejected as err:
        return name, err.reason
    except Exception as err:  # one file never stops a conversion
        return name, f"unreadable ({type(err).__name__}: {one_line(err, 160) or 'no message'})"


def _die_with_parent(parent_pid: int) -> None:
    """A parser worker ends when the conversion that started it dies (SIGKILL included):
    Linux sends it SIGKILL then (``PR_SET_PDEATHSIG``). Elsewhere the pool's own shutdown
    is all there is."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before the call took effect
        os._exit(1)


def _parsed_stream(
    parse: Callable[[Any], Parsed], items: Iterable[tuple[str, Any]], workers: int
) -> Iterator[tuple[str, Parsed | str]]:
    jobs = ((parse, name, item) for name, item in items)
    if workers <= 1:
        yield from map(_safe_parse, jobs)  # lazy: items may be streamed blocks of a big file
        return
    jobs_list = list(jobs)
    with ProcessPoolExecutor(
        max_workers=workers, initializer=_die_with_parent, initargs=(os.getpid(),)
    ) as pool:
        # Ordered results keep conversions deterministic whatever the worker count.
        chunk = max(1, len(jobs_list) // (workers * 8))
        yield from pool.map(_safe_parse, jobs_list, chunksize=chunk)


@dataclass(frozen=True)
class ConvertOptions:
    """How a conversion runs, as opposed to what it writes (that is the DatasetSpec).

    Attributes:
        strict: stop at the first rejection (DataError naming the item), writing no manifest.
        workers: parser processes (None: one per CPU; 1 parses in this process, lazily).
        progress: a progress bar on stderr.
        desc: the progress bar's label.
    """

    strict: bool = False
    workers: int | None = None
    progress: bool = True
    desc: str = "convert"


def run_conversion(
    out_dir: str | Path,
    spec: DatasetSpec,
    items: Iterable[tuple[str, Any]],
    parse: Callable[[Any], Parsed],
    options: ConvertOptions,
    refused: Iterable[tuple[str, str]] = (),
) -> ConversionResult:
    """Parse every item, write accepted samples, and write ``report.json``.

    Args:
        spec: what the dataset declares (layout, classes, splits, protocols, recording).
        items: (name, item) pairs: the name shown in the report (usually a file name) and
            what ``parse`` takes (picklable when ``workers`` > 1). Consumed lazily when
            ``workers`` is 1; a sized collection gives the progress bar its total.
        parse: item -> Parsed; raises :class:`Rejected` for an item that yields nothing.
        refused: (name, reason) of items the caller already refused (e.g. an exclusion list).
    """
    strict, workers = options.strict, options.workers
    total = len(items) if isinstance(items, Sized) else None
    workers = workers if workers is not None else (os.cpu_count() or 1)
    rejected: list[dict[str, str]] = []
    cleaning: Counter = Counter()
    seen = 0

    def reject(name: str, reason: str) -> None:
        if strict:
            raise DataError(f"{name}: {reason}")
        rejected.append({"file": name, "reason": reason})

    for name, reason in refused:
        seen += 1
        reject(name, reason)
    writer = ShardWriter(out_dir, spec)
    stream = _parsed_stream(parse, items, workers)
    for name, result in tqdm(
        stream,
        total=total,
        desc=options.desc,
        unit="item",
        disable=not options.progress,
        mininterval=1.0,
    ):
        if isinstance(result, str):
            seen += 1
            reject(name, result)
            continue
        cleaning.update(result.cleaning)
        for sample_name, reason in result.rejected:
            seen += 1
            reject(sample_name, reason)
        for sample in result.samples:
            seen += 1
            try:
                writer.add(sample)
            except SampleError as err:
                reject(f"{name}:{sample.sample_id}", err.reason)
    if writer.num_written == 0:
        raise DataError(
            f"nothing to write: all {seen} samples were rejected "
            f"(first: {rejected[0] if rejected else 'no input found'})"
        )
    manifest = writer.close()
    report = write_report(
        out_dir,
        seen=seen,
        written=manifest.num_samples,
        rejected=rejected,
        cleaning=dict(sorted(cleaning.items())),
    )
    return ConversionResult(manifest, report)


def report_table(report: dict[str, Any], limit: int = 10) -> str:
    """The end-of-conversion summary: counts, cleaning actions, rejection reasons."""
    lines = [
        f"seen {report['seen']}  written {report['written']}  rejected {len(report['rejected'])}"
    ]
    for action, count in report["cleaning"].items():
        lines.append(f"  cleaning: {action}: {count}")
    reasons = Counter(r["reason"].split(" (")[0] for r in report["rejected"])
    for reason, count in reasons.most_common(limit):
        lines.append(f"  rejected: {reason}: {count}")
    return "\n".join(lines)
