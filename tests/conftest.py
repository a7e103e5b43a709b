"""Shared fixtures: tiny synthetic datasets and a local Ray instance that is always stopped."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest

from stars.data.prepare import write_synthetic
from stars.data.shards import open_dataset
from stars.data.synthetic import SyntheticSpec

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\..*")

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


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance (2 CPUs) for the whole session; shut down, processes and all."""
    import ray

    # Ray's socket paths must stay short: keep its temp dir directly under /tmp.
    tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=tmp,
        configure_logging=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def _shared_data_root() -> Path:
    env = os.environ.get("STARS_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
