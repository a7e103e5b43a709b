"""The raw-pose floor against an independent, loop-by-loop computation on a small case."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from stars.eval.finetune import restrict_to
from stars.eval.raw_pose import nearest_neighbour_top1, raw_pose_features


def _by_hand(seq: np.ndarray, length: int, frames: int) -> np.ndarray:
    """Resize (linear, half-pixel centres), centre on actor 0 joint 1 of frame 0, zero the
    absent joints, flatten, L2-normalise: one sequence, plain loops."""
    _, M, V, C = seq.shape
    out = np.zeros((M, frames, V, C))
    for t in range(frames):
        src = min(max((t + 0.5) * length / frames - 0.5, 0.0), length - 1)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, length - 1)
        w = src - i0
        for m in range(M):
            out[m, t] = seq[i0, m] * (1 - w) + seq[i1, m] * w
    origin = out[0, 0, 1].copy()
    for m in range(M):
        for t in range(frames):
            for v in range(V):
                if np.abs(out[m, t, v]).sum() > 0:
                    out[m, t, v] -= origin
    flat = out.reshape(-1)
    return flat / max(np.linalg.norm(flat), 1e-8)


def test_features_and_floor_match_a_computation_by_hand():
    rng = np.random.default_rng(0)
    lengths = np.array([5, 9, 7, 9])
    joints = np.zeros((4, 9, 2, 3, 3), np.float32)
    for i, n in enumerate(lengths):
        joints[i, :n, 0] = rng.normal(size=(n, 3, 3))
    joints[1, :9, 1] = rng.normal(size=(9, 3, 3))  # a second actor in one sequence
    ours = raw_pose_features(joints, lengths, frames=6)
    for i in range(4):
        np.testing.assert_allclose(ours[i], _by_hand(joints[i], lengths[i], 6), atol=1e-5)
    labels = np.array([0, 1, 0, 1])
    expected = np.mean(
        [
            labels[2:][j] == labels[:2][np.argmax([ours[2:][j] @ ours[k] for k in range(2)])]
            for j in range(2)
        ]
    )
    assert nearest_neighbour_top1(ours[:2], labels[:2], ours[2:], labels[2:]) == expected


def test_restrict_to_keeps_exactly_the_drawn_subset():
    batch = pa.table(
        {
            "sample_index": [5, 2, 9, 7, 2],
            "label": [0, 1, 2, 3, 4],
            "x": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]],
        }
    )
    kept = restrict_to(batch, keep=np.array([2, 7]))
    assert kept.column("sample_index").to_pylist() == [2, 7, 2]
    assert kept.column("label").to_pylist() == [1, 3, 4]
    assert kept.column("x").to_pylist() == [[2, 3], [6, 7], [8, 9]]
    assert restrict_to(batch, keep=np.array([], np.int64)).num_rows == 0
