"""Which dataset a job reads: ``data.path`` or the cached embedded synthetic set, and the
split stage 1 pre-trains on."""

from __future__ import annotations

import dataclasses

from stars import storage
from stars.data.config import DataConfig, SyntheticConfig
from stars.data.prepare import ensure_synthetic, synthetic_dir_name
from stars.data.shards import MANIFEST_NAME, SkeletonDataset, open_dataset
from stars.location import Location
from stars.paths import check_kept


def resolve_data(cfg: DataConfig, progress: bool = True) -> SkeletonDataset:
    """The dataset of a job: ``data.path`` or the embedded synthetic set (generated once)."""
    if cfg.path:
        return open_dataset(cfg.path)
    flag = "--set data.synthetic.cache_dir"
    cache = check_kept("data.synthetic.cache_dir", cfg.synthetic.cache_dir, flag)
    if Location(cache).remote:
        return open_dataset(synthetic_at_uri(cfg.synthetic, cache, progress))
    return open_dataset(ensure_synthetic(cfg.synthetic, progress=progress))


def synthetic_at_uri(cfg: SyntheticConfig, cache: str, progress: bool) -> str:
    """The synthetic dataset under the URI ``cache``: generated in the local mirror and
    uploaded the first time (shards before the manifest, so a half upload is never taken
    for a dataset), read from the URI by every node after that."""
    remote = storage.join(cache, synthetic_dir_name(cfg))
    if storage.exists(storage.join(remote, MANIFEST_NAME)):
        return remote
    storage.check_writable(cache, "data.synthetic.cache_dir", "--set data.synthetic.cache_dir")
    local_cfg = dataclasses.replace(cfg, cache_dir=str(storage.local_dir(cache)))
    local = ensure_synthetic(local_cfg, progress=progress)
    for path in sorted(local.iterdir(), key=lambda p: p.name == MANIFEST_NAME):
        storage.publish(path, storage.join(remote, path.name))
    return remote


def pretrain_split(data: SkeletonDataset, protocol: str = "") -> str:
    """The split stage 1 (and 2) train on: the few-shot protocol's pre-training split when the
    dataset has one (novel classes never seen), else the protocol's training split."""
    fewshot = data.fewshot
    if not protocol and fewshot is not None and fewshot.pretrain_split:
        return fewshot.pretrain_split
    return data.protocol(protocol or None)["train"]
