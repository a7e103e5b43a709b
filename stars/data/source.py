"""Which dataset a job reads: ``data.path`` or the cached embedded synthetic set, and the
split stage 1 pre-trains on."""

from __future__ import annotations

from pathlib import Path

from stars.data.config import DataConfig
from stars.data.location import is_uri
from stars.data.prepare import ensure_synthetic
from stars.data.shards import SkeletonDataset, open_dataset
from stars.paths import check_kept


def resolve_data(cfg: DataConfig, progress: bool = True) -> SkeletonDataset:
    """The dataset of a job: ``data.path`` or the embedded synthetic set (generated once)."""
    if cfg.path:
        return open_dataset(cfg.path if is_uri(cfg.path) else Path(cfg.path))
    flag = "--set data.synthetic.cache_dir"
    check_kept("data.synthetic.cache_dir", cfg.synthetic.cache_dir, flag)
    return open_dataset(ensure_synthetic(cfg.synthetic, progress=progress))


def pretrain_split(data: SkeletonDataset, protocol: str = "") -> str:
    """The split stage 1 (and 2) train on: the few-shot protocol's pre-training split when the
    dataset has one (novel classes never seen), else the protocol's training split."""
    fewshot = data.manifest.get("fewshot") or {}
    if not protocol and fewshot.get("pretrain_split"):
        return str(fewshot["pretrain_split"])
    return data.protocol(protocol or None)["train"]
