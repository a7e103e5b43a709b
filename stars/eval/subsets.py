"""Class-stratified labelled subsets for semi-supervised fine-tuning, drawn on the driver.

The draw depends only on (sample ids, labels, fraction, seed), never on a rank or a worker,
and is saved so a result can be traced to the exact samples it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def stratified_subset(
    sample_index: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
    """Sorted sample ids: ``round(fraction x n_c)`` of each class c, at least one.

    sample_index, labels (N,). The draw is independent of the input's row order.
    """
    # Not sklearn's train_test_split(stratify=...), measured: at 1 % it gives classes of
    # fewer than 50 members no sample (30- and 3-member classes: 0, ours 1 each), it
    # refuses a class of one member, and its draw changes when the rows come in another
    # order (Ray Data does not promise one); it would also change every subset a seed gave.
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    order = np.argsort(sample_index, kind="stable")
    index, labels = sample_index[order], labels[order]
    chosen = []
    for cls in np.unique(labels):
        members = index[labels == cls]
        rng = np.random.default_rng([seed, int(cls)])
        take = max(1, round(fraction * len(members)))
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def save_subset(path: str | Path, ids: np.ndarray, fraction: float, seed: int, split: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {"split": split, "fraction": fraction, "seed": seed, "sample_index": ids.tolist()}
        )
    )
    return path
