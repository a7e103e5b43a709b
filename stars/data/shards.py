"""Sharded Parquet storage for skeleton sequences, its manifest, and validation on read.

One schema serves every source format. Each row is one sequence:

==============  =========================================================================
column          meaning
==============  =========================================================================
sample_index    int64, 0..N-1 in writing order; the integer id used in training batches
sample_id       string, stable id from the source (e.g. ``S001C001P001R001A011``)
label           int32, 0-based class index into ``manifest['class_names']``
subject         int32, performer id (1-based as in the source; 0 when unknown)
view            int32, camera / view id (1-based; 0 when unknown)
setup           int32, recording set-up id (1-based; 0 when unknown)
replication     int32, repetition id (1-based; 0 when unknown)
num_frames      int32, frames before zero padding
num_bodies      int32, actors present in at least one frame
split_mask      int64, bit ``manifest['split_bits'][name]`` set when in split ``name``
joints          list<fixed_size_binary[V*12]>: the row's num_frames frames of its stored
                actors (up to the last one present), frame-major, unpadded, each actor-frame
                V x 3 float32 in one value (stars.data.rows)
==============  =========================================================================

Shards are written to a temporary name and renamed, so a crash never leaves a partial shard
under a name that a reader trusts; ``manifest.json`` is written last, the same way, and
lists every shard with its row count, byte size and SHA-256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from stars.data.manifest import (
    DataError,
    FewshotSplit,
    Manifest,
    ShardEntry,
    SplitPair,
    fewshot_of,
    verify_digest,
)
from stars.data.rows import RaggedJoints, to_arrow
from stars.location import Location
from stars.skeleton import JointLayout

MANIFEST_NAME = "manifest.json"
REPORT_NAME = "report.json"
JOINTS = "joints"
META_COLUMNS = (
    "sample_index",
    "sample_id",
    "label",
    "subject",
    "view",
    "setup",
    "replication",
    "num_frames",
    "num_bodies",
    "split_mask",
)
MAX_SPLITS = 63


class SampleError(DataError):
    """One sample cannot be stored (its id and the reason are in the message)."""

    def __init__(self, sample_id: str, reason: str):
        super().__init__(f"sample {sample_id}: {reason}")
        self.sample_id = sample_id
        self.reason = reason


def joints_type(t_max: int, num_bodies: int, num_joints: int) -> pa.DataType:
    """A row is a list of actor-frames, each the V x 3 float32 coordinates as one fixed-size
    binary value of V x 12 bytes: any length (T_max and M bound it, checked on writing),
    while V is part of the type. Parquet then keeps one repetition level per actor-frame
    rather than one per coordinate, which is what made reading a list of floats slow."""
    return pa.list_(pa.binary(num_joints * 3 * 4))


# Measured on synthetic NTU-size rows (pyarrow read of the same rows, 2-core VM): actor-frames
# as fixed-size binary under LZ4 read in 0.028 CPU-ms per row and take 44.6 KB on disk; under
# zstd 0.056 ms and 40.6 KB; as a list of floats (schema 2) 0.089 ms and 33.6 KB even with
# byte-split floats. Decoding is what a GPU node pays every epoch, so LZ4. Coordinates rarely
# repeat: a dictionary would only cost.
SHARD_WRITE_OPTIONS: dict[str, Any] = {"compression": "lz4", "use_dictionary": ["sample_id"]}


def arrow_schema(t_max: int, num_bodies: int, num_joints: int) -> pa.Schema:
    return pa.schema(
        [
            ("sample_index", pa.int64()),
            ("sample_id", pa.string()),
            ("label", pa.int32()),
            ("subject", pa.int32()),
            ("view", pa.int32()),
            ("setup", pa.int32()),
            ("replication", pa.int32()),
            ("num_frames", pa.int32()),
            ("num_bodies", pa.int32()),
            ("split_mask", pa.int64()),
            (JOINTS, joints_type(t_max, num_bodies, num_joints)),
        ]
    )


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


INT32_MAX = 2**31 - 1  # subject, view, setup and replication are stored as int32


def read_text_input(path: str | Path, what: str) -> str:
    """A whole-input text file (an index, a split list, an exclusion list) as UTF-8; a
    problem is one DataError naming the file and what it is."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{what} {path} is not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise DataError(f"cannot read {what} {path}: {err.strerror or err}") from None


