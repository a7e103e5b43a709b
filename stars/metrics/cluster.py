"""Cluster quality of features by label: the paper's "well-separated clusters" as numbers."""

from __future__ import annotations

import numpy as np


def cluster_quality(
    features: np.ndarray, labels: np.ndarray, seed: int = 0, max_samples: int = 5000
) -> dict[str, float]:
    """Silhouette (cosine) by label, and NMI / ARI of k-means (k = number of classes) on the
    L2-normalised features against the labels.

    features (N, C), labels (N,). Above ``max_samples`` rows, a fixed-seed subsample is used
    (silhouette is O(N^2)).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

    classes = np.unique(labels)
    if len(classes) < 2 or len(labels) <= len(classes):
        raise ValueError(
            f"cluster quality needs >= 2 classes and more samples than classes "
            f"(got {len(labels)} samples of {len(classes)} classes)"
        )
    rng = np.random.default_rng(seed)
    rows = np.arange(len(labels))
    if len(rows) > max_samples:
        rows = np.sort(rng.choice(rows, max_samples, replace=False))
    x = features[rows].astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    y = labels[rows]
    clusters = KMeans(n_clusters=len(classes), n_init=10, random_state=seed).fit_predict(x)
    return {
        "cluster_silhouette": float(silhouette_score(x, y, metric="cosine")),
        "cluster_kmeans_nmi": float(normalized_mutual_info_score(y, clusters)),
        "cluster_kmeans_ari": float(adjusted_rand_score(y, clusters)),
    }
