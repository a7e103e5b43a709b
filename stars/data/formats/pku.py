"""PKU-MMD phase I / II raw skeletons: one sample per labelled action instance.

Skeleton files hold one frame per line, 150 numbers (2 bodies x 25 Kinect-v2 joints x xyz);
label files of the same name list ``class, start frame, end frame, confidence`` per instance;
the split file lists the training and validation video ids (cross-subject).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from stars.data.formats.convert import (
    ConversionResult,
    ConvertOptions,
    Parsed,
    Rejected,
    run_conversion,
)
from stars.data.shards import DataError, DatasetSpec, Sample, read_text_input
from stars.skeleton import NTU25

VALUES_PER_FRAME = 150
NUM_CLASSES = 51


def parse_stream(path: str | Path) -> np.ndarray:
    """A skeleton txt -> (T, 2, 25, 3) float32 (absent second body = zeros).

    Raises:
        Rejected: unreadable, non-numeric token, wrong value count per line, NaN/inf, empty.
    """
    try:
        text = Path(path).read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise Rejected("non-numeric token (file is not ASCII text)") from None
    except OSError as err:
        raise Rejected(f"unreadable ({err.strerror})") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise Rejected("empty file")
    rows = [ln.split() for ln in lines]
    for i, row in enumerate(rows):
        if len(row) != VALUES_PER_FRAME:
            raise Rejected(
                f"wrong joint count: line {i + 1} has {len(row)} values, "
                f"expected {VALUES_PER_FRAME} (truncated file?)"
            )
    try:
        x = np.array(rows, dtype=np.float64)
    except ValueError:
        raise Rejected("non-numeric token") from None
    if not np.isfinite(x).all():
        raise Rejected("NaN/inf joint coordinates")
    return x.astype(np.float32).reshape(len(rows), 2, 25, 3)


def parse_labels(path: str | Path) -> list[tuple[int, int, int]]:
    """Label file -> [(class 1-based, start frame, end frame)], confidence ignored.

    Raises:
        Rejected: an unreadable or non-text file, a line that is not
            ``class,start,end[,confidence]`` with finite whole numbers.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise Rejected(f"label file {Path(path).name} is not text") from None
    except OSError as err:
        raise Rejected(f"label file {Path(path).name} unreadable ({err.strerror})") from None
    out = []
    for i, line in enumerate(text.splitlines()):
        parts = [p for p in re.split(r"[,\s]+", line.strip()) if p]
        if not parts:
            continue
        try:
            values = [float(p) for p in parts[:3]]
            if len(values) < 3 or not all(v.is_integer() for v in values):
                raise ValueError
            cls, start, end = (int(v) for v in values)
        except (ValueError, OverflowError):
            raise Rejected(
                f"label file line {i + 1} is not 'class,start,end,confidence' in whole numbers"
            ) from None
        out.append((cls, start, end))
    return out


def parse_split_file(path: str | Path) -> dict[str, set[str]]:
    """``{'train': {...}, 'test': {...}}`` from a PKU-MMD split file.

    The file has a 'Training videos:' line followed by comma-separated ids, and a
    'Validation videos:' (sometimes spelt 'Validataion') line followed by ids.
    """
    splits: dict[str, set[str]] = {"train": set(), "test": set()}
    current = None
    for line in read_text_input(path, "split file").splitlines():
        low = line.strip().lower()
        if low.startswith("train"):
            current = "train"
            line = line.split(":", 1)[1] if ":" in line else ""
        elif low.startswith(("valid", "test")):
            current = "test"
            line = line.split(":", 1)[1] if ":" in line else ""
        if current:
            splits[current].update(v.strip() for v in re.split(r"[,\s]+", line) if v.strip())
    return splits


def parse_video(item: tuple[str, str, str], min_frames: int = 2) -> Parsed:
    """(skeleton path, label path, split name) -> one sample per labelled instance."""
    skel, label_path, split = item
    video = Path(skel).stem
    x = parse_stream(skel)
    labels = parse_labels(label_path)
    out = Parsed(cleaning=Counter())
    for k, (cls, start, end) in enumerate(labels):
        sid = f"{video}_{k:03d}_A{cls:02d}"
        if not 1 <= cls <= NUM_CLASSES:
            out.rejected.append((sid, f"unknown label {cls} outside 1..{NUM_CLASSES}"))
            continue
        if not 0 <= start < end or start >= len(x):
            out.rejected.append((sid, f"segment {start}-{end} outside the {len(x)} frames"))
            continue
        if end >= len(x):  # kept, and said: the stream ends before the labelled segment does
            out.cleaning["segments clipped to the stream's end"] += 1
            out.cleaning["frames missing past the stream's end"] += end + 1 - len(x)
        seg = x[start : min(end + 1, len(x))]
        present = np.abs(seg).reshape(len(seg), -1).max(axis=1) > 0
        if not present.any():
            out.rejected.append((sid, "all-zero sequence"))
            continue
        if (~present).any():
            out.cleaning["frames removed: all joints zero"] += int((~present).sum())
        seg = seg[present]
        if len(seg) < min_frames:
            out.rejected.append((sid, "single-frame sequence"))
            continue
        bodies = 2 if np.abs(seg[:, 1]).max() > 0 else 1
        seg = seg[:, :bodies].copy()
        origin = seg[0, 0, 1].copy()
        seg -= origin * (np.abs(seg).max(axis=(2, 3), keepdims=True) > 0)
        out.samples.append(Sample(sid, seg, cls - 1, splits={f"xsub_{split}"}))
    return out


def convert_pku(
    source: str | Path,
    out_dir: str | Path,
    *,
    labels: str | Path,
    split_file: str | Path,
    class_names: list[str] | None = None,
    t_max: int = 300,
    strict: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> ConversionResult:
    """Convert PKU-MMD skeleton files that have a label file into per-instance samples.

    A skeleton file without a label file, or a video in neither split, is reported rejected.
    Segments longer than ``t_max`` are rejected with their length.
    """
    skeletons = sorted(Path(source).glob("*.txt"))
    if not skeletons:
        raise FileNotFoundError(f"no skeleton .txt files in {source}")
    splits = parse_split_file(split_file)
    if not splits["train"] or not splits["test"]:
        raise DataError(f"{split_file}: found no 'Training videos:' / 'Validation videos:' ids")
    items, refused = [], []
    for skel in skeletons:
        label = Path(labels) / skel.name
        split = (
            "train"
            if skel.stem in splits["train"]
            else "test"
            if skel.stem in splits["test"]
            else None
        )
        if not label.exists():
            refused.append((skel.name, "no label file"))
        elif split is None:
            refused.append((skel.name, "video in neither split"))
        else:
            items.append((skel.name, (str(skel), str(label), split)))
    spec = DatasetSpec(
        layout=NTU25,
        t_max=t_max,
        class_names=class_names or [f"action_{i:02d}" for i in range(1, NUM_CLASSES + 1)],
        split_names=["xsub_train", "xsub_test"],
        protocols={"xsub": {"train": "xsub_train", "test": "xsub_test"}},
        default_protocol="xsub",
        recording={
            "format": "pku",
            "path": str(source),
            "labels": str(labels),
            "split_file": str(split_file),
        },
    )
    options = ConvertOptions(strict, workers, progress, desc="pku")
    return run_conversion(out_dir, spec, items, parse_video, options, refused=refused)
