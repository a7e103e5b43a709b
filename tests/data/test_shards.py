from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stars.data.shards import (
    MANIFEST_NAME,
    DataError,
    DatasetSpec,
    Sample,
    SampleError,
    ShardWriter,
    open_dataset,
)
from stars.skeleton import KINECT20, NTU25


def _writer(tmp_path, rows_per_shard=4, **kw):
    args = dict(layout=NTU25, class_names=["a", "b", "c"], split_names=["train", "test"], t_max=50)
    args.update(kw)
    return ShardWriter(tmp_path / "ds", DatasetSpec(**args), rows_per_shard=rows_per_shard)


def _sample(i, frames=20, bodies=1, joints=25, label=0, splits=("train",)):
    rng = np.random.default_rng(i)
    x = rng.normal(size=(frames, bodies, joints, 3)).astype(np.float32)
    return Sample(
        f"s{i:03d}", x, label, subject=i % 3 + 1, view=1, setup=2, replication=1, splits=set(splits)
    )


def test_round_trip_preserves_everything(tmp_path):
    samples = [
        _sample(
            i,
            frames=10 + i,
            bodies=1 + i % 2,
            label=i % 3,
            splits=("train",) if i % 2 else ("test",),
        )
        for i in range(10)
    ]
    with _writer(tmp_path) as w:
        for s in samples:
            w.add(s)
    ds = open_dataset(tmp_path / "ds", verify_checksums=True)
    assert ds.num_samples == 10 and len(ds.shard_paths) == 3  # 4 + 4 + 2 rows
    assert ds.manifest.splits == {"train": 5, "test": 5}
    assert ds.manifest.class_counts == (4, 3, 3)
    data = ds.read_split(None)
    assert data["joints"].shape == (10, 50, 2, 25, 3) and data["joints"].dtype == np.float32
    for i, s in enumerate(samples):
        frames, bodies = s.joints.shape[:2]
        assert data["sample_id"][i] == s.sample_id and data["sample_index"][i] == i
        assert data["num_frames"][i] == frames and data["num_bodies"][i] == bodies
        np.testing.assert_array_equal(data["joints"][i, :frames, :bodies], s.joints)
        assert np.abs(data["joints"][i, frames:]).max(initial=0) == 0
    test = ds.read_split("test", ["sample_id"])
    assert list(test["sample_id"]) == [s.sample_id for s in samples[::2]]
    # Plain pyarrow sees each row's content only: frames x stored actors, V x 3 floats each.
    table = pq.read_table(ds.shard_paths[0])
    assert table.schema.field("joints").type == pa.list_(pa.binary(75 * 4))
    sizes = [len(row) for row in table.column("joints").to_pylist()]
    assert sizes == [s.joints.shape[0] * s.joints.shape[1] for s in samples[:4]]


def test_actor_frames_are_stored_whole_under_lz4_without_a_dictionary(tmp_path):
    """One Parquet value per actor-frame (V x 12 bytes), not one per coordinate: what keeps a
    read near the speed of decompression."""
    with _writer(tmp_path) as w:
        for i in range(4):
            w.add(_sample(i, frames=30))
    meta = pq.ParquetFile(open_dataset(tmp_path / "ds").shard_paths[0]).metadata
    columns = {
        meta.row_group(0).column(c).path_in_schema: meta.row_group(0).column(c)
        for c in range(meta.num_columns)
    }
    joints = columns["joints.list.element"]
    assert joints.physical_type == "FIXED_LEN_BYTE_ARRAY" and joints.num_values == 4 * 30
    assert not {"PLAIN_DICTIONARY", "RLE_DICTIONARY"} & set(joints.encodings)
    assert joints.compression == "LZ4"


def test_digest_is_deterministic_and_content_based(tmp_path):
    digests = []
    for name in ("one", "two"):
        spec = DatasetSpec(NTU25, ["a", "b", "c"], ["train"], t_max=50)
        with ShardWriter(tmp_path / name, spec) as w:
            for s in map(_sample, range(5)):
                w.add(s)
        digests.append(open_dataset(tmp_path / name).digest)
    assert digests[0] == digests[1]


@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        (Sample("bad", np.zeros((0, 1, 25, 3)), 0), "zero-length"),
        (Sample("bad", np.zeros((10, 1, 25, 3)), 0), "all joints are zero"),
        (Sample("bad", np.ones((10, 1, 17, 3)), 0), "17 joints"),
        (Sample("bad", np.ones((10, 1, 25, 2)), 0), "shape"),
        (Sample("bad", np.ones((60, 1, 25, 3)), 0), "exceed the dataset's T_max=50"),
        (Sample("bad", np.ones((10, 3, 25, 3)), 0), "3 bodies"),
        (Sample("bad", np.ones((10, 1, 25, 3)), 7), "label 7"),
        (Sample("bad", np.ones((10, 1, 25, 3)), 0, splits={"val"}), "unknown split"),
    ],
)
def test_bad_samples_are_rejected_with_reason(tmp_path, sample, reason):
    w = _writer(tmp_path)
    with pytest.raises(SampleError, match=reason) as err:
        w.add(sample)
    assert "sample bad" in str(err.value)


