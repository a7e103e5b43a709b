from __future__ import annotations

import numpy as np
import pytest

from stars.skeleton import (
    KINECT20,
    NTU25,
    NTU25_BONES_ANATOMICAL,
    NTU25_BONES_STGCN,
    get_layout,
    kinect20_to_ntu25,
)


def test_ntu_layout_names_and_bones():
    assert NTU25.num_joints == 25 and KINECT20.num_joints == 20
    assert NTU25.joint_names[1] == "spine_mid" and NTU25.joint_names[20] == "spine_shoulder"
    assert len(NTU25_BONES_STGCN) == len(NTU25_BONES_ANATOMICAL) == 25
    differ = {b for b in NTU25_BONES_STGCN} ^ {b for b in NTU25_BONES_ANATOMICAL}
    # The two graphs differ only at the hands (1-based joints 22-25).
    assert {c for c, _ in differ} <= {21, 23}
    assert (21, 7) in NTU25_BONES_ANATOMICAL and (21, 22) in NTU25_BONES_STGCN


def test_kinect_mapping_to_ntu():
    x = np.arange(2 * 20 * 3, dtype=np.float32).reshape(2, 20, 3)
    y = kinect20_to_ntu25(x)
    assert y.shape == (2, 25, 3)
    np.testing.assert_array_equal(y[:, :20], x)
    np.testing.assert_array_equal(y[:, 20], x[:, 2])  # spine shoulder <- shoulder centre
    np.testing.assert_array_equal(y[:, 21], x[:, 7])
    np.testing.assert_array_equal(y[:, 22], x[:, 7])
    np.testing.assert_array_equal(y[:, 23], x[:, 11])
    np.testing.assert_array_equal(y[:, 24], x[:, 11])
    with pytest.raises(ValueError, match="20 joints"):
        kinect20_to_ntu25(np.zeros((3, 25, 3)))


def test_layout_lookup():
    assert get_layout("ntu25") is NTU25
    assert get_layout("generic17").num_joints == 17
    with pytest.raises(KeyError, match="unknown joint layout"):
        get_layout("smpl")
