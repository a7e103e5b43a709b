"""Resources checked before training: an impossible job fails in seconds saying what to
change; on an autoscaling cluster it waits, bounded, for the nodes it asked for."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time

import pytest

from stars.train.config import ScaleConfig
from stars.train.placement import ResourceError, check_resources, worker_bundles

pytestmark = pytest.mark.ray


def test_an_impossible_job_fails_in_seconds_saying_what_fits(ray_local):
    start = time.monotonic()
    with pytest.raises(ResourceError, match=r"8 workers x 1 CPU .*fits: --set scale.num_workers=1"):
        check_resources(ScaleConfig(num_workers=8, cpus_per_worker=1.0))
    with pytest.raises(ResourceError, match=r"2 GPUs, the cluster has 0 .*scale.use_gpu=false"):
        check_resources(ScaleConfig(num_workers=2, use_gpu=True))
    with pytest.raises(ResourceError, match=r"one worker needs 4 CPUs, the largest node has 2"):
        check_resources(ScaleConfig(num_workers=1, cpus_per_worker=4.0))
    assert time.monotonic() - start < 30
    check_resources(ScaleConfig(num_workers=1, cpus_per_worker=0.5))  # fits: no error


def test_the_autoscaler_is_asked_for_the_workers_and_ray_data():
    scale = ScaleConfig(num_workers=2, use_gpu=True, cpus_per_worker=4, gpus_per_worker=1)
    assert worker_bundles(scale) == [{"CPU": 4, "GPU": 1}] * 2 + [{"CPU": 1.0}]


# Its own Ray cluster (a head of 1 CPU, then a 2-CPU node joining, as an autoscaler would add
# it), so it runs in a child process: this one may already hold the session's Ray instance.
SCALE_UP = textwrap.dedent(
    """
    import threading, time
    import ray
    from ray.cluster_utils import Cluster
    from stars.train.config import ScaleConfig
    from stars.train.placement import ResourceError, check_resources

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        lines, failed = [], []
        fits = ScaleConfig(num_workers=2, cpus_per_worker=1.0, scale_up_timeout_s=120)

        def wait():
            try:
                check_resources(fits, log=lines.append, poll_s=0.5, report_s=1.0)
            except ResourceError as err:
                failed.append(err)

        waiting = threading.Thread(target=wait)
        waiting.start()
        time.sleep(4.0)
        assert waiting.is_alive() and lines, "the job did not wait"
        cluster.add_node(num_cpus=2)  # what the autoscaler would do (main thread: signals)
        waiting.join(timeout=60)
        assert not failed and not waiting.is_alive(), failed
        print("WAITED", len(lines), lines[0])
        print("SCALED", lines[-1])
        never = ScaleConfig(num_workers=9, cpus_per_worker=1.0, scale_up_timeout_s=2)
        start = time.monotonic()
        try:
            check_resources(never, log=lines.append, poll_s=0.5)
        except ResourceError as err:
            print("GAVE UP", round(time.monotonic() - start), err)
    finally:
        ray.shutdown()
        cluster.shutdown()
    """
)


@pytest.mark.slow
def test_a_job_waits_for_a_scale_up_with_progress_and_gives_up_when_bounded(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", SCALE_UP],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = {line.split(" ", 1)[0]: line for line in out.stdout.splitlines() if line[:1].isupper()}
    assert "waiting for the autoscaler" in lines["WAITED"]
    assert "3 CPUs, the cluster has 1" in lines["WAITED"]
    assert "the cluster scaled up in" in lines["SCALED"]
    gave_up = lines["GAVE"]
    assert "added no room for it in 2 s" in gave_up and "scale.num_workers=2" in gave_up
    assert int(gave_up.split()[2]) < 15


SUGGESTED = re.compile(r"--set (\S+?=[^\s,)]+)")


@pytest.mark.parametrize(
    ("resources", "nodes_cpu", "scale"),
    [
        ({"CPU": 2.0}, 2.0, {"use_gpu": True, "num_workers": 2}),  # no GPU at all
        ({"CPU": 8.0, "GPU": 1.0}, 8.0, {"use_gpu": True, "num_workers": 4}),
        ({"CPU": 2.0}, 2.0, {"num_workers": 6}),
        ({"CPU": 2.0}, 2.0, {"num_workers": 1, "cpus_per_worker": 4.0}),
    ],
)
def test_every_suggested_setting_is_one_the_job_accepts(monkeypatch, resources, nodes_cpu, scale):
    import ray

    from stars.config import load_layers
    from stars.train import placement
    from stars.train.config import ScaleConfig, Stage1JobConfig

    monkeypatch.setattr(ray, "cluster_resources", lambda: resources)
    monkeypatch.setattr(placement, "alive_nodes", lambda: [{"Resources": {"CPU": nodes_cpu}}])
    problems = placement.shortfall(ScaleConfig(**scale))
    assert problems
    suggested = [s for text in problems for s in SUGGESTED.findall(text)]
    for setting in suggested:
        overrides = [f"scale.{k}={v}" for k, v in scale.items()]
        fixed = load_layers(Stage1JobConfig, {}, None, [*overrides, setting]).config.scale
        assert len(placement.shortfall(fixed)) < len(problems), setting
