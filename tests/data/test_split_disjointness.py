"""Every split rule against the field's definition, and every protocol's sets disjoint, on
every importer: NTU-60 and NTU-120 (``.skeleton`` and pyskl), N-UCLA, arrays, synthetic.

The definitions are written here from the papers (docs/protocols.md), not imported from the
importers, so a rule that drifts in the code disagrees with this file. Assertions are on
sample ids and metadata, never on accuracies.
"""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import pytest

from stars.config import Layered
from stars.data.formats.ntu import NtuName, convert_ntu, splits_for
from stars.data.job_data import pretrain_split
from stars.data.shards import SkeletonDataset, open_dataset
from stars.model.config import preset
from stars.train.config import Stage1JobConfig, Stage2JobConfig
from stars.train.resolve import resolve_stage1, resolve_stage2

# NTU RGB+D (Shahroudy et al. 2016; Liu et al. 2019): training performers of cross-subject.
FIELD_NTU60_XSUB_TRAIN = {1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38}
FIELD_NTU120_XSUB_TRAIN = FIELD_NTU60_XSUB_TRAIN | {
    45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86,
    89, 91, 92, 93, 94, 95, 97, 98, 100, 103,
}  # fmt: skip
FIELD_NTU_XVIEW_TRAIN_CAMERAS = {2, 3}  # camera 1 is the test view
FIELD_NUCLA_XVIEW_TRAIN_VIEWS = {1, 2}  # view 3 is the test view


def _expected_ntu_splits(setup: int, camera: int, performer: int, action: int, variant: str):
    if variant == "ntu60":
        return {
            "xsub_train" if performer in FIELD_NTU60_XSUB_TRAIN else "xsub_test",
            "xview_train" if camera in FIELD_NTU_XVIEW_TRAIN_CAMERAS else "xview_test",
        }
    out = {
        "xsub_train" if performer in FIELD_NTU120_XSUB_TRAIN else "xsub_test",
        "xset_train" if setup % 2 == 0 else "xset_test",
    }
    if setup <= 17 and action <= 60:  # an NTU-60 recording: the few-shot pre-training pool
        out.add("ntu60_xsub_train" if performer in FIELD_NTU60_XSUB_TRAIN else "ntu60_xsub_test")
    if action >= 61:  # the 60 actions NTU-60 lacks: the few-shot classes
        out.add("fewshot_gallery" if performer in FIELD_NTU120_XSUB_TRAIN else "fewshot_query")
    return out


@pytest.mark.parametrize("variant", ["ntu60", "ntu120"])
def test_ntu_split_rules_are_the_fields_for_every_setup_camera_performer(variant):
    setups = range(1, 18) if variant == "ntu60" else range(1, 33)
    actions = (1, 59, 60) if variant == "ntu60" else (1, 60, 61, 62, 119, 120)
    performers = range(1, 41) if variant == "ntu60" else range(1, 107)
    for setup, camera, performer, action in itertools.product(
        setups, (1, 2, 3), performers, actions
    ):
        name = NtuName(setup, camera, performer, 1, action)
        expected = _expected_ntu_splits(setup, camera, performer, action, variant)
        assert splits_for(name, variant) == expected, name.sample_id


# -- the same rules through each importer, and every protocol's sets disjoint -------------


def _ids(ds: SkeletonDataset, split: str) -> np.ndarray:
    return ds.read_split(split, ["sample_index"])["sample_index"]


def _job_pretrain_splits(ds: SkeletonDataset) -> set[str]:
    """The split stage 1 and stage 2 read, as each job resolves it by default."""
    encoder = preset("tiny", num_joints=ds.num_joints)
    s1 = resolve_stage1(
        Layered(Stage1JobConfig(model=preset("tiny", num_joints=ds.num_joints)), frozenset()), ds
    )
    s2 = resolve_stage2(Layered(Stage2JobConfig(), frozenset()), ds, encoder, "stage1.pt")
    return {pretrain_split(ds, s1.data.protocol), pretrain_split(ds, s2.data.protocol)}


