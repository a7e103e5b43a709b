"""The main job: data -> stage 1 -> evaluation -> stage 2 -> evaluation -> summary, with
every run, metric, checkpoint and lineage link in MLflow.

``jobs/pretrain.py`` is a thin front end to :func:`run_main`.
"""

from __future__ import annotations

from collections.abc import Callable

from stars import storage
from stars.data.shards import SkeletonDataset
from stars.data.source import pretrain_split
from stars.errors import JobError
from stars.metrics.feature_set import FeatureSet
from stars.tracking.config import is_local_store
from stars.train.worker_state import Fault
from stars.workflow.config import MainConfig
from stars.workflow.stages import (
    Source,
    StageOutcome,
    tracked_baseline,
    tracked_stage1,
    tracked_stage2,
)
from stars.workflow.tracker import Tracker

SUMMARY_METRICS = ("knn_top1", "fewshot_1shot_mean", "fewshot_5shot_mean", "cluster_silhouette")


def cached_stage1_features(
    checkpoint: str, data: SkeletonDataset, protocol: str
) -> FeatureSet | None:
    """Test-split features the stage-1 run's evaluation cached beside its checkpoint (for the
    side-by-side t-SNE when tuning an existing run), or None."""
    test = data.protocol(protocol or None)["test"]
    run_dir = storage.parent(storage.parent(checkpoint))
    path = storage.join(run_dir, "eval", "features", f"{test}.npz")
    try:
        return FeatureSet.load(storage.fetch(path)) if storage.exists(path) else None
    except storage.StorageError:
        return None


def check_single_node(uri: str) -> None:
    """A local MLflow store on a multi-node cluster would split the runs across machines."""
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    if len(alive) > 1:
        raise JobError(
            f"tracking URI {uri} is a store on this machine, but the cluster has "
            f"{len(alive)} nodes and rank 0 may run elsewhere: point --tracking-uri (or "
            "MLFLOW_TRACKING_URI) at an MLflow tracking server every node reaches"
        )


def run_main(
    cfg: MainConfig,
    data: SkeletonDataset,
    name: str,
    *,
    preset: str = "",
    stage1_only: bool = False,
    source: Source | None = None,
    tracker: Tracker | None = None,
    log: Callable[[str], None] = print,
    fault: Fault | None = None,
    progress: bool = False,
) -> list[StageOutcome]:
    """Run the resolved job; returns one outcome per stage that ran (or was reused).

    Args:
        source: an existing stage-1 run to tune instead of pre-training (``--from-run``).
        fault: test hook injected into stage 1.
    """
    split = pretrain_split(data, cfg.stage1.data.protocol)
    tracker = tracker or Tracker(cfg.tracking, data, split, preset)
    if tracker.enabled and is_local_store(tracker.uri):
        check_single_node(tracker.uri)
    outcomes: list[StageOutcome] = []
    compare: dict[str, FeatureSet] = {}

    if source is not None:
        metrics = dict(tracker.client.get_run(source.run_id).data.metrics) if source.run_id else {}
        outcomes.append(StageOutcome("stage1", source.run_id, source.checkpoint, metrics))
        cached = cached_stage1_features(source.checkpoint, data, cfg.eval.protocol)
        if cached is not None:
            compare["stage 1"] = cached
    else:
        baseline = tracked_baseline(cfg.stage1, data, tracker, cfg.eval, log=log)
        if baseline is not None:
            outcomes.append(baseline)
        s1 = tracked_stage1(
            cfg.stage1,
            data,
            f"{name}-stage1",
            tracker,
            cfg.eval,
            log=log,
            fault=fault,
            progress=progress,
        )
        outcomes.append(s1)
        if s1.eval is not None:
            test = s1.eval.info["test_split"]
            if test in s1.eval.features:
                compare["stage 1"] = s1.eval.features[test]
        source = Source(s1.checkpoint, s1.run_id, s1.run_name)
    if stage1_only:
        return outcomes
    s2 = tracked_stage2(
        cfg.stage2,
        source,
        data,
        f"{name}-stage2",
        tracker,
        cfg.eval,
        eval_data=cfg.stage1.data,
        compare=compare or None,
        log=log,
        progress=progress,
    )
    outcomes.append(s2)
    return outcomes


def summary_rows(outcomes: list[StageOutcome]) -> list[list[str]]:
    header = ["stage", "MLflow run", *SUMMARY_METRICS, "checkpoint"]
    rows = [header]
    for o in outcomes:
        values = [f"{o.metrics[m]:.3f}" if m in o.metrics else "-" for m in SUMMARY_METRICS]
        rows.append([o.stage, o.run_id or "-", *values, storage.shown(o.checkpoint)])
    return rows


def format_summary(outcomes: list[StageOutcome]) -> str:
    rows = summary_rows(outcomes)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
