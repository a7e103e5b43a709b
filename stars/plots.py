"""t-SNE and confusion-matrix pictures (PNG, matplotlib's headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stars.metrics.feature_set import FeatureSet


def pyplot():
    """matplotlib.pyplot on the headless Agg backend (jobs run without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG (parent folders created) and release it."""
    plt = pyplot()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tsne_sample(
    fs: FeatureSet, num_classes: int = 15, per_class: int = 100, seed: int = 0
) -> np.ndarray:
    """Rows of the first ``num_classes`` classes (by index), up to ``per_class`` each, drawn
    with a fixed seed so stage-1 and stage-2 pictures show the same samples."""
    rng = np.random.default_rng(seed)
    rows = []
    for cls in np.unique(fs.labels)[:num_classes]:
        members = np.flatnonzero(fs.labels == cls)
        rows.append(np.sort(rng.choice(members, min(per_class, len(members)), replace=False)))
    return np.concatenate(rows) if rows else np.zeros(0, np.int64)


def tsne_embedding(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, C) -> (N, 2): t-SNE with PCA initialisation and a fixed seed."""
    from sklearn.manifold import TSNE

    n = len(features)
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 samples, got {n}")
    x = features / np.linalg.norm(features, axis=1, keepdims=True).clip(1e-12)
    perplexity = float(min(30.0, (n - 1) / 3))
    return TSNE(2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(x)


def plot_tsne(
    panels: dict[str, FeatureSet],
    path: str | Path,
    class_names: list[str] | None = None,
    num_classes: int = 15,
    per_class: int = 100,
    seed: int = 0,
) -> Path:
    """One t-SNE panel per feature set (e.g. ``{"stage 1": ..., "stage 2": ...}``), side by
    side, same samples in each."""
    plt = pyplot()

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 6), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ax, (title, fs) in zip(axes[0], panels.items(), strict=True):
        rows = tsne_sample(fs, num_classes, per_class, seed)
        xy = tsne_embedding(fs.features[rows], seed)
        labels = fs.labels[rows]
        for i, cls in enumerate(np.unique(labels)):
            sel = labels == cls
            name = class_names[cls] if class_names else str(cls)
            ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=cmap(i % 20), label=name)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5))
    return save_figure(fig, path)


def plot_confusion(
    confusion: np.ndarray, path: str | Path, class_names: list[str] | None = None
) -> Path:
    """Row-normalised confusion matrix (rows = true class)."""
    plt = pyplot()

    k = confusion.shape[0]
    norm = confusion / confusion.sum(axis=1, keepdims=True).clip(1)
    size = min(14, 3 + 0.18 * k)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if class_names and k <= 60:
        ax.set_xticks(range(k), class_names, rotation=90, fontsize=5)
        ax.set_yticks(range(k), class_names, fontsize=5)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return save_figure(fig, path)
