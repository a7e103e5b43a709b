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
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stars.data.formats.convert import ConversionResult, Parsed, Rejected, run_conversion
from stars.data.shards import DataError, Sample
from stars.skeleton import generic_layout, get_layout


def _natural_key(label: str) -> tuple:
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)


def read_index(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or not {"sample_id", "label"} <= set(reader.fieldnames):
            raise DataError(
                f"{path}: the CSV needs a header with at least sample_id,label "
                f"(got {reader.fieldnames})"
            )
        return [dict(row) for row in reader]


def load_array(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if len(data.files) != 1:
                    raise Rejected(f"npz holds {len(data.files)} arrays, expected one")
                return np.asarray(data[data.files[0]])
        return np.load(path, allow_pickle=False)
    except Rejected:
        raise
    except (ValueError, OSError, EOFError) as err:
        raise Rejected(f"truncated or unreadable array ({type(err).__name__})") from None


def parse_row(
    item: tuple[dict[str, str], str, int, int, frozenset[str]], num_joints: int, min_frames: int = 2
) -> Parsed:
    row, path, label, max_bodies, splits = item
    sid = row["sample_id"]
    x = load_array(Path(path))
    if not np.issubdtype(x.dtype, np.number):
        raise Rejected(f"non-numeric array dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise Rejected(f"shape {x.shape} is neither (T, V, 3) nor (T, M, V, 3)")
    if x.shape[2] != num_joints:
        raise Rejected(f"wrong joint count {x.shape[2]} (the dataset has {num_joints})")
    if x.shape[1] > max_bodies:
        raise Rejected(f"{x.shape[1]} bodies exceed --max-bodies {max_bodies}")
    if not np.isfinite(x).all():
        raise Rejected("NaN/inf joint coordinates")
    if not np.abs(x).max(initial=0) > 0:
        raise Rejected("all-zero sequence")
    if len(x) < min_frames:
        raise Rejected("single-frame sequence")

    def meta(key: str) -> int:
        value = (row.get(key) or "").strip()
        try:
            return int(value) if value else 0
        except ValueError:
            raise Rejected(f"{key} {value!r} is not an integer") from None

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
        ]
    )


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
    t_max: int = 300,
    strict: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> ConversionResult:
    """Convert a directory of pose arrays described by a CSV index (default: ``index.csv``)."""
    root = Path(source)
    rows = read_index(index or root / "index.csv")
    if not rows:
        raise DataError(f"{index or root / 'index.csv'} lists no samples")
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
        subjects = set(train_subjects)
        split_of = [
            "xsub_train" if int(r.get("subject") or 0) in subjects else "xsub_test" for r in rows
        ]
        names, protocols = (
            ["xsub_train", "xsub_test"],
            {"xsub": {"train": "xsub_train", "test": "xsub_test"}},
        )
    else:
        split_of = _stratified(rows, test_fraction, seed)
        names, protocols = ["train", "test"], {"default": {"train": "train", "test": "test"}}
    items, refused, num_joints = [], [], None
    for row, split in zip(rows, split_of, strict=True):
        sid = row["sample_id"].strip()
        found = [p for p in (root / f"{sid}.npy", root / f"{sid}.npz") if p.exists()]
        if not found:
            refused.append((sid, "array file not found"))
            continue
        if num_joints is None:
            try:
                probe = load_array(found[0])
                num_joints = int(probe.shape[-2])
            except (Rejected, IndexError):
                pass
        items.append(
            (
                found[0].name,
                (
                    row,
                    str(found[0]),
                    label_index[row["label"].strip()],
                    max_bodies,
                    frozenset({split}),
                ),
            )
        )
    if num_joints is None:
        raise DataError(f"{root}: no readable array to take the joint count from")
    joint_layout = (
        get_layout(layout)
        if layout
        else (
            get_layout("ntu25")
            if num_joints == 25
            else get_layout("kinect20")
            if num_joints == 20
            else generic_layout(num_joints)
        )
    )
    if joint_layout.num_joints != num_joints:
        raise DataError(
            f"layout {joint_layout.name} has {joint_layout.num_joints} joints, "
            f"the arrays have {num_joints}"
        )
    default = next(iter(protocols), None)
    writer_args = {
        "layout": joint_layout,
        "class_names": labels,
        "split_names": names,
        "t_max": t_max,
        "num_bodies": max_bodies,
        "protocols": protocols,
        "default_protocol": default,
        "source": {"format": "arrays", "path": str(root), "index": str(index or "index.csv")},
    }
    parse = functools.partial(parse_row, num_joints=num_joints)
    return run_conversion(
        out_dir,
        items,
        parse,
        writer_args,
        strict=strict,
        workers=workers,
        progress=progress,
        desc="arrays",
        total=len(items),
        extra_rejected=refused,
    )


def _stratified(rows: list[dict[str, str]], test_fraction: float, seed: int) -> list[str]:
    """Per class, a seeded ``test_fraction`` of the rows goes to ``test``."""
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
