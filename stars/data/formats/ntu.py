"""NTU RGB+D 60/120 raw ``.skeleton`` files: parser, the standard cleaning, splits.

The cleaning is the CTR-GCN / MAMP pipeline (docs/method.md §2): drop bodies tracked for 11
frames or fewer; with two or more bodies left, drop a body whose frames are mostly "noisy"
(x-spread > 0.8 y-spread in >= 69.754 % of its frames); rank bodies by motion; the most active
is actor 1, the others fill actor 1's slot where it is absent and actor 2's otherwise; remove
frames where every joint is zero; centre on actor 1's spine mid in the first frame; pad to
300 frames.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stars.data.formats.convert import (
    ConversionResult,
    ConvertOptions,
    Parsed,
    Rejected,
    run_conversion,
)
from stars.data.shards import DatasetSpec, Sample, read_text_input
from stars.skeleton import NTU25

NAME_RE = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")
T_MAX = 300
NUM_JOINTS = 25
VALUES_PER_JOINT = 12
BODY_INFO_VALUES = 10
MIN_BODY_FRAMES = 11  # bodies tracked for this many frames or fewer are noise
SPREAD_RATIO = 0.8
NOISY_FRAME_FRACTION = 0.69754

NTU60_XSUB_TRAIN = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
NTU120_XSUB_TRAIN = (
    *NTU60_XSUB_TRAIN,
    45,
    46,
    47,
    49,
    50,
    52,
    53,
    54,
    55,
    56,
    57,
    58,
    59,
    70,
    74,
    78,
    80,
    81,
    82,
    83,
    84,
    85,
    86,
    89,
    91,
    92,
    93,
    94,
    95,
    97,
    98,
    100,
    103,
)
NTU60_XVIEW_TRAIN_CAMERAS = (2, 3)

ACTION_NAMES = (
    "drink water",
    "eat meal/snack",
    "brushing teeth",
    "brushing hair",
    "drop",
    "pickup",
    "throw",
    "sitting down",
    "standing up",
    "clapping",
    "reading",
    "writing",
    "tear up paper",
    "wear jacket",
    "take off jacket",
    "wear a shoe",
    "take off a shoe",
    "wear on glasses",
    "take off glasses",
    "put on a hat/cap",
    "take off a hat/cap",
    "cheer up",
    "hand waving",
    "kicking something",
    "reach into pocket",
    "hopping",
    "jump up",
    "make a phone call",
    "playing with phone/tablet",
    "typing on a keyboard",
    "pointing to something with finger",
    "taking a selfie",
    "check time (from watch)",
    "rub two hands together",
    "nod head/bow",
    "shake head",
    "wipe face",
    "salute",
    "put the palms together",
    "cross hands in front",
    "sneeze/cough",
    "staggering",
    "falling",
    "touch head (headache)",
    "touch chest",
    "touch back (backache)",
    "touch neck (neckache)",
    "nausea or vomiting",
    "use a fan / feeling warm",
    "punching/slapping other person",
    "kicking other person",
    "pushing other person",
    "pat on back of other person",
    "point finger at the other person",
    "hugging other person",
    "giving something to other person",
    "touch other person's pocket",
    "handshaking",
    "walking towards each other",
    "walking apart from each other",
    "put on headphone",
    "take off headphone",
    "shoot at the basket",
    "bounce ball",
    "tennis bat swing",
    "juggling table tennis balls",
    "hush (quite)",
    "flick hair",
    "thumb up",
    "thumb down",
    "make ok sign",
    "make victory sign",
    "staple book",
    "counting money",
    "cutting nails",
    "cutting paper (using scissors)",
    "snapping fingers",
    "open bottle",
    "sniff (smell)",
    "squat down",
    "toss a coin",
    "fold paper",
    "ball up paper",
    "play magic cube",
    "apply cream on face",
    "apply cream on hand back",
    "put on bag",
    "take off bag",
    "put something into a bag",
    "take something out of a bag",
    "open a box",
    "move heavy objects",
    "shake fist",
    "throw up cap/hat",
    "hands up (both hands)",
    "cross arms",
    "arm circles",
    "arm swings",
    "running on the spot",
    "butt kicks (kick backward)",
    "cross toe touch",
    "side kick",
    "yawn",
    "stretch oneself",
    "blow nose",
    "hit other person with something",
    "wield knife towards other person",
    "knock over other person (hit with body)",
    "grab other person's stuff",
    "shoot at other person with a gun",
    "step on foot",
    "high-five",
    "cheers and drink",
    "carry something with other person",
    "take a photo of other person",
    "follow other person",
    "whisper in other person's ear",
    "exchange things with other person",
    "support somebody with hand",
    "finger-guessing game (rock-paper-scissors)",
)


@dataclass(frozen=True)
class NtuName:
    setup: int
    camera: int
    performer: int
    replication: int
    action: int  # 1-based

    @property
    def sample_id(self) -> str:
        return (
            f"S{self.setup:03d}C{self.camera:03d}P{self.performer:03d}"
            f"R{self.replication:03d}A{self.action:03d}"
        )


def parse_name(name: str) -> NtuName:
    match = NAME_RE.search(name)
    if match is None:
        raise Rejected("file name does not match SsssCcccPpppRrrrAaaa")
    return NtuName(*(int(g) for g in match.groups()))


def parse_skeleton_text(text: str) -> tuple[int, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Parse the text of a ``.skeleton`` file (LF or CRLF).

    Returns:
        (frame count, {body id: (frame indices (n,), joints (n, 25, 3) float32)}).
    Raises:
        Rejected: truncated file, non-numeric token, wrong joint count, inconsistent counts.
    """
    tokens = text.split()
    if not tokens:
        raise Rejected("empty file")
    ntok = len(tokens)

    def int_at(i: int, what: str) -> int:
        if i >= ntok:
            raise Rejected(f"truncated file (ends before the {what})")
        try:
            return int(tokens[i])
        except ValueError:
            raise Rejected(
                f"non-numeric token {tokens[i][:20]!r} where the {what} should be"
            ) from None

    num_frames = int_at(0, "frame count")
    if num_frames < 0:
        raise Rejected(f"negative frame count {num_frames}")
    pos = 1
    starts: list[int] = []
    frame_of: list[int] = []
    body_of: list[str] = []
    for frame in range(num_frames):
        num_bodies = int_at(pos, f"body count of frame {frame}")
        if not 0 <= num_bodies <= 6:
            raise Rejected(
                f"body count {num_bodies} in frame {frame} is inconsistent with the "
                "lines that follow"
            )
        pos += 1
        for _ in range(num_bodies):
            if pos >= ntok:
                raise Rejected(f"truncated file (ends in frame {frame})")
            body_id = tokens[pos]
            joints = int_at(pos + BODY_INFO_VALUES, f"joint count of frame {frame}")
            if joints != NUM_JOINTS:
                raise Rejected(f"wrong joint count {joints} in frame {frame} (expected 25)")
            start = pos + BODY_INFO_VALUES + 1
            pos = start + NUM_JOINTS * VALUES_PER_JOINT
            if pos > ntok:
                raise Rejected(f"truncated file (ends inside frame {frame})")
            starts.append(start)
            frame_of.append(frame)
            body_of.append(body_id)
    if pos != ntok:
        raise Rejected(
            f"body count inconsistent with lines: {ntok - pos} values left after "
            f"frame {num_frames - 1}"
        )
    if not starts:
        return num_frames, {}
    idx = (
        np.asarray(starts)[:, None, None]
        + np.arange(NUM_JOINTS)[None, :, None] * VALUES_PER_JOINT
        + np.arange(3)[None, None, :]
    )
    try:
        xyz = np.array(tokens, dtype=object)[idx].astype(np.float64)
    except ValueError:
        raise Rejected("non-numeric token in joint coordinates") from None
    if not np.isfinite(xyz).all():
        raise Rejected("NaN/inf joint coordinates")
    xyz = xyz.astype(np.float32)
    frames = np.asarray(frame_of)
    bodies: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    ids = np.asarray(body_of)
    for body_id in dict.fromkeys(body_of):
        sel = ids == body_id
        bodies[body_id] = (frames[sel], xyz[sel])
    return num_frames, bodies


