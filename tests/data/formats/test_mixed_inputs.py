"""Importers on directories that mix the real recordings with malformed files.

Each test asserts what the README promises: the conversion finishes; every valid file is
written with identical data (checked against an independent decode of the file); every
malformed file is rejected by name, or (random byte mutations only) written with exactly the
data an independent decode gives; written + rejected = seen. Malformed files cover structure,
size, numeric range and type, file-system oddities and encoding.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from stars.data.formats.arrays import convert_arrays
from stars.data.formats.nucla import convert_nucla
from stars.data.formats.pku import convert_pku
from stars.data.shards import open_dataset

pytestmark = pytest.mark.shared_data


def written(out: Path) -> dict[str, np.ndarray]:
    """sample_id -> joints (T, M, V, 3) as stored."""
    data = open_dataset(out)
    rows = data.read_split(None, ["sample_id", "joints", "num_frames"])
    return {
        sid: joints[:n]
        for sid, joints, n in zip(
            rows["sample_id"], rows["joints"], rows["num_frames"], strict=True
        )
    }


def check_accounting(report: dict, seen_names: set[str], rejected_names: set[str]) -> None:
    assert report["written"] + len(report["rejected"]) == report["seen"]
    names = {r["file"] for r in report["rejected"]}
    # A file's own name, or "file:sample" when the file parsed but its sample was refused.
    missing = {n for n in rejected_names if not any(r == n or r.startswith(n + ":") for r in names)}
    assert not missing, f"malformed files not rejected by name: {sorted(missing)}"
    assert all(r["reason"] for r in report["rejected"])


# -- N-UCLA ---------------------------------------------------------------------------------
def nucla_reference(raw: bytes) -> np.ndarray | None:
    """An independent strict decode of an N-UCLA file: (T, 1, 20, 3) centred, or None."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or set(record) < {"skeletons", "label"}:
        return None
    label, skel = record["label"], record["skeletons"]
    if type(label) is not int or not 1 <= label <= 10 or not isinstance(skel, list) or not skel:
        return None
    frames = []
    for frame in skel:
        if not isinstance(frame, list) or len(frame) != 20:
            return None
        for joint in frame:
            if not isinstance(joint, list) or len(joint) != 3:
                return None
            if any(type(v) not in (int, float) for v in joint):
                return None
        frames.append(frame)
    x = np.array(frames, dtype=np.float64)
    if not np.isfinite(x).all():
        return None
    x = x.astype(np.float32)
    return (x - x[0, 1])[:, None]


def nucla_malformed(real: bytes) -> dict[str, bytes]:
    """Named malformed variants of a real file, one per category."""
    record = json.loads(real)
    skel = record["skeletons"]

    def with_(**changes) -> bytes:
        return json.dumps({**record, **changes}).encode()

    first = json.dumps(skel[0][0][0])
    label = f'"label": {record["label"]}'.encode()
    deep = b"[" * 50_000 + b"]" * 50_000
    return {
        "a01_s01_e90_v01.json": b'{"label": 1, "skeletons": ' + deep + b"}",
        "a01_s01_e91_v01.json": real.replace(label, b'"label": ' + b"9" * 5000),
        "a01_s01_e92_v01.json": real.replace(first.encode(), b"1" * 5000, 1),
        "a01_s01_e93_v01.json": real.replace(first.encode(), b"true", 1),
        "a01_s01_e94_v01.json": with_(label=True),
        "a01_s01_e95_v01.json": with_(label="3"),
        "a01_s01_e96_v01.json": real.replace(first.encode(), b"null", 1),
        "a01_s01_e97_v01.json": with_(skeletons=[*skel[:2], skel[2][:19]]),
        "a01_s01_e98_v01.json": b"\xff\xfe" + real[:100],
        "a01_s01_e99_v01.json": real.replace(first.encode(), b"1e400", 1),
        "a01_s99999999999_e01_v01.json": real,  # subject past int32
        "a01_s01_e88_v01.json": with_(label=11),
        "a01_s01_e87_v01.json": b"",
    }


def mutate(raw: bytes, rng: random.Random) -> bytes:
    out = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["flip", "insert", "truncate"])
        pos = rng.randrange(max(len(out), 1))
        if kind == "flip" and out:
            out[pos] = rng.choice(b'0123456789.,-[]{}" e\nx\x00')
        elif kind == "insert":
            out[pos:pos] = rng.choice([b" ", b"-", b"0", b",", b"]", b"nan", b"1e999", b"true"])
        else:
            del out[pos:]
    return bytes(out)


