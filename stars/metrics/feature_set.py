"""Pooled features of one split with their labels and sample ids: what every protocol and
picture reads, computed once per (checkpoint, split) and cached as ``.npz``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclass
class FeatureSet:
    """Features of one split, rows sorted by ``sample_index``.

    Attributes:
        features: (N, C) float32 pooled encoder features (not normalised).
        labels: (N,) int64 class indices.
        sample_index: (N,) int64 dataset-wide sample ids.
    """

    features: np.ndarray
    labels: np.ndarray
    sample_index: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.features), torch.from_numpy(self.labels)

    def subset(self, rows: np.ndarray) -> FeatureSet:
        return FeatureSet(self.features[rows], self.labels[rows], self.sample_index[rows])

    def save(self, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
        """Write ``path`` (.npz) and, with ``meta``, a JSON file beside it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, features=self.features, labels=self.labels, sample_index=self.sample_index)
        tmp.replace(path)
        if meta is not None:
            path.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FeatureSet:
        with np.load(path) as f:
            return cls(f["features"], f["labels"], f["sample_index"])

    @classmethod
    def from_parts(cls, parts: list[dict[str, np.ndarray]], dim: int) -> FeatureSet:
        if not parts:
            return cls(np.zeros((0, dim), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64))
        feats = np.concatenate([p["feature"] for p in parts]).astype(np.float32)
        labels = np.concatenate([p["label"] for p in parts]).astype(np.int64)
        index = np.concatenate([p["sample_index"] for p in parts]).astype(np.int64)
        order = np.argsort(index, kind="stable")
        return cls(feats[order], labels[order], index[order])
