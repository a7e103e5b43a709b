from __future__ import annotations

import hashlib
import json
import os
import pickle

import numpy as np
import pytest

from stars.cli.prepare_data import main as prepare_main
from stars.data.formats.convert import Rejected
from stars.data.formats.ntu import NtuOptions, parse_file
from stars.data.formats.pyskl import convert_pyskl, write_annotation_file
from stars.data.manifest import SplitPair
from stars.data.shards import DataError, open_dataset


def test_ntu60_3d_file_keeps_every_split_label_and_digest(tmp_path, pyskl_ntu_file):
    src = tmp_path / "ntu60_3danno.pkl"
    anns, split = pyskl_ntu_file(src, "ntu60", per_action=2)
    result = convert_pyskl(src, tmp_path / "out", progress=False)
    assert result.report["written"] == result.report["seen"] == len(anns) == 120
    ds = open_dataset(tmp_path / "out")
    man = ds.manifest
    assert man.recording["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert man.recording["declared_splits"] == {k: len(v) for k, v in split.items()}
    assert man.protocols == {
        "xsub": SplitPair("xsub_train", "xsub_test"),
        "xview": SplitPair("xview_train", "xview_test"),
    }
    assert man.class_names[0] == "drink water" and len(man.class_names) == 60
    for name, members in split.items():
        got = ds.read_split(name.replace("_val", "_test"), ["sample_id"])["sample_id"]
        assert sorted(got.tolist()) == sorted(members)
    rows = ds.read_split(None, ["sample_id", "label", "joints", "num_frames", "num_bodies"])
    by_id = {a["frame_dir"]: a for a in anns}
    for sid, label, joints, frames, bodies in zip(
        rows["sample_id"],
        rows["label"],
        rows["joints"],
        rows["num_frames"],
        rows["num_bodies"],
        strict=True,
    ):
        ann = by_id[sid]
        assert label == ann["label"] and frames == ann["total_frames"]
        want = np.transpose(ann["keypoint"], (1, 0, 2, 3))[:, :bodies]
        np.testing.assert_array_equal(joints[:frames, :bodies], want)
        assert bodies == int((np.abs(ann["keypoint"]).reshape(2, -1).max(axis=1) > 0).sum())
    meta = ds.read_split("xview_train", ["view", "subject"])
    assert set(meta["view"].tolist()) <= {2, 3}


def test_ntu120_file_gets_the_paper_fewshot_splits(tmp_path, pyskl_ntu_file):
    src = tmp_path / "ntu120_3danno.pkl"
    pyskl_ntu_file(src, "ntu120")
    convert_pyskl(src, tmp_path / "out", progress=False)
    ds = open_dataset(tmp_path / "out")
    fs = ds.fewshot
    assert fs.classes == tuple(range(60, 120)) and fs.pretrain_split == "ntu60_xsub_train"
    assert set(ds.manifest.protocols) == {"xsub", "xset", "ntu60_xsub"}
    pre = ds.read_split("ntu60_xsub_train", ["label"])["label"]
    novel = np.concatenate(
        [ds.read_split(s, ["label"])["label"] for s in ("fewshot_gallery", "fewshot_query")]
    )
    assert pre.max() < 60 and novel.min() >= 60 and len(novel) == 60


def test_2d_file_is_refused_by_name(tmp_path, pyskl_ntu_file):
    src = tmp_path / "ntu60_hrnet.pkl"
    pyskl_ntu_file(src, "ntu60", channels=2)
    with pytest.raises(DataError, match=r"ntu60_hrnet\.pkl: 2D keypoints .*stage 1 predicts 3D"):
        convert_pyskl(src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "executed"
    payload = _Payload()
    payload.marker = marker
    src = tmp_path / "evil.pkl"
    with open(src, "wb") as fh:
        pickle.dump({"split": {}, "annotations": [{"frame_dir": payload}]}, fh, protocol=2)
    with pytest.raises(
        DataError, match=r"evil\.pkl: refused: the pickle asks for (posix|os)\.system"
    ):
        convert_pyskl(src, tmp_path / "out", progress=False)
    assert not marker.exists()


def test_truncated_file_is_a_named_error(tmp_path, pyskl_ntu_file):
    src = tmp_path / "ntu60_3danno.pkl"
    pyskl_ntu_file(src, "ntu60")
    src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(DataError, match=r"ntu60_3danno\.pkl: truncated pickle"):
        convert_pyskl(src, tmp_path / "out", progress=False)


def test_bad_annotations_are_reported_not_lost(tmp_path, pyskl_annotation):
    rng = np.random.default_rng(1)
    good = [pyskl_annotation(f"S001C001P001R001A{a:03d}", a - 1, 30, 1, rng) for a in (1, 2, 3)]
    nan = pyskl_annotation("S001C002P001R001A001", 0, 30, 1, rng)
    nan["keypoint"][0, 3, 4, 1] = np.nan
    zero = pyskl_annotation("S001C003P001R001A001", 0, 30, 0, rng)
    wrong = dict(good[0], frame_dir="S001C001P002R001A001", keypoint=np.zeros((2, 30, 17, 3)))
    src = tmp_path / "mixed.pkl"
    write_annotation_file(src, [*good, nan, zero, wrong, good[0]], {"xsub_train": []})
    result = convert_pyskl(src, tmp_path / "out", progress=False)
    reasons = {r["file"]: r["reason"] for r in result.report["rejected"]}
    assert result.report["written"] == 3 and result.report["seen"] == 7
    assert reasons["S001C002P001R001A001"] == "NaN/inf joint coordinates"
    assert reasons["S001C003P001R001A001"] == "all-zero sequence"
    assert "17 joints" in reasons["S001C001P002R001A001"]
    assert any("duplicate" in r for r in reasons.values())


def test_cli_imports_a_file_and_prints_the_summary(tmp_path, capsys, pyskl_ntu_file):
    src = tmp_path / "ntu60_3danno.pkl"
    pyskl_ntu_file(src, "ntu60")
    assert prepare_main(["pyskl", str(src), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "written 60" in capsys.readouterr().out
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["source"]["format"] == "pyskl"


@pytest.mark.shared_data
def test_real_ntu_recordings_round_trip_through_the_pyskl_layout(shared_data, tmp_path):
    files = sorted((shared_data / "ntu_rgbd_samples").rglob("*.skeleton"))
    anns = []
    for f in files:
        try:
            sample = parse_file(str(f), NtuOptions("ntu60")).samples[0]
        except Rejected:  # the samples include deliberately damaged recordings
            continue
        x = np.transpose(sample.joints, (1, 0, 2, 3))  # (M, T, V, 3) as pyskl stores it
        anns.append(
            {
                "frame_dir": sample.sample_id,
                "label": sample.label,
                "keypoint": x,
                "total_frames": x.shape[1],
            }
        )
    assert anns, "no readable NTU recording in the shared samples"
    src = tmp_path / "real.pkl"
    write_annotation_file(src, anns, {"xsub_train": [a["frame_dir"] for a in anns]}, protocol=4)
    convert_pyskl(src, tmp_path / "out", progress=False)
    ds = open_dataset(tmp_path / "out")
    rows = ds.read_split("xsub_train", ["sample_id", "joints", "num_frames"])
    for ann, joints, frames in zip(anns, rows["joints"], rows["num_frames"], strict=True):
        assert frames == ann["total_frames"]
        np.testing.assert_array_equal(
            joints[:frames, : ann["keypoint"].shape[0]], np.transpose(ann["keypoint"], (1, 0, 2, 3))
        )
