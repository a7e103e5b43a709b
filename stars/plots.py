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


def plot_comparison(
    series: dict[str, dict[str, tuple[float, float, float]]],
    path: str | Path,
    title: str,
    notes: list[str] | None = None,
) -> Path:
    """Grouped bars in percent: one group per metric, one bar per series (e.g. control,
    stage 1, stage 2), each ``(value, low, high)`` drawn with its 95 % interval as an error
    bar; ``notes`` are printed under the plot (the differences in words)."""
    plt = pyplot()
    metrics = sorted({m for bars in series.values() for m in bars}, key=_metric_order)
    width = 0.8 / max(len(series), 1)
    notes = notes or []
    fig, axes = plt.subplots(
        2,
        1,
        figsize=(max(9.0, 2.2 + 1.9 * len(metrics)), 4.0 + 0.18 * len(notes)),
        gridspec_kw={"height_ratios": [4.0, 0.1 + 0.18 * len(notes)]},
    )
    ax, below = axes
    colours = ["tab:gray", "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for i, (name, bars) in enumerate(series.items()):
        xs = [k + (i - (len(series) - 1) / 2) * width for k, m in enumerate(metrics) if m in bars]
        vals = [bars[m] for m in metrics if m in bars]
        heights = [100 * v[0] for v in vals]
        errors = [[100 * (v[0] - v[1]) for v in vals], [100 * (v[2] - v[0]) for v in vals]]
        ax.bar(xs, heights, width, yerr=errors, capsize=3, label=name, color=colours[i % 6])
        for x, h in zip(xs, heights, strict=True):
            ax.text(x, 1, f"{h:.1f}", ha="center", va="bottom", fontsize=7, color="white")
    ax.set_xticks(range(len(metrics)), metrics, fontsize=8)
    # Accuracies live in [0, 100]; a wide interval from few seeds is cut at the frame.
    top = max((100 * v[2] for bars in series.values() for v in bars.values()), default=100)
    ax.set_ylim(0, min(100, top * 1.08 + 1))
    ax.set_ylabel("%  (bars: 95 % interval)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    below.axis("off")
    if notes:
        below.text(0.0, 1.0, "\n".join(notes), fontsize=7, va="top", family="monospace")
    return save_figure(fig, path)


def _metric_order(name: str) -> tuple[int, str]:
    """Few-shot first (what the platform is compared on), then kNN, then linear."""
    for rank, prefix in enumerate(("fewshot_", "knn_", "linear_")):
        if name.startswith(prefix):
            return rank, name
    return 3, name
