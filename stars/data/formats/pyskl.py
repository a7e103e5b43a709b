"""pyskl / MMAction2 skeleton annotation pickles (``ntu60_3danno.pkl``, ``ntu120_3danno.pkl``).

The file is one pickled dict::

    {"split": {"xsub_train": [frame_dir, ...], "xsub_val": [...], ...},
     "annotations": [{"frame_dir": "S001C001P001R001A001", "label": 0,
                      "keypoint": (M, T, V, C) float, "total_frames": T, ...}, ...]}

3D files (C = 3) become shards. 2D files (C = 2 with ``keypoint_score``, e.g.
``ntu60_hrnet.pkl``) are refused as a whole, by name: every STARS stage works on 3D joints —
stage 1 predicts 3D motion, stage 2 and each protocol encode (T, M, V, 3) — so a 2D import
would produce a dataset no job could train on.

Splits: each ``<name>_val`` list becomes ``<name>_test`` (the name every other importer and
the recipes use); each ``<name>_train`` / ``<name>_test`` pair is a protocol. For NTU-120
files the paper's few-shot splits are derived from the sample names, as the ``ntu`` importer
does. Two incompatible versions of the NTU files circulate, so the manifest keeps the file's
SHA-256 and the split sizes it declared.

Unpickling runs through :class:`AnnotationUnpickler`, which resolves only the globals such a
file holds (numpy arrays, dtypes and scalars); any other global is refused by name before
anything from the file is executed.
"""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from stars.data.formats.convert import (
    ConversionResult,
    ConvertOptions,
    Parsed,
    Rejected,
    run_conversion,
)
from stars.data.formats.ntu import ACTION_NAMES, NAME_RE, splits_for
from stars.data.formats.ntu import NtuName as _NtuName
from stars.data.shards import DataError, DatasetSpec, Sample, sha256_file
from stars.skeleton import NTU25, generic_layout

# (module, name) pairs a pyskl annotation file needs: numpy's array and scalar reconstructors
# under both numpy 1 and numpy 2 module names, and the str -> bytes helper protocol-2 pickles
# (what mmcv writes) use for array buffers. Nothing here can run code from the file.
ALLOWED_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }
)


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a global outside :data:`ALLOWED_GLOBALS`."""


class AnnotationUnpickler(pickle.Unpickler):
    """A pickle reader that resolves only :data:`ALLOWED_GLOBALS` (and numpy's dtype classes,
    ``numpy.dtypes.*DType``, which numpy 2 may name)."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = (module, name) in ALLOWED_GLOBALS or (
            module == "numpy.dtypes" and name.endswith("DType") and name.isidentifier()
        )
        if not allowed:
            raise ForbiddenGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def load_annotation_file(path: str | Path) -> dict[str, Any]:
    """The annotation dict of a pyskl pickle, read with :class:`AnnotationUnpickler`.

    Raises:
        DataError naming the file: unreadable, truncated, a forbidden global, or not the
        pyskl layout (a dict with ``annotations``).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = AnnotationUnpickler(fh).load()
    except ForbiddenGlobal as err:
        raise DataError(
            f"{path}: refused: the pickle asks for {err}, which a pyskl annotation file never "
            "holds (only numpy arrays, dtypes and plain Python values are read); "
            "nothing from the file was executed"
        ) from None
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror or err})") from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError) as err:
        truncated = isinstance(err, EOFError) or "truncated" in str(err)
        kind = "truncated" if truncated else "damaged"
        raise DataError(
            f"{path}: {kind} pickle ({type(err).__name__}: {str(err)[:120] or 'no message'})"
        ) from None
    except MemoryError:
        raise DataError(f"{path}: the pickle does not fit in memory on this machine") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        got = type(data).__name__ if not isinstance(data, dict) else f"keys {sorted(data)[:8]}"
        raise DataError(
            f"{path}: not a pyskl annotation file (expected a dict with 'annotations' and "
            f"'split', got {got})"
        )
    if not isinstance(data.get("split", {}), dict):
        raise DataError(f"{path}: 'split' is a {type(data['split']).__name__}, expected a dict")
    return data


def manifest_split_name(name: str) -> str:
    """The file's split name as the manifest spells it: ``xsub_val`` -> ``xsub_test``."""
    return name[: -len("_val")] + "_test" if name.endswith("_val") else name


def _channels(annotations: list[Any]) -> int | None:
    for ann in annotations:
        kp = ann.get("keypoint") if isinstance(ann, dict) else None
        if isinstance(kp, np.ndarray) and kp.ndim == 4:
            return int(kp.shape[-1])
    return None


