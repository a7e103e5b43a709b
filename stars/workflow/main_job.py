"""The main job: data -> stage 1 -> evaluation -> stage 2 -> evaluation -> summary, with
every run, metric, checkpoint and lineage link in MLflow.

``jobs/pretrain.py`` is a thin front end to :func:`run_main`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from stars import storage
from stars.config import flatten
from stars.data.job_data import pretrain_split
from stars.data.shards import SkeletonDataset
from stars.errors import JobError
from stars.metrics.feature_set import FeatureSet
from stars.metrics.intervals import verdict
from stars.text import table
from stars.tracking.config import is_local_store
from stars.train.faults import Fault
from stars.train.launch import shared_training_rows
from stars.train.progress import prefixed_print
from stars.workflow.config import MainConfig
from stars.workflow.group import (
    COMPARISONS,
    HEADLINE,
    STAGE_LABELS,
    difference_rows,
    points,
    stored_interval,
)
from stars.workflow.group_run import GroupOutcome, GroupRun, run_group
from stars.workflow.stages import (
    Stage1Ref,
    StageOutcome,
    tracked_baseline,
    tracked_stage1,
    tracked_stage2,
)
from stars.workflow.tracker import Tracker


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


COMPARISON_FILE = "comparison.png"


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
    source: Stage1Ref | None = None,
    tracker: Tracker | None = None,
    log: Callable[[str], None] = print,
    fault: Fault | None = None,
    progress: bool = False,
    parent_run_id: str = "",
    name_suffix: str = "",
    tags: dict[str, str] | None = None,
) -> list[StageOutcome]:
    """Run the resolved job; returns one outcome per stage that ran (or was reused).

    Args:
        source: an existing stage-1 run to tune instead of pre-training (``--stage1``).
        fault: test hook injected into stage 1.
        parent_run_id, name_suffix, tags: a group's run (the lineage of one of its seeds
            nests under it), what its run names add (`` seed=3``) and the tags its runs
            carry.
    """
    split = pretrain_split(data, cfg.stage1.data.protocol)
    tracker = tracker or Tracker(cfg.tracking, data, split, preset)
    if tracker.enabled and is_local_store(tracker.uri):
        check_single_node(tracker.uri)
    outcomes: list[StageOutcome] = []
    compare: dict[str, FeatureSet] = {}
    reference = None
    source_given = source

    if source is not None:
        metrics = dict(tracker.client.get_run(source.run_id).data.metrics) if source.run_id else {}
        outcomes.append(StageOutcome("stage1", source.run_id, source.checkpoint, metrics))
        cached = cached_stage1_features(source.checkpoint, data, cfg.eval.protocol)
        if cached is not None:
            compare["stage 1"] = cached
    else:
        baseline = tracked_baseline(
            cfg.stage1,
            data,
            tracker,
            cfg.eval,
            log=log,
            parent_run_id=parent_run_id,
            name_suffix=name_suffix,
            tags=tags,
        )
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
            parent_run_id=parent_run_id,
            name_suffix=name_suffix,
            tags=tags,
        )
        outcomes.append(s1)
        if s1.eval is not None:
            reference = s1.eval.outcomes  # the same evaluation settings as stage 2's
            test = s1.eval.info["test_split"]
            if test in s1.eval.features:
                compare["stage 1"] = s1.eval.features[test]
        source = Stage1Ref(s1.checkpoint, s1.run_id, s1.run_name)
    if stage1_only:
        log_comparison(outcomes, tracker, cfg)
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
        reference=reference,
        tags=tags,
    )
    outcomes.append(s2)
    if source_given is None:
        log_comparison(outcomes, tracker, cfg)
    return outcomes


def log_comparison(outcomes: list[StageOutcome], tracker: Tracker, cfg: MainConfig) -> None:
    """The lineage's comparison figure (headline metrics of each stage with their intervals
    over this seed's test samples and episodes, the paired differences in words) on the
    stage-1 run this job trained, and in its evaluation directory."""
    s1 = next((o for o in outcomes if o.stage == "stage1"), None)
    if s1 is None or s1.result is None:
        return
    from stars.plots import plot_comparison

    series = {}
    for o in outcomes:
        bars = {}
        for m in HEADLINE:
            iv = stored_interval(o.metrics, m, "")
            if iv is not None:
                bars[m] = (iv.value, iv.low, iv.high)
        if bars:
            series[STAGE_LABELS[o.stage]] = bars
    if not series:
        return
    notes = [
        f"{w:<17} {m:<19} {points(iv, True):>13}  {verdict(iv)}"
        for w, m, iv in paired_differences(outcomes, cfg.eval.bootstrap_resamples, cfg.eval.seed)
    ]
    kept = storage.join(s1.result.storage_dir, "eval", COMPARISON_FILE)
    path = plot_comparison(
        series,
        storage.local_dir(kept),
        f"seed {cfg.stage1.seed}: 95 % intervals over this seed's test samples and episodes\n"
        "(not over training seeds: --seeds N measures those)",
        notes,
    )
    storage.publish(path, kept)
    if tracker.enabled and s1.run_id:
        tracker.client.log_artifact(s1.run_id, str(path))


def summary_rows(outcomes: list[StageOutcome]) -> list[list[str]]:
    """One row per stage: its run, each headline metric as ``value ± half-width`` (points),
    the silhouette and the checkpoint."""
    present = [m for m in HEADLINE if any(m in o.metrics for o in outcomes)]
    rows = [["stage", "MLflow run", *present, "cluster_silhouette", "checkpoint"]]
    for o in outcomes:
        values = [_cell(o.metrics, m) for m in present]
        silhouette = o.metrics.get("cluster_silhouette")
        rows.append(
            [
                o.stage,
                o.run_id or "-",
                *values,
                "-" if silhouette is None else f"{silhouette:.3f}",
                storage.shown(o.checkpoint),
            ]
        )
    return rows


def _cell(metrics: dict[str, float], name: str) -> str:
    if name not in metrics:
        return "-"
    iv = stored_interval(metrics, name, "")
    return points(iv) if iv is not None else f"{metrics[name] * 100:.1f}"


def paired_differences(outcomes: list[StageOutcome], resamples: int, seed: int):
    """(``stage1 - control``, metric, interval) and (``stage2 - stage1``, ...) for the
    headline metrics, paired on the same samples and episodes of this one seed."""
    by_stage = {o.stage: o for o in outcomes}
    out = []
    for later, earlier in COMPARISONS:
        a, b = by_stage.get(later), by_stage.get(earlier)
        if a is None or b is None or a.eval is None or b.eval is None:
            continue
        what = f"{STAGE_LABELS[later]} - {STAGE_LABELS[earlier]}"
        for metric in HEADLINE:
            iv = a.eval.outcomes.delta(b.eval.outcomes, metric, resamples, seed)
            if iv is not None:
                out.append((what, metric, iv))
    return out


def format_summary(outcomes: list[StageOutcome], resamples: int = 1000, seed: int = 0) -> str:
    """The stages with their intervals, then their paired differences in words."""
    lines = [
        "metrics in % with 95 % intervals over this seed's test samples (kNN, linear) and "
        "few-shot episodes; training again with another seed moves them more "
        "(--seeds N measures that)",
        table(summary_rows(outcomes)),
    ]
    diffs = paired_differences(outcomes, resamples, seed)
    if diffs:
        lines += ["", table(difference_rows(diffs))]
    return "\n".join(lines)


def seeded(cfg: MainConfig, seed: int) -> MainConfig:
    """``cfg`` with every stage and the evaluation on ``seed`` (a member of a group)."""
    return dataclasses.replace(
        cfg,
        stage1=dataclasses.replace(cfg.stage1, seed=seed),
        stage2=dataclasses.replace(cfg.stage2, seed=seed),
        eval=dataclasses.replace(cfg.eval, seed=seed),
    )


def run_main_group(
    cfg: MainConfig,
    data: SkeletonDataset,
    name: str,
    seeds: list[int],
    *,
    at_once: int,
    preset: str = "",
    stage1_only: bool = False,
    source: Stage1Ref | None = None,
    tracker: Tracker | None = None,
    progress: bool = False,
) -> GroupOutcome:
    """The main job's lineage once per seed (Ray run names ``<name>-seed<N>-stage*``), under
    one group run; ``at_once`` seeds concurrently. The seeds share this process's Ray, its
    opened dataset and, when they fit in memory, one read of the training rows."""
    split = pretrain_split(data, cfg.stage1.data.protocol)
    tracker = tracker or Tracker(cfg.tracking, data, split, preset)
    if tracker.enabled and is_local_store(tracker.uri):
        check_single_node(tracker.uri)
    what = "stage2 <- stage1 " + source.short if source else "stage1 -> stage2"
    if stage1_only:
        what = "stage1"

    def lineage(seed: int, group: GroupRun) -> list[StageOutcome]:
        return run_main(
            seeded(cfg, seed),
            data,
            f"{name}-seed{seed}",
            preset=preset,
            stage1_only=stage1_only,
            source=source,
            tracker=tracker,
            log=prefixed_print,
            progress=progress,
            parent_run_id=group.run_id,
            name_suffix=f" seed={seed}",
            tags=group.member_tags(),
        )

    out_dir = storage.local_dir(storage.join(cfg.stage1.scale.storage_path, f"{name}-group"))
    with shared_training_rows():
        outcome = run_group(
            tracker,
            name,
            seeds,
            what,
            flatten(cfg.stage1),
            lineage,
            at_once=at_once,
            out_dir=out_dir,
            repeated=("stage2",) if source is not None else ("baseline", "stage1", "stage2"),
        )
    storage.publish(out_dir, storage.join(cfg.stage1.scale.storage_path, f"{name}-group"))
    return outcome
