"""The sample ids each evaluation protocol fits on never meet the ids it scores.

Checked on what ``evaluate`` really ran (its ``sets``: the kNN bank and queries, the hold-out
tenth behind ``knn_val_top1``, the linear probe's training rows, the few-shot gallery and
query), against the dataset's own split ids. Assertions are on ids, never on accuracies.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from stars.eval.config import EvalConfig
from stars.eval.linear import LinearProbeConfig
from stars.eval.protocols import EvalContext, knn_validation_sets
from stars.eval.runner import evaluate
from stars.metrics.feature_set import FeatureSet
from stars.metrics.fewshot import fewshot_split_report, make_episode, validation_classes
from stars.model import checkpoint as ckpt
from stars.model.config import preset


@pytest.fixture(scope="module")
def tiny_encoder_file(tmp_path_factory):
    return ckpt.write_random_init(preset("tiny"), 0, tmp_path_factory.mktemp("c") / "enc.pt")


def _ids(ds, split):
    return np.sort(ds.read_split(split, ["sample_index"])["sample_index"])


def test_protocols_fit_on_the_training_split_and_score_the_test_split(
    tiny_encoder_file, tiny_dataset, tmp_path
):
    cfg = EvalConfig(
        protocols=("knn", "linear", "fewshot"),
        linear=LinearProbeConfig(epochs=2),
        fewshot_shots=(1,),
        fewshot_episodes=2,
        validation=True,
        bootstrap_resamples=100,
        in_process=True,
    )
    result = evaluate(tiny_encoder_file, tiny_dataset, cfg, tmp_path, log=lambda _: None)
    protocol = tiny_dataset.protocol()
    train, test = _ids(tiny_dataset, protocol["train"]), _ids(tiny_dataset, protocol["test"])
    for name in ("knn", "linear"):
        assert np.array_equal(np.sort(result.sets[name]["fitted"]), train), name
        assert np.array_equal(np.sort(result.sets[name]["scored"]), test), name
    val = result.sets["knn_val"]
    assert not np.intersect1d(val["fitted"], val["scored"]).size
    assert np.array_equal(np.sort(np.concatenate([val["fitted"], val["scored"]])), train)
    assert not np.intersect1d(val["scored"], test).size  # the objective never sees the test
    fewshot = tiny_dataset.fewshot
    assert np.array_equal(
        np.sort(result.sets["fewshot"]["fitted"]), _ids(tiny_dataset, fewshot.gallery)
    )
    assert np.array_equal(
        np.sort(result.sets["fewshot"]["scored"]), _ids(tiny_dataset, fewshot.query)
    )
    assert result.info["sample_sets"]["linear"]["shared"] == 0


def _features(ids, labels):
    rng = np.random.default_rng(0)
    return FeatureSet(
        rng.normal(size=(len(ids), 8)).astype(np.float32),
        np.asarray(labels, np.int64),
        np.asarray(ids, np.int64),
    )


def test_knn_validation_queries_are_a_tenth_never_in_their_bank():
    bank = _features(np.arange(200) * 3 + 1, np.arange(200) % 4)
    val_bank, val_query = knn_validation_sets(bank)
    assert not np.intersect1d(val_bank.sample_index, val_query.sample_index).size
    assert len(val_bank) + len(val_query) == len(bank)
    assert (val_query.sample_index % 10 == 0).all() and len(val_query) == 20


def test_a_protocol_that_would_fit_on_its_test_rows_is_refused(tiny_dataset, tmp_path):
    from stars.data.shards import DataError

    ctx = EvalContext(
        checkpoint="x", data=tiny_dataset, cfg=EvalConfig(), data_cfg=None, scale=None,
        features=None, out=tmp_path, train_split="xsub_train", test_split="xsub_train",
    )  # fmt: skip
    with pytest.raises(DataError, match="fit on and score the same 3 samples"):
        ctx.record_sets("linear", np.array([1, 2, 3, 4]), np.array([2, 3, 4, 9]))


@pytest.mark.parametrize("n_classes", [4, 5, 60])
def test_validation_and_test_classes_are_disjoint_and_cover_every_novel_class(n_classes):
    novel = np.arange(60, 60 + n_classes)
    labels = np.repeat(novel, 3)[::-1]
    val, test = validation_classes(labels)
    assert not set(val.tolist()) & set(test.tolist())
    assert set(val.tolist()) | set(test.tolist()) == set(novel.tolist())
    assert abs(len(val) - len(test)) <= 1


def test_fewshot_val_and_test_metrics_use_their_own_half_of_the_classes():
    """Validation classes solved, test classes noise: the two halves' metrics say which
    classes each one saw."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(8), 10)
    val, _ = validation_classes(labels)
    centres = rng.normal(size=(8, 16)) * 10
    feats = np.where(
        np.isin(labels, val)[:, None],
        centres[labels] + rng.normal(size=(80, 16)) * 0.1,
        rng.normal(size=(80, 16)),
    ).astype(np.float32)
    gallery = FeatureSet(feats, labels, np.arange(80))
    report = fewshot_split_report(gallery, None, shots=(1,), episodes=4)
    assert report["fewshot_val_1shot_mean"] == 1.0
    assert report["fewshot_test_1shot_mean"] < 0.6


def test_fewshot_support_and_queries_never_share_a_sample():
    gallery = _features(np.arange(40), np.arange(40) % 4)
    query = _features(np.arange(40, 70), np.arange(30) % 4)
    for shots in (1, 5):
        for seed in range(3):
            alone = make_episode(gallery, None, shots, seed)
            ids_support = gallery.sample_index[alone.exemplar_rows]
            assert not np.intersect1d(ids_support, gallery.sample_index[alone.query_rows]).size
            assert len(alone.exemplar_rows) + len(alone.query_rows) == len(gallery)
            split = make_episode(gallery, query, shots, seed)
            support = gallery.sample_index[split.exemplar_rows]
            assert not np.intersect1d(support, query.sample_index[split.query_rows]).size


def test_stage2_fewshot_monitor_reads_the_validation_half_only():
    """What sweeps optimise: ``monitor_fewshot_val_*`` is computed on the validation classes
    (the test half is noise here, so any test class in it would lower the score)."""
    from stars.train.config import Stage2Config
    from stars.train.stage2 import monitor_report

    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(60, 68), 10)
    val, _ = validation_classes(labels)
    centres = rng.normal(size=(68, 16)) * 10
    feats = np.where(
        np.isin(labels, val)[:, None],
        centres[labels] + rng.normal(size=(80, 16)) * 0.1,
        rng.normal(size=(80, 16)),
    ).astype(np.float32)
    bank = FeatureSet(feats, labels, np.arange(80))
    s2 = dataclasses.replace(Stage2Config(), monitor="fewshot_val", monitor_shots=1)
    report = monitor_report(s2, bank, None)
    assert report["monitor_fewshot_val_1shot_mean"] == 1.0
