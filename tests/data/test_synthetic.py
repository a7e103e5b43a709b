from __future__ import annotations

import numpy as np
import pytest

from stars.data import synthetic as syn
from stars.data.config import SyntheticConfig
from stars.data.prepare import ensure_synthetic
from stars.data.shards import open_dataset
from stars.eval.raw_pose import nearest_neighbour_top1, raw_pose_features, raw_pose_floor
from stars.skeleton import NTU25_BONES_ANATOMICAL


def _bones(joints, bones):
    """Child minus parent for every bone: (..., V, C) -> (..., len(bones), C)."""
    return joints[..., [c for c, _ in bones], :] - joints[..., [p for _, p in bones], :]


def _all(spec):
    return list(syn.generate(spec))


def test_deterministic_given_seed():
    spec = syn.SyntheticSpec(num_classes=6, samples_per_class=6, num_base_classes=4, seed=5)
    a, b = _all(spec), _all(spec)
    assert [s.sample_id for s in a] == [s.sample_id for s in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.joints, y.joints)
    c = _all(syn.SyntheticSpec(num_classes=6, samples_per_class=6, num_base_classes=4, seed=6))
    assert not np.array_equal(a[0].joints, c[0].joints)
    # The class definitions do not depend on the sample seed.
    assert syn.make_class_table(6, 0).names == syn.make_class_table(6, 0).names


def test_metadata_splits_and_shapes():
    spec = syn.SyntheticSpec(num_classes=60, samples_per_class=9, num_base_classes=50, seed=1)
    samples = _all(spec)
    assert len(samples) == 60 * 9
    assert len({s.sample_id for s in samples}) == len(samples)
    counts = np.bincount([s.label for s in samples])
    assert (counts == 9).all()
    lengths = np.array([len(s.joints) for s in samples])
    assert lengths.min() >= 40 and lengths.max() <= 300
    assert {s.view for s in samples} == {1, 2, 3}
    xsub_train = set(syn.NTU60_XSUB_TRAIN)
    for s in samples:
        assert s.joints.shape[1:] == (2, 25, 3) and s.joints.dtype == np.float32
        assert np.isfinite(s.joints).all()
        assert s.sample_id.startswith(f"S{s.setup:03d}C{s.view:03d}P{s.subject:03d}")
        if s.label >= 50:  # novel classes never enter pre-training splits
            assert s.splits == {"fewshot_gallery" if s.subject in xsub_train else "fewshot_query"}
        else:
            assert ("xsub_train" in s.splits) == (s.subject in xsub_train)
            assert ("xview_train" in s.splits) == (s.view in (2, 3))
        two = s.label in syn.INTERACTION_CLASSES
        assert (np.abs(s.joints[:, 1]).max() > 0) == two
    # Centred on spine mid of actor 1 in the first frame (unless that frame was dropped).
    kept = [s for s in samples if np.abs(s.joints[0]).max() > 0]
    assert max(np.abs(s.joints[0, 0, 1]).max() for s in kept) < 1e-6


def test_bodies_are_plausible():
    spec = syn.SyntheticSpec(
        num_classes=20,
        samples_per_class=6,
        num_base_classes=20,
        jitter_m=0.0,
        occlusion_noise_m=0.0,
        dropped_frame_prob=0.0,
    )
    for s in _all(spec)[::7]:
        x = s.joints[:, 0]
        bones = np.linalg.norm(_bones(x, NTU25_BONES_ANATOMICAL), axis=-1)
        # Rigid bones: forward kinematics keeps every bone length constant over time.
        np.testing.assert_allclose(bones, np.broadcast_to(bones[:1], bones.shape), atol=1e-4)
        leg = bones[0, 13] + bones[0, 14]  # knee-hip + ankle-knee
        assert 0.65 < leg < 1.05
        assert x[:, 3, 1].mean() > x[:, 0, 1].mean()  # head above spine base


def test_raw_pose_floor_is_far_from_perfect_but_above_chance():
    spec = syn.SyntheticSpec(num_classes=60, samples_per_class=30, num_base_classes=60)
    samples = _all(spec)
    joints = np.zeros((len(samples), 300, 2, 25, 3), np.float32)
    for i, s in enumerate(samples):
        joints[i, : len(s.joints)] = s.joints
    lengths = np.array([len(s.joints) for s in samples])
    labels = np.array([s.label for s in samples])
    feats = raw_pose_features(joints, lengths)
    for protocol in ("xview", "xsub"):
        train = np.array([f"{protocol}_train" in s.splits for s in samples])
        test = np.array([f"{protocol}_test" in s.splits for s in samples])
        acc = nearest_neighbour_top1(feats[train], labels[train], feats[test], labels[test])
        assert 0.3 <= acc <= 0.7, (protocol, acc)


def test_ensure_synthetic_caches(tmp_path):
    cfg = SyntheticConfig(
        num_classes=4, samples_per_class=3, num_base_classes=3, cache_dir=str(tmp_path)
    )
    path = ensure_synthetic(cfg, progress=False)
    mtime = (path / "manifest.json").stat().st_mtime_ns
    assert ensure_synthetic(cfg, progress=False) == path
    assert (path / "manifest.json").stat().st_mtime_ns == mtime
    other = ensure_synthetic(
        SyntheticConfig(
            num_classes=4, samples_per_class=3, num_base_classes=3, seed=1, cache_dir=str(tmp_path)
        ),
        progress=False,
    )
    assert other != path
    ds = open_dataset(path, verify_checksums=True)
    assert ds.fewshot.classes == (3,)
    report = (path / "report.json").read_text()
    assert '"rejected": []' in report


def test_raw_floor_on_written_dataset(tiny_dataset):
    acc = raw_pose_floor(tiny_dataset, "xsub")
    assert 0.0 < acc < 1.0


def test_spec_validation():
    with pytest.raises(ValueError, match="num_classes"):
        syn.SyntheticSpec(num_classes=121)
    with pytest.raises(ValueError, match="num_base_classes"):
        syn.SyntheticSpec(num_classes=10, num_base_classes=11)
