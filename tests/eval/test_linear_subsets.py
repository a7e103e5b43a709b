from __future__ import annotations

import json

import numpy as np
import torch

from stars.eval.linear import LinearProbeConfig, linear_probe
from stars.eval.subsets import save_subset, stratified_subset
from stars.metrics.cluster import cluster_quality
from stars.metrics.feature_set import FeatureSet


def _sets(x: torch.Tensor, y: torch.Tensor, n_train: int) -> tuple[FeatureSet, FeatureSet]:
    """(train, test) feature sets of the first ``n_train`` rows and the rest; ids = rows."""
    ids = np.arange(len(x))
    whole = FeatureSet(x.numpy().astype(np.float32), y.numpy().astype(np.int64), ids)
    return whole.subset(ids[:n_train]), whole.subset(ids[n_train:])


def test_linear_probe_solves_linearly_separable_features():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(12, 5, generator=gen)
    x = torch.randn(3000, 12, generator=gen) * 3 + 1.0
    logits = x @ w
    top2 = logits.topk(2, dim=1).values
    keep = (top2[:, 0] - top2[:, 1]) > 1.0  # a margin: linearly separable with room to spare
    x, y = x[keep][:600], logits[keep][:600].argmax(dim=1)
    result = linear_probe(*_sets(x, y, 500), 5, LinearProbeConfig(epochs=60))
    scores, confusion, correct = result.scores, result.confusion, result.correct
    assert scores["linear_top1"] >= 0.95
    assert confusion.shape == (5, 5) and confusion.sum() == 100
    assert correct["linear_top1"].shape == (100,) and correct["linear_top1"].dtype == bool
    assert scores["linear_top1"] == correct["linear_top1"].mean()
    assert correct["linear_top5"].all() and scores["linear_top5"] == 1.0
    assert result.fitted_on.tolist() == list(range(500))


def test_linear_probe_is_seeded_by_its_own_generator():
    """The probe's draws come from its seed alone: the global RNG does not move them (seeds
    of a group fit probes in concurrent threads), another seed does."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(200, 8, generator=gen)
    y = torch.randint(0, 4, (200,), generator=gen)
    cfg = LinearProbeConfig(epochs=3, batch_size=16)
    torch.manual_seed(11)
    a = linear_probe(*_sets(x, y, 150), 4, cfg, seed=3).correct["linear_top1"]
    torch.manual_seed(12)
    b = linear_probe(*_sets(x, y, 150), 4, cfg, seed=3).correct["linear_top1"]
    from stars.eval.linear import train_linear_probe

    w3 = train_linear_probe(x, y, 4, cfg, seed=3)[1].weight
    w4 = train_linear_probe(x, y, 4, cfg, seed=4)[1].weight
    assert (a == b).all()
    assert not torch.equal(w3, w4)


def test_linear_probe_is_at_chance_on_random_labels():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(400, 8, generator=gen)
    y = torch.randint(0, 4, (400,), generator=gen)
    result = linear_probe(*_sets(x, y, 300), 4, LinearProbeConfig(epochs=20))
    assert result.scores["linear_top1"] < 0.45


def test_cluster_quality_separates_good_from_random():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 40)
    centres = rng.normal(size=(5, 16)) * 5
    good = cluster_quality(centres[labels] + rng.normal(size=(200, 16)), labels)
    bad = cluster_quality(rng.normal(size=(200, 16)), labels)
    assert (
        good["cluster_silhouette"] > 0.5
        and good["cluster_kmeans_nmi"] > 0.9
        and good["cluster_kmeans_ari"] > 0.9
    )
    assert bad["cluster_silhouette"] < 0.1 and bad["cluster_kmeans_nmi"] < 0.2


def test_semi_supervised_subsets_are_stratified_and_order_independent(tmp_path):
    labels = np.repeat(np.arange(4), [10, 20, 30, 200])
    index = np.arange(len(labels)) * 3 + 5
    ids = stratified_subset(index, labels, 0.1, seed=2)
    perm = np.random.default_rng(0).permutation(len(labels))
    assert np.array_equal(ids, stratified_subset(index[perm], labels[perm], 0.1, seed=2))
    assert not np.array_equal(ids, stratified_subset(index, labels, 0.1, seed=3))
    per_class = np.bincount(labels[np.searchsorted(index, ids)])
    assert per_class.tolist() == [1, 2, 3, 20]
    saved = json.loads(save_subset(tmp_path / "s.json", ids, 0.1, 2, "train").read_text())
    assert saved["sample_index"] == ids.tolist() and saved["seed"] == 2