def assert_sets_disjoint(ds: SkeletonDataset) -> None:
    """Each protocol's train and test ids are disjoint and non-empty, the few-shot gallery and
    query are disjoint and hold only the few-shot classes, and the split the jobs pre-train
    on holds none of those classes and none of those samples."""
    protocols = ds.manifest.protocols
    assert protocols
    for name, p in protocols.items():
        train, test = _ids(ds, p.train), _ids(ds, p.test)
        assert len(train) and len(test), name
        assert not np.intersect1d(train, test).size, name
    fewshot = ds.fewshot
    pre_splits = _job_pretrain_splits(ds)
    if not fewshot:
        assert pre_splits == {ds.protocol()["train"]}
        return
    gallery, query = ds.read_split(fewshot.gallery, ["sample_index", "label"]), None
    novel_ids = gallery["sample_index"]
    novel_labels = gallery["label"]
    if fewshot.query:
        query = ds.read_split(fewshot.query, ["sample_index", "label"])
        assert not np.intersect1d(gallery["sample_index"], query["sample_index"]).size
        novel_ids = np.concatenate([novel_ids, query["sample_index"]])
        novel_labels = np.concatenate([novel_labels, query["label"]])
    classes = set(fewshot.classes)
    assert set(novel_labels.tolist()) <= classes
    for split in pre_splits:
        pre = ds.read_split(split, ["sample_index", "label"])
        assert len(pre["sample_index"]), split
        assert not set(pre["label"].tolist()) & classes, split
        assert not np.intersect1d(pre["sample_index"], novel_ids).size, split


def _metadata_matches_ntu(ds: SkeletonDataset, variant: str) -> None:
    """Every sample's splits, read back from the dataset, are the field's for its name."""
    bits = ds.manifest.split_bits
    everyone = ds.read_split(None, ["sample_id", "split_mask"])
    for sid, mask in zip(
        everyone["sample_id"].tolist(), everyone["split_mask"].tolist(), strict=True
    ):
        s, c, p, a = (int(sid[i + 1 : i + 4]) for i in (0, 4, 8, 16))
        got = {name for name, bit in bits.items() if mask & (1 << bit)}
        assert got == _expected_ntu_splits(s, c, p, a, variant), sid


NTU120_NAMES = [  # setups, cameras, performers and actions on both sides of every rule
    "S001C001P001R001A001", "S001C002P002R001A030", "S002C003P003R002A060",
    "S017C001P038R001A010", "S017C003P039R001A045", "S018C001P040R001A002",
    "S018C002P045R001A061", "S019C003P044R002A062", "S020C001P045R001A100",
    "S021C002P046R001A120", "S022C003P060R001A090", "S031C001P103R001A075",
    "S032C002P104R001A061", "S032C003P106R001A050", "S024C001P070R001A119",
    "S025C002P071R001A070", "S002C001P004R001A059", "S003C002P007R001A020",
]  # fmt: skip


@pytest.fixture(scope="module")
def ntu120_skeletons(shared_data, tmp_path_factory):
    """Real ``.skeleton`` recordings under NTU-120 names spanning every split rule."""
    real = sorted((shared_data / "ntu_rgbd_samples").glob("*.skeleton"))
    out = tmp_path_factory.mktemp("ntu120") / "raw"
    out.mkdir()
    for i, name in enumerate(NTU120_NAMES):
        shutil.copy(real[i % len(real)], out / f"{name}.skeleton")
    return out


@pytest.mark.shared_data
def test_ntu60_recordings_split_by_the_field_and_disjoint(shared_data, tmp_path):
    convert_ntu(shared_data / "ntu_rgbd_samples", tmp_path / "out", variant="ntu60", progress=False)
    ds = open_dataset(tmp_path / "out")
    _metadata_matches_ntu(ds, "ntu60")
    meta = ds.read_split("xview_train", ["view"])
    assert set(meta["view"].tolist()) <= FIELD_NTU_XVIEW_TRAIN_CAMERAS
    assert_sets_disjoint_where_populated(ds)


@pytest.mark.shared_data
def test_ntu120_recordings_split_by_the_field_and_disjoint(ntu120_skeletons, tmp_path):
    convert_ntu(ntu120_skeletons, tmp_path / "out", variant="ntu120", progress=False)
    ds = open_dataset(tmp_path / "out")
    _metadata_matches_ntu(ds, "ntu120")
    assert ds.fewshot.classes == tuple(range(60, 120))
    assert_sets_disjoint(ds)


