"""Generic pose arrays: a directory of ``.npy`` / ``.npz`` sequences plus a CSV index.

Each array is (T, V, C) or (T, M, V, C) with C = 3, any joint count V (e.g. 17-joint COCO 3D
lifts). The CSV has ``sample_id,label`` and optionally ``subject,view,split``; the array of a
sample is ``<sample_id>.npy`` (or ``.npz`` holding one array). The protocol is, in order of
preference: the CSV's ``split`` column (its values become split names), a subject list
(``xsub_train`` / ``xsub_test``), or a seeded stratified split (``train`` / ``test``).
"""

from __future__ import annotations

import csv
import functools
import math
import tokenize
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stars.data.formats.convert import (
    ConversionResult,
    ConvertOptions,
    Parsed,
    Rejected,
    run_conversion,
)
from stars.data.shards import DataError, DatasetSpec, Sample
from stars.data.transforms import resize_windows
from stars.location import unsafe_name_reason
from stars.skeleton import generic_layout, get_layout

INT32_MAX = 2**31 - 1
MAX_COORDINATE = 1e6  # metres or pixels: anything larger is a corrupt value, not a pose


def _natural_key(label: str) -> tuple:
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)


def read_index(path: str | Path) -> list[dict[str, str | None]]:
    """The rows of the CSV index (a whole-input problem is a DataError naming the file)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"sample_id", "label"} <= set(reader.fieldnames):
                raise DataError(
                    f"{path}: the CSV needs a header with at least sample_id,label "
                    f"(got {reader.fieldnames})"
                )
            return [dict(row) for row in reader]
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except csv.Error as err:
        raise DataError(f"{path}: malformed CSV ({err})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the index ({err.strerror or err})") from None


def _npy_header(fh: Any) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    return tuple(int(n) for n in shape), np.dtype(dtype)


def array_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file (or the one array of a ``.npz``) read from its
    header alone; the size the header declares is checked against the bytes actually there,
    so a corrupt header never makes numpy allocate what the file does not hold."""
    if not path.is_file():
        raise Rejected("not a regular file (a directory or a dangling link)")
    try:
        if path.suffix == ".npz":
            with zipfile.ZipFile(path) as zf:
                members = zf.infolist()
                if len(members) != 1:
                    raise Rejected(f"npz holds {len(members)} arrays, expected one")
                with zf.open(members[0]) as fh:
                    shape, dtype = _npy_header(fh)
                    available = members[0].file_size - fh.tell()
        else:
            with open(path, "rb") as fh:
                shape, dtype = _npy_header(fh)
                available = path.stat().st_size - fh.tell()
    except Rejected:
        raise
    except (
        ValueError,
        OSError,
        EOFError,
        zipfile.BadZipFile,
        KeyError,
        SyntaxError,
        tokenize.TokenError,  # numpy tokenises a header whose text was corrupted
    ) as err:
        raise Rejected(f"truncated or unreadable array ({type(err).__name__})") from None
    real = np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    if dtype.hasobject or not real or dtype.kind == "b":
        raise Rejected(f"non-numeric array dtype {dtype}")
    declared = math.prod(shape) * dtype.itemsize
    if declared > available:
        raise Rejected(f"header declares shape {shape} ({declared} bytes), file holds {available}")
    return shape, dtype


