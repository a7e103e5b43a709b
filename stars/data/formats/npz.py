"""Preprocessed MAMP / STARS / CTR-GCN ``.npz`` files (``NTU60_XSub.npz``, ``PKUv2_XSub.npz``).

Keys ``x_train``, ``x_test``: float32 (N, 300, 150), actor-major 2 x 25 x xyz, zero-padded
frames; ``y_train``, ``y_test``: one-hot (N, num_classes). The joint arrays are streamed from
the zip member in row chunks, so a 10 GB file never sits in memory.
"""

from __future__ import annotations

import contextlib
import re
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stars.data.formats.convert import ConversionResult, ConvertOptions, Parsed, run_conversion
from stars.data.shards import DataError, DatasetSpec, Sample
from stars.skeleton import NTU25

PARTS = ("train", "test")
# What a damaged zip / .npy raises from deep inside zipfile, zlib and numpy.
DAMAGE = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    TypeError,
    OverflowError,
    SyntaxError,
    tokenize.TokenError,
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    NotImplementedError,
)


@contextlib.contextmanager
def _damage_is_data_error(path: Path | str, what: str) -> Iterator[None]:
    try:
        yield
    except DataError:
        raise
    except DAMAGE as err:
        raise DataError(
            f"{path}: damaged .npz while reading {what} ({type(err).__name__}: {err})"
        ) from None


def _read_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of the .npy stream at ``fh`` (positioned at its start)."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    return np.lib.format.read_array_header_2_0(fh)


def _member_header(zf: zipfile.ZipFile, key: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    with zf.open(f"{key}.npy") as fh:
        shape, fortran, dtype = _read_header(fh)
    return shape, dtype, fortran


def iter_rows(path: str | Path, key: str, chunk: int = 512) -> Iterator[np.ndarray]:
    """Yield consecutive row blocks of array ``key`` of an ``.npz`` without loading it all.

    Raises:
        DataError naming the file when the archive or the array is damaged.
    """
    with _damage_is_data_error(path, key), zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as fh:
        shape, fortran, dtype = _read_header(fh)
        if fortran:
            raise DataError(f"{path}: {key} is Fortran-ordered; re-save it in C order")
        row = int(np.prod(shape[1:])) * dtype.itemsize
        for lo in range(0, shape[0], chunk):
            n = min(chunk, shape[0] - lo)
            raw = fh.read(n * row)
            if len(raw) != n * row:
                raise DataError(f"{path}: {key} is truncated at row {lo + len(raw) // row}")
            yield np.frombuffer(raw, dtype=dtype).reshape(n, *shape[1:])


def _labels(zf_path: Path, key: str) -> np.ndarray:
    with _damage_is_data_error(zf_path, key), np.load(zf_path, allow_pickle=False) as data:
        y = np.asarray(data[key])
    if y.size == 0 or y.ndim not in (1, 2) or not np.isfinite(y).all():
        raise DataError(f"{zf_path}: {key} is not a one-hot matrix or label vector")
    return y.argmax(axis=1) if y.ndim == 2 else y.astype(np.int64).ravel()


def protocol_name(path: Path) -> str:
    """``NTU60_XSub.npz`` -> ``xsub``; otherwise ``default``."""
    match = re.search(r"_(x\w+)$", path.stem, flags=re.IGNORECASE)
    return match.group(1).lower() if match else "default"


def parse_block(args: tuple[str, str, str, int, np.ndarray, np.ndarray]) -> Parsed:
    """(file stem, part, protocol, first row, x (B, T, 150), labels (B,)) -> samples; each
    bad row is rejected on its own."""
    stem, part, proto, start, x, y = args
    out = Parsed()
    B, T, F = x.shape
    joints = x.reshape(B, T, 2, F // 6, 3)
    present = np.abs(joints).reshape(B, T, -1).max(axis=2) > 0  # (B, T)
    for i in range(B):
        sid = f"{stem}_{part}_{start + i:06d}"
        if not present[i].any():
            out.rejected.append((sid, "all-zero sequence"))
            continue
        frames = int(np.flatnonzero(present[i])[-1]) + 1
        seq = joints[i, :frames]
        bodies = 2 if np.abs(seq[:, 1]).max() > 0 else 1
        out.samples.append(Sample(sid, seq[:, :bodies], int(y[i]), splits={f"{proto}_{part}"}))
    return out


def convert_npz(
    source: str | Path,
    out_dir: str | Path,
    *,
    class_names: list[str] | None = None,
    protocol: str | None = None,
    strict: bool = False,
    progress: bool = True,
    chunk: int = 512,
) -> ConversionResult:
    """Convert one preprocessed ``.npz`` (both parts) into shards."""
    path = Path(source)
    with _damage_is_data_error(path, "the archive index"), zipfile.ZipFile(path) as zf:
        members = {Path(n).stem for n in zf.namelist()}
        missing = [k for p in PARTS for k in (f"x_{p}", f"y_{p}") if k not in members]
        if missing:
            raise DataError(
                f"{path}: missing arrays {missing} (expected x_train, y_train, x_test, y_test)"
            )
        shapes = {p: _member_header(zf, f"x_{p}")[0] for p in PARTS}
    for p, shape in shapes.items():
        if len(shape) != 3 or shape[2] != 150:
            raise DataError(f"{path}: x_{p} has shape {shape}, expected (N, T, 150)")
    labels = {p: _labels(path, f"y_{p}") for p in PARTS}
    for p in PARTS:
        if len(labels[p]) != shapes[p][0]:
            raise DataError(f"{path}: y_{p} has {len(labels[p])} rows, x_{p} has {shapes[p][0]}")
    num_classes = int(max(labels[p].max() for p in PARTS)) + 1
    names = class_names or [f"class_{i + 1:03d}" for i in range(num_classes)]
    proto = protocol or protocol_name(path)
    t_max = max(shapes[p][1] for p in PARTS)
    spec = DatasetSpec(
        layout=NTU25,
        class_names=names,
        t_max=t_max,
        split_names=[f"{proto}_train", f"{proto}_test"],
        protocols={proto: {"train": f"{proto}_train", "test": f"{proto}_test"}},
        default_protocol=proto,
        recording={"format": "npz", "path": str(path), "rows": {p: shapes[p][0] for p in PARTS}},
    )
    items = (
        (
            f"{path.name}:{p}[{lo}:{lo + len(block)}]",
            (path.stem, p, proto, lo, block, labels[p][lo : lo + len(block)]),
        )
        for p in PARTS
        for lo, block in _blocks(path, p, chunk)
    )
    # One parser: the blocks are read lazily from one file, so workers would only copy them.
    options = ConvertOptions(strict, workers=1, progress=progress, desc="npz")
    return run_conversion(out_dir, spec, items, parse_block, options)


def _blocks(path: Path, part: str, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    lo = 0
    for block in iter_rows(path, f"x_{part}", chunk):
        yield lo, block
        lo += len(block)


def write_npz(path: str | Path, parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Write ``{part: (x (N, T, 150), labels (N,))}`` in the published layout (one-hot y)."""
    num_classes = max(int(y.max()) for _, y in parts.values()) + 1
    arrays = {}
    for part, (x, y) in parts.items():
        arrays[f"x_{part}"] = x.astype(np.float32)
        arrays[f"y_{part}"] = np.eye(num_classes, dtype=np.float32)[y]
    np.savez(path, **arrays)
