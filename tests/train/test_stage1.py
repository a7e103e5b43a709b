"""Stage 1 on a real local Ray instance: 2 CPU workers (DDP over gloo), checkpoints, resume."""

from __future__ import annotations

import pytest

from stars.model.checkpoint import load_encoder, load_stage1, read
from stars.train.launch import run_stage1
from stars.train.resolve import stage1_config
from stars.train.worker_state import Fault

pytestmark = pytest.mark.ray


def _cfg(tmp_path, data, *overrides):
    return stage1_config(
        "tiny",
        data,
        [
            f"scale.storage_path={tmp_path / 'runs'}",
            "scale.num_workers=2",
            "scale.cpus_per_worker=0.5",
            "data.batch_size=8",
            "optim.lr=0.002",
            "optim.min_lr=0.001",
            *overrides,
        ],
    )


def test_two_workers_lower_the_loss_and_write_checkpoints(ray_local, tiny_dataset, tmp_path):
    cfg = _cfg(tmp_path, tiny_dataset, "stage1.epochs=8")
    result = run_stage1(cfg, "lower-loss", tiny_dataset)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 8
    assert min(losses[-3:]) < losses[0] * 0.9, losses
    steps = result.history[0]["steps"]
    assert result.history[-1]["global_step"] == 8 * steps
    payload = read(result.checkpoint_file)
    assert payload["kind"] == "stage1" and payload["epoch"] == 7
    assert payload["model_config"]["num_joints"] == 25
    assert load_stage1(result.checkpoint_file).cfg.dim == 32
    load_encoder(result.checkpoint_file)
    kept = [
        p
        for p in (tmp_path / "runs" / "lower-loss").iterdir()
        if p.is_dir() and p.name.startswith("checkpoint_")
    ]
    assert len(kept) == cfg.scale.num_to_keep


@pytest.mark.slow
def test_killed_worker_resumes_from_last_checkpoint(ray_local, tiny_dataset, tmp_path):
    marker = tmp_path / "failed-once"
    cfg = _cfg(
        tmp_path, tiny_dataset, "stage1.epochs=4", "scale.max_failures=1", "scale.num_to_keep=10"
    )
    result = run_stage1(cfg, "resume", tiny_dataset, fault=Fault(7, str(marker)))
    assert marker.exists(), "the failure hook never fired"
    steps = result.history[0]["steps"]
    assert steps * 1 <= 7 < 4 * steps  # the failure happened after a checkpoint, mid-run
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]
    assert result.history[-1]["global_step"] == 4 * steps
    final = read(result.checkpoint_file)
    assert final["epoch"] == 3
    # Only a resumed run writes each epoch's checkpoint once: a restart from epoch 0 would
    # write epochs 0.. again after the failure.
    epochs = sorted(
        read(p)["epoch"] for p in (tmp_path / "runs" / "resume").glob("checkpoint_*/checkpoint.pt")
    )
    assert epochs == [0, 1, 2, 3], epochs
    # The optimizer's step count went on from the checkpoint (AdamW counts every step).
    counts = {int(v["step"]) for v in final["optimizer"]["state"].values()}
    assert counts == {4 * steps}
