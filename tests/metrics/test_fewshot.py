from __future__ import annotations

import numpy as np
import pytest
import torch

from stars.metrics.feature_set import FeatureSet
from stars.metrics.fewshot import classify, draw_episode, fewshot_report, make_episode


def _clusters(n_classes, per_class, dim=16, spread=0.3, seed=0, offset=0):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(n_classes, dim)) * 3
    labels = np.repeat(np.arange(n_classes), per_class)
    feats = centres[labels] + spread * rng.normal(size=(len(labels), dim))
    index = np.arange(len(labels)) + offset
    return FeatureSet(feats.astype(np.float32), labels.astype(np.int64), index.astype(np.int64))


def test_episodes_reproducible_from_seed_and_never_use_queries():
    gallery = _clusters(5, 8)
    a = make_episode(gallery, None, 2, seed=7)
    b = make_episode(gallery, None, 2, seed=7)
    c = make_episode(gallery, None, 2, seed=8)
    assert np.array_equal(a.exemplar_rows, b.exemplar_rows)
    assert not np.array_equal(a.exemplar_rows, c.exemplar_rows)
    assert not set(a.exemplar_rows) & set(a.query_rows)
    assert len(a.exemplar_rows) + len(a.query_rows) == len(gallery)
    counts = np.bincount(gallery.labels[a.exemplar_rows])
    assert (counts == 2).all()


def test_separate_query_part_must_be_disjoint():
    gallery = _clusters(3, 6)
    overlapping = _clusters(3, 4, seed=1)  # sample ids 0..11 overlap the gallery's
    with pytest.raises(ValueError, match="share samples"):
        fewshot_report(gallery, overlapping, shots=(1,), episodes=1)


def test_separated_classes_are_solved_and_report_has_stable_names():
    gallery = _clusters(6, 10, seed=0)
    query = _clusters(6, 5, seed=1, offset=1000)
    metrics, seeds = fewshot_report(gallery, query, shots=(1, 5), episodes=4, seed=3)
    assert metrics["fewshot_1shot_mean"] == 1.0
    assert metrics["fewshot_5shot_classmean_mean"] == 1.0
    assert set(seeds) == {"1", "5"} and len(seeds["5"]) == 4
    assert {"fewshot_5shot_mean", "fewshot_5shot_std"} <= set(metrics)


def test_vote_breaks_ties_by_similarity():
    exemplars = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([3, 8])
    vote, mean = classify(exemplars, labels, torch.tensor([[0.9, 0.1]]), k=2)
    assert vote.tolist() == [3] and mean.tolist() == [3]


def test_draw_takes_all_of_a_small_class():
    labels = np.array([0, 0, 0, 1])
    rows = draw_episode(labels, 2, seed=0)
    assert (labels[rows] == 1).sum() == 1 and (labels[rows] == 0).sum() == 2
