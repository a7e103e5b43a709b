"""The interval maths against scipy, and the paired differences built on it."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from stars.metrics.intervals import (
    bootstrap_interval,
    bootstrap_means,
    paired,
    t_interval,
    verdict,
)
from stars.metrics.outcomes import Outcomes


def test_t_interval_equals_scipys():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 10, 40):
        x = rng.normal(0.4, 0.05, n)
        iv = t_interval(x)
        low, high = stats.t.interval(0.95, n - 1, loc=x.mean(), scale=stats.sem(x))
        assert iv.value == pytest.approx(x.mean())
        assert (iv.low, iv.high) == pytest.approx((low, high), abs=1e-12)
        assert iv.n == n


def test_no_interval_from_one_value():
    assert t_interval([0.5]) is None
    assert t_interval([]) is None
    assert bootstrap_interval(np.array([1.0])) is None
    assert verdict(None) == "no interval (one value)"


def test_bootstrap_interval_agrees_with_scipys_percentile_bootstrap():
    rng = np.random.default_rng(1)
    correct = (rng.random(400) < 0.62).astype(np.float64)
    ours = bootstrap_interval(correct, resamples=4000, seed=3)
    theirs = stats.bootstrap(
        (correct,), np.mean, n_resamples=4000, method="percentile", random_state=3
    ).confidence_interval
    assert ours.value == pytest.approx(correct.mean())
    # Different generators: the two percentile intervals agree to Monte Carlo error
    # (the interval's half-width is ~4.8 points here).
    assert ours.low == pytest.approx(theirs.low, abs=0.01)
    assert ours.high == pytest.approx(theirs.high, abs=0.01)
    # ... and both match the normal approximation of a proportion to within a point.
    half = 1.96 * np.sqrt(correct.mean() * (1 - correct.mean()) / len(correct))
    assert ours.half_width == pytest.approx(half, abs=0.01)


def test_bootstrap_is_seeded_and_chunked_the_same():
    x = np.random.default_rng(2).random(1000)
    a = bootstrap_means(x, 300, seed=5)
    b = bootstrap_means(x, 300, seed=5, chunk_elements=7_000)  # 7 resamples per chunk
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, bootstrap_means(x, 300, seed=6))


def test_paired_differences_match_on_ids():
    ids, diff = paired(
        np.array([5, 1, 9]),
        np.array([1.0, 0.0, 1.0]),
        np.array([9, 5, 7]),
        np.array([0.0, 0.0, 1.0]),
    )
    assert ids.tolist() == [5, 9] and diff.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="share no sample"):
        paired(np.array([1]), np.array([1.0]), np.array([2]), np.array([1.0]))


def test_paired_delta_is_narrower_than_the_unpaired_spread():
    """Two encoders that agree on most samples: the paired difference is tight, and its
    t-interval over episodes equals scipy's on the per-episode differences."""
    rng = np.random.default_rng(4)
    ids = np.arange(500)
    a = rng.random(500) < 0.6
    b = a.copy()
    flip = rng.choice(500, 40, replace=False)
    b[flip[:30]] = True  # b gains 30 samples ...
    b[flip[30:]] = False  # ... and loses 10 (some of which a had wrong already)
    ours, theirs = Outcomes(), Outcomes()
    ours.add_samples("knn_top1", ids, b)
    theirs.add_samples("knn_top1", ids[::-1], a[::-1])  # another order: paired by id
    episodes_a = rng.normal(0.30, 0.03, 10)
    episodes_b = episodes_a + rng.normal(0.02, 0.005, 10)
    ours.add_episodes("fewshot_5shot_mean", list(range(10)), episodes_b)
    theirs.add_episodes("fewshot_5shot_mean", list(range(10)), episodes_a)
    delta = ours.delta(theirs, "knn_top1", resamples=2000, seed=0)
    assert delta.value == pytest.approx(b.mean() - a.mean())
    alone = ours.interval("knn_top1", 2000, 0)
    assert delta.half_width < alone.half_width / 2
    few = ours.delta(theirs, "fewshot_5shot_mean", 2000, 0)
    d = episodes_b - episodes_a
    low, high = stats.t.interval(0.95, 9, loc=d.mean(), scale=stats.sem(d))
    assert (few.low, few.high) == pytest.approx((low, high))
    assert not few.includes_zero() and verdict(few).endswith("higher")
    metrics = ours.deltas(theirs, 2000, 0)
    assert set(metrics) == {
        f"delta_{m}{s}"
        for m in ("knn_top1", "fewshot_5shot_mean")
        for s in ("", "_ci95_low", "_ci95_high")
    }


def test_outcomes_round_trip(tmp_path):
    out = Outcomes()
    out.add_samples("knn_top1", np.array([3, 1]), np.array([True, False]))
    out.add_episodes("fewshot_1shot_mean", [0, 1, 2], np.array([0.2, 0.3, 0.25]))
    back = Outcomes.load(out.save(tmp_path / "o.npz"))
    assert back.metric_names() == ["fewshot_1shot_mean", "knn_top1"]
    assert back.intervals(500, 0) == out.intervals(500, 0)
    assert not list(tmp_path.glob("*.partial"))
