"""Few-shot recognition of classes never seen in pre-training (docs/method.md §3, §8).

An episode with seed s and n shots draws n exemplars per class from the gallery part and
classifies every query by cosine similarity: by an n-nearest-neighbour vote over the exemplars
(the paper) and by the nearest class mean. Queries are never exemplars: with a separate query
part they are disjoint by construction (checked), without one the queries of an episode are
the gallery samples it did not draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from stars.metrics.feature_set import FeatureSet
from stars.metrics.outcomes import Outcomes

DEFAULT_SHOTS = (1, 2, 5, 10)


@dataclass(frozen=True)
class Episode:
    """One drawn episode: exemplar and query rows (indices into the gallery / query sets)."""

    seed: int
    shots: int
    exemplar_rows: np.ndarray
    query_rows: np.ndarray


def draw_episode(gallery_labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Rows of ``shots`` exemplars per class (all of a class when it has fewer), sorted."""
    rng = np.random.default_rng([seed, shots])
    rows = []
    for cls in np.unique(gallery_labels):
        members = np.flatnonzero(gallery_labels == cls)
        rows.append(rng.choice(members, size=min(shots, len(members)), replace=False))
    return np.sort(np.concatenate(rows)) if rows else np.zeros(0, np.int64)


def make_episode(gallery: FeatureSet, query: FeatureSet | None, shots: int, seed: int) -> Episode:
    exemplars = draw_episode(gallery.labels, shots, seed)
    if query is None:
        rest = np.setdiff1d(np.arange(len(gallery)), exemplars)
        return Episode(seed, shots, exemplars, rest)
    classes = np.unique(gallery.labels[exemplars])
    return Episode(seed, shots, exemplars, np.flatnonzero(np.isin(query.labels, classes)))


def classify(
    exemplars: torch.Tensor,
    exemplar_labels: torch.Tensor,
    queries: torch.Tensor,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions (Q,) by a k-nearest-exemplar vote and by the nearest class mean.

    Votes count first; the summed similarity of each class's voters breaks ties.
    exemplars (E, C), exemplar_labels (E,), queries (Q, C).
    """
    ex = F.normalize(exemplars.float(), dim=1)
    qu = F.normalize(queries.float(), dim=1)
    classes, local = exemplar_labels.unique(return_inverse=True)
    sims = qu @ ex.T
    k = min(k, ex.shape[0])
    top_sim, top_idx = sims.topk(k, dim=1)
    votes = torch.zeros(qu.shape[0], len(classes))
    votes.scatter_add_(1, local[top_idx], torch.ones_like(top_sim))
    tie_break = torch.zeros_like(votes).scatter_add_(1, local[top_idx], top_sim)
    vote_pred = classes[(votes + tie_break / (2 * k + 1)).argmax(dim=1)]
    means = torch.zeros(len(classes), ex.shape[1]).index_add_(0, local, ex)
    mean_pred = classes[(qu @ F.normalize(means, dim=1).T).argmax(dim=1)]
    return vote_pred, mean_pred


def run_episode(
    gallery: FeatureSet, query: FeatureSet | None, episode: Episode
) -> tuple[float, float]:
    """Accuracy of (vote, class mean) for one episode."""
    qset = gallery if query is None else query
    ex_x, ex_y = gallery.subset(episode.exemplar_rows).tensors()
    q_x, q_y = qset.subset(episode.query_rows).tensors()
    if (
        query is not None
        and np.intersect1d(
            gallery.sample_index[episode.exemplar_rows], qset.sample_index[episode.query_rows]
        ).size
    ):
        raise ValueError("few-shot gallery and query parts share samples")
    if len(q_y) == 0:
        raise ValueError(f"few-shot episode (seed {episode.seed}, n={episode.shots}) has no query")
    vote, mean = classify(ex_x, ex_y, q_x, episode.shots)
    return float((vote == q_y).float().mean()), float((mean == q_y).float().mean())


def fewshot_report(
    gallery: FeatureSet,
    query: FeatureSet | None,
    shots: tuple[int, ...] = DEFAULT_SHOTS,
    episodes: int = 10,
    seed: int = 0,
    prefix: str = "fewshot",
    outcomes: Outcomes | None = None,
) -> tuple[dict[str, float], dict[str, list[int]]]:
    """Mean and std over ``episodes`` episodes per n; each episode's accuracy goes into
    ``outcomes`` when given (for intervals and paired differences).

    Returns ``({"{prefix}_{n}shot_mean", "{prefix}_{n}shot_std",
    "{prefix}_{n}shot_classmean_mean", ...}, {"{n}": [episode seeds]})``.
    """
    metrics: dict[str, float] = {}
    seeds: dict[str, list[int]] = {}
    for n in shots:
        ep_seeds = [seed * 1000 + e for e in range(episodes)]
        accs = np.array(
            [run_episode(gallery, query, make_episode(gallery, query, n, s)) for s in ep_seeds]
        )
        metrics[f"{prefix}_{n}shot_mean"] = float(accs[:, 0].mean())
        metrics[f"{prefix}_{n}shot_std"] = float(accs[:, 0].std())
        metrics[f"{prefix}_{n}shot_classmean_mean"] = float(accs[:, 1].mean())
        metrics[f"{prefix}_{n}shot_classmean_std"] = float(accs[:, 1].std())
        seeds[str(n)] = ep_seeds
        if outcomes is not None:
            outcomes.add_episodes(f"{prefix}_{n}shot_mean", ep_seeds, accs[:, 0])
            outcomes.add_episodes(f"{prefix}_{n}shot_classmean_mean", ep_seeds, accs[:, 1])
    return metrics, seeds


def validation_classes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split the novel classes in two disjoint halves: (validation, test).

    Alternate classes in sorted order go to each half, so both halves span the class range.
    Hyper-parameters are chosen on the validation half; the test half is reported only.
    """
    classes = np.unique(labels)
    if len(classes) < 4:
        raise ValueError(
            f"splitting few-shot classes into validation and test needs >= 4, got {len(classes)}"
        )
    return classes[0::2], classes[1::2]


def restrict(fs: FeatureSet | None, classes: np.ndarray) -> FeatureSet | None:
    """The rows of ``fs`` whose label is in ``classes``."""
    return None if fs is None else fs.subset(np.flatnonzero(np.isin(fs.labels, classes)))


def fewshot_split_report(
    gallery: FeatureSet,
    query: FeatureSet | None,
    shots: tuple[int, ...] = DEFAULT_SHOTS,
    episodes: int = 10,
    seed: int = 0,
    outcomes: Outcomes | None = None,
) -> dict[str, float]:
    """``fewshot_val_*`` on the validation half of the novel classes and ``fewshot_test_*``
    on the test half (:func:`validation_classes`)."""
    val, test = validation_classes(gallery.labels)
    metrics: dict[str, float] = {}
    for name, classes in (("val", val), ("test", test)):
        part, _ = fewshot_report(
            restrict(gallery, classes),
            restrict(query, classes),
            shots,
            episodes,
            seed,
            prefix=f"fewshot_{name}",
            outcomes=outcomes,
        )
        metrics.update(part)
    return metrics
