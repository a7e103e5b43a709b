"""Joint layouts: names, bone lists and mappings between layouts.

Indices in this module are 0-based; ``docs/method.md`` and the datasets number joints from 1.
Everything downstream reads the joint count ``V`` from the data (or the manifest's layout),
never from a constant here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Kinect v1 (20 joints) and v2 (25) number the arms and legs alike: joints 4-19.
_LIMB_JOINT_NAMES: tuple[str, ...] = tuple(
    f"{side}_{part}"
    for limb in (("shoulder", "elbow", "wrist", "hand"), ("hip", "knee", "ankle", "foot"))
    for side in ("left", "right")
    for part in limb
)

NTU25_JOINT_NAMES: tuple[str, ...] = (
    "spine_base",
    "spine_mid",
    "neck",
    "head",
    *_LIMB_JOINT_NAMES,
    "spine_shoulder",
    "left_hand_tip",
    "left_thumb",
    "right_hand_tip",
    "right_thumb",
)

KINECT20_JOINT_NAMES: tuple[str, ...] = (
    "hip_center",
    "spine",
    "shoulder_center",
    "head",
    *_LIMB_JOINT_NAMES,
)


def _zero_based(pairs_1based: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    return tuple((c - 1, p - 1) for c, p in pairs_1based)


# Arm and leg bones, 1-based (child, parent): the same in Kinect v1 and v2 numbering.
_LEFT_ARM_BONES = ((6, 5), (7, 6), (8, 7))
_RIGHT_ARM_BONES = ((10, 9), (11, 10), (12, 11))
_LEG_BONES = ((13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19))

# (child, parent), the "bone" modality of ST-GCN / CTR-GCN / MAMP; (21, 21) is the centre.
NTU25_BONES_STGCN = _zero_based(
    (
        (1, 2),
        (2, 21),
        (3, 21),
        (4, 3),
        (5, 21),
        *_LEFT_ARM_BONES,
        (9, 21),
        *_RIGHT_ARM_BONES,
        *_LEG_BONES,
        (22, 23),
        (21, 21),
        (23, 8),
        (24, 25),
        (25, 12),
    )
)
# The anatomical graph of pyskl / mmaction2 differs only at the hands: tips and thumbs hang
# off the hands (1-based: 22, 23 <- 8; 24, 25 <- 12).
_ANATOMICAL_HANDS = {21: 7, 22: 7, 23: 11, 24: 11}
NTU25_BONES_ANATOMICAL = tuple((c, _ANATOMICAL_HANDS.get(c, p)) for c, p in NTU25_BONES_STGCN)
KINECT20_BONES = _zero_based(
    (
        (1, 2),
        (2, 3),
        (3, 3),
        (4, 3),
        (5, 3),
        *_LEFT_ARM_BONES,
        (9, 3),
        *_RIGHT_ARM_BONES,
        *_LEG_BONES,
    )
)

# NTU joint j (0-based) is copied from Kinect-v1 joint KINECT20_TO_NTU25[j].
KINECT20_TO_NTU25: tuple[int, ...] = (*range(20), 2, 7, 7, 11, 11)


@dataclass(frozen=True)
class JointLayout:
    """A named skeleton: joint names and bone lists as 0-based (child, parent) pairs."""

    name: str
    joint_names: tuple[str, ...]
    bones: dict[str, tuple[tuple[int, int], ...]]

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "num_joints": self.num_joints,
            "joint_names": list(self.joint_names),
            "bones": {k: [list(p) for p in v] for k, v in self.bones.items()},
        }


NTU25 = JointLayout(
    "ntu25", NTU25_JOINT_NAMES, {"stgcn": NTU25_BONES_STGCN, "anatomical": NTU25_BONES_ANATOMICAL}
)
KINECT20 = JointLayout("kinect20", KINECT20_JOINT_NAMES, {"anatomical": KINECT20_BONES})

LAYOUTS: dict[str, JointLayout] = {NTU25.name: NTU25, KINECT20.name: KINECT20}


def generic_layout(num_joints: int) -> JointLayout:
    """A layout for pose-estimator output with no known skeleton (bones left empty)."""
    return JointLayout(f"generic{num_joints}", tuple(f"joint_{i}" for i in range(num_joints)), {})


def get_layout(name: str) -> JointLayout:
    if name in LAYOUTS:
        return LAYOUTS[name]
    if name.startswith("generic") and name[7:].isdigit():
        return generic_layout(int(name[7:]))
    raise KeyError(f"unknown joint layout {name!r}; known: {', '.join(LAYOUTS)}, genericN")


def kinect20_to_ntu25(joints: np.ndarray) -> np.ndarray:
    """Map Kinect-v1 joints to the NTU layout along the joint axis.

    Args:
        joints: (..., 20, C).
    Returns:
        (..., 25, C): joints 1-20 copied, 21 from shoulder centre, 22-23 from the left hand,
        24-25 from the right hand.
    """
    if joints.shape[-2] != 20:
        raise ValueError(f"expected 20 joints on axis -2, got shape {joints.shape}")
    return joints[..., list(KINECT20_TO_NTU25), :]