def _motion(joints: np.ndarray) -> float:
    return float(np.var(joints.reshape(-1, 3), axis=0).sum())


def _noisy_frames(joints: np.ndarray) -> np.ndarray:
    """Frames whose x-spread exceeds 0.8 x the y-spread. joints (n, 25, 3) -> (n,) bool."""
    spread = joints.max(axis=1) - joints.min(axis=1)
    return spread[:, 0] > SPREAD_RATIO * spread[:, 1]


def clean(
    num_frames: int, bodies: dict[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, int, Counter]:
    """The standard cleaning. Returns ((T, 2, 25, 3) float32 centred, actors, counters)."""
    stats: Counter = Counter()
    kept = {}
    for body_id, (frames, joints) in bodies.items():
        if len(frames) <= MIN_BODY_FRAMES:
            stats["bodies dropped: tracked <= 11 frames"] += 1
        else:
            kept[body_id] = (frames, joints)
    if not kept:
        raise Rejected("no body tracked for more than 11 frames")
    motion = {b: _motion(j) for b, (_, j) in kept.items()}
    if len(kept) > 1:
        for body_id, (_, joints) in list(kept.items()):
            noisy = _noisy_frames(joints)
            if not noisy.any():
                continue
            if noisy.mean() >= NOISY_FRAME_FRACTION:
                stats["bodies dropped: spread (noisy frames >= 69.754 %)"] += 1
                del kept[body_id]
                if len(kept) == 1:
                    break
            else:
                motion[body_id] = min(motion[body_id], _motion(joints[~noisy]))
    order = sorted(kept, key=lambda b: motion[b], reverse=True)
    out = np.zeros((num_frames, 2, NUM_JOINTS, 3), np.float32)
    first_frames, first_joints = kept[order[0]]
    out[first_frames, 0] = first_joints
    span1 = [first_frames[0], first_frames[-1]]
    span2 = [0, 0]
    for body_id in order[1:]:
        frames, joints = kept[body_id]
        start, end = frames[0], frames[-1]
        if min(span1[1], end) - max(span1[0], start) <= 0:  # no overlap with actor 1
            out[frames, 0] = joints
            span1 = [min(start, span1[0]), max(end, span1[1])]
            stats["bodies merged into actor 1"] += 1
        elif min(span2[1], end) - max(span2[0], start) <= 0:
            out[frames, 1] = joints
            span2 = [min(start, span2[0]), max(end, span2[1])]
        else:
            stats["bodies dropped: overlap both actors"] += 1
    present = np.abs(out).reshape(num_frames, -1).max(axis=1) > 0
    if (~present).any():
        stats["frames removed: all joints zero"] += int((~present).sum())
    out = out[present]
    if len(out) == 0:
        raise Rejected("all-zero sequence")
    actor_present = np.abs(out).max(axis=(2, 3)) > 0  # (T, 2)
    origin = out[np.argmax(actor_present[:, 0]), 0, 1].copy()
    out -= origin * actor_present[:, :, None, None]
    return out, int(actor_present.any(axis=0).sum()), stats


@dataclass(frozen=True)
class NtuOptions:
    variant: str  # "ntu60" or "ntu120"
    min_frames: int = 2


def splits_for(name: NtuName, variant: str) -> set[str]:
    splits = set()
    in_ntu60 = name.setup <= 17 and name.action <= 60
    if variant == "ntu60":
        splits.add("xsub_train" if name.performer in NTU60_XSUB_TRAIN else "xsub_test")
        splits.add("xview_train" if name.camera in NTU60_XVIEW_TRAIN_CAMERAS else "xview_test")
        return splits
    xsub_train = name.performer in NTU120_XSUB_TRAIN
    splits.add("xsub_train" if xsub_train else "xsub_test")
    splits.add("xset_train" if name.setup % 2 == 0 else "xset_test")
    if in_ntu60:  # the few-shot protocol pre-trains on NTU-60 x-sub ...
        splits.add("ntu60_xsub_train" if name.performer in NTU60_XSUB_TRAIN else "ntu60_xsub_test")
    if name.action > 60:  # ... and evaluates on NTU-120 x-sub samples of actions 61-120
        splits.add("fewshot_gallery" if xsub_train else "fewshot_query")
    return splits


def split_names(variant: str) -> list[str]:
    if variant == "ntu60":
        return ["xsub_train", "xsub_test", "xview_train", "xview_test"]
    return [
        "xsub_train",
        "xsub_test",
        "xset_train",
        "xset_test",
        "ntu60_xsub_train",
        "ntu60_xsub_test",
        "fewshot_gallery",
        "fewshot_query",
    ]


def parse_file(path: str, options: NtuOptions) -> Parsed:
    """One ``.skeleton`` file -> one cleaned sample (or Rejected)."""
    name = parse_name(Path(path).name)
    limit = 60 if options.variant == "ntu60" else 120
    if not 1 <= name.action <= limit:
        raise Rejected(f"unknown label: action {name.action} outside 1..{limit}")
    try:
        text = Path(path).read_text(encoding="ascii", errors="strict")
    except UnicodeDecodeError:
        raise Rejected("non-numeric token (file is not ASCII text)") from None
    except OSError as err:
        raise Rejected(f"unreadable ({err.strerror})") from None
    num_frames, bodies = parse_skeleton_text(text)
    if num_frames == 0 or not bodies:
        raise Rejected("no skeleton in any frame")
    joints, actors, stats = clean(num_frames, bodies)
    if len(joints) < options.min_frames:
        raise Rejected(f"single-frame sequence ({len(joints)} frame after cleaning)")
    if len(joints) > T_MAX:
        raise Rejected(f"{len(joints)} frames exceed the NTU maximum of {T_MAX}")
    sample = Sample(
        name.sample_id,
        joints[:, : max(actors, 1)],
        name.action - 1,
        subject=name.performer,
        view=name.camera,
        setup=name.setup,
        replication=name.replication,
        splits=splits_for(name, options.variant),
    )
    return Parsed([sample], [], stats)


def read_exclusion_list(path: str | Path) -> set[str]:
    """Sample names (one per line, e.g. the published missing-skeleton lists)."""
    names = set()
    for line in read_text_input(path, "exclusion list").splitlines():
        match = NAME_RE.search(line)
        if match:
            names.add(match.group(0))
    return names


def convert_ntu(
    source: str | Path,
    out_dir: str | Path,
    *,
    variant: str | None = None,
    exclude: Sequence[str] | set[str] = (),
    strict: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> ConversionResult:
    """Convert a directory of ``.skeleton`` files (searched recursively)."""
    files = sorted(Path(source).rglob("*.skeleton"))
    if not files:
        raise FileNotFoundError(f"no .skeleton files under {source}")
    if variant is None:
        names = [NAME_RE.search(f.name) for f in files]
        big = any(m and (int(m.group(1)) > 17 or int(m.group(5)) > 60) for m in names)
        variant = "ntu120" if big else "ntu60"
    if variant not in ("ntu60", "ntu120"):
        raise ValueError(f"variant must be ntu60 or ntu120, got {variant!r}")
    excluded = set(exclude)
    keep = [f for f in files if f.stem not in excluded]
    skipped = [
        (f.name, "excluded (listed as missing skeleton)") for f in files if f.stem in excluded
    ]
    num_classes = 60 if variant == "ntu60" else 120
    protocols = (
        {
            "xsub": {"train": "xsub_train", "test": "xsub_test"},
            "xview": {"train": "xview_train", "test": "xview_test"},
        }
        if variant == "ntu60"
        else {
            "xsub": {"train": "xsub_train", "test": "xsub_test"},
            "xset": {"train": "xset_train", "test": "xset_test"},
            "ntu60_xsub": {"train": "ntu60_xsub_train", "test": "ntu60_xsub_test"},
        }
    )
    fewshot = (
        None
        if variant == "ntu60"
        else {
            "gallery": "fewshot_gallery",
            "query": "fewshot_query",
            "classes": list(range(60, 120)),
            "pretrain_split": "ntu60_xsub_train",
        }
    )
    spec = DatasetSpec(
        layout=NTU25,
        class_names=list(ACTION_NAMES[:num_classes]),
        split_names=split_names(variant),
        t_max=T_MAX,
        protocols=protocols,
        default_protocol="xsub",
        fewshot=fewshot,
        recording={
            "format": "ntu",
            "variant": variant,
            "path": str(source),
            "files": len(files),
            "excluded": len(skipped),
        },
    )
    parse = functools.partial(parse_file, options=NtuOptions(variant))
    items = [(f.name, str(f)) for f in keep]
    options = ConvertOptions(strict, workers, progress, desc=f"ntu ({variant})")
    return run_conversion(out_dir, spec, items, parse, options, refused=skipped)
