"""Pooled encoder features of a whole split.

Two ways to get them: :func:`extract_features` (Ray Data ``map_batches`` over an actor pool
that holds the encoder, on GPU when there is one: whole datasets, clusters) and
:func:`encode_split` (in-process: small data, monitoring inside a training worker). Both use
the deterministic centred crop. :class:`FeatureSet` is the cached result that every protocol
and picture reads, so the encoder runs once per (checkpoint, split).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stars.data.config import DataConfig
from stars.data.shards import SkeletonDataset
from stars.data.transforms import eval_view
from stars.model.encoder import SkeletonEncoder


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


def feature_autocast(device: torch.device, precision: str):
    """``auto``: bf16 autocast on CUDA, fp32 on CPU; ``bf16``: bf16 on either (CPUs with
    AMX/AVX512-BF16 encode ~2.6x faster, features differ at bf16 precision); ``fp32``: none."""
    import contextlib

    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


class EncodeBatch:
    """Ray Data actor: loads the encoder once, then maps ``x`` batches to ``feature``."""

    def __init__(self, checkpoint: str, precision: str = "auto"):
        from stars.model.checkpoint import load_encoder

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.encoder = load_encoder(checkpoint).to(self.device).eval()
        self.precision = precision

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = torch.from_numpy(batch["x"]).to(self.device, non_blocking=True)
        with feature_autocast(self.device, self.precision):
            feats = self.encoder.forward_features(x)
        return {
            "feature": feats.float().cpu().numpy(),
            "label": batch["label"],
            "sample_index": batch["sample_index"],
        }


def extract_features(
    checkpoint: str | Path,
    data: SkeletonDataset,
    split: str | None,
    cfg: DataConfig,
    *,
    num_frames: int,
    dim: int,
    actors: int = 1,
    use_gpu: bool = False,
    batch_size: int = 256,
    precision: str = "auto",
) -> FeatureSet:
    """Features of ``split`` from the encoder of ``checkpoint``, over a Ray actor pool.

    Args:
        num_frames, dim: the encoder's input length T and feature width C.
        actors: encoder replicas (one per GPU when ``use_gpu``).
        precision: ``auto`` | ``bf16`` | ``fp32`` (:func:`feature_autocast`).
    Returns:
        FeatureSet with (N, C) features, N = the split's size.
    """
    import dataclasses

    import ray.data

    from stars.data.pipeline import build_dataset

    eval_cfg = dataclasses.replace(cfg, num_frames=num_frames, map_batch_size=batch_size)
    ds = build_dataset(data, split, "eval", eval_cfg).map_batches(
        EncodeBatch,
        fn_constructor_kwargs={"checkpoint": str(checkpoint), "precision": precision},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=1 if use_gpu else None,
        num_cpus=None if use_gpu else 0.5,
    )
    parts = [b for b in ds.iter_batches(batch_format="numpy", batch_size=None) if len(b["label"])]
    return FeatureSet.from_parts(parts, dim)


@torch.no_grad()
def encode_split(
    encoder: SkeletonEncoder,
    data: SkeletonDataset,
    split: str | None,
    cfg: DataConfig,
    batch_size: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """In-process features (N, C) and labels (N,) of ``split`` with the centred crop."""
    fs = encode_split_set(encoder, data, split, cfg, batch_size)
    return fs.tensors()


@torch.no_grad()
def encode_split_set(
    encoder: SkeletonEncoder,
    data: SkeletonDataset,
    split: str | None,
    cfg: DataConfig,
    batch_size: int = 128,
) -> FeatureSet:
    """:func:`encode_split` as a :class:`FeatureSet` (rows in storage order = index order)."""
    arrays = data.read_split(split, ["joints", "num_frames", "label", "sample_index"])
    encoder.eval()
    parts = []
    for lo in range(0, len(arrays["label"]), batch_size):
        x = eval_view(
            arrays["joints"][lo : lo + batch_size],
            arrays["num_frames"][lo : lo + batch_size],
            out_frames=encoder.cfg.num_frames,
            ratio=cfg.eval_crop,
        )
        parts.append(
            {
                "feature": encoder.forward_features(torch.from_numpy(x)).numpy(),
                "label": arrays["label"][lo : lo + batch_size],
                "sample_index": arrays["sample_index"][lo : lo + batch_size],
            }
        )
    return FeatureSet.from_parts(parts, encoder.cfg.dim)
