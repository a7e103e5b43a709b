"""Whether a worker keeps its training rows in memory follows data.in_memory_max_bytes."""

from dataclasses import dataclass

import numpy as np
import pytest

from stars.config import from_dict, to_dict
from stars.data.config import DataConfig
from stars.data.pipeline import fits_in_memory


@dataclass
class _NtuSized:
    """What fits_in_memory reads from an opened dataset: NTU-60 x-sub's training split, every
    row at its longest (300 frames of 2 actors: the padded size of the old format)."""

    num_joints: int = 25
    frames: int = 300

    def read_split(self, split: str, columns: list[str]) -> dict[str, np.ndarray]:
        assert split == "xsub_train" and set(columns) == {"num_frames", "num_bodies"}
        n = 40_091
        return {"num_frames": np.full(n, self.frames, np.int32), "num_bodies": np.full(n, 2)}


@pytest.mark.parametrize(("workers", "fits"), [(3, False), (4, True)])
def test_ntu60_xsub_fits_the_default_budget_from_four_workers(workers, fits):
    assert fits_in_memory(_NtuSized(), "xsub_train", DataConfig(), workers) is fits


def test_the_budget_is_the_config_value_and_in_memory_overrides_it():
    roomy = from_dict(DataConfig, {**to_dict(DataConfig()), "in_memory_max_bytes": 8_000_000_000})
    assert fits_in_memory(_NtuSized(), "xsub_train", roomy, 1)
    assert not fits_in_memory(_NtuSized(), "xsub_train", DataConfig(in_memory_max_bytes=0), 64)
    forced = DataConfig(in_memory=True, in_memory_max_bytes=0)
    assert fits_in_memory(_NtuSized(), "xsub_train", forced, 1)


def test_the_budget_counts_the_rows_content_not_their_padding():
    # Rows of 100 frames hold a third of the 300-frame rows: three workers fit now.
    assert fits_in_memory(_NtuSized(frames=100), "xsub_train", DataConfig(), 2)
