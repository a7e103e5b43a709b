from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest

from stars.data.formats.arrays import convert_arrays
from stars.data.formats.convert import Rejected
from stars.data.formats.npz import convert_npz, iter_rows, write_npz
from stars.data.formats.nucla import convert_nucla
from stars.data.formats.pku import convert_pku, parse_split_file, parse_stream
from stars.data.shards import DataError, open_dataset


@pytest.mark.shared_data
def test_pku_stream_shape_and_second_body(shared_data):
    x = parse_stream(shared_data / "pku_mmd_sample" / "A10N08-L.txt")
    assert x.shape == (1040, 2, 25, 3)
    assert int((np.abs(x[:, 1]).reshape(1040, -1).max(axis=1) > 0).sum()) == 728


@pytest.mark.shared_data
def test_pku_instances_from_labels(shared_data, tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "A10N08-L.txt").write_text("3,10,90,1\n17,100,220,0.5\n60,300,400,1\n5,2000,2100,1\n")
    split = tmp_path / "split.txt"
    split.write_text("Training videos: \nA10N08-L, A01N01-M\nValidataion videos: \nA02N02-R\n")
    assert parse_split_file(split) == {"train": {"A10N08-L", "A01N01-M"}, "test": {"A02N02-R"}}
    result = convert_pku(
        shared_data / "pku_mmd_sample",
        tmp_path / "out",
        labels=labels,
        split_file=split,
        workers=1,
        progress=False,
    )
    report = result.report
    assert report["written"] == 2 and report["seen"] == 4
    reasons = sorted(r["reason"] for r in report["rejected"])
    assert reasons[0].startswith("segment 2000-2100 outside") and "unknown label 60" in reasons[1]
    data = open_dataset(tmp_path / "out").read_split("xsub_train")
    assert list(data["label"]) == [2, 16]
    assert list(data["num_frames"]) == [81, 121]


@pytest.mark.shared_data
def test_nucla_full_set(shared_data, tmp_path):
    result = convert_nucla(
        shared_data / "nw_ucla" / "all_sqe", tmp_path / "out", workers=2, progress=False
    )
    assert result.report["written"] == result.report["seen"] == 1484
    ds = open_dataset(tmp_path / "out")
    assert ds.num_joints == 20 and ds.manifest.default_protocol == "xview"
    assert ds.split_size("xview_train") == 1020 and ds.split_size("xview_test") == 464
    meta = ds.read_split(None, ["view", "label", "num_frames"])
    assert Counter(meta["view"].tolist()) == {1: 516, 2: 504, 3: 464}
    counts = np.bincount(meta["label"])
    assert len(counts) == 10 and counts.min() >= 141 and counts.max() <= 173
    assert meta["num_frames"].min() == 1 and meta["num_frames"].max() == 201
    mapped = convert_nucla(
        shared_data / "nw_ucla" / "all_sqe", tmp_path / "mapped", map_to_ntu=True, progress=False
    )
    assert mapped.manifest.num_joints == 25


def test_npz_round_trip_in_published_layout(tmp_path):
    rng = np.random.default_rng(0)
    parts = {}
    for part, n in (("train", 7), ("test", 5)):
        x = np.zeros((n, 300, 150), np.float32)
        lengths = rng.integers(20, 300, n)
        for i, length in enumerate(lengths):
            x[i, :length, :75] = rng.normal(size=(length, 75))
            if i % 2:
                x[i, :length, 75:] = rng.normal(size=(length, 75))
        parts[part] = (x, rng.integers(0, 4, n))
    path = tmp_path / "NTU60_XSub.npz"
    write_npz(path, parts)
    blocks = list(iter_rows(path, "x_train", chunk=3))
    assert [len(b) for b in blocks] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate(blocks), parts["train"][0])
    result = convert_npz(path, tmp_path / "out", progress=False, chunk=4)
    ds = open_dataset(tmp_path / "out")
    assert result.report["written"] == 12 and ds.manifest.default_protocol == "xsub"
    for part, (x, y) in parts.items():
        data = ds.read_split(f"xsub_{part}")
        np.testing.assert_array_equal(data["label"], y)
        stored = data["joints"].reshape(len(x), 300, 150)
        np.testing.assert_array_equal(stored, x)  # (T, M, V, C) order is the published order
        assert list(data["num_bodies"]) == [1 + i % 2 for i in range(len(x))]