@pytest.mark.parametrize("variant", ["ntu60", "ntu120"])
def test_pyskl_files_split_by_the_field_and_disjoint(tmp_path, pyskl_ntu_file, variant):
    from stars.data.formats.pyskl import convert_pyskl

    src = tmp_path / f"{variant}_3danno.pkl"
    _, declared = pyskl_ntu_file(src, variant, per_action=2)
    convert_pyskl(src, tmp_path / "out", progress=False)
    ds = open_dataset(tmp_path / "out")
    # The file's own lists are kept as declared (xsub_val -> xsub_test) ...
    for split, members in declared.items():
        kept = ds.read_split(split.replace("_val", "_test"), ["sample_id"])["sample_id"]
        assert sorted(kept.tolist()) == sorted(members), split
    # ... and the splits derived from the names are the field's.
    for split in ("ntu60_xsub_train", "ntu60_xsub_test", "fewshot_gallery", "fewshot_query"):
        if split not in ds.manifest.split_bits:
            continue
        for sid in ds.read_split(split, ["sample_id"])["sample_id"].tolist():
            s, c, p, a = (int(sid[i + 1 : i + 4]) for i in (0, 4, 8, 16))
            assert split in _expected_ntu_splits(s, c, p, a, "ntu120"), (sid, split)
    assert_sets_disjoint(ds)


@pytest.mark.shared_data
def test_nucla_views_are_the_fields_and_disjoint(shared_data, tmp_path):
    from stars.data.formats.nucla import convert_nucla

    convert_nucla(shared_data / "nw_ucla" / "all_sqe", tmp_path / "out", progress=False)
    ds = open_dataset(tmp_path / "out")
    train = ds.read_split("xview_train", ["view"])["view"]
    test = ds.read_split("xview_test", ["view"])["view"]
    assert set(train.tolist()) == FIELD_NUCLA_XVIEW_TRAIN_VIEWS and set(test.tolist()) == {3}
    subjects = ds.manifest.recording["train_subjects"]
    assert set(ds.read_split("xsub_train", ["subject"])["subject"].tolist()) <= set(subjects)
    assert not set(ds.read_split("xsub_test", ["subject"])["subject"].tolist()) & set(subjects)
    assert_sets_disjoint(ds)


def test_arrays_splits_are_disjoint(tmp_path):
    from stars.data.formats.arrays import convert_arrays

    root = tmp_path / "arrays"
    root.mkdir()
    rng = np.random.default_rng(0)
    with open(root / "index.csv", "w") as fh:
        fh.write("sample_id,label,subject\n")
        for i in range(30):
            np.save(root / f"s{i}.npy", rng.normal(size=(12, 25, 3)).astype(np.float32))
            fh.write(f"s{i},{i % 3},{i % 6 + 1}\n")
    convert_arrays(root, tmp_path / "by_subject", train_subjects=[1, 2, 3], progress=False)
    ds = open_dataset(tmp_path / "by_subject")
    assert set(ds.read_split("xsub_train", ["subject"])["subject"].tolist()) == {1, 2, 3}
    assert set(ds.read_split("xsub_test", ["subject"])["subject"].tolist()) == {4, 5, 6}
    assert_sets_disjoint(ds)
    convert_arrays(root, tmp_path / "stratified", test_fraction=0.3, seed=1, progress=False)
    assert_sets_disjoint(open_dataset(tmp_path / "stratified"))


def test_synthetic_splits_are_disjoint_and_keep_novel_classes_out(tiny_dataset):
    from stars.data.synthetic import XVIEW_TRAIN_VIEWS

    assert set(XVIEW_TRAIN_VIEWS) == FIELD_NTU_XVIEW_TRAIN_CAMERAS  # NTU's rule, mirrored
    views = tiny_dataset.read_split("xview_train", ["view"])["view"]
    assert set(views.tolist()) <= FIELD_NTU_XVIEW_TRAIN_CAMERAS
    assert_sets_disjoint(tiny_dataset)


def assert_sets_disjoint_where_populated(ds: SkeletonDataset) -> None:
    """Five real NTU-60 recordings leave some test splits empty: check what is there."""
    for name, p in ds.manifest.protocols.items():
        assert not np.intersect1d(_ids(ds, p.train), _ids(ds, p.test)).size, name
    assert _job_pretrain_splits(ds) == {ds.protocol()["train"]}


def test_published_npz_parts_stay_disjoint(tmp_path):
    from stars.data.formats.npz import convert_npz, write_npz

    rng = np.random.default_rng(0)
    parts = {}
    for part, n in (("train", 6), ("test", 4)):
        x = np.zeros((n, 300, 150), np.float32)
        x[:, :30, :75] = rng.normal(size=(n, 30, 75))
        parts[part] = (x, rng.integers(0, 3, n))
    write_npz(tmp_path / "NTU60_XSub.npz", parts)
    convert_npz(tmp_path / "NTU60_XSub.npz", tmp_path / "out", progress=False)
    ds = open_dataset(tmp_path / "out")
    assert (ds.split_size("xsub_train"), ds.split_size("xsub_test")) == (6, 4)
    assert_sets_disjoint(ds)
