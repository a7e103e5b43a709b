"""Pooled encoder features of a whole split, in-process (small data, tests, monitoring)."""

from __future__ import annotations

import numpy as np
import torch

from stars.data.config import DataConfig
from stars.data.shards import SkeletonDataset
from stars.data.transforms import eval_view
from stars.model.encoder import SkeletonEncoder


@torch.no_grad()
def encode_split(
    encoder: SkeletonEncoder,
    data: SkeletonDataset,
    split: str | None,
    cfg: DataConfig,
    batch_size: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, C) and labels (N,) of ``split`` with the deterministic centred crop."""
    arrays = data.read_split(split, ["joints", "num_frames", "label"])
    encoder.eval()
    feats = []
    for lo in range(0, len(arrays["label"]), batch_size):
        x = eval_view(
            arrays["joints"][lo : lo + batch_size],
            arrays["num_frames"][lo : lo + batch_size],
            out_frames=encoder.cfg.num_frames,
            ratio=cfg.eval_crop,
        )
        feats.append(encoder.forward_features(torch.from_numpy(x)))
    labels = torch.from_numpy(arrays["label"].astype(np.int64))
    if not feats:
        return torch.zeros(0, encoder.cfg.dim), labels
    return torch.cat(feats), labels
