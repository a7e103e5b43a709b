"""Results kept at a URI (``scale.storage_path=s3://...``): locations, the local mirror,
copies both ways, and checkpoints read where they are kept. Against a real S3 API (moto's
server on loopback)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import S3_CREDENTIALS, s3_bucket

from stars import storage
from stars.model import checkpoint as ckpt
from stars.model.config import preset
from stars.model.mamp import MAMP
from stars.train.config import ScaleConfig

QUERY = "?endpoint_override=h:9&scheme=http"


def test_locations_join_and_split_with_the_query_kept_at_the_end(tmp_path):
    uri = f"s3://bucket/runs{QUERY}"
    assert (
        storage.join(uri, "job", "checkpoint_000003/")
        == f"s3://bucket/runs/job/checkpoint_000003{QUERY}"
    )
    assert storage.join(f"s3://bucket/runs/{QUERY}", "x") == f"s3://bucket/runs/x{QUERY}"
    assert storage.parent(storage.join(uri, "job")) == uri
    assert storage.shown(storage.join(uri, "job")) == "s3://bucket/runs/job"
    assert storage.uri_of("bucket/runs/job/checkpoint_000003", uri) == storage.join(
        uri, "job", "checkpoint_000003"
    )
    assert storage.join(str(tmp_path), "a", "b") == str(tmp_path / "a" / "b")
    assert storage.parent(str(tmp_path / "a")) == str(tmp_path)
    assert storage.uri_of(str(tmp_path / "a"), str(tmp_path)) == str(tmp_path / "a")
    # a directory is its own working copy; a URI has a mirror named after it
    assert storage.local_dir(str(tmp_path)) == tmp_path


def test_the_mirror_of_a_uri_is_named_after_it(tmp_path, monkeypatch):
    monkeypatch.setenv(storage.MIRROR_ENV, str(tmp_path))
    local = storage.local_dir(f"s3://bucket/runs/job/eval{QUERY}")
    assert local == tmp_path / "s3" / "bucket" / "runs" / "job" / "eval"


@pytest.fixture
def s3_root(s3_endpoint, monkeypatch, tmp_path, request) -> str:
    """An empty prefix in a test bucket, with credentials and a private mirror."""
    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(storage.MIRROR_ENV, str(tmp_path / "mirror"))
    return storage.join(s3_bucket(s3_endpoint, "stars-runs"), request.node.name)


def test_files_go_to_a_uri_and_come_back(s3_root, tmp_path):
    storage.check_writable(s3_root, "scale.storage_path", "--set scale.storage_path")
    out = tmp_path / "eval"
    (out / "features").mkdir(parents=True)
    (out / "metrics.json").write_text('{"knn_top1": 0.5}')
    (out / "features" / "test.npz").write_bytes(b"\x00" * 1000)
    kept = storage.join(s3_root, "job", "eval")
    storage.publish(out, kept)
    assert storage.exists(storage.join(kept, "metrics.json"))
    assert not storage.exists(storage.join(kept, "nothing.json"))
    assert storage.subdirectories(kept) == ["features"]
    assert storage.subdirectories(storage.join(s3_root, "none")) == []
    assert storage.read_bytes(storage.join(kept, "metrics.json")) == b'{"knn_top1": 0.5}'
    local = storage.fetch(storage.join(kept, "features", "test.npz"))
    assert local == storage.local_dir(kept) / "features" / "test.npz"
    assert local.read_bytes() == b"\x00" * 1000


def test_a_bucket_that_does_not_exist_fails_before_any_work(s3_endpoint, s3_root):
    missing = s3_root.replace("s3://stars-runs/", "s3://no-such-bucket/")
    with pytest.raises(storage.StorageError) as err:
        storage.check_writable(missing, "scale.storage_path", "--set scale.storage_path")
    text = str(err.value)
    assert text.startswith("scale.storage_path=s3://no-such-bucket/") and "?" not in text.split()[0]
    assert "cannot be written from this machine" in text and "--set scale.storage_path" in text


def _stage1_file(path: Path, epoch: int) -> MAMP:
    torch.manual_seed(epoch)
    model = MAMP(preset("tiny"))
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt.save(
        path,
        ckpt.stage1_payload(model, epoch=epoch, history=[{"epoch": e} for e in range(epoch + 1)]),
    )
    return model


def test_checkpoints_are_read_where_they_are_kept(s3_root, tmp_path):
    run = tmp_path / "job"
    for epoch in (0, 1):
        last = _stage1_file(run / f"checkpoint_00000{epoch}" / ckpt.CHECKPOINT_FILE, epoch)
    kept = storage.join(s3_root, "job")
    storage.publish(run, kept)

    latest = storage.join(kept, "checkpoint_000001", ckpt.CHECKPOINT_FILE)
    # A run directory without Ray Train's record of what it registered is not guessed from.
    with pytest.raises(ckpt.CheckpointError, match="Ray Train registered none of them"):
        ckpt.resolve_checkpoint(kept)
    assert ckpt.resolve_checkpoint(storage.parent(latest)) == latest
    assert ckpt.resolve_checkpoint(latest) == latest
    assert ckpt.read(storage.parent(latest))["epoch"] == 1
    encoder = ckpt.load_encoder(latest)
    for name, value in last.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[name], value), name

    with pytest.raises(
        ckpt.CheckpointError, match=r"no checkpoint at s3://stars-runs/\S+/nothing \("
    ):
        ckpt.resolve_checkpoint(storage.join(s3_root, "nothing"))
    with pytest.raises(
        ckpt.CheckpointError, match=r"checkpoint s3://stars-runs/\S+/gone does not exist$"
    ):
        ckpt.read(storage.join(s3_root, "gone"))
    (tmp_path / "empty.pt").write_bytes(b"")
    storage.publish(tmp_path / "empty.pt", storage.join(s3_root, "empty.pt"))
    with pytest.raises(ckpt.CheckpointError, match="the file is empty"):
        ckpt.read(storage.join(s3_root, "empty.pt"))


def test_a_stage_on_uri_storage_reports_its_checkpoint_as_a_uri(s3_root, tmp_path):
    from stars.train.launch import stage_result

    run = tmp_path / "job"
    for epoch in (0, 1, 2):
        _stage1_file(run / f"checkpoint_00000{epoch}" / ckpt.CHECKPOINT_FILE, epoch)
    kept = storage.join(s3_root, "job")
    storage.publish(run, kept)
    fs_path = storage.shown(kept).split("://", 1)[1]  # what Ray Train reports: bucket/key

    def reported(epoch: int):
        return SimpleNamespace(path=f"{fs_path}/checkpoint_00000{epoch}")

    result = SimpleNamespace(
        error=None,
        checkpoint=reported(2),
        metrics={"loss": 1.0},
        path=fs_path,
        get_best_checkpoint=lambda metric, mode: reported(1),
    )
    scale = ScaleConfig(storage_path=s3_root)
    best = stage_result(result, scale, best_metric="monitor_knn_weighted_k20_top1")
    assert best.checkpoint_dir == storage.join(kept, "checkpoint_000001")
    assert best.checkpoint_file == storage.join(kept, "checkpoint_000001", "checkpoint.pt")
    assert best.storage_dir == kept
    assert [h["epoch"] for h in best.history] == [0, 1, 2]  # from the latest checkpoint
    assert ckpt.read(best.checkpoint_file)["epoch"] == 1


def test_the_synthetic_default_is_generated_once_into_a_bucket(s3_root, monkeypatch, tmp_path):
    import shutil

    from stars.data import job_data
    from stars.data.config import DataConfig, SyntheticConfig

    cache = storage.join(s3_root, "data")
    cfg = DataConfig(
        synthetic=SyntheticConfig(
            num_classes=6, samples_per_class=4, num_base_classes=3, cache_dir=cache
        )
    )
    first = job_data.resolve_data(cfg, progress=False)
    assert first.root.startswith(storage.join(s3_root, "data", "synthetic-").split("?")[0])
    assert first.num_samples == 24 and storage.exists(storage.join(first.root, "manifest.json"))

    # Another machine (no working copy) reads it from the bucket and never generates it.
    shutil.rmtree(storage.mirror_root())
    monkeypatch.setattr(job_data, "ensure_synthetic", lambda *a, **k: pytest.fail("regenerated"))
    again = job_data.resolve_data(cfg, progress=False)
    assert again.root == first.root and again.digest == first.digest
