from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stars.data import transforms as tf
from stars.skeleton import NTU25_BONES_ANATOMICAL


def _bones(joints, bones):
    """Child minus parent for every bone: (..., V, C) -> (..., len(bones), C)."""
    return joints[..., [c for c, _ in bones], :] - joints[..., [p for _, p in bones], :]


def _batch(rng, B=16, T=300, M=2, V=25, lengths=None):
    x = rng.normal(size=(B, T, M, V, 3)).astype(np.float32)
    lengths = rng.integers(20, T + 1, B) if lengths is None else lengths
    for b, n in enumerate(lengths):
        x[b, n:] = 0
    return x, np.asarray(lengths)


def test_valid_lengths_and_shapes():
    rng = np.random.default_rng(0)
    x, lengths = _batch(rng)
    x[0, 5] = 0  # an interior dropped frame does not shorten the sequence
    np.testing.assert_array_equal(tf.valid_lengths(x), lengths)
    assert tf.valid_lengths(np.zeros((2, 10, 1, 3, 3)))[0] == 0
    out = tf.train_view(x, lengths, rng, out_frames=120)
    assert out.shape == (16, 2, 120, 25, 3) and out.dtype == np.float32
    assert out.flags["C_CONTIGUOUS"]
    assert tf.eval_view(x, lengths, out_frames=64).shape == (16, 2, 64, 25, 3)


def test_eval_resize_matches_torch_interpolate():
    rng = np.random.default_rng(1)
    x, lengths = _batch(rng, B=6)
    out = tf.eval_view(x, lengths, out_frames=120, ratio=0.95)
    start, crop = tf.crop_windows(lengths, None, 0.95)
    for b in range(6):
        seg = torch.from_numpy(x[b, start[b] : start[b] + crop[b]])  # (L, M, V, C)
        ref = torch.nn.functional.interpolate(
            seg.permute(1, 2, 3, 0).reshape(1, -1, crop[b]),
            size=120,
            mode="linear",
            align_corners=False,
        )
        ref = ref.reshape(2, 25, 3, 120).permute(0, 3, 1, 2).numpy()
        np.testing.assert_allclose(out[b], ref, atol=1e-4)  # float32 grid rounding


def test_fused_path_equals_composed_steps():
    rng = np.random.default_rng(8)
    x, lengths = _batch(rng, B=9)
    start, crop = tf.crop_windows(lengths, rng, (0.5, 1.0))
    rot = tf.random_rotation(rng, 9)
    composed = tf.to_model_layout(tf.rotate(tf.resize_windows(x, start, crop, 50), rot))
    fused = tf.resample_to_model_layout(x, start, crop, 50, rot)
    np.testing.assert_allclose(fused, composed, atol=1e-5)


def test_train_crops_respect_bounds():
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 300, 5000)
    start, crop = tf.crop_windows(lengths, rng, (0.5, 1.0), min_frames=64)
    assert (crop >= np.minimum(64, lengths)).all() and (crop <= lengths).all()
    assert (start >= 0).all() and (start + crop <= lengths).all()
    long = lengths >= 200
    assert (crop[long] >= np.floor(lengths[long] * 0.5) - 1).all()


def test_deterministic_under_seed():
    x, lengths = _batch(np.random.default_rng(3))
    a = tf.train_view(x, lengths, np.random.default_rng(42))
    b = tf.train_view(x, lengths, np.random.default_rng(42))
    c = tf.train_view(x, lengths, np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_constant_sequence_stays_constant():
    x = np.zeros((4, 300, 2, 25, 3), np.float32)
    x[:, :150] = np.random.default_rng(4).normal(size=(4, 1, 2, 25, 3))
    out = tf.train_view(x, np.full(4, 150), np.random.default_rng(5), max_angle=0.0)
    np.testing.assert_allclose(out, np.broadcast_to(out[:, :, :1], out.shape), atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(2, 300),
    out_frames=st.integers(2, 150),
    slope=st.floats(-2, 2),
    offset=st.floats(-1, 1),
)
def test_resizing_a_linear_ramp_stays_linear(length, out_frames, slope, offset):
    t = np.arange(300, dtype=np.float32)
    x = np.zeros((1, 300, 1, 1, 3), np.float32)
    x[0, :length, 0, 0, :] = (offset + slope * t[:length] / 300)[:, None]
    out = tf.eval_view(x, np.array([length]), out_frames=out_frames, ratio=1.0)[0, 0, :, 0, 0]
    # The ramp sampled at the (edge-clamped) interpolation grid: exact for linear input.
    src = np.clip((np.arange(out_frames) + 0.5) * length / out_frames - 0.5, 0, length - 1)
    np.testing.assert_allclose(out, offset + slope * src / 300, atol=1e-5)
    inside = (src > 0) & (src < length - 1)
    if inside.sum() >= 3:
        assert np.abs(np.diff(out[inside], 2)).max() < 1e-4


def test_rotation_preserves_bone_lengths_and_zeros():
    rng = np.random.default_rng(6)
    x, lengths = _batch(rng, B=8)
    x[:, :, 1] = 0  # absent second actor
    out = tf.train_view(x, lengths, rng, max_angle=0.3, ratio=(1.0, 1.0))
    ref = tf.train_view(x, lengths, np.random.default_rng(0), max_angle=0.0, ratio=(1.0, 1.0))
    bl = np.linalg.norm(_bones(out, NTU25_BONES_ANATOMICAL), axis=-1)
    bl_ref = np.linalg.norm(_bones(ref, NTU25_BONES_ANATOMICAL), axis=-1)
    np.testing.assert_allclose(bl, bl_ref, atol=1e-4)
    assert np.abs(out[:, 1]).max() == 0
    rot = tf.random_rotation(rng, 100, 0.3)
    np.testing.assert_allclose(
        rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (100, 3, 3)), atol=1e-5
    )
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)


def test_rotation_matrix_order_is_z_y_x():
    a = np.array([[0.1, -0.2, 0.3]])
    cx, cy, cz, sx, sy, sz = *np.cos(a[0]), *np.sin(a[0])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    np.testing.assert_allclose(tf.rotation_matrices(a)[0], rz @ ry @ rx, atol=1e-6)


def test_motion_is_temporal_difference():
    x = np.random.default_rng(7).normal(size=(3, 10, 2, 5, 3)).astype(np.float32)
    m = tf.motion(x, stride=1, time_axis=1)
    np.testing.assert_allclose(m[:, :-1], x[:, 1:] - x[:, :-1])
    assert np.abs(m[:, -1]).max() == 0
    m2 = tf.motion(x, stride=2, time_axis=1)
    np.testing.assert_allclose(m2[:, :-2], x[:, 2:] - x[:, :-2])
