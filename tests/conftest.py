"""Shared fixtures: tiny synthetic datasets and a local Ray instance that is always stopped."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stars.data.prepare import write_synthetic
from stars.data.shards import open_dataset
from stars.data.synthetic import SyntheticSpec

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
# Ray Train's watcher for spot-instance draining: one process more per training run, and no
# node here is ever drained (the lost-node tests kill theirs).
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\..*")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow", action="store_true", help="also run the end-to-end tests marked slow"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests run only with --runslow, whatever -m selects (a -m expression replaces
    addopts' own, so a marker filter there would silently bring them back)."""
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow end-to-end test: pass --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def _descendants(root: int) -> dict[int, str]:
    """Live (not zombie) descendants of ``root``: pid -> command line, read from /proc."""
    parent, command = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] == "Z":
                continue
            parent[int(entry.name)] = int(fields[1])
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            command[int(entry.name)] = cmd.decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in found:
                found[child] = command.get(child, "")
                frontier.append(child)
    return found


@pytest.fixture(autouse=True)
def tracking_store_in_tmp(tmp_path, monkeypatch):
    """Jobs a test runs without ``--tracking-uri`` track into the test's own store, never an
    ``mlflow.db`` in the checkout (a test that needs the default unsets this)."""
    if "MLFLOW_TRACKING_URI" not in os.environ:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'default-mlflow.db'}")


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind():
    """After the whole session (its Ray instance shut down last), no process the tests
    started is alive: Ray nodes, MLflow servers and spawned torch workers are all stopped by
    the tests themselves. Any survivor is listed, killed, and fails the run."""
    before = set(_descendants(os.getpid()))
    yield
    deadline = time.time() + 30
    while True:
        left = {
            p: c
            for p, c in _descendants(os.getpid()).items()
            # multiprocessing's resource tracker belongs to the interpreter and ends with it
            if p not in before and "multiprocessing.resource_tracker" not in c
        }
        if not left or time.time() > deadline:
            break
        time.sleep(0.5)
    if left:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
        listed = "; ".join(f"{pid} {cmd[:100]}" for pid, cmd in left.items())
        pytest.fail(f"processes left behind by the tests: {listed}")


TINY_SPEC = SyntheticSpec(
    num_classes=12, samples_per_class=12, num_base_classes=8, num_subjects=40, seed=3
)


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """144 sequences, 8 base + 4 few-shot classes, 3 shards."""
    out = tmp_path_factory.mktemp("tiny") / "data"
    write_synthetic(out, TINY_SPEC, rows_per_shard=50, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_dataset(tiny_dataset_dir: Path):
    return open_dataset(tiny_dataset_dir, verify_checksums=True)


def _start_local_ray(tmp: str) -> None:
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=tmp,
        configure_logging=False,
    )


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance (2 CPUs) for the whole session; shut down, processes and all."""
    import ray

    # Ray's socket paths must stay short: keep its temp dir directly under /tmp.
    tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    _start_local_ray(tmp)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(autouse=True)
def ray_resources_given_back(request):
    """After each test on the session's Ray instance, every CPU is free again. A test that
    leaves a placement group or an actor holding CPUs fails here, by name, and Ray is
    restarted, so the tests after it do not wait for CPUs that never come back."""
    yield
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized() or "ray_local" not in request.fixturenames:
        return
    total = ray.cluster_resources().get("CPU", 0.0)
    deadline = time.time() + 60
    while ray.available_resources().get("CPU", 0.0) < total and time.time() < deadline:
        time.sleep(0.5)
    free = ray.available_resources().get("CPU", 0.0)
    if free >= total:
        return
    held = [
        f"{pg_id[:8]} {pg.get('bundles', '?')}"
        for pg_id, pg in ray.util.placement_group_table().items()
        if pg["state"] != "REMOVED"
    ]
    ray.shutdown()
    _start_local_ray(os.environ["RAY_TMPDIR"])
    pytest.fail(
        f"{total - free:g} of {total:g} CPUs still held 60 s after the test "
        f"(placement groups: {', '.join(held) or 'none'}); Ray was restarted"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(store: str, log: Path, artifacts: Path | None = None) -> Iterator[str]:
    """``mlflow server`` on a free 127.0.0.1 port for the block (its URL); stopped by its
    process group afterwards, whatever happened."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--backend-store-uri", store]
    if artifacts is not None:
        command += ["--artifacts-destination", str(artifacts)]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as out:
        server = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    reason = log.read_text()[-500:]
                    raise RuntimeError(f"mlflow server did not start: {reason}") from None
                time.sleep(1)
        yield url
    finally:
        stop_process_group(server)


