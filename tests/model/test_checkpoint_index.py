"""The checkpoint index of in-process runs: what it keeps, what it resumes from, and how a
run directory with one resolves."""

from __future__ import annotations

import pytest

from stars.model.checkpoint import CheckpointError, read, resolve_checkpoint
from stars.model.checkpoint_index import INDEX, CheckpointIndex


def _fill(run_dir, scores, num_to_keep=2, metric="acc"):
    index = CheckpointIndex.open(str(run_dir), num_to_keep, metric)
    for epoch, score in enumerate(scores):
        index.add(epoch, {"epoch": epoch}, {"epoch": epoch, "acc": score, "phase": "tune"})
    return index


def test_keeps_the_best_by_the_metric_and_always_the_latest(tmp_path):
    index = _fill(tmp_path / "run", [0.5, 0.9, 0.1, 0.7, 0.2])
    assert [e["epoch"] for e in index.entries] == [1, 3, 4]  # best two (0.9, 0.7) + latest
    assert index.best()["epoch"] == 1 and index.latest()["epoch"] == 4
    on_disk = sorted(p.name for p in (tmp_path / "run").iterdir() if p.is_dir())
    assert on_disk == ["checkpoint_000001", "checkpoint_000003", "checkpoint_000004"]
    assert read(tmp_path / "run" / "checkpoint_000003")["epoch"] == 3
    assert "phase" not in index.entries[0]["metrics"]  # numbers only, as Ray records them
    again = CheckpointIndex.open(str(tmp_path / "run"), 2, "acc")  # what a resumed run reads
    assert again.entries == index.entries


def test_without_a_metric_the_newest_are_kept(tmp_path):
    index = _fill(tmp_path / "run", [0.5, 0.9, 0.1], metric=None)
    assert [e["epoch"] for e in index.entries] == [1, 2]
    assert index.best()["epoch"] == 2


def test_a_folder_the_index_never_named_is_not_resumed_from(tmp_path):
    index = _fill(tmp_path / "run", [0.5])
    (tmp_path / "run" / "checkpoint_000001").mkdir()  # a write cut short before the index
    assert CheckpointIndex.open(str(tmp_path / "run"), 2, "acc").latest()["epoch"] == 0
    # A run directory resolves to the index's latest checkpoint, as to Ray Train's record.
    assert resolve_checkpoint(str(tmp_path / "run")) == str(
        tmp_path / "run" / "checkpoint_000000" / "checkpoint.pt"
    )
    assert index.latest()["name"] == "checkpoint_000000"


def test_a_damaged_index_is_refused_naming_the_file(tmp_path):
    _fill(tmp_path / "run", [0.5])
    (tmp_path / "run" / INDEX).write_text('{"checkpoints": [{"epoch": 1}]}')
    with pytest.raises(CheckpointError, match=f"{INDEX}: not a checkpoint index"):
        CheckpointIndex.open(str(tmp_path / "run"), 2)
