"""The raw-pose nearest-neighbour floor: what a classifier gets with no learning at all.

Each sequence is centred (origin: spine mid of actor 1 in the first frame), linearly resized
to a fixed number of frames, flattened, and matched by cosine similarity to the training set.
A learned representation that does not beat this has learned nothing useful.
"""

from __future__ import annotations

import numpy as np

from stars.data.shards import SkeletonDataset
from stars.data.transforms import eval_view


def raw_pose_features(
    joints: np.ndarray, lengths: np.ndarray, frames: int = 64, centre_joint: int = 1
) -> np.ndarray:
    """(N, T, M, V, 3) sequences -> (N, M * frames * V * 3) L2-normalised vectors."""
    x = eval_view(joints, lengths, out_frames=frames, ratio=1.0)  # (N, M, frames, V, 3)
    origin = x[:, 0, 0, centre_joint]
    present = np.abs(x).sum(axis=-1, keepdims=True) > 0
    x = np.where(present, x - origin[:, None, None, None], 0.0)
    flat = x.reshape(len(x), -1)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-8)


def nearest_neighbour_top1(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    block: int = 4096,
) -> float:
    """Cosine 1-NN accuracy of L2-normalised row vectors, in blocks of test rows."""
    hits = 0
    for lo in range(0, len(test), block):
        sims = test[lo : lo + block] @ train.T
        hits += int((train_labels[sims.argmax(axis=1)] == test_labels[lo : lo + block]).sum())
    return hits / max(len(test), 1)


def raw_pose_floor(
    dataset: SkeletonDataset, protocol: str | None = None, frames: int = 64
) -> float:
    """Raw-pose cosine 1-NN top-1 accuracy on a protocol's train/test splits."""
    splits = dataset.protocol(protocol)
    cols = ["joints", "num_frames", "label"]
    train = dataset.read_split(splits["train"], cols)
    test = dataset.read_split(splits["test"], cols)
    return nearest_neighbour_top1(
        raw_pose_features(train["joints"], train["num_frames"], frames),
        train["label"],
        raw_pose_features(test["joints"], test["num_frames"], frames),
        test["label"],
    )