def test_npz_missing_keys_is_named(tmp_path):
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 300, 150), np.float32))
    with pytest.raises(DataError, match=r"bad\.npz: missing arrays"):
        convert_npz(tmp_path / "bad.npz", tmp_path / "out", progress=False)


def _arrays(tmp_path, rows, shapes):
    root = tmp_path / "poses"
    root.mkdir()
    rng = np.random.default_rng(1)
    for row, shape in zip(rows, shapes, strict=True):
        np.save(root / f"{row['sample_id']}.npy", rng.normal(size=shape).astype(np.float32))
    with open(root / "index.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_arrays_with_split_column_and_bad_rows(tmp_path):
    rows = [
        {
            "sample_id": f"clip{i}",
            "label": ["walk", "run", "jump"][i % 3],
            "subject": str(i % 4 + 1),
            "split": "train" if i < 9 else "test",
        }
        for i in range(12)
    ]
    shapes = [(30, 17, 3)] * 10 + [(30, 16, 3), (1, 17, 3)]
    root = _arrays(tmp_path, rows, shapes)
    with open(root / "index.csv", "a") as fh:
        fh.write("ghost,walk,1,train\n")
    result = convert_arrays(root, tmp_path / "out", workers=1, progress=False)
    report = result.report
    assert report["seen"] == 13 and report["written"] == 10
    reasons = {r["file"]: r["reason"] for r in report["rejected"]}
    assert reasons["ghost"] == "array file not found"
    assert reasons["clip10.npy"].startswith("joint count differs from the most common")
    assert reasons["clip11.npy"] == "single-frame sequence"
    ds = open_dataset(tmp_path / "out")
    assert ds.num_joints == 17 and ds.manifest.layout.name == "generic17"
    assert ds.class_names == ["jump", "run", "walk"]
    assert ds.split_size("train") == 9 and ds.split_size("test") == 1


def test_arrays_subject_and_stratified_splits(tmp_path):
    rows = [
        {"sample_id": f"s{i}", "label": str(i % 2), "subject": str(i % 5 + 1)} for i in range(20)
    ]
    root = _arrays(tmp_path, rows, [(12, 2, 25, 3)] * 20)
    by_subject = convert_arrays(root, tmp_path / "a", train_subjects=[1, 2], progress=False)
    assert by_subject.manifest.splits == {"xsub_train": 8, "xsub_test": 12}
    assert by_subject.manifest.layout.name == "ntu25"
    convert_arrays(root, tmp_path / "b", test_fraction=0.3, seed=3, progress=False)
    test = open_dataset(tmp_path / "b").read_split("test", ["label"])["label"]
    assert np.bincount(test).tolist() == [3, 3]


def test_cli_end_to_end(tmp_path, capsys):
    from stars.cli.prepare_data import main as run

    rc = run(
        [
            "synthetic",
            "--out",
            str(tmp_path / "s"),
            "--num-classes",
            "3",
            "--samples-per-class",
            "3",
            "--num-base-classes",
            "2",
            "--quiet",
        ]
    )
    assert rc == 0 and "split fewshot_gallery" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        run(["ntu", str(tmp_path / "missing"), "--out", str(tmp_path / "n")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("prepare_data.py: error:") and "no .skeleton files" in err
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    assert report["seen"] == report["written"] == 9


def test_rejected_is_clean_exception():
    err = Rejected("truncated file")
    assert err.reason == "truncated file"


def test_arrays_sample_ids_that_leave_the_directory_are_rejected_by_name(tmp_path):
    rows = [{"sample_id": f"clip{i}", "label": "ab"[i % 2]} for i in range(6)]
    root = _arrays(tmp_path, rows, [(20, 25, 3)] * 6)
    outside = tmp_path / "x.npy"
    np.save(outside, np.zeros((20, 25, 3), np.float32))
    (root / "link.npy").symlink_to(outside)
    with open(root / "index.csv", "a") as fh:
        fh.write(f"../x,a\n{outside.with_suffix('')},b\nlink,a\n")
    result = convert_arrays(root, tmp_path / "out", workers=1, progress=False, test_fraction=0.5)
    report = result.report
    assert report["seen"] == 9 and report["written"] == 6
    reasons = {r["file"]: r["reason"] for r in report["rejected"]}
    assert reasons["../x"].startswith("sample_id is a path, not a plain name")
    assert reasons[str(outside.with_suffix(""))].startswith("sample_id is a path")
    assert reasons["link.npy"].startswith(f"a link to {outside}")