def load_array(path: Path) -> np.ndarray:
    """The array of a ``.npy`` / single-array ``.npz`` file, its header checked first."""
    array_header(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return np.asarray(data[data.files[0]])
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise Rejected(f"truncated or unreadable array ({type(err).__name__})") from None


def resample_frames(x: np.ndarray, frames: int) -> np.ndarray:
    """(T, M, V, 3) linearly resampled along time to ``frames`` (T > frames)."""
    start, crop = np.zeros(1, np.int64), np.array([len(x)], np.int64)
    return resize_windows(x[None], start, crop, frames)[0]


def parse_row(
    item: tuple[dict[str, str], str, int, int, frozenset[str]],
    num_joints: int,
    t_max: int,
    min_frames: int = 2,
) -> Parsed:
    row, path, label, max_bodies, splits = item
    sid = row["sample_id"]
    x = load_array(Path(path))
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise Rejected(f"shape {x.shape} is neither (T, V, 3) nor (T, M, V, 3)")
    if x.shape[2] != num_joints:
        raise Rejected(f"wrong joint count {x.shape[2]} (the dataset has {num_joints})")
    if x.shape[1] > max_bodies:
        raise Rejected(f"{x.shape[1]} bodies exceed --max-bodies {max_bodies}")
    with np.errstate(invalid="ignore", over="ignore"):
        x = x.astype(np.float64)
    if not np.isfinite(x).all() or np.abs(x).max(initial=0) > MAX_COORDINATE:
        raise Rejected("NaN/inf or out-of-range joint coordinates")
    if not np.abs(x).max(initial=0) > 0:
        raise Rejected("all-zero sequence")
    if len(x) < min_frames:
        raise Rejected("single-frame sequence")
    cleaning: Counter = Counter()
    if len(x) > t_max:
        x = resample_frames(x, t_max)
        cleaning[f"resampled to T_max={t_max} frames"] += 1

    def meta(key: str) -> int:
        value = (row.get(key) or "").strip()
        if not value:
            return 0
        if not value.isdigit() or int(value) > INT32_MAX:
            raise Rejected(f"{key} {value!r} is not an integer in 0..{INT32_MAX}")
        return int(value)

    return Parsed(
        [
            Sample(
                sid,
                x.astype(np.float32),
                label,
                subject=meta("subject"),
                view=meta("view"),
                splits=set(splits),
            )
        ],
        cleaning=cleaning,
    )


def _row_problem(row: dict[str, str | None]) -> str:
    """Why an index row cannot be a sample, or '' when it can."""
    label = row.get("label")
    if label is None:
        return "index row has no label column value"
    label = label.strip()
    if not label:
        return "empty label"
    if not label.isprintable():
        return f"label {label!r} holds non-printable characters"
    return ""


def convert_arrays(
    source: str | Path,
    out_dir: str | Path,
    *,
    index: str | Path | None = None,
    layout: str | None = None,
    train_subjects: Sequence[int] = (),
    test_fraction: float = 0.2,
    seed: int = 0,
    max_bodies: int = 2,
    max_frames: int | None = None,
    strict: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> ConversionResult:
    """Convert a directory of pose arrays described by a CSV index (default: ``index.csv``).

    T_max is the longest sequence's frame count (``max_frames`` caps it; longer sequences
    are resampled to it and counted in the report's ``cleaning``). The joint count is the
    layout's when ``layout`` is given, else the most common one; arrays with another count
    are rejected by name.
    """
    root = Path(source)
    index_path = Path(index) if index else root / "index.csv"
    refused: list[tuple[str, str]] = []
    rows = []
    for row in read_index(index_path):
        sid = (row.get("sample_id") or "").strip()
        problem = _row_problem(row) if sid else "index row has no sample_id"
        if problem:
            refused.append(
                (sid or f"{index_path.name} row {len(rows) + len(refused) + 2}", problem)
            )
        else:
            rows.append(row)
    if not rows:
        raise DataError(f"{index_path} lists no usable sample ({len(refused)} rows refused)")
    labels = sorted({r["label"].strip() for r in rows}, key=_natural_key)
    label_index = {name: i for i, name in enumerate(labels)}
    has_split = all((r.get("split") or "").strip() for r in rows)
    if has_split:
        split_of = [r["split"].strip() for r in rows]
        names = sorted(set(split_of))
        protocols = (
            {"default": {"train": "train", "test": "test"}}
            if {"train", "test"} <= set(names)
            else {}
        )
    elif train_subjects:
        subjects = {str(s) for s in train_subjects}
        split_of = [
            "xsub_train" if (r.get("subject") or "").strip() in subjects else "xsub_test"
            for r in rows
        ]
        names = ["xsub_train", "xsub_test"]
        protocols = {"xsub": {"train": "xsub_train", "test": "xsub_test"}}
    else:
        split_of = _stratified(rows, test_fraction, seed)
        names, protocols = ["train", "test"], {"default": {"train": "train", "test": "test"}}

    candidates = []  # (row, split, path, shape)
    for row, split in zip(rows, split_of, strict=True):
        sid = row["sample_id"].strip()
        why = unsafe_name_reason(sid)
        if why:
            refused.append((sid, f"sample_id {why}: array files must lie in {root}"))
            continue
        found = [
            p for p in (root / f"{sid}.npy", root / f"{sid}.npz") if p.exists() or p.is_symlink()
        ]
        if not found:
            refused.append((sid, "array file not found"))
            continue
        if not found[0].resolve().is_relative_to(root.resolve()):
            refused.append((found[0].name, f"a link to {found[0].resolve()}, outside {root}"))
            continue
        try:
            shape, _ = array_header(found[0])
        except Rejected as err:
            refused.append((found[0].name, err.reason))
            continue
        if len(shape) not in (3, 4) or shape[-1] != 3:
            refused.append((found[0].name, f"shape {shape} is neither (T, V, 3) nor (T, M, V, 3)"))
            continue
        candidates.append((row, split, found[0], shape))
    if not candidates:
        raise DataError(f"{root}: no readable array (first problem: {refused[0][1]})")
    counts = Counter(shape[-2] for *_, shape in candidates)
    joint_layout = get_layout(layout) if layout else None
    num_joints = joint_layout.num_joints if joint_layout else counts.most_common(1)[0][0]
    if joint_layout is None:
        joint_layout = (
            get_layout("ntu25")
            if num_joints == 25
            else get_layout("kinect20")
            if num_joints == 20
            else generic_layout(num_joints)
        )
    reason = (
        f"joint count differs from layout {joint_layout.name} (V={num_joints})"
        if layout
        else f"joint count differs from the most common one (V={num_joints})"
    )
    kept = []
    for row, split, path, shape in candidates:
        if shape[-2] != num_joints:
            refused.append((path.name, f"{reason}: V={shape[-2]}"))
        else:
            kept.append((row, split, path, shape))
    longest = max((shape[0] for *_, shape in kept), default=1)
    t_max = min(longest, max_frames) if max_frames else longest
    items = [
        (
            path.name,
            (row, str(path), label_index[row["label"].strip()], max_bodies, frozenset({split})),
        )
        for row, split, path, _ in kept
    ]
    default = next(iter(protocols), None)
    spec = DatasetSpec(
        layout=joint_layout,
        class_names=labels,
        split_names=names,
        t_max=max(t_max, 1),
        num_bodies=max_bodies,
        protocols=protocols,
        default_protocol=default,
        recording={"format": "arrays", "path": str(root), "index": str(index_path)},
    )
    parse = functools.partial(parse_row, num_joints=num_joints, t_max=max(t_max, 1))
    options = ConvertOptions(strict, workers, progress, desc="arrays")
    return run_conversion(out_dir, spec, items, parse, options, refused=refused)


def _stratified(rows: list[dict[str, str]], test_fraction: float, seed: int) -> list[str]:
    """Per class, a seeded ``test_fraction`` of the rows goes to ``test``."""
    # Not sklearn's train_test_split(stratify=...): it refuses a class of one recording
    # (here it stays in train), and the split a seed gives would differ from the one
    # existing conversions recorded (the manifest's digest would change on re-conversion).
    rng = np.random.default_rng(seed)
    out = ["train"] * len(rows)
    by_label: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_label.setdefault(r["label"].strip(), []).append(i)
    for label in sorted(by_label):
        idx = np.array(by_label[label])
        n_test = round(len(idx) * test_fraction)
        for i in rng.permutation(idx)[:n_test]:
            out[i] = "test"
    return out