@dataclass
class Sample:
    """One sequence on its way into a shard.

    ``joints`` is (T, M, V, 3) float, T frames of M actors; ``splits`` names the splits that
    hold this sample (e.g. ``{"xsub_train", "xview_test"}``).
    """

    sample_id: str
    joints: np.ndarray
    label: int
    subject: int = 0
    view: int = 0
    setup: int = 0
    replication: int = 0
    splits: frozenset[str] | set[str] = field(default_factory=frozenset)


def check_sample(
    sample: Sample, t_max: int, num_bodies: int, num_joints: int, num_classes: int
) -> tuple[np.ndarray, int, int]:
    """Validate one sample and keep what it holds: its frames and its actors up to the last
    one present (the stored row, unpadded).

    Returns:
        (joints (T, M_stored, V, 3) float32, num_frames, bodies present).
    Raises:
        SampleError naming the sample and the problem.
    """
    sid = sample.sample_id
    x = np.asarray(sample.joints)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise SampleError(sid, f"joints must be (T, M, V, 3) or (T, V, 3), got shape {x.shape}")
    frames, bodies, joints, _ = x.shape
    if joints != num_joints:
        raise SampleError(sid, f"has {joints} joints, the dataset layout has {num_joints}")
    if frames == 0:
        raise SampleError(sid, "zero-length sequence")
    if frames > t_max:
        raise SampleError(sid, f"{frames} frames exceed the dataset's T_max={t_max}")
    if bodies > num_bodies:
        raise SampleError(sid, f"{bodies} bodies exceed the dataset's M={num_bodies}")
    if not np.issubdtype(x.dtype, np.number):
        raise SampleError(sid, f"joints have non-numeric dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise SampleError(
            sid, f"NaN/inf joint value at frame {bad[0]}, body {bad[1]}, joint {bad[2]}"
        )
    present = np.abs(x).reshape(frames, bodies, -1).max(axis=(0, 2)) > 0
    if not present.any():
        raise SampleError(sid, "all joints are zero")
    label = sample.label
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise SampleError(sid, f"label {label!r} is not an integer class index")
    if not 0 <= int(label) < num_classes:
        raise SampleError(sid, f"label {label} outside 0..{num_classes - 1}")
    for name in ("subject", "view", "setup", "replication"):
        value = getattr(sample, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise SampleError(sid, f"{name} {value!r} is not an integer")
        if not 0 <= int(value) <= INT32_MAX:
            raise SampleError(sid, f"{name} {value} outside 0..{INT32_MAX}")
    stored = int(np.flatnonzero(present)[-1]) + 1
    return x[:, :stored], frames, int(present.sum())


@dataclass(frozen=True)
class DatasetSpec:
    """What an importer declares about the dataset it writes (the manifest's fixed part).

    Attributes:
        layout: the joint layout (V joints, parents, names).
        class_names: one name per label, in label order.
        split_names: the splits a sample may belong to (at most ``MAX_SPLITS``).
        recording: where the data came from (the manifest's ``source`` record: format, path,
            digests, counts).
        t_max: frames per stored row (longer sequences are refused, shorter zero padded).
        num_bodies: actors per stored row (M).
        protocols: train/test split pairs by name, e.g. ``{"xsub": {"train": .., "test": ..}}``.
        default_protocol: the pair a job uses when it names none.
        fewshot: gallery/query splits, novel classes and pre-training split, or None.
    """

    layout: JointLayout
    class_names: Sequence[str]
    split_names: Sequence[str]
    recording: dict[str, Any] = field(default_factory=dict)
    t_max: int = 300
    num_bodies: int = 2
    protocols: dict[str, dict[str, str]] = field(default_factory=dict)
    default_protocol: str | None = None
    fewshot: dict[str, Any] | None = None


class ShardWriter:
    """Writes samples into LZ4 Parquet shards of ``rows_per_shard`` rows, then the manifest.

    Use as a context manager; ``close()`` (or leaving the ``with``) flushes the last shard and
    writes ``manifest.json``. Leaving by an exception writes no manifest, so a half-written
    dataset is never mistaken for a complete one.
    """

    def __init__(
        self,
        out_dir: str | Path,
        spec: DatasetSpec,
        *,
        rows_per_shard: int = 512,
    ):
        if len(spec.split_names) > MAX_SPLITS:
            raise ValueError(f"at most {MAX_SPLITS} splits, got {len(spec.split_names)}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if (self.out_dir / MANIFEST_NAME).exists():
            raise FileExistsError(
                f"{self.out_dir} already holds a dataset ({MANIFEST_NAME}); "
                "choose an empty directory"
            )
        self.spec = spec
        self.layout = spec.layout
        self.class_names = list(spec.class_names)
        self.split_bits = {name: i for i, name in enumerate(spec.split_names)}
        self.t_max, self.num_bodies = spec.t_max, spec.num_bodies
        self.rows_per_shard = rows_per_shard
        self.schema = arrow_schema(spec.t_max, spec.num_bodies, spec.layout.num_joints)
        self._rows: list[tuple[Any, ...]] = []
        self._joints: list[np.ndarray] = []
        self._shards: list[dict[str, Any]] = []
        self._seen_ids: set[str] = set()
        self._split_counts = dict.fromkeys(spec.split_names, 0)
        self._label_counts = np.zeros(len(self.class_names), np.int64)
        self._num_written = 0
        self._closed = False

    # -- adding ---------------------------------------------------------------------------
    def add(self, sample: Sample) -> None:
        """Validate and buffer one sample. Raises SampleError (nothing buffered) if bad."""
        if sample.sample_id in self._seen_ids:
            raise SampleError(sample.sample_id, "duplicate sample id")
        unknown = set(sample.splits) - set(self.split_bits)
        if unknown:
            raise SampleError(sample.sample_id, f"unknown split(s) {sorted(unknown)}")
        joints, frames, bodies = check_sample(
            sample, self.t_max, self.num_bodies, self.layout.num_joints, len(self.class_names)
        )
        mask = 0
        for name in sample.splits:
            mask |= 1 << self.split_bits[name]
            self._split_counts[name] += 1
        self._seen_ids.add(sample.sample_id)
        self._label_counts[int(sample.label)] += 1
        self._rows.append(
            (
                self._num_written,
                sample.sample_id,
                int(sample.label),
                int(sample.subject),
                int(sample.view),
                int(sample.setup),
                int(sample.replication),
                frames,
                bodies,
                mask,
            )
        )
        self._joints.append(joints)
        self._num_written += 1
        if len(self._rows) >= self.rows_per_shard:
            self._flush()

    @property
    def num_written(self) -> int:
        return self._num_written

    def _flush(self) -> None:
        if not self._rows:
            return
        cols = list(zip(*self._rows, strict=True))
        arrays = [pa.array(col, type=self.schema.field(i).type) for i, col in enumerate(cols)]
        table = pa.Table.from_arrays(
            [*arrays, to_arrow(self._joints, self.layout.num_joints)], schema=self.schema
        )
        name = f"shard-{len(self._shards):05d}.parquet"
        final = self.out_dir / name
        tmp = self.out_dir / f".{name}.tmp-{os.getpid()}"
        pq.write_table(
            table,
            tmp,
            row_group_size=min(len(self._rows), 128),
            **SHARD_WRITE_OPTIONS,
        )
        os.replace(tmp, final)
        self._shards.append(
            {
                "file": name,
                "rows": len(self._rows),
                "bytes": final.stat().st_size,
                "sha256": sha256_file(final),
                "first_index": int(self._rows[0][0]),
            }
        )
        self._rows.clear()
        self._joints.clear()

    # -- finishing ------------------------------------------------------------------------
    def close(self) -> Manifest:
        """Flush the last shard and write ``manifest.json``; returns the manifest."""
        if self._closed:
            raise RuntimeError("ShardWriter already closed")
        self._flush()
        self._closed = True
        if self._num_written == 0:
            raise DataError(f"no samples were written to {self.out_dir}")
        manifest = Manifest(
            num_samples=self._num_written,
            t_max=self.t_max,
            num_bodies=self.num_bodies,
            layout=self.layout,
            class_names=tuple(self.class_names),
            class_counts=tuple(int(c) for c in self._label_counts),
            splits=dict(self._split_counts),
            split_bits=dict(self.split_bits),
            protocols={k: SplitPair(v["train"], v["test"]) for k, v in self.spec.protocols.items()},
            default_protocol=self.spec.default_protocol,
            fewshot=fewshot_of(self.spec.fewshot),
            recording=dict(self.spec.recording),
            shards=tuple(ShardEntry(**shard) for shard in self._shards),
            created_unix=int(time.time()),
        )
        written = manifest.to_json()
        _atomic_write_text(self.out_dir / MANIFEST_NAME, json.dumps(written, indent=1))
        return dataclasses.replace(manifest, digest=written["digest"])

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self._closed:
            self.close()


@dataclass(frozen=True)
class SkeletonDataset:
    """A validated sharded dataset (see :func:`open_dataset`): ``root`` is a local directory
    (a ``Path``) or a URI such as ``s3://bucket/ntu60`` (a ``str``)."""

    root: Path | str
    manifest: Manifest

    @property
    def location(self) -> Location:
        return dataset_location(str(self.root))

    @property
    def filesystem(self) -> Any:
        """The pyarrow file system of a URI dataset; None for a local one (read as is)."""
        return self.location.reader_filesystem

    @property
    def absolute_root(self) -> str:
        """The root as jobs record it: a URI as given, a local path made absolute."""
        return self.location.absolute

    @property
    def shard_paths(self) -> list[str]:
        """Shard paths inside :attr:`filesystem` (local: plain paths)."""
        return [self.location.path(s.file) for s in self.manifest.shards]

    @property
    def num_samples(self) -> int:
        return self.manifest.num_samples

    @property
    def layout(self) -> JointLayout:
        return self.manifest.layout

    @property
    def num_joints(self) -> int:
        return self.manifest.num_joints

    @property
    def t_max(self) -> int:
        return self.manifest.t_max

    @property
    def num_bodies(self) -> int:
        return self.manifest.num_bodies

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.class_names)

    @property
    def num_classes(self) -> int:
        return self.manifest.num_classes

    @property
    def digest(self) -> str:
        return self.manifest.digest

    def split_bit(self, split: str) -> int:
        bits = self.manifest.split_bits
        if split not in bits:
            raise DataError(
                f"dataset {self.root} has no split {split!r}; splits: {', '.join(bits)}"
            )
        return int(bits[split])

    def split_size(self, split: str | None) -> int:
        if split is None:
            return self.num_samples
        self.split_bit(split)
        return self.manifest.splits[split]

    def protocol(self, name: str | None = None) -> dict[str, str]:
        """Train/test split names of a protocol (default: the dataset's default)."""
        name = name or self.manifest.default_protocol
        protocols = self.manifest.protocols
        if name not in protocols:
            raise DataError(
                f"dataset {self.root} has no protocol {name!r}; "
                f"protocols: {', '.join(protocols) or 'none'}"
            )
        pair = protocols[name]
        return {"train": pair.train, "test": pair.test, "name": name}

    @property
    def fewshot(self) -> FewshotSplit | None:
        """The held-out-class split, when the dataset has classes never seen in pre-training."""
        return self.manifest.fewshot

    def read_split(
        self, split: str | None, columns: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Read a whole split into memory with pyarrow (for small data, tests and evaluation).

        Returns columns as numpy arrays; ``joints`` is (N, T_max, M, V, 3) float32.
        """
        columns = list(columns) if columns is not None else [*META_COLUMNS, JOINTS]
        keep = None
        if split is not None:  # one scan, the split's bit tested inside Arrow
            bit = pa.scalar(1 << self.split_bit(split), pa.int64())
            keep = pc.not_equal(pc.bit_wise_and(pds.field("split_mask"), bit), 0)
        try:
            shards = pds.dataset(self.shard_paths, format="parquet", filesystem=self.filesystem)
            needed = [*columns, "num_frames"] if "num_frames" not in columns else columns
            table = shards.to_table(columns=needed, filter=keep)
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"dataset {self.location.shown}: cannot be read ({err})") from err
        out: dict[str, np.ndarray] = {}
        for name in columns:
            if name != JOINTS:
                out[name] = table.column(name).to_numpy(zero_copy_only=False)
        if JOINTS in columns:
            out[JOINTS] = self.rows_of(table).padded(self.t_max)
        return out

    def rows_of(self, table: pa.Table) -> RaggedJoints:
        """The unpadded joints of a table read from the shards (``joints``, ``num_frames``)."""
        lengths = table.column("num_frames").to_numpy(zero_copy_only=False)
        return RaggedJoints.from_arrow(
            table.column(JOINTS), lengths, self.num_joints, self.num_bodies
        )


def dataset_location(root: str) -> Location:
    """The :class:`Location` of a dataset root (a URI's file system is opened once per
    process)."""
    return Location.of(root)


def read_manifest_json(root: str | Path) -> tuple[dict[str, Any], Manifest]:
    """(the JSON object, the parsed :class:`Manifest`) of the dataset at ``root``."""
    loc = dataset_location(str(root))
    path = loc.show(MANIFEST_NAME)
    if loc.size(MANIFEST_NAME) is None:
        raise DataError(
            f"{loc.show()} is not a STARS dataset: {MANIFEST_NAME} is missing "
            "(build one with jobs/prepare_data.py)"
        )
    try:
        raw = json.loads(loc.read_bytes(MANIFEST_NAME))
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON: {err}") from err
    return raw, Manifest.from_json(raw, path)


def load_manifest(root: str | Path) -> Manifest:
    """The validated manifest of the dataset at ``root`` (its shards are not opened)."""
    return read_manifest_json(root)[1]


def open_dataset(root: str | Path, verify_checksums: bool = False) -> SkeletonDataset:
    """Open a dataset directory and validate its shards against the manifest.

    Always checked: every shard exists, has the recorded byte size, its Parquet footer is
    readable, its row count and schema (including the joints tensor shape) match. With
    ``verify_checksums`` the SHA-256 of every shard is recomputed too.

    Raises:
        DataError naming the shard and the mismatch.
    """
    root = str(root) if Location(str(root)).remote else Path(root)
    loc = dataset_location(str(root))
    raw, manifest = read_manifest_json(root)
    expected = arrow_schema(manifest.t_max, manifest.num_bodies, manifest.num_joints)
    total = 0
    for shard in manifest.shards:
        path, name = loc.path(shard.file), loc.show(shard.file)
        size = loc.size(shard.file)
        if size is None:
            raise DataError(f"shard {name} listed in the manifest is missing")
        if size != shard.bytes:
            raise DataError(
                f"shard {name}: {size} bytes on disk, manifest says {shard.bytes}"
                " (truncated or replaced)"
            )
        try:
            meta = pq.read_metadata(path, filesystem=loc.filesystem)
            schema = pq.read_schema(path, filesystem=loc.filesystem)
        except (pa.ArrowException, OSError) as err:
            raise DataError(f"shard {name}: not a readable Parquet file ({err})") from err
        if meta.num_rows != shard.rows:
            raise DataError(f"shard {name}: {meta.num_rows} rows, manifest says {shard.rows}")
        if not schema.equals(expected, check_metadata=False):
            raise DataError(
                f"shard {name}: schema does not match the manifest "
                f"(expected joints {expected.field(JOINTS).type}, "
                f"got {_describe(schema)})"
            )
        if verify_checksums and _sha256(loc, shard.file) != shard.sha256:
            raise DataError(f"shard {name}: SHA-256 differs from the manifest (corrupted)")
        total += shard.rows
    if total != manifest.num_samples:
        raise DataError(
            f"{loc.show()}: shards hold {total} rows, manifest says {manifest.num_samples}"
        )
    verify_digest(raw, loc.show(MANIFEST_NAME))
    return SkeletonDataset(root, manifest)


def _sha256(loc: Location, name: str, chunk: int = 1 << 22) -> str:
    if not loc.remote:
        return sha256_file(loc.path(name))
    digest = hashlib.sha256()
    with loc.filesystem.open_input_stream(loc.path(name)) as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _describe(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)
