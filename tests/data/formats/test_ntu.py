from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from stars.data.formats.convert import Rejected
from stars.data.formats.ntu import (
    NtuOptions,
    clean,
    convert_ntu,
    parse_file,
    parse_name,
    parse_skeleton_text,
    splits_for,
)
from stars.data.shards import DataError, open_dataset

pytestmark = pytest.mark.shared_data

EXPECTED_FRAMES = {
    "S001C001P001R001A011": 82,
    "S001C003P008R002A058": 70,
    "S002C001P003R001A003": 100,
    "S003C001P015R001A034": 71,
    "S004C002P003R001A017": 124,
}


@pytest.fixture(scope="module")
def ntu_dir(shared_data):
    return shared_data / "ntu_rgbd_samples"


def test_parser_reads_counts_and_exact_values(ntu_dir):
    for stem, frames in EXPECTED_FRAMES.items():
        text = (ntu_dir / f"{stem}.skeleton").read_text()
        num_frames, bodies = parse_skeleton_text(text)
        assert num_frames == frames
        # Joint 1 of the first body in frame 1 equals the file's text (line 5: after the frame
        # count, body count, body-info and joint-count lines).
        first_joint_line = text.splitlines()[4].split()
        frames_idx, joints = next(iter(bodies.values()))
        assert frames_idx[0] == 0
        np.testing.assert_array_equal(joints[0, 0], np.float32(first_joint_line[:3]))
    _, two = parse_skeleton_text((ntu_dir / "S001C003P008R002A058.skeleton").read_text())
    assert len(two) == 2


def test_cleaned_samples_and_metadata(ntu_dir):
    for stem, frames in EXPECTED_FRAMES.items():
        sample = parse_file(str(ntu_dir / f"{stem}.skeleton"), NtuOptions("ntu60")).samples[0]
        name = parse_name(stem)
        assert sample.sample_id == stem and sample.label == name.action - 1
        assert (sample.subject, sample.view, sample.setup, sample.replication) == (
            name.performer,
            name.camera,
            name.setup,
            name.replication,
        )
        assert sample.joints.shape[0] == frames
        expected_actors = 2 if stem.endswith("A058") else 1
        assert sample.joints.shape[1] == expected_actors
        # Centred: actor 1's spine mid is the origin in the first frame.
        np.testing.assert_allclose(sample.joints[0, 0, 1], 0, atol=1e-6)
    name = parse_name("S001C003P008R002A058")
    assert splits_for(name, "ntu60") == {"xsub_train", "xview_train"}
    late = parse_name("S020C001P045R001A100")
    assert splits_for(late, "ntu120") == {"xsub_train", "xset_train", "fewshot_gallery"}


def test_cleaning_rules_on_constructed_bodies():
    rng = np.random.default_rng(0)
    tall = rng.normal(size=(40, 25, 3)).astype(np.float32)
    tall[..., 1] *= 5  # y-spread >> x-spread: not noisy
    flat = tall[..., [1, 0, 2]].copy()  # x-spread >> y-spread in every frame: noisy
    short = tall[:5]
    bodies = {"a": (np.arange(40), tall), "b": (np.arange(40), flat), "c": (np.arange(5), short)}
    joints, actors, stats = clean(40, bodies)
    assert actors == 1 and joints.shape == (40, 2, 25, 3)
    assert stats["bodies dropped: tracked <= 11 frames"] == 1
    assert stats["bodies dropped: spread (noisy frames >= 69.754 %)"] == 1
    # A second body after actor 1 leaves fills actor 1's slot; an overlapping one is actor 2.
    late = (np.arange(40, 60), tall[:20] * 0.1)
    overlap = (np.arange(10, 30), tall[:20] * 0.01)
    joints, actors, stats = clean(
        60, {"a": (np.arange(40), tall), "late": late, "overlap": overlap}
    )
    assert actors == 2 and stats["bodies merged into actor 1"] == 1
    assert np.abs(joints[40:, 0]).max() > 0 and np.abs(joints[10:30, 1]).max() > 0
    assert np.abs(joints[:10, 1]).max() == 0
    # A third body overlapping both actors' spans is dropped, counted, never written.
    third = (np.arange(12, 26), tall[:14] * 0.001)
    joints, actors, stats = clean(
        60, {"a": (np.arange(40), tall), "overlap": overlap, "third": third}
    )
    assert actors == 2 and stats["bodies dropped: overlap both actors"] == 1
    np.testing.assert_allclose(joints[12:26, 1], overlap[1][2:16] - tall[0, 1], atol=1e-5)
    with pytest.raises(Rejected, match="no body tracked for more than 11 frames"):
        clean(5, {"c": (np.arange(5), short)})


