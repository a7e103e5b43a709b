"""Procedural skeleton actions: the embedded default dataset.

Bodies are 25-joint NTU skeletons posed by forward kinematics from joint-angle trajectories.
Each subject has its own height (1.5-1.95 m), limb proportions, resting posture and vigour.
An action class is a composition of one to three motion primitives (raise, wave, punch, kick,
squat, bow, twist, reach, clap, nod, step in place, jump, ...) with class-specific frequency,
amplitude, phase and timing; classes at the NTU interaction indices (50-60, 106-120, 1-based)
have a second actor who responds.

Three cameras at -45, 0 and +45 degrees of yaw and two facing directions (replication 1 faces
the left camera, 2 the right one, as in NTU) give relative views from front to side, so
cross-subject and cross-view splits exist. Unlike NTU, each camera records its own
performance: with one performance filmed by all three cameras, the raw-pose 1-NN finds the
same performance across views and solves cross-view at ~80 %, which would leave no room to
show what a learned representation adds.

Per sample there is speed (+-30 %), amplitude and phase variation, idle sway, sensor jitter
(~1 cm), drifting error on joints hidden behind the body, and occasional dropped (all-zero)
frames, as in raw Kinect output. Sequences are centred on the spine-mid joint of actor 1 in
the first frame (the NTU convention).

Everything is vectorised over performances, frames and degrees of freedom; the only Python
loops run over joints (forward kinematics, 25 steps) and primitive slots (three steps).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from stars.data.shards import DatasetSpec, Sample
from stars.data.transforms import rotate, rotation_matrices
from stars.skeleton import NTU25, NTU25_BONES_ANATOMICAL

# NTU-60 cross-subject training subjects (docs/method.md §3); subjects here run 1..num_subjects.
NTU60_XSUB_TRAIN = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
XVIEW_TRAIN_VIEWS = (2, 3)
VIEW_YAW = np.array([np.nan, -45.0, 0.0, 45.0])  # degrees, indexed by view id 1..3
INTERACTION_CLASSES = frozenset([*range(49, 60), *range(105, 120)])  # 0-based
MAX_CLASSES = 120
# Bump when the generator's output changes for the same spec: it keys the dataset cache.
GENERATOR_VERSION = 2

V = 25
NUM_DOF = V * 3 + 3  # local Euler angles (x, y, z) per joint, then root translation (x, y, z)
ROOT_T = V * 3
X, Y, Z = 0, 1, 2

# Parent of every joint for forward kinematics (root: spine base); order is topological.
PARENT = np.full(V, -1)
for _child, _parent in NTU25_BONES_ANATOMICAL:
    if _child != _parent:
        PARENT[_child] = _parent
# The bone list is centred on spine shoulder (21); kinematics needs a tree rooted at the
# spine base, so the spine chain is re-parented upwards: base -> mid -> shoulder.
PARENT[0], PARENT[1], PARENT[20] = -1, 0, 1
FK_ORDER = (
    0,
    1,
    20,
    2,
    3,
    4,
    5,
    6,
    7,
    21,
    22,
    8,
    9,
    10,
    11,
    23,
    24,
    12,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
)

# Rest offsets (child - parent) in units of body height, body frame: +x the body's left,
# +y up, +z forward. Groups scale per subject: 0 torso, 1 head, 2 shoulder width, 3 arm, 4 leg.
_REST = {
    1: ((0, 0.13, 0), 0),
    20: ((0, 0.16, 0), 0),
    2: ((0, 0.04, 0), 1),
    3: ((0, 0.08, 0.01), 1),
    4: ((0.10, -0.02, 0), 2),
    5: ((0, -0.17, 0), 3),
    6: ((0, -0.15, 0), 3),
    7: ((0, -0.05, 0), 3),
    21: ((0, -0.04, 0.005), 3),
    22: ((-0.015, -0.02, 0.02), 3),
    8: ((-0.10, -0.02, 0), 2),
    9: ((0, -0.17, 0), 3),
    10: ((0, -0.15, 0), 3),
    11: ((0, -0.05, 0), 3),
    23: ((0, -0.04, 0.005), 3),
    24: ((0.015, -0.02, 0.02), 3),
    12: ((0.055, -0.03, 0), 2),
    13: ((0, -0.245, 0), 4),
    14: ((0, -0.245, 0), 4),
    15: ((0, -0.03, 0.06), 4),
    16: ((-0.055, -0.03, 0), 2),
    17: ((0, -0.245, 0), 4),
    18: ((0, -0.245, 0), 4),
    19: ((0, -0.03, 0.06), 4),
}
FEET = (14, 15, 18, 19)
L_SHOULDER, L_ELBOW, L_WRIST, R_SHOULDER, R_ELBOW, R_WRIST = 4, 5, 6, 8, 9, 10
L_HIP, L_KNEE, R_HIP, R_KNEE = 12, 13, 16, 17
SPINE, SPINE_TOP, NECK, ROOT = 1, 20, 2, 0


def _dof(joint: int, axis: int) -> int:
    return joint * 3 + axis


def _arm(side: str) -> tuple[int, int, int, float]:
    """(shoulder, elbow, wrist, abduction sign) of the left or right arm."""
    return (
        (L_SHOULDER, L_ELBOW, L_WRIST, 1.0) if side == "l" else (R_SHOULDER, R_ELBOW, R_WRIST, -1.0)
    )


def _leg(side: str) -> tuple[int, int]:
    return (L_HIP, L_KNEE) if side == "l" else (R_HIP, R_KNEE)


@dataclass(frozen=True)
class Primitive:
    """Joint-angle coefficients of one motion primitive.

    ``pose`` is scaled by the slot's envelope (raise, hold, lower); ``osc`` by the envelope
    times sin(2 pi f u + phase) and ``quad`` by the envelope times its cosine, u in [0, 1]
    being the normalised action time. Each maps a DOF index to radians (metres for the root
    translation).
    """

    name: str
    pose: dict[int, float]
    osc: dict[int, float]
    quad: dict[int, float]
    periodic: bool


def _primitive_table() -> list[Primitive]:
    prims: list[Primitive] = []

    def add(name: str, pose=None, osc=None, quad=None) -> None:
        prims.append(Primitive(name, pose or {}, osc or {}, quad or {}, bool(osc or quad)))

    for side in "lr":
        sh, el, _, ab = _arm(side)
        hip, knee = _leg(side)
        other_sh = _arm("r" if side == "l" else "l")[0]
        add(f"raise_{side}", pose={_dof(sh, X): -2.6, _dof(el, X): -0.2})
        add(
            f"wave_{side}",
            pose={_dof(sh, Z): 2.2 * ab, _dof(el, X): -1.3},
            osc={_dof(el, Z): 0.55 * ab, _dof(sh, Y): 0.2},
        )
        add(
            f"punch_{side}",
            pose={_dof(sh, X): -0.8, _dof(el, X): -0.9, _dof(SPINE, Y): 0.15 * ab},
            osc={_dof(sh, X): -0.7, _dof(el, X): 0.9, _dof(SPINE, Y): 0.2 * ab},
        )
        add(
            f"kick_{side}",
            pose={_dof(hip, X): -0.6, _dof(knee, X): 0.6},
            osc={_dof(hip, X): -0.6, _dof(knee, X): -0.5},
        )
        add(
            f"reach_{side}",
            pose={
                _dof(sh, X): -1.5,
                _dof(el, X): -0.1,
                _dof(SPINE, X): 0.35,
                _dof(sh, Y): 0.3 * ab,
            },
        )
        add(
            f"circle_{side}",
            pose={_dof(sh, X): -1.2, _dof(sh, Z): 0.4 * ab},
            osc={_dof(sh, X): -0.9},
            quad={_dof(sh, Z): 0.7 * ab},
        )
        add(
            f"throw_{side}",
            pose={_dof(sh, X): -1.6, _dof(el, X): -0.8},
            osc={_dof(sh, X): -1.1, _dof(el, X): 0.8, _dof(SPINE, Y): 0.35 * ab},
        )
        add(f"drink_{side}", pose={_dof(sh, X): -0.7, _dof(el, X): -2.1, _dof(NECK, X): -0.25})
        add(
            f"touch_head_{side}",
            pose={
                _dof(sh, Z): 1.2 * ab,
                _dof(sh, X): -1.3,
                _dof(el, X): -2.3,
                _dof(NECK, Z): -0.2 * ab,
            },
        )
        add(f"swing_{side}", osc={_dof(sh, X): -0.9, _dof(other_sh, X): 0.9, _dof(el, X): -0.3})
        add(
            f"lunge_{side}",
            pose={
                _dof(hip, X): -1.0,
                _dof(knee, X): 1.1,
                _dof(SPINE, X): 0.2,
                _dof(ROOT, Y): 0.3 * ab,
            },
        )
    add(
        "clap",
        pose={
            _dof(L_SHOULDER, X): -1.2,
            _dof(R_SHOULDER, X): -1.2,
            _dof(L_ELBOW, X): -0.6,
            _dof(R_ELBOW, X): -0.6,
        },
        osc={_dof(L_SHOULDER, Y): -0.45, _dof(R_SHOULDER, Y): 0.45},
    )
    add(
        "squat",
        pose={
            _dof(L_HIP, X): -1.4,
            _dof(R_HIP, X): -1.4,
            _dof(L_KNEE, X): 2.0,
            _dof(R_KNEE, X): 2.0,
            _dof(SPINE, X): 0.3,
            _dof(L_SHOULDER, X): -1.2,
            _dof(R_SHOULDER, X): -1.2,
        },
    )
    add("bow", pose={_dof(SPINE, X): 0.9, _dof(SPINE_TOP, X): 0.3, _dof(NECK, X): 0.2})
    add("twist", osc={_dof(SPINE, Y): 0.55, _dof(SPINE_TOP, Y): 0.2})
    add("side_bend", osc={_dof(SPINE, Z): 0.45, _dof(SPINE_TOP, Z): 0.15})
    add("nod", osc={_dof(NECK, X): 0.4})
    add("shake_head", osc={_dof(NECK, Y): 0.6})
    add(
        "step",
        osc={_dof(L_HIP, X): -0.45, _dof(R_HIP, X): 0.45},
        quad={_dof(L_KNEE, X): 0.55, _dof(R_KNEE, X): -0.55},
    )
    add(
        "jump",
        pose={
            _dof(L_KNEE, X): 0.5,
            _dof(R_KNEE, X): 0.5,
            _dof(L_HIP, X): -0.3,
            _dof(R_HIP, X): -0.3,
        },
        osc={ROOT_T + Y: 0.12, _dof(L_SHOULDER, X): -0.5, _dof(R_SHOULDER, X): -0.5},
    )
    add("turn", pose={_dof(ROOT, Y): 1.6})
    add(
        "sit",
        pose={
            _dof(L_HIP, X): -1.5,
            _dof(R_HIP, X): -1.5,
            _dof(L_KNEE, X): 1.5,
            _dof(R_KNEE, X): 1.5,
            ROOT_T + Z: -0.25,
        },
    )
    add(
        "arms_up",
        pose={_dof(L_SHOULDER, Z): 2.7, _dof(R_SHOULDER, Z): -2.7},
        osc={_dof(L_ELBOW, Z): 0.3, _dof(R_ELBOW, Z): -0.3},
    )
    add(
        "cross_arms",
        pose={
            _dof(L_SHOULDER, Y): -0.7,
            _dof(R_SHOULDER, Y): 0.7,
            _dof(L_ELBOW, X): -1.6,
            _dof(R_ELBOW, X): -1.6,
            _dof(L_SHOULDER, X): -0.5,
            _dof(R_SHOULDER, X): -0.5,
        },
    )
    add(
        "shrug",
        osc={_dof(SPINE_TOP, X): -0.12, _dof(L_SHOULDER, Z): 0.35, _dof(R_SHOULDER, Z): -0.35},
    )
    add("sway", osc={ROOT_T + X: 0.08, _dof(ROOT, Z): 0.12})
    return prims


PRIMITIVES = _primitive_table()
_PRIM_INDEX = {p.name: i for i, p in enumerate(PRIMITIVES)}
# Primitives a responding second actor uses in interaction classes.
_RESPONSES = (
    "reach_r",
    "reach_l",
    "bow",
    "step",
    "raise_r",
    "punch_r",
    "lunge_l",
    "turn",
    "cross_arms",
    "clap",
)


def _coef_matrix(field: str) -> np.ndarray:
    out = np.zeros((len(PRIMITIVES), NUM_DOF), np.float32)
    for i, p in enumerate(PRIMITIVES):
        for d, v in getattr(p, field).items():
            out[i, d] = v
    return out


POSE_COEF, OSC_COEF, QUAD_COEF = (_coef_matrix(f) for f in ("pose", "osc", "quad"))
PERIODIC = np.array([p.periodic for p in PRIMITIVES])
SLOTS = 3


@dataclass(frozen=True)
class ClassTable:
    """Per-class definition, arrays with a leading class axis (K) and slot axis (SLOTS=3).

    ``prim`` is -1 for an unused slot. Times are fractions of the action duration.
    """

    names: tuple[str, ...]
    prim: np.ndarray  # (K, SLOTS) int
    amp: np.ndarray  # (K, SLOTS)
    freq: np.ndarray  # (K, SLOTS) cycles per action
    phase: np.ndarray  # (K, SLOTS)
    start: np.ndarray  # (K, SLOTS)
    end: np.ndarray  # (K, SLOTS)
    base_frames: np.ndarray  # (K,)
    two_person: np.ndarray  # (K,) bool
    partner_prim: np.ndarray  # (K, 2) int, -1 unused
    partner_lag: np.ndarray  # (K,)
    partner_distance: np.ndarray  # (K,)


def make_class_table(num_classes: int, class_seed: int = 0) -> ClassTable:
    """Deterministic class definitions; the same ``class_seed`` gives the same classes for
    every dataset seed, so datasets drawn with different seeds share their label space."""
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be 1..{MAX_CLASSES}, got {num_classes}")
    rng = np.random.default_rng([class_seed, 7919])
    n_prim = len(PRIMITIVES)
    prim = np.full((num_classes, SLOTS), -1)
    seen: set[tuple] = set()
    names = []
    for k in range(num_classes):
        while True:
            count = rng.choice([1, 2, 2, 3])
            chosen = rng.choice(n_prim, size=count, replace=False)
            freq_band = int(rng.integers(1, 5))
            key = (tuple(sorted(chosen.tolist())), freq_band)
            if key not in seen:
                seen.add(key)
                break
        prim[k, :count] = chosen
        names.append(
            f"A{k + 1:03d} " + "+".join(PRIMITIVES[i].name for i in chosen) + f" f{freq_band}"
        )
    amp = rng.uniform(0.6, 1.15, prim.shape)
    amp[:, 1:] *= rng.uniform(0.5, 0.9, (num_classes, SLOTS - 1))
    band = np.array([int(n.rsplit("f", 1)[1]) for n in names])[:, None]
    freq = band * 0.9 + rng.uniform(0.0, 0.8, prim.shape)
    phase = rng.uniform(0, 2 * np.pi, prim.shape)
    start = rng.uniform(0.0, 0.3, prim.shape)
    end = np.minimum(start + rng.uniform(0.5, 0.95, prim.shape), 1.0)
    base_frames = rng.uniform(60, 180, num_classes)
    two_person = np.array([k in INTERACTION_CLASSES for k in range(num_classes)])
    partner = np.full((num_classes, 2), -1)
    for k in np.flatnonzero(two_person):
        picks = rng.choice(len(_RESPONSES), size=2, replace=False)
        partner[k, 0] = _PRIM_INDEX[_RESPONSES[picks[0]]]
        if rng.random() < 0.5:
            partner[k, 1] = _PRIM_INDEX[_RESPONSES[picks[1]]]
        names[k] += " | partner " + "+".join(PRIMITIVES[i].name for i in partner[k] if i >= 0)
    return ClassTable(
        tuple(names),
        prim,
        amp,
        freq,
        phase,
        start,
        end,
        base_frames,
        two_person,
        partner,
        rng.uniform(0.05, 0.3, num_classes),
        rng.uniform(0.7, 1.2, num_classes),
    )


@dataclass(frozen=True)
class Subjects:
    """Per-subject body: rest offsets (S, V, 3) in metres and posture bias (S, NUM_DOF)."""

    offsets: np.ndarray
    posture: np.ndarray
    sway_amp: np.ndarray  # (S,)
    vigour: np.ndarray  # (S,) how large this person's movements are


def make_subjects(num_subjects: int, seed: int) -> Subjects:
    rng = np.random.default_rng([seed, 104729])
    height = rng.uniform(1.5, 1.95, num_subjects)
    group_scale = rng.uniform(0.93, 1.07, (num_subjects, 5))
    offsets = np.zeros((num_subjects, V, 3), np.float32)
    for j, (vec, group) in _REST.items():
        offsets[:, j] = np.asarray(vec) * (height * group_scale[:, group])[:, None]
    posture = np.zeros((num_subjects, NUM_DOF), np.float32)
    posture[:, _dof(SPINE, X)] = rng.normal(0.05, 0.06, num_subjects)
    posture[:, _dof(NECK, X)] = rng.normal(0.0, 0.08, num_subjects)
    for sh, sign in ((L_SHOULDER, 1.0), (R_SHOULDER, -1.0)):
        posture[:, _dof(sh, Z)] = sign * rng.uniform(0.05, 0.25, num_subjects)
    posture[:, _dof(L_ELBOW, X)] = posture[:, _dof(R_ELBOW, X)] = -rng.uniform(
        0.05, 0.4, num_subjects
    )
    for hip, sign in ((L_HIP, 1.0), (R_HIP, -1.0)):
        posture[:, _dof(hip, Z)] = sign * rng.uniform(0.0, 0.12, num_subjects)
    return Subjects(
        offsets,
        posture,
        rng.uniform(0.04, 0.12, num_subjects).astype(np.float32),
        rng.uniform(0.7, 1.3, num_subjects).astype(np.float32),
    )


def _envelope(u: np.ndarray, start: np.ndarray, end: np.ndarray, ramp: float = 0.12) -> np.ndarray:
    """Smooth raise-hold-lower in [0, 1]: u (N, T), start/end (N,) -> (N, T)."""
    r = np.clip((end - start) / 2, 0.02, ramp)[:, None]
    up = np.clip((u - start[:, None]) / r, 0, 1)
    down = np.clip((end[:, None] - u) / r, 0, 1)
    s = np.minimum(up, down)
    return s * s * (3 - 2 * s)


def _slot_angles(
    u: np.ndarray,
    prim: np.ndarray,
    amp: np.ndarray,
    freq: np.ndarray,
    phase: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
) -> np.ndarray:
    """Angles (N, T, NUM_DOF) from primitive slots: prim/amp/... (N, S); u (N, T)."""
    out = np.zeros((*u.shape, NUM_DOF), np.float32)
    for s in range(prim.shape[1]):
        used = prim[:, s] >= 0
        if not used.any():
            continue
        p = np.where(used, prim[:, s], 0)
        gain = np.where(used, amp[:, s], 0.0)[:, None]
        env = _envelope(u, start[:, s], end[:, s]) * gain
        arg = 2 * np.pi * freq[:, s, None] * u + phase[:, s, None]
        osc, quad = env * np.sin(arg), env * np.cos(arg)
        out += env[..., None] * POSE_COEF[p][:, None]
        out += osc[..., None] * OSC_COEF[p][:, None]
        out += quad[..., None] * QUAD_COEF[p][:, None]
    return out


def forward_kinematics(angles: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Joint positions from local Euler angles.

    Args:
        angles: (N, T, NUM_DOF) local rotations (x, y, z radians per joint; R = Rz Ry Rx),
            then the root translation (3) in metres.
        offsets: (N, V, 3) rest offset of each joint from its parent.
    Returns:
        (N, T, V, 3) positions in the body frame, feet on the floor (y = 0) unless the root
        translation lifts them.
    """
    N, T, _ = angles.shape
    # Joint-major so that every per-joint slice below is contiguous.
    local = rotation_matrices(angles[..., :ROOT_T].reshape(N, T, V, 3).transpose(2, 0, 1, 3))
    glob = np.empty_like(local)  # (V, N, T, 3, 3)
    pos = np.zeros((V, N, T, 3), np.float32)
    for j in FK_ORDER:
        p = PARENT[j]
        if p < 0:
            glob[j] = local[j]
            continue
        glob[j] = glob[p] @ local[j]
        pos[j] = pos[p] + (glob[p] @ offsets[:, None, j, :, None])[..., 0]
    pos = pos.transpose(1, 2, 0, 3)
    # Keep the lowest foot joint on the floor, then add the explicit root translation (jumps).
    pos[..., Y] -= pos[:, :, FEET, Y].min(axis=2, keepdims=True)
    pos += angles[:, :, None, ROOT_T:]
    return pos


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. ``num_base_classes`` splits classes into those used for
    pre-training / supervised protocols (the first) and novel few-shot classes (the rest)."""

    num_classes: int = 120
    samples_per_class: int = 60
    num_base_classes: int = 60
    num_subjects: int = 40
    num_setups: int = 17
    seed: int = 0
    class_seed: int = 0
    t_max: int = 300
    jitter_m: float = 0.01
    occlusion_noise_m: float = 0.04
    dropped_frame_prob: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes must be in 1..{MAX_CLASSES}")
        if not 1 <= self.num_base_classes <= self.num_classes:
            raise ValueError("num_base_classes must be in 1..num_classes")
        if self.samples_per_class < 1 or self.num_subjects < 2:
            raise ValueError("need samples_per_class >= 1 and num_subjects >= 2")
        if self.t_max < 40:
            raise ValueError("t_max must be >= 40 (the shortest action)")


def split_names(spec: SyntheticSpec) -> list[str]:
    names = ["xsub_train", "xsub_test", "xview_train", "xview_test"]
    if spec.num_classes > spec.num_base_classes:
        names += ["fewshot_gallery", "fewshot_query"]
    return names


def _performances(spec: SyntheticSpec) -> dict[str, np.ndarray]:
    """Per-sample metadata and random parameters (one performance per sample)."""
    rng = np.random.default_rng([spec.seed, 15485863])
    per_class = spec.samples_per_class
    cls = np.repeat(np.arange(spec.num_classes), per_class)
    n = cls.size
    slot = np.tile(np.arange(per_class), spec.num_classes)
    # Spread each class's performances over subjects, set-ups and replications like NTU.
    subj_offset = rng.integers(0, spec.num_subjects, spec.num_classes)[cls]
    subject = (slot + subj_offset) % spec.num_subjects + 1
    replication = rng.integers(1, 3, n)
    return {
        "cls": cls,
        "slot": slot,
        "view": slot % 3 + 1,
        "subject": subject,
        "setup": rng.integers(1, spec.num_setups + 1, n),
        "replication": replication,
        "speed": rng.uniform(0.7, 1.3, n),
        "amp": rng.uniform(0.65, 1.35, (n, SLOTS)),
        "freq_jitter": rng.uniform(0.9, 1.1, (n, SLOTS)),
        "phase_jitter": rng.uniform(-np.pi, np.pi, (n, SLOTS)),
        "time_shift": rng.uniform(-0.15, 0.15, (n, SLOTS)),
        # Like NTU, replication 1 faces the left camera and replication 2 the right one.
        "facing": np.deg2rad(np.where(replication == 1, 45.0, -45.0) + rng.uniform(-15, 15, n)),
        "cam_height": rng.uniform(-0.3, 0.3, n),
        "cam_pitch": np.deg2rad(rng.uniform(-10, 10, n)),
        "sway_seed": rng.integers(0, 2**31, n),
    }


def _sway(rng: np.random.Generator, n: int, frames: int, amp: np.ndarray) -> np.ndarray:
    """Low-frequency idle sway on every rotational DOF: (n, frames, NUM_DOF)."""
    t = np.arange(frames, dtype=np.float32)[None, :, None] / 30.0
    out = np.zeros((n, frames, NUM_DOF), np.float32)
    for _ in range(2):
        f = rng.uniform(0.1, 0.6, (n, 1, ROOT_T)).astype(np.float32)
        ph = rng.uniform(0, 2 * np.pi, (n, 1, ROOT_T)).astype(np.float32)
        out[..., :ROOT_T] += np.sin(2 * np.pi * f * t + ph)
    return out * amp[:, None, None]


def _pose_chunk(
    spec: SyntheticSpec,
    table: ClassTable,
    subjects: Subjects,
    perf: dict[str, np.ndarray],
    idx: np.ndarray,
    frames: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """World-frame joints of performances ``idx``: (n, M=2, T_chunk, V, 3)."""
    n, T = idx.size, int(frames.max())
    cls = perf["cls"][idx]
    subj = perf["subject"][idx] - 1
    t = np.arange(T, dtype=np.float32)[None]
    u = np.clip(t / (frames[:, None] - 1), 0, 1).astype(np.float32)
    shift = perf["time_shift"][idx]
    angles = _slot_angles(
        u,
        table.prim[cls],
        table.amp[cls] * perf["amp"][idx] * subjects.vigour[subj][:, None],
        table.freq[cls] * perf["freq_jitter"][idx],
        table.phase[cls] + perf["phase_jitter"][idx],
        np.clip(table.start[cls] + shift, 0, 0.5),
        np.clip(table.end[cls] + shift, 0.5, 1.0),
    )
    angles += subjects.posture[subj][:, None]
    angles += _sway(rng, n, T, subjects.sway_amp[subj])
    bodies = np.zeros((n, 2, T, V, 3), np.float32)
    bodies[:, 0] = forward_kinematics(angles, subjects.offsets[subj])

    pair = np.flatnonzero(table.two_person[cls])
    if pair.size:
        k = cls[pair]
        # The partner is another subject, facing actor 1, responding after a class-specific lag.
        partner_subj = (subj[pair] + 7) % spec.num_subjects
        lag = table.partner_lag[k][:, None]
        u2 = np.clip(u[pair] - lag, 0, 1)
        slots = np.full((pair.size, SLOTS), -1)
        slots[:, :2] = table.partner_prim[k]
        ones = np.ones((pair.size, SLOTS))
        a2 = _slot_angles(
            u2,
            slots,
            0.9 * ones,
            table.freq[k],
            table.phase[k] + 1.0,
            np.full_like(ones, 0.1),
            np.full_like(ones, 0.9),
        )
        a2 += subjects.posture[partner_subj][:, None]
        a2 += _sway(rng, pair.size, T, subjects.sway_amp[partner_subj])
        p2 = forward_kinematics(a2, subjects.offsets[partner_subj])
        turn = rotation_matrices(
            np.stack([np.zeros(pair.size), np.full(pair.size, np.pi), np.zeros(pair.size)], 1)
        )
        p2 = rotate(p2, turn)
        p2[..., Z] += table.partner_distance[k][:, None, None]
        bodies[pair, 1] = p2
    return bodies


def _camera_view(bodies: np.ndarray, perf: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
    """Body-frame joints seen from each sample's camera: Kinect axes (x right, y up, z away).

    bodies (n, M, T, V, 3) -> same shape.
    """
    n = idx.size
    yaw = np.deg2rad(VIEW_YAW[perf["view"][idx]]) + perf["facing"][idx] + np.pi
    angles = np.stack([perf["cam_pitch"][idx], yaw, np.zeros(n)], 1)
    out = rotate(bodies, rotation_matrices(angles))
    out[..., Y] += perf["cam_height"][idx][:, None, None, None]
    out[..., Z] += 3.0
    return out


def _drift(
    shape: tuple[int, ...], rng: np.random.Generator, scale: float, every: int
) -> np.ndarray:
    """Slowly varying noise (n, M, T, V, 3): Gaussian knots every ``every`` frames, linearly
    interpolated, so frame-to-frame differences stay small as in a smoothed sensor stream."""
    n, M, T, V, C = shape
    knots = rng.normal(0, scale, (n, M, T // every + 2, V, C)).astype(np.float32)
    pos = np.arange(T, dtype=np.float32) / every
    i0 = pos.astype(np.int64)
    w = (pos - i0)[None, None, :, None, None]
    return knots[:, :, i0] * (1 - w) + knots[:, :, i0 + 1] * w


def _occlusion_noise(seen: np.ndarray, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Kinect-like tracking error on joints hidden behind the body (farther from the camera
    than the spine by > 8 cm): drifting offsets of ``scale`` metres. seen (n, M, T, V, 3)."""
    hidden = (seen[..., Z] - seen[..., SPINE, None, Z]) > 0.08
    return _drift(seen.shape, rng, scale, every=8) * hidden[..., None]