def parse_annotation(item: tuple[dict[str, Any], frozenset[str], int, int, int, bool]) -> Parsed:
    """One annotation dict -> one sample (keypoint (M, T, V, 3) becomes joints (T, M, V, 3)).

    Bodies that are zero in every frame are dropped; ``total_frames`` bounds the frames
    kept; NTU names give subject, camera, setup and replication.
    """
    ann, splits, num_joints, num_classes, max_bodies, ntu_names = item
    kp = ann.get("keypoint")
    if not isinstance(kp, np.ndarray):
        raise Rejected(f"keypoint is a {type(kp).__name__}, not an array")
    if kp.ndim != 4 or kp.shape[-1] != 3:
        raise Rejected(f"keypoint shape {kp.shape} is not (M, T, V, 3)")
    if kp.shape[2] != num_joints:
        raise Rejected(f"keypoint has {kp.shape[2]} joints, the file's others have {num_joints}")
    if kp.dtype.kind not in "fiu":
        raise Rejected(f"keypoint dtype {kp.dtype} is not numeric")
    label = ann.get("label")
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise Rejected(f"label {label!r} is not an integer")
    if not 0 <= int(label) < num_classes:
        raise Rejected(f"label {label} outside 0..{num_classes - 1}")
    with np.errstate(invalid="ignore", over="ignore"):
        joints = np.transpose(kp, (1, 0, 2, 3)).astype(np.float32)  # (T, M, V, 3)
    total = ann.get("total_frames", len(joints))
    if isinstance(total, (int, np.integer)) and 0 < int(total) < len(joints):
        joints = joints[: int(total)]
    if not np.isfinite(joints).all():
        raise Rejected("NaN/inf joint coordinates")
    present = np.abs(joints).reshape(len(joints), joints.shape[1], -1).max(axis=(0, 2)) > 0
    if not present.any():
        raise Rejected("all-zero sequence")
    cleaning: Counter = Counter()
    if not present.all():
        cleaning["dropped bodies with no joints"] += int((~present).sum())
    joints = joints[:, present]
    if not splits:
        cleaning["in no split of the file"] += 1
    if joints.shape[1] > max_bodies:
        raise Rejected(f"{joints.shape[1]} bodies with joints exceed M={max_bodies}")
    if len(joints) < 2:
        raise Rejected("single-frame sequence")
    sid = str(ann["frame_dir"])
    meta: dict[str, int] = {}
    if ntu_names:
        name = _parse(sid)
        meta = {
            "subject": name.performer,
            "view": name.camera,
            "setup": name.setup,
            "replication": name.replication,
        }
    sample = Sample(sid, joints, int(label), splits=set(splits), **meta)
    return Parsed([sample], cleaning=cleaning)


