"""Stage 2 on a real local Ray instance, from a real stage-1 checkpoint."""

from __future__ import annotations

import pytest
import torch

from stars.model.checkpoint import load_encoder, read, resolve_checkpoint
from stars.train.faults import Fault
from stars.train.launch import run_stage1, run_stage2
from stars.train.resolve import stage1_config, stage2_config

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def stage1_checkpoint(ray_local, tiny_dataset, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    cfg = stage1_config(
        "tiny",
        tiny_dataset,
        [f"scale.storage_path={runs}", "stage1.epochs=2", "model.depth=4", "model.num_heads=2"],
    )
    return run_stage1(cfg, "s1", tiny_dataset).checkpoint_file


def test_three_stage_tuning_in_one_job(stage1_checkpoint, tiny_dataset, tmp_path):
    cfg = stage2_config(
        "tiny",
        tiny_dataset,
        stage1_checkpoint,
        [
            f"scale.storage_path={tmp_path}",
            "scale.num_workers=2",
            "stage2.head_warmup_epochs=1",
            "stage2.epochs=1",
            "scale.num_to_keep=3",
            "stage2.queue_size=20",
            "optim.warmup_epochs=2",
            "stage2.monitor=test",
        ],
    )
    result = run_stage2(cfg, stage1_checkpoint, "s2", tiny_dataset)
    # Two workers split the training data, but rank 0 monitors the whole train/test sets.
    protocol = tiny_dataset.protocol(None)
    for h in result.history:
        assert h["monitor_bank_samples"] == tiny_dataset.split_size(protocol["train"])
        assert h["monitor_query_samples"] == tiny_dataset.split_size(protocol["test"])
    assert [h["phase"] for h in result.history] == ["heads", "tune"]
    # Linear warm-up over 2 epochs: the last step of epoch 0 runs at half the lr.
    lrs = [h["lr"] for h in result.history]
    assert lrs == pytest.approx([cfg.optim.lr / 2, cfg.optim.lr]), lrs
    assert all("monitor_knn_weighted_k20_top1" in h for h in result.history)
    payload = read(result.checkpoint_file)
    assert payload["kind"] == "stage2"
    assert payload["source"]["checkpoint"] == str(resolve_checkpoint(stage1_checkpoint))
    assert len(payload["source"]["sha256"]) == 64
    assert payload["queue"]["ids"].shape == (20,)
    before = load_encoder(stage1_checkpoint).state_dict()
    epochs = sorted((tmp_path / "s2").glob("checkpoint_*/checkpoint.pt"))
    assert len(epochs) == 2
    after_heads = read(epochs[0])["encoder"]
    after_tune = read(epochs[1])["encoder"]
    for key, value in before.items():
        assert torch.equal(after_heads[key], value), key  # heads-only phase: encoder untouched
        frozen = key.startswith(
            ("joints_embed", "temp_embed", "pos_embed", "blocks.0.", "blocks.1.")
        )
        if frozen:
            assert torch.equal(after_tune[key], value), key
    assert any(
        not torch.equal(after_tune[k], before[k]) for k in before if k.startswith("blocks.3.")
    )
    tuned = load_encoder(result.checkpoint_file)
    assert tuned.cfg.depth == 4


@pytest.mark.slow
def test_stage2_resumes_after_a_worker_failure(stage1_checkpoint, tiny_dataset, tmp_path):
    marker = tmp_path / "failed-once"
    cfg = stage2_config(
        "tiny",
        tiny_dataset,
        stage1_checkpoint,
        [
            f"scale.storage_path={tmp_path}",
            "scale.max_failures=1",
            "scale.num_to_keep=10",
            "stage2.epochs=3",
            "stage2.monitor=none",
            "seed=1",
        ],
    )
    result = run_stage2(cfg, stage1_checkpoint, "resume", tiny_dataset, fault=Fault(5, str(marker)))
    assert marker.exists()
    steps = result.history[0]["steps"]
    assert 3 * steps > 5
    assert [h["epoch"] for h in result.history] == [0, 1, 2], result.history
    assert result.history[-1]["global_step"] == 3 * steps
    assert read(result.checkpoint_file)["epoch"] == 2
    epochs = sorted(
        read(p)["epoch"] for p in (tmp_path / "resume").glob("checkpoint_*/checkpoint.pt")
    )
    assert epochs == [0, 1, 2], epochs  # each epoch checkpointed once: resumed, not restarted
    # Like a run that never failed: the schedule, the data order, the RNG and the support
    # queue all continue (float sums in another order agree to ~1e-4).
    straight = run_stage2(cfg, stage1_checkpoint, "straight", tiny_dataset)
    lrs = [h["lr"] for h in result.history]
    assert lrs == pytest.approx([h["lr"] for h in straight.history], rel=1e-9)
    losses = [h["loss"] for h in result.history]
    assert losses == pytest.approx([h["loss"] for h in straight.history], rel=1e-3)
    final, reference = read(result.checkpoint_file), read(straight.checkpoint_file)
    for part in ("encoder", "heads", "queue"):
        for key, value in final[part].items():
            torch.testing.assert_close(
                value, reference[part][key], rtol=1e-3, atol=1e-4, msg=f"{part}.{key}"
            )