def _sensor_noise(shape: tuple[int, ...], rng: np.random.Generator, scale: float) -> np.ndarray:
    """Sensor jitter of about ``scale`` metres. Kinect's skeleton stream is smoothed, so the
    error is mostly temporally correlated (knots every 4 frames) with a small white part;
    white noise of the full size would dominate every frame-to-frame motion target."""
    white = rng.normal(0, 0.2 * scale, shape).astype(np.float32)
    return _drift(shape, rng, scale, every=4) + white


def generate(spec: SyntheticSpec, chunk_size: int = 256) -> Iterator[Sample]:
    """Yield every sample of the dataset, deterministically, in order of duration chunks.

    Joints are (T, 2, 25, 3) float32, centred on actor 1's spine mid in the first frame,
    actor 2 zero for one-person classes.
    """
    table = make_class_table(spec.num_classes, spec.class_seed)
    subjects = make_subjects(spec.num_subjects, spec.seed)
    perf = _performances(spec)
    cls = perf["cls"]
    frames = np.clip(np.round(table.base_frames[cls] / perf["speed"]), 40, spec.t_max)
    frames = frames.astype(np.int64)
    order = np.argsort(frames, kind="stable")
    xsub_train = set(NTU60_XSUB_TRAIN)
    for lo in range(0, order.size, chunk_size):
        idx = np.sort(order[lo : lo + chunk_size])
        rng = np.random.default_rng([spec.seed, 2, int(lo)])
        bodies = _pose_chunk(spec, table, subjects, perf, idx, frames[idx], rng)
        seen = _camera_view(bodies, perf, idx)
        seen += _sensor_noise(seen.shape, rng, spec.jitter_m)
        seen += _occlusion_noise(seen, rng, spec.occlusion_noise_m)
        seen -= seen[:, 0, 0, SPINE][:, None, None, None]
        for row, p in enumerate(idx):
            k, T = int(cls[p]), int(frames[p])
            x = seen[row, :, :T].transpose(1, 0, 2, 3).copy()
            if not table.two_person[k]:
                x[:, 1] = 0.0
            if rng.random() < spec.dropped_frame_prob:
                drop = rng.integers(1, T - 1, size=int(rng.integers(1, 4)))
                x[drop] = 0.0
            subject, view = int(perf["subject"][p]), int(perf["view"][p])
            setup, rep = int(perf["setup"][p]), int(perf["replication"][p])
            yield Sample(
                sample_id=f"S{setup:03d}C{view:03d}P{subject:03d}R{rep:03d}A{k + 1:03d}"
                f"N{int(p):05d}",
                joints=x,
                label=k,
                subject=subject,
                view=view,
                setup=setup,
                replication=rep,
                splits=_splits_of(k, subject, view, spec, xsub_train),
            )