def convert_pyskl(
    source: str | Path,
    out_dir: str | Path,
    *,
    class_names: list[str] | None = None,
    max_bodies: int = 2,
    strict: bool = False,
    progress: bool = True,
) -> ConversionResult:
    """Convert one pyskl / MMAction2 3D annotation pickle into shards.

    The whole file is unpickled first (the format has no streaming form): an NTU-120 3D file
    needs a few GiB of memory.
    """
    path = Path(source)
    data = load_annotation_file(path)
    digest = sha256_file(path)
    annotations: list[Any] = data["annotations"]
    channels = _channels(annotations)
    if channels == 2:
        raise DataError(
            f"{path}: 2D keypoints (C=2 with keypoint_score, e.g. ntu60_hrnet.pkl) are refused: "
            "stage 1 predicts 3D joint motion and stage 2 and every protocol encode "
            "(T, M, V, 3) joints, so no job could use them; import the 3D file "
            "(ntu60_3danno.pkl / ntu120_3danno.pkl)"
        )
    if channels != 3:
        raise DataError(f"{path}: no annotation holds a (M, T, V, 3) keypoint array")
    refused: list[tuple[str, str]] = []
    good: list[dict[str, Any]] = []
    seen_ids: set[str] = set()
    for i, ann in enumerate(annotations):
        name = ann.get("frame_dir") if isinstance(ann, dict) else None
        if not isinstance(ann, dict):
            refused.append((f"annotations[{i}]", f"a {type(ann).__name__}, not a dict"))
        elif not isinstance(name, str) or not name.strip() or not name.isprintable():
            refused.append((f"annotations[{i}]", f"frame_dir {name!r} is not a printable name"))
        elif name in seen_ids:
            refused.append((name, "duplicate frame_dir"))
        else:
            seen_ids.add(name)
            good.append(ann)
    if not good:
        raise DataError(f"{path}: no usable annotation ({len(refused)} refused)")
    num_joints = Counter(
        a["keypoint"].shape[2]
        for a in good
        if isinstance(a.get("keypoint"), np.ndarray) and a["keypoint"].ndim == 4
    ).most_common(1)[0][0]
    labels = [a.get("label") for a in good if isinstance(a.get("label"), (int, np.integer))]
    num_classes = int(max(labels, default=0)) + 1
    ntu_names = num_joints == 25 and all(NAME_RE.search(a["frame_dir"]) for a in good)
    variant = (
        ("ntu120" if num_classes > 60 else "ntu60") if ntu_names and num_classes <= 120 else None
    )

    split_of: dict[str, set[str]] = {a["frame_dir"]: set() for a in good}
    declared: dict[str, int] = {}
    unknown_ids: Counter = Counter()
    for name, members in sorted(data.get("split", {}).items()):
        if not isinstance(name, str) or not isinstance(members, list):
            raise DataError(f"{path}: split {name!r} is not a list of frame_dir names")
        target = manifest_split_name(name)
        declared[name] = len(members)
        for member in members:
            if member in split_of:
                split_of[member].add(target)
            else:
                unknown_ids[name] += 1
    split_names = sorted({manifest_split_name(n) for n in declared})
    protocols = {
        n[: -len("_train")]: {"train": n, "test": n[: -len("_train")] + "_test"}
        for n in split_names
        if n.endswith("_train") and n[: -len("_train")] + "_test" in split_names
    }
    fewshot = None
    if variant == "ntu120":
        # The paper's few-shot protocol: NTU-60 x-sub pre-training, NTU-120's novel actions.
        for frame_dir, splits in split_of.items():
            derived = splits_for(_parse(frame_dir), "ntu120")
            splits.update(s for s in derived if s.startswith(("ntu60_xsub", "fewshot_")))
        split_names += ["ntu60_xsub_train", "ntu60_xsub_test", "fewshot_gallery", "fewshot_query"]
        protocols["ntu60_xsub"] = {"train": "ntu60_xsub_train", "test": "ntu60_xsub_test"}
        fewshot = {
            "gallery": "fewshot_gallery",
            "query": "fewshot_query",
            "classes": list(range(60, 120)),
            "pretrain_split": "ntu60_xsub_train",
        }
    if class_names is None:
        class_names = (
            list(ACTION_NAMES[:num_classes])
            if variant
            else [f"class_{i + 1:03d}" for i in range(num_classes)]
        )
    elif len(class_names) < num_classes:
        raise DataError(
            f"{path}: labels reach {num_classes - 1} but --class-names lists {len(class_names)}"
        )
    t_max = max(
        (a["keypoint"].shape[1] for a in good if isinstance(a.get("keypoint"), np.ndarray)),
        default=1,
    )
    layout = NTU25 if num_joints == 25 else generic_layout(num_joints)
    default = "xsub" if "xsub" in protocols else next(iter(protocols), None)
    spec = DatasetSpec(
        layout=layout,
        class_names=class_names,
        split_names=split_names,
        t_max=max(int(t_max), 2),
        num_bodies=max_bodies,
        protocols=protocols,
        default_protocol=default,
        fewshot=fewshot,
        recording={
            "format": "pyskl",
            "path": str(path),
            "sha256": digest,
            "variant": variant,
            "annotations": len(annotations),
            "declared_splits": declared,
            "split_members_not_in_annotations": dict(unknown_ids),
        },
    )
    context = (num_joints, num_classes, max_bodies, ntu_names)
    items = [
        (ann["frame_dir"], (ann, frozenset(split_of[ann["frame_dir"]]), *context)) for ann in good
    ]
    # One parser: the annotations are already in memory, copying them to workers costs more.
    options = ConvertOptions(strict, workers=1, progress=progress, desc="pyskl")
    return run_conversion(out_dir, spec, items, parse_annotation, options, refused=refused)


def _parse(frame_dir: str) -> _NtuName:
    match = NAME_RE.search(frame_dir)
    assert match is not None  # checked for every annotation when ntu_names is set
    return _NtuName(*(int(g) for g in match.groups()))


def write_annotation_file(
    path: str | Path,
    annotations: list[dict[str, Any]],
    split: dict[str, list[str]],
    protocol: int = 2,
) -> None:
    """Write ``annotations`` and ``split`` in the pyskl layout (protocol 2, as mmcv does)."""
    with open(path, "wb") as fh:
        pickle.dump({"split": split, "annotations": annotations}, fh, protocol=protocol)