def test_nan_and_duplicates_are_rejected(tmp_path):
    w = _writer(tmp_path)
    x = np.ones((10, 1, 25, 3), np.float32)
    x[4, 0, 7, 1] = np.nan
    with pytest.raises(SampleError, match="NaN/inf joint value at frame 4, body 0, joint 7"):
        w.add(Sample("nan", x, 0))
    x[4, 0, 7, 1] = np.inf
    with pytest.raises(SampleError, match="NaN/inf"):
        w.add(Sample("inf", x, 0))
    w.add(_sample(1))
    with pytest.raises(SampleError, match="duplicate sample id"):
        w.add(_sample(1))
    assert w.num_written == 1


def test_other_layouts_keep_their_joint_count(tmp_path):
    with _writer(tmp_path, layout=KINECT20) as w:
        w.add(_sample(0, joints=20))
    ds = open_dataset(tmp_path / "ds")
    assert ds.num_joints == 20 and ds.read_split(None)["joints"].shape[-2] == 20


def test_failed_write_leaves_no_manifest(tmp_path):
    with pytest.raises(RuntimeError), _writer(tmp_path) as w:
        for s in map(_sample, range(6)):
            w.add(s)
        raise RuntimeError("crash")
    assert not (tmp_path / "ds" / MANIFEST_NAME).exists()
    with pytest.raises(DataError, match=r"manifest\.json is missing"):
        open_dataset(tmp_path / "ds")


@pytest.fixture
def written(tmp_path):
    with _writer(tmp_path) as w:
        for s in map(_sample, range(10)):
            w.add(s)
    return tmp_path / "ds"


def test_truncated_shard_is_named(written):
    shard = written / "shard-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"shard-00001\.parquet.*bytes on disk"):
        open_dataset(written)


def test_corrupt_shard_same_size_is_caught_by_checksum(written):
    shard = written / "shard-00000.parquet"
    raw = bytearray(shard.read_bytes())
    raw[200] ^= 0xFF
    shard.write_bytes(bytes(raw))
    open_dataset(written)  # sizes and footer still fine
    with pytest.raises(DataError, match=r"shard-00000\.parquet.*SHA-256"):
        open_dataset(written, verify_checksums=True)


def test_garbage_shard_is_named(written):
    shard = written / "shard-00002.parquet"
    size = shard.stat().st_size
    shard.write_bytes(b"x" * size)
    with pytest.raises(DataError, match=r"shard-00002\.parquet.*not a readable Parquet"):
        open_dataset(written)


def test_missing_shard_and_edited_manifest(written, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(written, copy)
    (copy / "shard-00001.parquet").unlink()
    with pytest.raises(DataError, match=r"shard-00001\.parquet.*missing"):
        open_dataset(copy)
    manifest = json.loads((written / MANIFEST_NAME).read_text())
    manifest["shards"][0]["rows"] = 5
    (written / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"shard-00000\.parquet: 4 rows, manifest says 5"):
        open_dataset(written)


def test_shard_with_wrong_tensor_shape_is_named(written, tmp_path):
    other = tmp_path / "other"
    spec = DatasetSpec(KINECT20, ["a", "b", "c"], ["train"], t_max=50)
    with ShardWriter(other, spec, rows_per_shard=4) as w:
        for s in (_sample(i, joints=20) for i in range(4)):
            w.add(s)
    manifest = json.loads((written / MANIFEST_NAME).read_text())
    foreign = other / "shard-00000.parquet"
    shutil.copy(foreign, written / "shard-00000.parquet")
    manifest["shards"][0]["bytes"] = foreign.stat().st_size
    (written / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"shard-00000\.parquet: schema does not match"):
        open_dataset(written)


def test_writer_refuses_existing_dataset(written, tmp_path):
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        ShardWriter(written, DatasetSpec(NTU25, ["a"], ["train"]))


@pytest.mark.parametrize(
    "name",
    ["../outside.parquet", "/etc/passwd", "../../etc/passwd", "sub/shard.parquet", "..", ""],
)
def test_a_shard_name_that_leaves_the_dataset_is_refused(written, tmp_path, name):
    # A copy of a real shard outside the dataset, digest and size recomputed, so that only
    # the name can be the problem.
    outside = written.parent / "outside.parquet"
    shutil.copy(written / "shard-00000.parquet", outside)
    manifest = json.loads((written / MANIFEST_NAME).read_text())
    manifest["shards"][0]["file"] = name
    (written / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"manifest\.json: shard name .* a manifest lists shards"):
        open_dataset(written)


@pytest.mark.parametrize("version", [1, 2])  # joints padded to T_max; a list of floats
def test_a_dataset_of_an_older_format_names_its_reconversion(written, version):
    manifest = json.loads((written / MANIFEST_NAME).read_text())
    manifest["schema_version"] = version
    manifest["source"] = {"format": "ntu", "path": "/data/nturgbd_skeletons"}
    (written / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(DataError) as err:
        open_dataset(written)
    text = str(err.value)
    assert "\n" not in text and f"schema version {version} is not supported" in text
    assert "python jobs/prepare_data.py ntu /data/nturgbd_skeletons --out NEW_DIR" in text
