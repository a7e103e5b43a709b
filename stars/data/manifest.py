"""The manifest of a sharded dataset, as one frozen value: parsed and validated once.

``manifest.json`` is the dataset's table of contents (see :mod:`stars.data.shards` for the
rows). :meth:`Manifest.from_json` checks every key a reader relies on and turns the JSON into
typed fields; :meth:`Manifest.to_json` writes it back unchanged. The JSON key ``source`` is
the field :attr:`Manifest.recording` here: where the rows came from (the original recording
format and its files), not a job's dataset or a stage-1 checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stars.errors import StarsError
from stars.location import unsafe_name_reason
from stars.skeleton import JointLayout, get_layout

# 2: joints stored without padding (list<float32>, stars.data.rows); 1 padded them to T_max.
SCHEMA_VERSION = 3

_REQUIRED = (
    "schema_version",
    "num_samples",
    "shards",
    "layout",
    "class_names",
    "splits",
    "split_bits",
    "digest",
    "t_max",
    "num_bodies",
)
# What defines the data, and so the digest: not timestamps, not where the dataset lives.
_DIGESTED = (
    "schema_version",
    "num_samples",
    "t_max",
    "num_bodies",
    "layout",
    "class_names",
    "splits",
    "split_bits",
)


class DataError(StarsError):
    """A dataset that cannot be used as asked; the message names the file or split."""


@dataclass(frozen=True)
class ShardEntry:
    """One Parquet shard: its plain file name, rows, bytes and SHA-256."""

    file: str
    rows: int
    bytes: int
    sha256: str
    first_index: int = 0


@dataclass(frozen=True)
class SplitPair:
    """A protocol's training and test split names."""

    train: str
    test: str


@dataclass(frozen=True)
class FewshotSplit:
    """Classes held out of pre-training: the few-shot gallery and query splits, the class
    indices they hold, and the split stage 1 pre-trains on (which has none of them)."""

    gallery: str
    query: str | None = None
    classes: tuple[int, ...] = ()
    pretrain_split: str = ""


@dataclass(frozen=True)
class Manifest:
    """A dataset's manifest. ``layout`` is the joint layout by name; ``splits`` maps split name
    to row count and ``split_bits`` to its bit in ``split_mask``."""

    num_samples: int
    t_max: int
    num_bodies: int
    layout: JointLayout
    class_names: tuple[str, ...]
    splits: Mapping[str, int]
    split_bits: Mapping[str, int]
    shards: tuple[ShardEntry, ...]
    digest: str = ""
    class_counts: tuple[int, ...] = ()
    protocols: Mapping[str, SplitPair] = field(default_factory=dict)
    default_protocol: str | None = None
    fewshot: FewshotSplit | None = None
    recording: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""
    created_unix: int = 0
    schema_version: int = SCHEMA_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_joints(self) -> int:
        return self.layout.num_joints

    def to_json(self) -> dict[str, Any]:
        """The JSON object ``manifest.json`` holds (keys in the order they are written)."""
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "num_samples": self.num_samples,
            "t_max": self.t_max,
            "num_bodies": self.num_bodies,
            "layout": self.layout.to_dict(),
            "class_names": list(self.class_names),
            "num_classes": self.num_classes,
            "class_counts": list(self.class_counts),
            "splits": dict(self.splits),
            "split_bits": dict(self.split_bits),
            "protocols": {k: {"train": p.train, "test": p.test} for k, p in self.protocols.items()},
            "default_protocol": self.default_protocol,
            "fewshot": None if self.fewshot is None else _fewshot_json(self.fewshot),
            "source": dict(self.recording),
            "shards": [
                {
                    "file": s.file,
                    "rows": s.rows,
                    "bytes": s.bytes,
                    "sha256": s.sha256,
                    "first_index": s.first_index,
                }
                for s in self.shards
            ],
            "created_unix": self.created_unix,
        }
        if self.name:
            out["name"] = self.name
        out["digest"] = self.digest or content_digest(out)
        return out

    @classmethod
    def from_json(cls, raw: Any, shown: str) -> Manifest:
        """Parse and validate ``manifest.json``'s object; ``shown`` names the file in errors.

        Raises:
            DataError: a missing key, an unsafe shard name, an unsupported schema version or a
                malformed entry. The digest is checked by :func:`verify_digest`, once the
                shards themselves have been compared with their entries.
        """
        if not isinstance(raw, dict):
            raise DataError(f"{shown}: a manifest is a JSON object, found {type(raw).__name__}")
        for key in _REQUIRED:
            if key not in raw:
                raise DataError(f"{shown} lacks the key {key!r}")
        for shard in raw["shards"] if isinstance(raw["shards"], list) else [None]:
            name = shard.get("file") if isinstance(shard, dict) else shard
            why = unsafe_name_reason(name)
            if why:
                raise DataError(
                    f"{shown}: shard name {name!r} {why}; a manifest lists shards by their "
                    "plain file names inside the dataset directory"
                )
        if raw["schema_version"] != SCHEMA_VERSION:
            raise DataError(
                f"{shown}: schema version {raw['schema_version']} is not "
                f"supported (this code reads version {SCHEMA_VERSION}); "
                + reconversion_hint(raw.get("source"))
            )
        try:
            return cls._parse(raw)
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{shown}: malformed entry ({type(err).__name__}: {err})") from err

    @classmethod
    def _parse(cls, raw: dict[str, Any]) -> Manifest:
        layout = get_layout(raw["layout"]["name"])
        if layout.num_joints != int(raw["layout"]["num_joints"]):
            raise ValueError(
                f"layout {layout.name} has {layout.num_joints} joints, "
                f"the manifest says {raw['layout']['num_joints']}"
            )
        fewshot = raw.get("fewshot")
        return cls(
            schema_version=int(raw["schema_version"]),
            num_samples=int(raw["num_samples"]),
            t_max=int(raw["t_max"]),
            num_bodies=int(raw["num_bodies"]),
            layout=layout,
            class_names=tuple(str(c) for c in raw["class_names"]),
            class_counts=tuple(int(c) for c in raw.get("class_counts", ())),
            splits={str(k): int(v) for k, v in raw["splits"].items()},
            split_bits={str(k): int(v) for k, v in raw["split_bits"].items()},
            protocols={
                str(k): SplitPair(str(v["train"]), str(v["test"]))
                for k, v in (raw.get("protocols") or {}).items()
            },
            default_protocol=raw.get("default_protocol"),
            fewshot=None if not fewshot else _fewshot_of(fewshot),
            recording=dict(raw.get("source") or {}),
            shards=tuple(
                ShardEntry(
                    str(s["file"]),
                    int(s["rows"]),
                    int(s["bytes"]),
                    str(s["sha256"]),
                    int(s.get("first_index", 0)),
                )
                for s in raw["shards"]
            ),
            name=str(raw.get("name") or ""),
            created_unix=int(raw.get("created_unix", 0)),
            digest=str(raw["digest"]),
        )