def _splits_of(
    label: int, subject: int, view: int, spec: SyntheticSpec, xsub_train: set[int]
) -> frozenset[str]:
    if label >= spec.num_base_classes:
        return frozenset({"fewshot_gallery" if subject in xsub_train else "fewshot_query"})
    return frozenset(
        {
            "xsub_train" if subject in xsub_train else "xsub_test",
            "xview_train" if view in XVIEW_TRAIN_VIEWS else "xview_test",
        }
    )


def dataset_spec(spec: SyntheticSpec) -> DatasetSpec:
    """Class names, splits, protocols and the recording (the generator and its spec)."""
    table = make_class_table(spec.num_classes, spec.class_seed)
    fewshot = None
    if spec.num_classes > spec.num_base_classes:
        fewshot = {
            "gallery": "fewshot_gallery",
            "query": "fewshot_query",
            "classes": list(range(spec.num_base_classes, spec.num_classes)),
            "pretrain_split": "xsub_train",
        }
    return DatasetSpec(
        layout=NTU25,
        class_names=list(table.names),
        split_names=split_names(spec),
        t_max=spec.t_max,
        protocols={
            "xsub": {"train": "xsub_train", "test": "xsub_test"},
            "xview": {"train": "xview_train", "test": "xview_test"},
        },
        default_protocol="xsub",
        fewshot=fewshot,
        recording={
            "format": "synthetic",
            "generator": "stars.data.synthetic",
            "generator_version": GENERATOR_VERSION,
            "spec": {k: getattr(spec, k) for k in spec.__dataclass_fields__},
        },
    )
