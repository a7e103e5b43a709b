"""Building datasets on disk: the synthetic default (cached), reports and summaries."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from tqdm import tqdm

from stars.data.config import SyntheticConfig
from stars.data.manifest import SCHEMA_VERSION, Manifest
from stars.data.shards import MANIFEST_NAME, REPORT_NAME, ShardWriter, open_dataset
from stars.data.synthetic import SyntheticSpec, dataset_spec, generate
from stars.text import table


def write_synthetic(
    out_dir: str | Path, spec: SyntheticSpec, rows_per_shard: int = 512, progress: bool = True
) -> Manifest:
    """Generate the synthetic dataset ``spec`` into ``out_dir``; returns the manifest."""
    total = spec.num_classes * spec.samples_per_class
    with ShardWriter(out_dir, dataset_spec(spec), rows_per_shard=rows_per_shard) as writer:
        for sample in tqdm(
            generate(spec),
            total=total,
            desc="synthetic",
            unit="seq",
            disable=not progress,
            mininterval=1.0,
        ):
            writer.add(sample)
        manifest = writer.close()
    write_report(out_dir, seen=total, written=manifest.num_samples, rejected=[], cleaning={})
    return manifest


def write_report(
    out_dir: str | Path,
    *,
    seen: int,
    written: int,
    rejected: list[dict[str, str]],
    cleaning: dict[str, Any],
) -> dict[str, Any]:
    """``report.json`` beside the manifest: nothing converted is silently lost."""
    if written + len(rejected) != seen:
        raise AssertionError(
            f"report does not add up: {written} written + {len(rejected)} rejected != {seen} seen"
        )
    report = {"seen": seen, "written": written, "rejected": rejected, "cleaning": cleaning}
    Path(out_dir, REPORT_NAME).write_text(json.dumps(report, indent=1))
    return report


def synthetic_spec(cfg: SyntheticConfig) -> SyntheticSpec:
    return SyntheticSpec(
        num_classes=cfg.num_classes,
        samples_per_class=cfg.samples_per_class,
        num_base_classes=cfg.num_base_classes,
        seed=cfg.seed,
    )


def synthetic_dir_name(cfg: SyntheticConfig) -> str:
    """``synthetic-<hash of the full generator spec>``: a changed config never reuses a
    stale dataset."""
    spec = synthetic_spec(cfg)
    # The storage schema is part of the key: a new version never meets an old cached copy.
    described = {**dataset_spec(spec).recording, "schema_version": SCHEMA_VERSION}
    key = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
    return f"synthetic-{key.hexdigest()[:12]}"


def ensure_synthetic(cfg: SyntheticConfig, progress: bool = True) -> Path:
    """Path of the cached synthetic dataset for ``cfg`` (a local ``cache_dir``), generating
    it on first use; the build goes to a temporary directory renamed into place when complete.
    """
    spec = synthetic_spec(cfg)
    final = Path(cfg.cache_dir).resolve() / synthetic_dir_name(cfg)
    if (final / MANIFEST_NAME).exists():
        open_dataset(final)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=final.parent))
    try:
        # A bar redrawn in place is only readable on a terminal (not in `ray job logs`).
        write_synthetic(tmp, spec, progress=progress and sys.stderr.isatty())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def summary_table(manifest: Manifest, root: str | Path) -> str:
    """A short human-readable summary of a written dataset."""
    rows = [
        ("dataset", str(root)),
        ("samples", str(manifest.num_samples)),
        ("classes", str(manifest.num_classes)),
        ("layout", f"{manifest.layout.name} (V={manifest.num_joints})"),
        ("T_max x M", f"{manifest.t_max} x {manifest.num_bodies}"),
        ("shards", str(len(manifest.shards))),
        ("digest", manifest.digest[:16]),
    ]
    rows += [(f"split {name}", str(count)) for name, count in manifest.splits.items()]
    return table(rows)