def _corrupt(text: str, how: str, rng: np.random.Generator) -> str:
    lines = text.splitlines(keepends=True)
    if how == "truncate":
        return text[: int(rng.integers(10, len(text) - 10))]
    if how == "garbage":
        i = int(rng.integers(5, len(lines)))
        return "".join([*lines[:i], "0.1 0.2 abc 0.4\r\n", *lines[i + 1 :]])
    i = int(rng.integers(5, len(lines) - 2))
    return "".join(lines[:i] + lines[i + 1 :])  # drop a line


@pytest.mark.parametrize(
    ("how", "reasons"),
    [
        ("truncate", ("truncated", "body count inconsistent", "non-numeric", "wrong joint count")),
        ("garbage", ("non-numeric", "wrong joint count", "body count")),
        ("drop", ("body count inconsistent", "wrong joint count", "truncated", "non-numeric")),
    ],
)
def test_corrupted_copies_are_rejected_and_good_files_convert(ntu_dir, tmp_path, how, reasons):
    src = tmp_path / "src"
    shutil.copytree(ntu_dir, src, ignore=shutil.ignore_patterns("*.md", "*.csv", "SHA*"))
    rng = np.random.default_rng(len(how))
    bad = src / "bad"
    bad.mkdir()
    for i, stem in enumerate(sorted(EXPECTED_FRAMES)[:3]):
        text = (ntu_dir / f"{stem}.skeleton").read_text()
        corrupt = stem.replace("R00", f"R{9 - i}0")  # a distinct sample id
        (bad / f"{corrupt}.skeleton").write_text(_corrupt(text, how, rng))
    result = convert_ntu(src, tmp_path / "out", variant="ntu60", workers=1, progress=False)
    report = result.report
    assert report["written"] == 5 and len(report["rejected"]) == 3
    assert report["seen"] == 8
    for entry in report["rejected"]:
        assert any(r in entry["reason"] for r in reasons), entry
    assert open_dataset(tmp_path / "out").num_samples == 5
    with pytest.raises(DataError, match=r"\.skeleton: "):
        convert_ntu(
            src, tmp_path / "strict", variant="ntu60", strict=True, workers=1, progress=False
        )


def test_exclusion_list_and_parallel_conversion(ntu_dir, tmp_path):
    result = convert_ntu(
        ntu_dir, tmp_path / "out", exclude={"S002C001P003R001A003"}, workers=2, progress=False
    )
    assert result.report["written"] == 4 and result.report["seen"] == 5
    assert result.report["rejected"][0]["reason"].startswith("excluded")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["source"]["variant"] == "ntu60"
    assert manifest["class_names"][57] == "handshaking"


def test_unknown_label_and_bad_name(tmp_path, ntu_dir):
    text = (ntu_dir / "S001C001P001R001A011.skeleton").read_text()
    (tmp_path / "S001C001P001R001A099.skeleton").write_text(text)
    with pytest.raises(Rejected, match="unknown label"):
        parse_file(str(tmp_path / "S001C001P001R001A099.skeleton"), NtuOptions("ntu60"))
    (tmp_path / "reading.skeleton").write_text(text)
    with pytest.raises(Rejected, match="file name"):
        parse_file(str(tmp_path / "reading.skeleton"), NtuOptions("ntu60"))


def test_exclusion_list_reads_names_and_names_a_bad_file(tmp_path):
    from stars.data.formats.ntu import read_exclusion_list
    from stars.data.shards import DataError

    listed = tmp_path / "missing.txt"
    listed.write_text(
        "# samples with missing skeletons\nS001C002P005R002A008\n\nS017C003P020R002A060 x\n"
    )
    assert read_exclusion_list(listed) == {"S001C002P005R002A008", "S017C003P020R002A060"}
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match=r"bad\.txt"):
        read_exclusion_list(bad)
