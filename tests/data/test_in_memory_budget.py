"""Whether a worker keeps its training rows in memory follows data.in_memory_max_bytes."""

from dataclasses import dataclass

import pytest

from stars.config import from_dict, to_dict
from stars.data.config import DataConfig
from stars.data.pipeline import fits_in_memory


@dataclass
class _NtuSized:
    """The sizes fits_in_memory reads from an opened dataset: NTU-60 x-sub's training split."""

    t_max: int = 300
    num_bodies: int = 2
    num_joints: int = 25

    def split_size(self, split: str) -> int:
        return {"xsub_train": 40_091}[split]


@pytest.mark.parametrize(("workers", "fits"), [(3, False), (4, True)])
def test_ntu60_xsub_fits_the_default_budget_from_four_workers(workers, fits):
    assert fits_in_memory(_NtuSized(), "xsub_train", DataConfig(), workers) is fits


def test_the_budget_is_the_config_value_and_in_memory_overrides_it():
    roomy = from_dict(DataConfig, {**to_dict(DataConfig()), "in_memory_max_bytes": 8_000_000_000})
    assert fits_in_memory(_NtuSized(), "xsub_train", roomy, 1)
    assert not fits_in_memory(_NtuSized(), "xsub_train", DataConfig(in_memory_max_bytes=0), 64)
    forced = DataConfig(in_memory=True, in_memory_max_bytes=0)
    assert fits_in_memory(_NtuSized(), "xsub_train", forced, 1)
