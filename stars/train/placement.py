"""Whether the cluster can hold a job's storage and run its workers, checked before any work.

On more than one node, a local path must be a mount every node sees (a probe file proves it).
A job whose workers cannot all be placed would wait forever: it fails in seconds instead,
saying what to change. (Paths that outlive a ``ray job submit``: :mod:`stars.paths`.)
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from stars.data.shards import DataError, SkeletonDataset
from stars.errors import StarsError
from stars.location import Location
from stars.storage import StorageError, shown
from stars.train.config import ScaleConfig

DATA_TASK_CPUS = 1.0  # a Ray Data read task asks for one CPU; the job must leave room for it


class ResourceError(StarsError):
    """A job the cluster cannot place: what is missing and which settings would fit."""


def alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def check_shared(path: str, what: str, flag: str) -> None:
    """On a multi-node cluster, every node must reach the storage ``path``: a local path must
    be one file system every node sees (a probe file written here is visible from a task on
    each node); a URI must be writable from each node (its credentials), since Ray Train's
    workers write checkpoints from wherever they run."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = alive_nodes() if ray.is_initialized() else []
    if len(nodes) < 2:
        return

    def on_each_node(task, arg: str) -> dict[str, object]:
        refs = {
            _node_label(n): task.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(arg)
            for n in nodes
        }
        return {node: ray.get(ref, timeout=120) for node, ref in refs.items()}

    if Location(path).remote:

        @ray.remote(num_cpus=0)
        def writes(uri: str) -> str:
            from stars.storage import write_probe

            return write_probe(uri)

        failed = {node: why for node, why in on_each_node(writes, path).items() if why}
        if failed:
            detail = "; ".join(f"node {node}: {why}" for node, why in failed.items())
            raise StorageError(
                f"{what} {shown(path)} cannot be written from every node ({detail}). Give "
                "every node credentials for it (an instance role, AWS_* variables in the "
                f"environment of `ray start`), or {flag.lower()} a location every node writes"
            )
        return

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    probe = root / f".stars-probe-{uuid.uuid4().hex}"
    probe.write_text("probe")

    @ray.remote(num_cpus=0)
    def sees(p: str) -> bool:
        return Path(p).exists()

    try:
        missing = [node for node, seen in on_each_node(sees, str(probe)).items() if not seen]
    finally:
        probe.unlink(missing_ok=True)
    if missing:
        raise StorageError(
            f"{what} {path} is not shared: node(s) {', '.join(missing)} cannot see it. "
            f"{flag} a mount every node has"
        )


def _node_label(node: dict) -> str:
    return node["NodeManagerAddress"] + " " + node["NodeID"][:8]


