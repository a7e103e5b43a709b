"""Property-based fuzzing: mutated inputs give a sample or a clean rejection, never a crash."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stars.data.formats import arrays, npz, ntu, nucla, pku
from stars.data.formats.convert import Parsed, Rejected
from stars.data.shards import DataError

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

mutation = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(
        st.just("flip"),
        st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8),
    ),
    st.tuples(
        st.just("insert"),
        st.floats(0, 1),
        st.sampled_from(
            [
                b"nan",
                b"inf",
                b"-",
                b"abc",
                b"\n",
                b"1e999",
                b"]]",
                b"{",
                b"\x00\xff",
                b"  7  ",
                b"25\n",
            ]
        ),
    ),
    st.tuples(st.just("drop_line"), st.floats(0, 1)),
    st.tuples(st.just("dup_line"), st.floats(0, 1)),
)


def mutate(data: bytes, how: tuple) -> bytes:
    kind = how[0]
    if kind == "truncate":
        return data[: int(how[1] * len(data))]
    if kind == "flip":
        out = bytearray(data)
        for pos, value in how[1]:
            out[min(int(pos * len(out)), len(out) - 1)] = value
        return bytes(out)
    if kind == "insert":
        at = int(how[1] * len(data))
        return data[:at] + how[2] + data[at:]
    lines = data.splitlines(keepends=True)
    i = min(int(how[1] * len(lines)), len(lines) - 1)
    if kind == "drop_line":
        return b"".join(lines[:i] + lines[i + 1 :])
    return b"".join(lines[: i + 1] + lines[i:])


def _check(parse, path: Path) -> None:
    try:
        result = parse(str(path))
    except Rejected as err:
        assert err.reason
        return
    assert isinstance(result, Parsed)
    for s in result.samples:
        assert np.isfinite(s.joints).all()


@pytest.mark.shared_data
@FUZZ
@given(how=mutation)
def test_fuzz_ntu(shared_data, how):
    src = shared_data / "ntu_rgbd_samples" / "S001C003P008R002A058.skeleton"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / src.name
        path.write_bytes(mutate(src.read_bytes(), how))
        _check(lambda p: ntu.parse_file(p, ntu.NtuOptions("ntu60")), path)


@pytest.mark.shared_data
@FUZZ
@given(how=mutation)
def test_fuzz_pku(shared_data, how):
    src = shared_data / "pku_mmd_sample" / "A10N08-L.txt"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "A10N08-L.txt"
        path.write_bytes(mutate(src.read_bytes()[:60_000], how))
        labels = Path(tmp) / "labels.txt"
        labels.write_text("3,0,30,1\n")
        _check(lambda p: pku.parse_video((p, str(labels), "train")), path)


@pytest.mark.shared_data
@FUZZ
@given(how=mutation)
def test_fuzz_nucla(shared_data, how):
    src = shared_data / "nw_ucla" / "all_sqe" / "a01_s01_e00_v01.json"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / src.name
        path.write_bytes(mutate(src.read_bytes(), how))
        _check(nucla.parse_file, path)


@FUZZ
@given(how=mutation)
def test_fuzz_arrays(how):
    x = np.random.default_rng(0).normal(size=(20, 17, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        good = Path(tmp) / "good.npy"
        np.save(good, x)
        path = Path(tmp) / "clip.npy"
        path.write_bytes(mutate(good.read_bytes(), how))
        item = ({"sample_id": "clip", "label": "a"}, str(path), 0, 2, frozenset({"train"}))
        _check(lambda _: arrays.parse_row(item, num_joints=17, t_max=300), path)


@FUZZ
@given(how=mutation)
def test_fuzz_npz(how):
    rng = np.random.default_rng(0)
    parts = {
        p: (rng.normal(size=(3, 40, 150)).astype(np.float32), np.array([0, 1, 2]))
        for p in ("train", "test")
    }
    with tempfile.TemporaryDirectory() as tmp:
        good = Path(tmp) / "good.npz"
        npz.write_npz(good, parts)
        path = Path(tmp) / "X_XSub.npz"
        path.write_bytes(mutate(good.read_bytes(), how))
        try:
            npz.convert_npz(path, Path(tmp) / "out", progress=False)
        except DataError as err:
            assert str(path) in str(err) or "rejected" in str(err)