def stop_process_group(process: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM to a server started with ``start_new_session=True`` and everything it forked;
    SIGKILL after ``grace_s``."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


# Any key pair works with the test S3 server; the metadata lookup would stall for seconds.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@contextlib.contextmanager
def s3_server(log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """An S3 API server (moto's) on a free loopback port for the block (``host:port``);
    stopped by its process group afterwards."""
    pytest.importorskip("moto.server", reason="the S3 test server (moto[server], dev extra)")
    port = free_port()
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    reason = log.read_text()[-500:]
                    raise RuntimeError(f"moto server did not start: {reason}") from None
                time.sleep(0.3)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process_group(server)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of an S3 API server for the session (any key pair is accepted)."""
    with s3_server(tmp_path_factory.mktemp("s3") / "moto.log") as endpoint:
        yield endpoint


def s3_client(endpoint: str, credentials: dict[str, str] | None = None, service: str = "s3"):
    import boto3

    creds = credentials or S3_CREDENTIALS
    return boto3.client(
        service,
        endpoint_url=f"http://{endpoint}",
        region_name="us-east-1",
        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
    )


def s3_bucket(endpoint: str, bucket: str, credentials: dict[str, str] | None = None) -> str:
    """Create ``bucket`` (once); its URI with the options pyarrow needs for the test server."""
    client = s3_client(endpoint, credentials)
    if bucket not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket=bucket)
    return f"s3://{bucket}?endpoint_override={endpoint}&scheme=http&region=us-east-1"


def _shared_data_root() -> Path:
    env = os.environ.get("STARS_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """``../shared/fixtures`` (beside the recordings): reference outputs of released code.
    Missing fails under CI and skips elsewhere, like the recordings."""
    root = _shared_data_root().parent / "fixtures"
    if not (root / "mamp_reference_step.pt").is_file():
        message = f"reference fixtures not found at {root} (set STARS_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real research recordings (never copied into the repo). CI always has them, so a
    missing directory fails there; elsewhere the test is skipped with the reason."""
    root = _shared_data_root()
    if not (root / "ntu_rgbd_samples").is_dir():
        message = f"real recordings not found at {root} (set STARS_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


# -- pyskl / MMAction2 annotation files in the published layout -------------------------------
def _pyskl_annotation(
    name: str, label: int, frames: int, bodies: int, rng, channels: int = 3
) -> dict:
    kp = np.zeros((2, frames, 25, channels), np.float32)
    kp[:bodies] = rng.normal(size=(bodies, frames, 25, channels)).astype(np.float32)
    ann = {
        "frame_dir": name,
        "label": label,
        "keypoint": kp,
        "total_frames": frames,
        "img_shape": (1080, 1920),
        "original_shape": (1080, 1920),
    }
    if channels == 2:
        ann["keypoint_score"] = np.ones((2, frames, 25), np.float32)
    return ann


def _pyskl_ntu_file(path: Path, variant: str, channels: int = 3, per_action: int = 1):
    """A pyskl-layout file: NTU names over performers/cameras/setups, the file's own split
    lists (``*_val``) made by the field's rules."""
    import numpy as np

    rng = np.random.default_rng(0)
    actions = range(1, 61) if variant == "ntu60" else range(1, 121)
    anns, split = [], {}
    for a in actions:
        for k in range(per_action):
            setup = 1 + (a + k) % (17 if variant == "ntu60" else 32)
            if variant == "ntu120" and a <= 60:
                setup = 1 + (a + k) % 17
            performer, camera = 1 + (a * 3 + k) % 40, 1 + (a + k) % 3
            name = f"S{setup:03d}C{camera:03d}P{performer:03d}R001A{a:03d}"
            anns.append(_pyskl_annotation(name, a - 1, 20 + a % 7, 1 + a % 2, rng, channels))
            from stars.data.formats.ntu import NTU60_XSUB_TRAIN, NTU120_XSUB_TRAIN

            xsub = NTU60_XSUB_TRAIN if variant == "ntu60" else NTU120_XSUB_TRAIN
            split.setdefault("xsub_train" if performer in xsub else "xsub_val", []).append(name)
            if variant == "ntu60":
                split.setdefault("xview_train" if camera in (2, 3) else "xview_val", []).append(
                    name
                )
            else:
                split.setdefault("xset_train" if setup % 2 == 0 else "xset_val", []).append(name)
    from stars.data.formats.pyskl import write_annotation_file

    write_annotation_file(path, anns, split)
    return anns, split


@pytest.fixture(scope="session")
def pyskl_annotation():
    """``make(name, label, frames, bodies, rng, channels=3)``: one pyskl annotation dict."""
    return _pyskl_annotation


@pytest.fixture(scope="session")
def pyskl_ntu_file():
    """``write(path, variant, channels=3, per_action=1) -> (annotations, split)``: an NTU-60
    or NTU-120 file in the pyskl layout, its split lists made by the field's rules."""
    return _pyskl_ntu_file
