"""The storage format before schemas 2 and 3, for side-by-side measurement only: every row's joints
zero padded to (T_max, M, V, 3) in a ``fixed_shape_tensor`` column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stars.data.pipeline import stored_rows
from stars.data.shards import JOINTS


def write_padded_copy(
    shard_paths: list[str], out_dir: Path, t_max: int, num_bodies: int
) -> list[Path]:
    """Each shard again with its joints padded, as schema 1 stored them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in shard_paths:
        table = pq.read_table(path)
        padded = stored_rows(table, num_bodies)[JOINTS].padded(t_max)
        column = pa.FixedShapeTensorArray.from_numpy_ndarray(padded)
        i = table.schema.get_field_index(JOINTS)
        target = out_dir / Path(path).name
        pq.write_table(table.set_column(i, JOINTS, column), target, compression="zstd")
        written.append(target)
    return written


def padded_rows(table: pa.Table) -> dict[str, np.ndarray]:
    """Schema 1's decode: metadata columns and (B, T_max, M, V, 3) joints as numpy."""
    out = {
        n: table.column(n).to_numpy() for n in table.column_names if n not in (JOINTS, "sample_id")
    }
    out[JOINTS] = np.concatenate([c.to_numpy_ndarray() for c in table.column(JOINTS).chunks])
    return out
