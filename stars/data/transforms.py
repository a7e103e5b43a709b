"""Vectorised numpy batch transforms for skeleton sequences (no per-sample Python loops).

Layouts: stored sequences are (B, T, M, V, C); model input is (B, M, T, V, C). ``C`` is 3
(x, y, z). Lengths are the frame counts before zero padding (the ``num_frames`` column).

The crop follows MAMP: train crops a random contiguous segment of ratio p ~ U[lo, hi] of the
valid length (at least ``min_frames``, at most the valid length) at a random offset; test crops
the centred ratio. The segment is resized to ``out_frames`` by linear interpolation with the
sampling grid of ``torch.nn.functional.interpolate(mode="linear", align_corners=False)``.
"""

from __future__ import annotations

import numpy as np

from stars.data.rows import RaggedJoints


def valid_lengths(x: np.ndarray) -> np.ndarray:
    """Frames up to and including the last frame with any non-zero value.

    Args:
        x: (B, T, ...) sequences, zero padded at the end.
    Returns:
        (B,) int64; 0 for an all-zero sequence.
    """
    B, T = x.shape[:2]
    nonzero = np.abs(x.reshape(B, T, -1)).max(axis=2) > 0
    last = T - np.argmax(nonzero[:, ::-1], axis=1)
    return np.where(nonzero.any(axis=1), last, 0).astype(np.int64)