def _fewshot_of(raw: Mapping[str, Any]) -> FewshotSplit:
    return FewshotSplit(
        gallery=str(raw["gallery"]),
        query=raw.get("query"),
        classes=tuple(int(c) for c in raw.get("classes") or ()),
        pretrain_split=str(raw.get("pretrain_split") or ""),
    )


def _fewshot_json(f: FewshotSplit) -> dict[str, Any]:
    return {
        "gallery": f.gallery,
        "query": f.query,
        "classes": list(f.classes),
        "pretrain_split": f.pretrain_split,
    }


def fewshot_of(value: FewshotSplit | Mapping[str, Any] | None) -> FewshotSplit | None:
    """An importer's few-shot description (a dict or a :class:`FewshotSplit`) as the value."""
    if value is None or isinstance(value, FewshotSplit):
        return value
    return _fewshot_of(value) if value else None


def content_digest(manifest: Mapping[str, Any]) -> str:
    """SHA-256 over what defines the data (schema, layout, classes, splits, shard hashes) of a
    manifest's JSON object. Independent of file timestamps and of where the dataset lives, so
    two identical conversions have the same digest."""
    core = {k: manifest[k] for k in _DIGESTED}
    core["shards"] = [(s["file"], s["rows"], s["sha256"]) for s in manifest["shards"]]
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


def verify_digest(raw: Mapping[str, Any], shown: str) -> None:
    """Refuse a manifest whose entries no longer match its own digest (edited by hand)."""
    if content_digest(raw) != raw["digest"]:
        raise DataError(
            f"{shown}: content digest does not match its own entries (the manifest was edited)"
        )


def reconversion_hint(recording: object) -> str:
    """How to convert the recording again: its ``jobs/prepare_data.py`` command when the
    manifest says where it came from."""
    if not isinstance(recording, dict) or not recording.get("format"):
        return "convert the recordings again with jobs/prepare_data.py"
    source = recording.get("path", "SOURCE")
    if recording["format"] == "synthetic":
        return "delete the cached directory: the next job generates it again"
    return (
        f"convert it again: python jobs/prepare_data.py {recording['format']} {source} "
        "--out NEW_DIR (with the options it was converted with)"
    )
