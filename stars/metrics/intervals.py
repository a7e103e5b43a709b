"""95 % confidence intervals for the numbers the platform compares.

Two sources of uncertainty, two methods:

- **over samples** (kNN and linear accuracy of one encoder): a percentile bootstrap over the
  test samples, each resample drawing N samples with replacement from N per-sample scores;
  a paired difference resamples the same rows of both encoders' scores;
- **over repeats** (few-shot episodes of one encoder, or training seeds of a group): the
  Student-t interval ``mean ± t(0.975, n-1) · s / sqrt(n)`` with the sample standard
  deviation ``s``; a paired difference is the t-interval of the per-repeat differences.

An interval from a single value does not exist: :func:`t_interval` returns None for n < 2,
and callers say so instead of printing one.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
SUFFIX_LOW, SUFFIX_HIGH = "_ci95_low", "_ci95_high"
DELTA = "delta_"


@dataclass(frozen=True)
class Interval:
    """A value with its 95 % interval; ``n`` is what the interval is over (samples,
    episodes or seeds) and ``over`` says which."""

    value: float
    low: float
    high: float
    n: int
    over: str

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def includes_zero(self) -> bool:
        return self.low <= 0.0 <= self.high

    def metrics(self, name: str) -> dict[str, float]:
        """``{name: value, name_ci95_low: low, name_ci95_high: high}``."""
        return {name: self.value, name + SUFFIX_LOW: self.low, name + SUFFIX_HIGH: self.high}


def t_quantile(df: int, level: float = LEVEL) -> float:
    """The two-sided Student-t quantile t((1 + level) / 2, df)."""
    from scipy.stats import t

    return float(t.ppf((1 + level) / 2, df))


def t_interval(values: np.ndarray | list[float], over: str = "repeats") -> Interval | None:
    """Mean and t-interval of ``values`` (n,); None when n < 2 (no spread to measure)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return None
    mean = float(x.mean())
    half = t_quantile(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return Interval(mean, mean - half, mean + half, len(x), over)


def stable_seed(*parts: object) -> int:
    """A seed from names and numbers that is the same in every process (``hash`` is not)."""
    return zlib.crc32("/".join(str(p) for p in parts).encode())


def bootstrap_means(
    scores: np.ndarray, resamples: int, seed: int, chunk_elements: int = 1 << 22
) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples of ``scores`` (N,): (resamples,) float64.

    Resamples are drawn in chunks of at most ``chunk_elements`` indices, so memory stays
    bounded for any N (NTU-120's 50k test samples x 1,000 resamples included).
    """
    x = np.asarray(scores, dtype=np.float64).ravel()
    n = len(x)
    rng = np.random.default_rng(seed)
    out = np.empty(resamples, np.float64)
    rows = max(1, chunk_elements // max(n, 1))
    for lo in range(0, resamples, rows):
        hi = min(resamples, lo + rows)
        idx = rng.integers(0, n, size=(hi - lo, n))
        out[lo:hi] = x[idx].mean(axis=1)
    return out


def bootstrap_interval(
    scores: np.ndarray, resamples: int = 1000, seed: int = 0, over: str = "test samples"
) -> Interval | None:
    """The mean of per-sample ``scores`` (N,) with its percentile-bootstrap interval; None
    for fewer than two samples."""
    x = np.asarray(scores, dtype=np.float64).ravel()
    if len(x) < 2:
        return None
    means = bootstrap_means(x, resamples, seed)
    alpha = (1 - LEVEL) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(float(x.mean()), float(low), float(high), len(x), over)


def paired(
    ours_ids: np.ndarray, ours: np.ndarray, theirs_ids: np.ndarray, theirs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, ``ours - theirs``) over the ids both have (unique ids; sorted).

    Raises:
        ValueError: when the two share no id (they were not measured on the same items).
    """
    common, a, b = np.intersect1d(
        np.asarray(ours_ids), np.asarray(theirs_ids), assume_unique=True, return_indices=True
    )
    if not len(common):
        raise ValueError("the two sets of outcomes share no sample or episode")
    return common, np.asarray(ours, np.float64)[a] - np.asarray(theirs, np.float64)[b]


def describe(iv: Interval | None, scale: float = 100.0, unit: str = "") -> str:
    """``45.2 ± 2.1`` (times ``scale``), or the value alone marked as having no interval."""
    if iv is None:
        return "-"
    return f"{iv.value * scale:.1f} ± {iv.half_width * scale:.1f}{unit}"


def verdict(iv: Interval | None) -> str:
    """A difference's interval in words."""
    if iv is None:
        return "no interval (one value)"
    if iv.includes_zero():
        return "interval includes 0: not distinguishable from no change"
    return "interval excludes 0: " + ("higher" if iv.low > 0 else "lower")