def _nucla_case(shared_data: Path, tmp_path: Path, valid_count: int, mutations: int) -> None:
    files = sorted((shared_data / "nw_ucla" / "all_sqe").rglob("*.json"))
    valid = files if valid_count <= 0 else random.Random(0).sample(files, valid_count)
    src = tmp_path / "src"
    src.mkdir()
    for f in valid:
        shutil.copy(f, src / f.name)
    real = valid[0].read_bytes()
    malformed = nucla_malformed(real)
    for name, raw in malformed.items():
        (src / name).write_bytes(raw)
    (src / "a01_s01_e86_v01.json").mkdir()  # a directory named like a sample
    (src / "a01_s01_e85_v01.json").symlink_to(src / "missing-target.json")  # dangling
    rng = random.Random(1)
    mutated = {}
    for i in range(mutations):
        name = f"a02_s02_e{60 + i:02d}_v02.json"
        mutated[name] = mutate(real, rng)
        (src / name).write_bytes(mutated[name])
    result = convert_nucla(src, tmp_path / "out", workers=1, progress=False)
    stored = written(tmp_path / "out")
    rejected = set(malformed) | {"a01_s01_e86_v01.json", "a01_s01_e85_v01.json"}
    check_accounting(result.report, set(), rejected)
    for f in valid:
        np.testing.assert_array_equal(stored[f.stem], nucla_reference(f.read_bytes()))
    rejected_names = {r["file"].split(":")[0] for r in result.report["rejected"]}
    for name, raw in mutated.items():
        reference = nucla_reference(raw)
        if name in rejected_names:
            continue
        assert reference is not None, f"{name} was written but a strict decode refuses it"
        np.testing.assert_array_equal(stored[Path(name).stem], reference)
    assert len(stored) == result.report["written"]


def test_nucla_mixed_with_malformed_files(shared_data, tmp_path):
    _nucla_case(shared_data, tmp_path, valid_count=40, mutations=30)


@pytest.mark.slow
def test_nucla_all_files_survive_malformed_neighbours(shared_data, tmp_path):
    _nucla_case(shared_data, tmp_path, valid_count=0, mutations=200)
    assert open_dataset(tmp_path / "out").num_samples >= 1484