def check_data_readable(data: SkeletonDataset) -> None:
    """On a multi-node cluster, every node must read the dataset: a task on each node opens
    its manifest the way Ray Data's readers will (a local path, or a URI with the node's
    credentials). Fails naming the nodes that cannot, before any training starts."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = alive_nodes() if ray.is_initialized() else []
    if len(nodes) < 2:
        return

    @ray.remote(num_cpus=0)
    def reads(root: str) -> str:
        from stars.data.shards import load_manifest

        try:
            load_manifest(root)
        except Exception as err:  # reported per node below, whatever the file system says
            return str(err).splitlines()[0] if str(err) else type(err).__name__
        return ""

    root = str(data.root)
    checks = {
        _node_label(n): reads.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(root)
        for n in nodes
    }
    failed = {node: ray.get(ref, timeout=120) for node, ref in checks.items()}
    failed = {node: why for node, why in failed.items() if why}
    if failed:
        detail = "; ".join(f"node {node}: {why}" for node, why in failed.items())
        raise DataError(
            f"the dataset {data.location.show()} cannot be read on every node ({detail}). "
            "Put it where every node reads it: a shared mount, or a URI (s3://..., gs://...) "
            "with credentials on every node"
        )


def check_resources(
    scale: ScaleConfig,
    log: Callable[[str], None] = print,
    poll_s: float = 5.0,
    report_s: float = 30.0,
) -> None:
    """Fail now, not after waiting forever, when the workers and their data tasks cannot all
    be placed on the cluster as it is. With ``scale.scale_up_timeout_s`` > 0 (an autoscaling
    cluster), first ask the autoscaler for what is missing and wait at most that long."""
    problems = shortfall(scale)
    if problems and scale.scale_up_timeout_s > 0:
        problems = wait_for_scale_up(scale, log, poll_s, report_s)
    if problems:
        raise ResourceError("this job cannot be placed: " + "; ".join(problems))


def worker_bundles(scale: ScaleConfig) -> list[dict[str, float]]:
    """What the job asks of the cluster: one bundle per worker and one for Ray Data."""
    worker = {"CPU": scale.cpus_per_worker}
    if scale.use_gpu:
        worker["GPU"] = scale.gpus_per_worker
    return [dict(worker) for _ in range(scale.num_workers)] + [{"CPU": DATA_TASK_CPUS}]


def wait_for_scale_up(
    scale: ScaleConfig, log: Callable[[str], None], poll_s: float = 5.0, report_s: float = 30.0
) -> list[str]:
    """Ask the autoscaler for the job's bundles (``request_resources``) and wait until they
    fit or ``scale.scale_up_timeout_s`` passes; what is still missing (empty: it fits)."""
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=worker_bundles(scale))
    timeout = scale.scale_up_timeout_s
    start = time.monotonic()
    next_report = start
    while True:
        problems = shortfall(scale)
        waited = time.monotonic() - start
        if not problems:
            if waited >= poll_s:
                log(f"[stars] the cluster scaled up in {waited:.0f} s; starting")
            return []
        if waited >= timeout:
            return [*problems, f"the autoscaler added no room for it in {timeout:g} s"]
        if time.monotonic() >= next_report:
            log(
                f"[stars] waiting for the autoscaler ({waited:.0f} of {timeout:g} s): "
                f"{problems[0]}{pending_nodes()}"
            )
            next_report += report_s
        time.sleep(min(poll_s, max(0.1, timeout - waited)))


def pending_nodes() -> str:
    """``; launching: 2 gpu_worker`` from the autoscaler's status report, or ``""``."""
    import json

    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

    try:
        raw = _internal_kv_get("__autoscaling_status") if _internal_kv_initialized() else None
        report = json.loads(raw or b"{}").get("autoscaler_report") or {}
    except Exception:  # a status line is a courtesy: never fail the job over it
        return ""
    launching = {**(report.get("pending_launches") or {})}
    for _ip, node_type, *_ in report.get("pending_nodes") or []:
        launching[node_type] = launching.get(node_type, 0) + 1
    if not launching:
        return ""
    return "; launching: " + ", ".join(f"{n} {kind}" for kind, n in sorted(launching.items()))


def shortfall(scale: ScaleConfig) -> list[str]:
    """What the cluster as it is lacks for the job (empty: it fits), each with the settings
    that would fit."""
    import ray

    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    need_cpu = scale.num_workers * scale.cpus_per_worker + DATA_TASK_CPUS
    problems = []
    if need_cpu > cpus + 1e-9:
        fit = math.floor((cpus - DATA_TASK_CPUS) / scale.cpus_per_worker + 1e-9)
        change = (
            f"fits: --set scale.num_workers={fit}, or a smaller scale.cpus_per_worker"
            if fit >= 1
            else "fits: a smaller scale.cpus_per_worker, or nodes with more CPUs"
        )
        problems.append(
            f"{scale.num_workers} workers x {scale.cpus_per_worker:g} CPU + {DATA_TASK_CPUS:g} "
            f"for Ray Data = {need_cpu:g} CPUs, the cluster has {cpus:g} ({change})"
        )
    if scale.use_gpu:
        need_gpu = scale.num_workers * scale.gpus_per_worker
        if need_gpu > gpus + 1e-9:
            fit = math.floor(gpus / scale.gpus_per_worker + 1e-9)
            fewer = f"--set scale.num_workers={fit}, or " if fit >= 1 else ""
            problems.append(
                f"{scale.num_workers} workers x {scale.gpus_per_worker:g} GPU = {need_gpu:g} "
                f"GPUs, the cluster has {gpus:g} (fits: {fewer}--set scale.use_gpu=false)"
            )
    biggest = max((n.get("Resources", {}).get("CPU", 0) for n in alive_nodes()), default=0)
    if scale.cpus_per_worker > biggest + 1e-9:
        problems.append(
            f"one worker needs {scale.cpus_per_worker:g} CPUs, the largest node has {biggest:g}"
        )
    return problems
