"""Skeleton rows at the size of their content: joints kept frames-first without padding.

A stored row holds its ``num_frames`` frames of its stored actors only (every actor up to the
last one present), as a list of actor-frames, each V x 3 float32 in one fixed-size binary
value: frame t, actor m, joint v, coordinate c at float ``((t * bodies + m) * V + v) * 3 + c``
of the row. :class:`RaggedJoints` is a batch of such rows over one shared buffer (Arrow's list
values, taken without a copy): subsets share it, and the training and evaluation views
gather straight from it, so no row is ever padded to T_max.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class RaggedJoints:
    """B rows of joints without padding.

    Attributes:
        frames: (F, V, 3) float32, every row's actor-frames (frame-major, actors inside).
        start: (B,) int64, the row's first actor-frame in ``frames``.
        lengths: (B,) int64, the row's frames (T_i >= 1).
        bodies: (B,) int64, the row's stored actors (M_i >= 1).
        num_bodies: M, the actors of the padded layout the model sees (M_i <= M).
    """

    frames: np.ndarray
    start: np.ndarray
    lengths: np.ndarray
    bodies: np.ndarray
    num_bodies: int

    def __len__(self) -> int:
        return len(self.start)

    @property
    def num_joints(self) -> int:
        return int(self.frames.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes of the rows' content (the shared buffer may hold other rows too)."""
        per_frame = self.num_joints * 3 * 4
        return int((self.lengths * self.bodies).sum()) * per_frame

    @classmethod
    def from_arrow(
        cls,
        column: pa.Array | pa.ChunkedArray,
        lengths: np.ndarray,
        num_joints: int,
        num_bodies: int,
    ) -> RaggedJoints:
        """The rows of a ``list<fixed_size_binary[V*12]>`` joints column (one chunk is taken
        as is; the float32 coordinates are read in place)."""
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        lengths = np.asarray(lengths, np.int64)
        offsets = column.offsets.to_numpy().astype(np.int64)  # in actor-frames
        actor_frames = column.values  # fixed_size_binary[V*12]
        width = num_joints * 3
        if actor_frames.type != pa.binary(width * 4):
            raise ValueError(f"joints hold {actor_frames.type}, expected {pa.binary(width * 4)}")
        data = actor_frames.buffers()[1]
        count = len(actor_frames) * width
        first = actor_frames.offset * width  # a sliced column starts inside them
        if count:  # the coordinates read in place from Arrow's buffer
            frames = np.frombuffer(data, "<f4", count=count, offset=first * 4)
        else:  # an empty block may come without a data buffer
            frames = np.zeros(0, np.float32)
        sizes = np.diff(offsets)
        bodies = sizes // np.maximum(lengths, 1)
        if np.any(sizes != bodies * lengths) or np.any((bodies < 1) | (bodies > num_bodies)):
            bad = int(np.flatnonzero((sizes != bodies * lengths) | (bodies > num_bodies))[0])
            raise ValueError(
                f"row {bad} holds {sizes[bad]} actor-frames for {lengths[bad]} frames of at most "
                f"{num_bodies} actors"
            )
        return cls(frames.reshape(-1, num_joints, 3), offsets[:-1], lengths, bodies, num_bodies)

    @classmethod
    def from_padded(cls, x: np.ndarray, lengths: np.ndarray | None = None) -> RaggedJoints:
        """A view of zero-padded (B, T, M, V, 3) rows (no copy when ``x`` is contiguous)."""
        B, T, M, V, _ = x.shape
        frames = np.ascontiguousarray(x, dtype=np.float32).reshape(B * T * M, V, 3)
        lengths = np.full(B, T, np.int64) if lengths is None else np.asarray(lengths, np.int64)
        start = np.arange(B, dtype=np.int64) * (T * M)
        return cls(frames, start, np.maximum(lengths, 1), np.full(B, M, np.int64), M)

    def take(self, rows: np.ndarray) -> RaggedJoints:
        """The rows ``rows`` (indices or a boolean mask), sharing this buffer."""
        return RaggedJoints(
            self.frames, self.start[rows], self.lengths[rows], self.bodies[rows], self.num_bodies
        )

    def actor_frames(self, rows: np.ndarray, t: np.ndarray, actor: int) -> np.ndarray:
        """(..., V, 3) joints of ``actor`` at frames ``t`` of ``rows`` (broadcast together);
        zeros where the row stores fewer actors."""
        bodies = self.bodies[rows]
        index = self.start[rows] + t * bodies + actor
        stored = np.broadcast_to(bodies > actor, index.shape)
        if stored.all():
            return self.frames[index]
        out = self.frames[np.where(stored, index, 0)]
        out[~stored] = 0.0
        return out

    def padded(self, t_max: int | None = None) -> np.ndarray:
        """(B, T, M, V, 3) float32 zero padded, T = ``t_max`` or the longest row."""
        T = int(self.lengths.max(initial=1)) if t_max is None else t_max
        B, V = len(self), self.num_joints
        out = np.zeros((B, T, self.num_bodies, V, 3), np.float32)
        for m in range(self.num_bodies):  # actors (2), not samples
            rows = np.flatnonzero(self.bodies > m)
            counts = np.minimum(self.lengths[rows], T)
            row_of = np.repeat(rows, counts)
            t_of = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
            out[row_of, t_of, m] = self.frames[self.start[row_of] + t_of * self.bodies[row_of] + m]
        return out


def to_arrow(rows: list[np.ndarray], num_joints: int) -> pa.ListArray:
    """A ``list<fixed_size_binary[V*12]>`` column of (T_i, M_i, V, 3) rows: each row its
    T_i x M_i actor-frames, frame-major, each the V x 3 float32 of one actor in one frame."""
    flat = [np.ascontiguousarray(r, dtype="<f4").reshape(-1) for r in rows]
    width = num_joints * 3
    offsets = np.concatenate([[0], np.cumsum([len(f) // width for f in flat])])
    values = np.concatenate(flat) if flat else np.zeros(0, np.float32)
    actor_frames = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width * 4), len(values) // width, [None, pa.py_buffer(values)]
    )
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), actor_frames)


def joints_per_frame(column_type: pa.DataType) -> int:
    """V of a stored joints column's type (``list<fixed_size_binary[V*12]>``)."""
    return column_type.value_type.byte_width // 12