def crop_windows(
    lengths: np.ndarray,
    rng: np.random.Generator | None,
    ratio: tuple[float, float] | float,
    min_frames: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of the crop of each sequence.

    Args:
        lengths: (B,) valid lengths (>= 1).
        rng: random generator for training crops; ``None`` for the deterministic centred crop.
        ratio: (lo, hi) range of the crop ratio for training, or one ratio for centred crops.
        min_frames: lower bound of a training crop (capped at the valid length).
    Returns:
        (start, crop_len), both (B,) int64.
    """
    lengths = np.maximum(np.asarray(lengths, np.int64), 1)
    if rng is None:
        r = float(ratio if np.isscalar(ratio) else ratio[0])
        bias = ((1.0 - r) * lengths / 2.0).astype(np.int64)
        crop = np.maximum(lengths - 2 * bias, 1)
        return bias, crop
    lo, hi = ratio if not np.isscalar(ratio) else (ratio, ratio)
    p = rng.uniform(lo, hi, size=lengths.shape)
    crop = np.minimum(np.maximum(np.floor(lengths * p).astype(np.int64), min_frames), lengths)
    start = np.floor(rng.random(lengths.shape) * (lengths - crop + 1)).astype(np.int64)
    return start, crop


def resize_windows(
    x: np.ndarray, start: np.ndarray, crop: np.ndarray, out_frames: int
) -> np.ndarray:
    """Linear resize of each sequence's window [start, start + crop) to ``out_frames``.

    Args:
        x: (B, T, F...) sequences (any trailing shape).
        start, crop: (B,) int window per sequence.
    Returns:
        (B, out_frames, F...) float32.
    """
    B, T = x.shape[:2]
    tail = x.shape[2:]
    flat = x.reshape(B * T, -1)
    scale = crop.astype(np.float32) / out_frames
    src = (np.arange(out_frames, dtype=np.float32)[None] + 0.5) * scale[:, None] - 0.5
    src = np.clip(src, 0.0, (crop - 1).astype(np.float32)[:, None])
    i0 = np.floor(src).astype(np.int64)
    w = (src - i0).astype(np.float32)[..., None]
    i1 = np.minimum(i0 + 1, (crop - 1)[:, None])
    base = (np.arange(B, dtype=np.int64) * T + start)[:, None]
    x0 = flat[base + i0]
    x1 = flat[base + i1]
    out = x0 + w * (x1 - x0)
    return out.reshape(B, out_frames, *tail)


def rotation_matrices(angles: np.ndarray) -> np.ndarray:
    """Rotation R = Rz @ Ry @ Rx per row of angles (..., 3) in radians -> (..., 3, 3) float32."""
    cx, cy, cz = np.moveaxis(np.cos(angles), -1, 0)
    sx, sy, sz = np.moveaxis(np.sin(angles), -1, 0)
    rows = (
        cz * cy,
        cz * sy * sx - sz * cx,
        cz * sy * cx + sz * sx,
        sz * cy,
        sz * sy * sx + cz * cx,
        sz * sy * cx - cz * sx,
        -sy,
        cy * sx,
        cy * cx,
    )
    return np.stack(rows, -1).reshape(*angles.shape[:-1], 3, 3).astype(np.float32)


def rotate(x: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Rotate every point of each sequence: x (B, ..., 3), rot (B, 3, 3) -> same shape.

    Zero (padding / absent-actor) joints stay zero.
    """
    B = x.shape[0]
    return (x.reshape(B, -1, 3) @ rot.transpose(0, 2, 1)).reshape(x.shape)


def random_rotation(rng: np.random.Generator, batch: int, max_angle: float = 0.3) -> np.ndarray:
    """(B, 3, 3) rotations with angles ~ U[-max_angle, max_angle] about x, y and z."""
    return rotation_matrices(rng.uniform(-max_angle, max_angle, size=(batch, 3)))


def motion(x: np.ndarray, stride: int = 1, time_axis: int = 1) -> np.ndarray:
    """Temporal difference M[t] = X[t + stride] - X[t]; the last ``stride`` frames are zero."""
    x = np.moveaxis(x, time_axis, 0)
    out = np.zeros_like(x)
    out[:-stride] = x[stride:] - x[:-stride]
    return np.moveaxis(out, 0, time_axis)


def to_model_layout(x: np.ndarray) -> np.ndarray:
    """(B, T, M, V, C) -> contiguous (B, M, T, V, C)."""
    return np.ascontiguousarray(x.transpose(0, 2, 1, 3, 4))


def resample_to_model_layout(
    joints: np.ndarray | RaggedJoints,
    start: np.ndarray,
    crop: np.ndarray,
    out_frames: int,
    rot: np.ndarray | None = None,
) -> np.ndarray:
    """Crop-resize (and optionally rotate) straight into the model layout.

    The fused form of :func:`resize_windows` + :func:`rotate` + :func:`to_model_layout`: one
    gather per actor from the stored frames (padded or not), the interpolation in place, and
    the rotation written directly into the (B, M, T, V, 3) output, so neither a padded copy
    nor a full-size temporary is made.

    Args:
        joints: (B, T, M, V, 3) zero-padded rows, or :class:`RaggedJoints`.
        start, crop: (B,) windows. rot: (B, 3, 3) or None.
    Returns:
        (B, M, out_frames, V, 3) float32; an actor a row does not store is zeros.
    """
    rows = joints if isinstance(joints, RaggedJoints) else RaggedJoints.from_padded(joints)
    B, M, V, C = len(rows), rows.num_bodies, rows.num_joints, 3
    scale = crop.astype(np.float32) / out_frames
    src = (np.arange(out_frames, dtype=np.float32)[None] + 0.5) * scale[:, None] - 0.5
    src = np.clip(src, 0.0, (crop - 1).astype(np.float32)[:, None])
    i0 = np.floor(src).astype(np.int64)
    w = (src - i0).astype(np.float32)[..., None]
    t0 = start[:, None] + i0
    t1 = start[:, None] + np.minimum(i0 + 1, (crop - 1)[:, None])
    batch = np.arange(B, dtype=np.int64)[:, None]
    out = np.empty((B, M, out_frames, V, C), np.float32)
    rot_t = None if rot is None else rot.transpose(0, 2, 1)
    for m in range(M):  # actors (2), not samples
        a = rows.actor_frames(batch, t0, m).reshape(B, out_frames, V * C)
        b = rows.actor_frames(batch, t1, m).reshape(B, out_frames, V * C)
        b -= a
        b *= w
        b += a  # (B, out_frames, V*C)
        if rot_t is None:
            out[:, m] = b.reshape(B, out_frames, V, C)
        else:
            # (B, T*V, 3) view of this actor's slot: the product lands in place, uncopied
            np.matmul(b.reshape(B, -1, C), rot_t, out=out[:, m].reshape(B, -1, C))
    return out


def train_view(
    joints: np.ndarray | RaggedJoints,
    lengths: np.ndarray,
    rng: np.random.Generator,
    *,
    out_frames: int = 120,
    ratio: tuple[float, float] = (0.5, 1.0),
    min_frames: int = 64,
    max_angle: float = 0.3,
) -> np.ndarray:
    """Random crop-resize and rotation (MAMP training input).

    Args:
        joints: (B, T, M, V, 3) zero-padded sequences, or :class:`RaggedJoints`.
        lengths: (B,) valid lengths.
        max_angle: rotation range in radians; 0 disables rotation.
    Returns:
        (B, M, out_frames, V, 3) float32.
    """
    start, crop = crop_windows(lengths, rng, ratio, min_frames)
    rot = random_rotation(rng, len(joints), max_angle) if max_angle > 0 else None
    return resample_to_model_layout(joints, start, crop, out_frames, rot)


def eval_view(
    joints: np.ndarray | RaggedJoints,
    lengths: np.ndarray,
    *,
    out_frames: int = 120,
    ratio: float = 0.95,
) -> np.ndarray:
    """Deterministic centred crop-resize: (B, T, M, V, 3) or ragged rows ->
    (B, M, out_frames, V, 3)."""
    start, crop = crop_windows(lengths, None, ratio)
    return resample_to_model_layout(joints, start, crop, out_frames)