# -- pose arrays ----------------------------------------------------------------------------
def test_arrays_mixed_with_malformed_files(shared_data, tmp_path):
    files = sorted((shared_data / "nw_ucla" / "all_sqe").rglob("*.json"))[:24]
    src = tmp_path / "src"
    src.mkdir()
    rows = ["sample_id,label,subject"]
    expected = {}
    # A 19-joint array listed first must not decide the dataset's joint count.
    odd = np.asarray(json.loads(files[0].read_text())["skeletons"], np.float32)[:, :19]
    np.save(src / "odd.npy", odd)
    rows.append("odd,walk,1")
    for i, f in enumerate(files):
        x = np.asarray(json.loads(f.read_text())["skeletons"], np.float32)
        expected[f"clip{i}"] = x[:, None]
        if i % 2:
            np.savez(src / f"clip{i}.npz", pose=x)
        else:
            np.save(src / f"clip{i}.npy", x)
        rows.append(f"clip{i},{['walk', 'run', 'jump'][i % 3]},{i % 4 + 1}")
    good = np.load(src / "clip0.npy")
    # Malformed: each must be rejected by name.
    header = bytearray((src / "clip0.npy").read_bytes())
    start = header.index(b"(")
    end = header.index(b")", start)
    huge = header[:start] + b"(99999999, 99999, 20, 3" + header[end:]
    (src / "huge.npy").write_bytes(bytes(huge))  # header claims terabytes
    rows.append("huge,walk,1")
    (src / "trunc.npz").write_bytes((src / "clip1.npz").read_bytes()[:200])
    rows.append("trunc,walk,1")
    crc = bytearray((src / "clip3.npz").read_bytes())
    crc[len(crc) // 2] ^= 0xFF
    (src / "crc.npz").write_bytes(bytes(crc))
    rows.append("crc,walk,1")
    np.save(src / "bigsubject.npy", good)
    rows.append("bigsubject,walk,99999999999")
    np.save(src / "nolabel.npy", good)
    rows.append("nolabel,,1")
    np.save(src / "nul.npy", good)
    rows.append("nul,wa\x00lk,1")
    rows.append("onlyid")
    (src / "adir.npy").mkdir()
    rows.append("adir,walk,1")
    (src / "dangling.npy").symlink_to(src / "nowhere.npy")
    rows.append("dangling,walk,1")
    np.save(src / "textsubject.npy", good)
    rows.append("textsubject,walk,seven")
    (src / "index.csv").write_text("\n".join(rows) + "\n")
    result = convert_arrays(src, tmp_path / "out", workers=1, progress=False)
    names = {r["file"] for r in result.report["rejected"]}
    for bad in ("huge.npy", "trunc.npz", "crc.npz", "adir.npy", "dangling.npy", "odd.npy"):
        assert bad in names, bad
    for sid in ("bigsubject", "textsubject"):
        assert any(sid in n for n in names), sid
    assert "onlyid" in names  # the row with only a sample id
    for reason in ("empty label", "non-printable"):
        assert any(reason in r["reason"] for r in result.report["rejected"]), reason
    assert result.report["written"] + len(result.report["rejected"]) == result.report["seen"]
    stored = written(tmp_path / "out")
    assert set(stored) == set(expected)  # every valid array, none of the malformed ones
    for sid, x in expected.items():
        np.testing.assert_array_equal(stored[sid][:, :1], x)
        assert not stored[sid][:, 1:].any()  # the absent second body is zeros
    assert result.manifest.num_joints == 20
    # With --train-subjects, the non-numeric subject is still only that row's problem.
    again = convert_arrays(src, tmp_path / "out2", train_subjects=[1, 2], workers=1, progress=False)
    assert again.report["written"] == len(expected)


def test_arrays_keep_long_sequences_by_default(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    np.save(src / "long.npy", rng.normal(size=(936, 17, 3)).astype(np.float32))
    np.save(src / "short.npy", rng.normal(size=(40, 17, 3)).astype(np.float32))
    (src / "index.csv").write_text("sample_id,label\nlong,a\nshort,b\n")
    result = convert_arrays(src, tmp_path / "out", workers=1, progress=False, test_fraction=0)
    assert result.report["written"] == 2 and result.manifest.t_max == 936
    capped = convert_arrays(
        src, tmp_path / "capped", workers=1, progress=False, test_fraction=0, max_frames=300
    )
    assert capped.report["written"] == 2 and capped.manifest.t_max == 300
    assert capped.report["cleaning"] == {"resampled to T_max=300 frames": 1}


# -- PKU-MMD --------------------------------------------------------------------------------
def test_pku_labels_mixed_with_malformed_files(shared_data, tmp_path):
    stream = shared_data / "pku_mmd_sample" / "A10N08-L.txt"
    src, labels = tmp_path / "skeletons", tmp_path / "labels"
    src.mkdir()
    labels.mkdir()
    good = ["A10N08-L", "A11N08-L"]
    bad = {
        "A12N08-L": b"3,10,90,1\n1e400,100,200,1\n",
        "A13N08-L": b"3,10,90,1\ninf,100,200,1\n",
        "A14N08-L": bytes(range(256)) * 4,  # a binary label file
    }
    for name in [*good, *bad, "A15N08-L", "A16N08-L"]:
        shutil.copy(stream, src / f"{name}.txt")
    for name in good:
        (labels / f"{name}.txt").write_text("3,10,90,1\n17,100,220,0.5\n")
    for name, raw in bad.items():
        (labels / f"{name}.txt").write_bytes(raw)
    (labels / "A15N08-L.txt").mkdir()  # a label path that is a directory
    (labels / "A16N08-L.txt").write_text("5,1000,1100,1\n")  # runs past the 1,040 frames
    split = tmp_path / "split.txt"
    ids = [*good, *bad, "A15N08-L", "A16N08-L"]
    split.write_text(
        f"Training videos: {', '.join(ids[:4])}\nValidation videos: {', '.join(ids[4:])}\n"
    )
    result = convert_pku(
        src, tmp_path / "out", labels=labels, split_file=split, workers=1, progress=False
    )
    names = {r["file"] for r in result.report["rejected"]}
    for name in [*bad, "A15N08-L"]:
        assert f"{name}.txt" in names, name
    assert result.report["cleaning"]["segments clipped to the stream's end"] == 1
    assert result.report["cleaning"]["frames missing past the stream's end"] == 61
    stored = written(tmp_path / "out")
    x = np.loadtxt(stream, dtype=np.float64).astype(np.float32).reshape(-1, 2, 25, 3)
    seg = x[10:91]
    seg = seg[np.abs(seg).reshape(len(seg), -1).max(axis=1) > 0]
    bodies = 2 if np.abs(seg[:, 1]).max() > 0 else 1
    seg = seg[:, :bodies]
    seg = seg - seg[0, 0, 1] * (np.abs(seg).max(axis=(2, 3), keepdims=True) > 0)
    got = stored["A10N08-L_000_A03"]
    np.testing.assert_allclose(got[:, :bodies], seg, atol=1e-6)
    assert not got[:, bodies:].any()
    assert result.report["written"] + len(result.report["rejected"]) == result.report["seen"]
