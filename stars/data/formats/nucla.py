"""Northwestern-UCLA (``all_sqe`` JSON): 20 Kinect-v1 joints, one person, 10 classes.

Kept at V=20 natively (layout ``kinect20``) or mapped to the NTU layout. Protocols: cross-view
(views 1-2 train, 3 test; the default) and cross-subject (``train_subjects``, 1-5 by default).
Single-frame sequences are kept: the standard protocol counts them (1,020 / 464).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stars.data.formats.convert import (
    ConversionResult,
    ConvertOptions,
    Parsed,
    Rejected,
    run_conversion,
)
from stars.data.shards import DatasetSpec, Sample
from stars.skeleton import KINECT20, NTU25, kinect20_to_ntu25

NAME_RE = re.compile(r"a(\d+)_s(\d+)_e(\d+)_v(\d+)")
CLASS_NAMES = (
    "pick up with one hand",
    "pick up with two hands",
    "drop trash",
    "walk around",
    "sit down",
    "stand up",
    "donning",
    "doffing",
    "throw",
    "carry",
)
XVIEW_TRAIN_VIEWS = (1, 2)
DEFAULT_TRAIN_SUBJECTS = (1, 2, 3, 4, 5)


def numeric_array(value: object) -> np.ndarray:
    """A nested list of JSON numbers as float64, refusing what numpy would coerce silently
    (``true`` becomes 1.0) and ragged or non-numeric nesting."""
    try:
        cells = np.asarray(value, dtype=object)
    except ValueError:
        raise Rejected("ragged skeleton array") from None
    flat = cells.reshape(-1)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat):
        raise Rejected("skeletons hold a value that is not a number (true/false/null/text/list)")
    try:
        return np.asarray(flat, dtype=np.float64).reshape(cells.shape)
    except OverflowError:
        raise Rejected("a coordinate is too large to be a number") from None


def parse_file(
    path: str, map_to_ntu: bool = False, train_subjects: Sequence[int] = DEFAULT_TRAIN_SUBJECTS
) -> Parsed:
    name = Path(path).stem
    match = NAME_RE.fullmatch(name)
    if match is None:
        raise Rejected("file name does not match aAA_sSS_eEE_vVV")
    _, subject, episode, view = (int(g) for g in match.groups())
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise Rejected(f"not a readable file ({err.strerror or type(err).__name__})") from None
    except RecursionError:
        raise Rejected("JSON nested too deeply") from None
    except ValueError as err:  # invalid JSON, bad encoding, numbers past Python's digit limit
        raise Rejected(f"truncated or invalid JSON ({type(err).__name__})") from None
    if not isinstance(record, dict) or "skeletons" not in record or "label" not in record:
        raise Rejected("JSON lacks 'skeletons' or 'label'")
    label = record["label"]
    if isinstance(label, bool) or not isinstance(label, int) or not 1 <= label <= len(CLASS_NAMES):
        raise Rejected(f"unknown label {label!r}")
    x = numeric_array(record["skeletons"])
    if x.ndim != 3 or x.shape[1:] != (20, 3):
        raise Rejected(f"wrong joint count: skeletons have shape {x.shape}, expected (T, 20, 3)")
    if len(x) == 0:
        raise Rejected("zero-length sequence")
    if not np.isfinite(x).all():
        raise Rejected("NaN/inf joint coordinates")
    x = x.astype(np.float32)
    if map_to_ntu:
        x = kinect20_to_ntu25(x)
    x = x - x[0, 1]  # centre on the spine (NTU's spine mid) of the first frame
    if not np.isfinite(x).all():  # a float64 value beyond float32's range became inf
        raise Rejected("joint coordinates beyond float32's range")
    splits = {
        "xview_train" if view in XVIEW_TRAIN_VIEWS else "xview_test",
        "xsub_train" if subject in train_subjects else "xsub_test",
    }
    return Parsed(
        [
            Sample(
                name,
                x[:, None],
                label - 1,
                subject=subject,
                view=view,
                replication=episode,
                splits=splits,
            )
        ]
    )


def convert_nucla(
    source: str | Path,
    out_dir: str | Path,
    *,
    map_to_ntu: bool = False,
    train_subjects: Sequence[int] = DEFAULT_TRAIN_SUBJECTS,
    t_max: int = 300,
    strict: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> ConversionResult:
    files = sorted(Path(source).rglob("*.json"))
    if not files:
        raise FileNotFoundError(f"no .json files under {source}")
    spec = DatasetSpec(
        layout=NTU25 if map_to_ntu else KINECT20,
        class_names=list(CLASS_NAMES),
        split_names=["xview_train", "xview_test", "xsub_train", "xsub_test"],
        num_bodies=1,
        t_max=t_max,
        protocols={
            "xview": {"train": "xview_train", "test": "xview_test"},
            "xsub": {"train": "xsub_train", "test": "xsub_test"},
        },
        default_protocol="xview",
        recording={
            "format": "nucla",
            "path": str(source),
            "map_to_ntu": map_to_ntu,
            "train_subjects": list(train_subjects),
        },
    )
    parse = functools.partial(
        parse_file, map_to_ntu=map_to_ntu, train_subjects=tuple(train_subjects)
    )
    items = [(f.name, str(f)) for f in files]
    options = ConvertOptions(strict, workers, progress, desc="n-ucla")
    return run_conversion(out_dir, spec, items, parse, options)
