"""Which evaluation protocols a dataset can run, decided from its split labels before any
training: a protocol that cannot run (no few-shot exemplar *and* query per class, one class
only, too few samples for a picture) is dropped with a one-line reason, so a small dataset
gives a note and an empty column instead of a failure after training."""

from __future__ import annotations

import dataclasses
from collections import Counter

from stars.data.shards import SkeletonDataset
from stars.eval.config import EvalConfig

MIN_TSNE_SAMPLES = 4  # below this t-SNE's perplexity ((n - 1) / 3) falls under 1


@dataclasses.dataclass(frozen=True)
class Feasible:
    """The evaluation that can run, and why each dropped part was dropped.

    Attributes:
        eval: ``cfg`` with infeasible protocols (and few-shot shot counts) removed.
        skipped: protocol (or ``fewshot n=K``) -> the reason, one line each.
    """

    eval: EvalConfig
    skipped: dict[str, str]

    def lines(self, template: str = "[stars] {name} skipped: {why}") -> list[str]:
        return [template.format(name=name, why=why) for name, why in self.skipped.items()]


def _labels(data: SkeletonDataset, split: str | None) -> Counter:
    if not split:
        return Counter()
    return Counter(data.read_split(split, ["label"])["label"].tolist())


def check_protocols(data: SkeletonDataset, cfg: EvalConfig) -> Feasible:
    """``cfg`` restricted to what ``data`` can evaluate (see the module docstring)."""
    from stars.eval.protocols import fewshot_parts

    pair = data.protocol(cfg.protocol or None)
    train, test = _labels(data, pair["train"]), _labels(data, pair["test"])
    skipped: dict[str, str] = {}
    keep = list(cfg.protocols)
    shots = list(cfg.fewshot_shots)

    def drop(name: str, why: str) -> None:
        if name in keep:
            keep.remove(name)
            skipped[name] = why

    where = f"{data.root} protocol {pair['name']}"
    if not train or not test:
        empty = pair["train"] if not train else pair["test"]
        for name in ("knn", "linear", "finetune", "semi", "cluster", "tsne", "transfer"):
            drop(name, f"split {empty} of {where} is empty")
    if len(train) < 2:
        for name in ("linear", "finetune", "semi", "transfer"):
            drop(name, f"split {pair['train']} of {where} holds {len(train)} class (needs 2)")
    if sum(test.values()) < MIN_TSNE_SAMPLES:
        drop("tsne", f"split {pair['test']} holds {sum(test.values())} samples (t-SNE needs 4)")
    if len(test) < 2 or sum(test.values()) <= len(test):
        drop(
            "cluster",
            f"split {pair['test']} holds {sum(test.values())} samples of {len(test)} classes "
            "(cluster quality needs 2 classes and more samples than classes)",
        )
    if "fewshot" in keep:
        gallery_split, query_split, _ = fewshot_parts(data, pair["test"])
        gallery = _labels(data, gallery_split)
        query = _labels(data, query_split) if query_split else None
        feasible, failed = [], []
        for n in shots:
            # Each episode needs a class with n exemplars and at least one query besides.
            if query is None:
                ok = any(count > n for count in gallery.values())
            else:
                ok = any(count >= n and query[c] > 0 for c, count in gallery.items())
            (feasible if ok else failed).append(n)
        if failed:
            part = f"split {gallery_split}" + (f" / {query_split}" if query_split else "")
            most = max(gallery.values(), default=0)
            name = "fewshot" if not feasible else "fewshot n=" + ",".join(map(str, failed))
            skipped[name] = (
                f"no class of {part} has n exemplars and a query for n="
                + ",".join(map(str, failed))
                + f" (at most {most} sample(s) per class)"
            )
        if not feasible:
            keep.remove("fewshot")
        shots = feasible or shots
    if not skipped:
        return Feasible(cfg, {})
    new = dataclasses.replace(cfg, protocols=tuple(keep), fewshot_shots=tuple(shots))
    return Feasible(new, skipped)
