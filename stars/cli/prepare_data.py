"""``jobs/prepare_data.py``: every source format into sharded Parquet, with a summary."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stars.cli.common import add_version_arg, reported
from stars.data.formats.convert import ConversionResult, report_table
from stars.data.manifest import DataError, Manifest
from stars.data.prepare import summary_table, write_synthetic
from stars.data.synthetic import SyntheticSpec
from stars.interrupts import interruptible

USAGE = """\
examples:
  prepare_data.py synthetic --out data/synth --num-classes 120 --samples-per-class 60
  prepare_data.py ntu  nturgbd_skeletons/ --out data/ntu60 [--variant ntu60] \\
                       [--exclude NTU_RGBD_samples_with_missing_skeletons.txt]
  prepare_data.py npz  NTU60_XSub.npz --out data/ntu60_xsub
  prepare_data.py pyskl ntu60_3danno.pkl --out data/ntu60      (pyskl / MMAction2, 3D)
  prepare_data.py pku  PKU_Skeleton_Renew/ --labels Train_Label_PKU_final/ \\
                       --split-file cross-subject.txt --out data/pku1
  prepare_data.py nucla all_sqe/ --out data/nucla [--map-to-ntu]
  prepare_data.py arrays poses/ --index poses/index.csv --out data/mine [--train-subjects 1,2,3]
"""


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="prepare_data.py",
        epilog=USAGE,
        description="Convert skeleton recordings to sharded Parquet.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("format", choices=list(CONVERTERS))
    add_version_arg(p)
    p.add_argument("source", nargs="?", help="input path (unused for synthetic)")
    p.add_argument("--out", required=True, help="output dataset directory (new or empty)")
    p.add_argument("--strict", action="store_true", help="stop at the first rejected sample")
    p.add_argument("--workers", type=int, default=None, help="parser processes (default: CPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("synthetic")
    g.add_argument("--num-classes", type=int, default=120)
    g.add_argument("--samples-per-class", type=int, default=60)
    g.add_argument("--num-base-classes", type=int, default=60)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--rows-per-shard", type=int, default=512)
    g = p.add_argument_group("ntu")
    g.add_argument(
        "--variant",
        choices=["ntu60", "ntu120"],
        default=None,
        help="default: ntu120 if any setup > 17 or action > 60",
    )
    g.add_argument("--exclude", help="file listing samples to exclude (missing skeletons)")
    g = p.add_argument_group("pku")
    g.add_argument("--labels", help="directory of label files")
    g.add_argument("--split-file", help="cross-subject split file")
    g = p.add_argument_group("nucla / arrays")
    g.add_argument("--map-to-ntu", action="store_true", help="N-UCLA: map 20 joints to 25")
    g.add_argument(
        "--train-subjects",
        type=_ints,
        default=None,
        help="comma-separated subject ids of the training split",
    )
    g.add_argument("--index", help="arrays: CSV with sample_id,label[,subject,view,split]")
    g.add_argument("--layout", help="arrays: joint layout name (default from the joint count)")
    g.add_argument("--test-fraction", type=float, default=0.2)
    g.add_argument(
        "--max-frames",
        type=int,
        default=None,
        help="arrays: cap T_max; longer sequences are resampled to it (default: the longest)",
    )
    g.add_argument("--class-names", help="file with one class name per line (npz, pyskl, pku)")
    return p


def _synthetic(args: argparse.Namespace, common: dict[str, Any]) -> dict[str, Any]:
    spec = SyntheticSpec(
        num_classes=args.num_classes,
        samples_per_class=args.samples_per_class,
        num_base_classes=min(args.num_base_classes, args.num_classes),
        seed=args.seed,
    )
    return write_synthetic(
        args.out, spec, rows_per_shard=args.rows_per_shard, progress=common["progress"]
    )


def _ntu(args: argparse.Namespace, common: dict[str, Any]) -> ConversionResult:
    from stars.data.formats.ntu import convert_ntu, read_exclusion_list

    exclude = read_exclusion_list(args.exclude) if args.exclude else set()
    return convert_ntu(
        args.source, args.out, variant=args.variant, exclude=exclude, workers=args.workers, **common
    )


def _npz(args: argparse.Namespace, common: dict[str, Any]) -> ConversionResult:
    from stars.data.formats.npz import convert_npz

    return convert_npz(args.source, args.out, class_names=_class_names(args), **common)


def _pyskl(args: argparse.Namespace, common: dict[str, Any]) -> ConversionResult:
    from stars.data.formats.pyskl import convert_pyskl

    return convert_pyskl(args.source, args.out, class_names=_class_names(args), **common)


def _pku(args: argparse.Namespace, common: dict[str, Any]) -> ConversionResult:
    from stars.data.formats.pku import convert_pku

    if not args.labels or not args.split_file:
        raise DataError("pku needs --labels DIR and --split-file FILE")
    return convert_pku(
        args.source,
        args.out,
        labels=args.labels,
        split_file=args.split_file,
        class_names=_class_names(args),
        workers=args.workers,
        **common,
    )


def _nucla(args: argparse.Namespace, common: dict[str, Any]) -> ConversionResult:
    from stars.data.formats.nucla import DEFAULT_TRAIN_SUBJECTS, convert_nucla

    return convert_nucla(
        args.source,
        args.out,
        map_to_ntu=args.map_to_ntu,
        train_subjects=args.train_subjects or DEFAULT_TRAIN_SUBJECTS,
        workers=args.workers,
        **common,
    )


def _arrays(args: argparse.Namespace, common: dict[str, Any]) -> ConversionResult:
    from stars.data.formats.arrays import convert_arrays

    return convert_arrays(
        args.source,
        args.out,
        index=args.index,
        layout=args.layout,
        train_subjects=args.train_subjects or (),
        test_fraction=args.test_fraction,
        seed=args.seed,
        max_frames=args.max_frames,
        workers=args.workers,
        **common,
    )


# One entry per format: adding an importer is a function above and a line here.
CONVERTERS: dict[str, Callable[[argparse.Namespace, dict[str, Any]], Any]] = {
    "synthetic": _synthetic,
    "ntu": _ntu,
    "npz": _npz,
    "pyskl": _pyskl,
    "pku": _pku,
    "nucla": _nucla,
    "arrays": _arrays,
}


def _class_names(args: argparse.Namespace) -> list[str] | None:
    if not args.class_names:
        return None
    try:
        return Path(args.class_names).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise DataError(f"--class-names {args.class_names}: cannot read it ({reason})") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = "prepare_data.py"
    common = {"strict": args.strict, "progress": not args.quiet}
    kept = "no dataset written (a dataset exists only once its manifest is)"
    with interruptible(prog, kept), reported(prog):
        try:
            if args.format != "synthetic" and not args.source:
                raise DataError(f"format {args.format} needs a SOURCE path")
            result = CONVERTERS[args.format](args, common)
        except (FileExistsError, ValueError) as err:
            raise DataError(str(err)) from None
    if isinstance(result, Manifest):  # the synthetic generator returns its manifest
        print(summary_table(result, args.out))
        return 0
    print(summary_table(result.manifest, args.out))
    print(report_table(result.report))
    return 0
