"""Build a sharded Parquet skeleton dataset.

python jobs/prepare_data.py synthetic --out data/synth [--num-classes 120
    --samples-per-class 60 --num-base-classes 60 --seed 0]
"""

from __future__ import annotations

import argparse
import sys

from stars.data.prepare import summary_table, write_synthetic
from stars.data.shards import DataError
from stars.data.synthetic import SyntheticSpec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("format", choices=["synthetic"], help="source format")
    parser.add_argument("source", nargs="?", help="input path (unused for synthetic)")
    parser.add_argument("--out", required=True, help="output dataset directory (new or empty)")
    parser.add_argument("--rows-per-shard", type=int, default=512)
    parser.add_argument("--num-classes", type=int, default=120)
    parser.add_argument("--samples-per-class", type=int, default=60)
    parser.add_argument(
        "--num-base-classes",
        type=int,
        default=60,
        help="classes used for pre-training; the rest form the few-shot split",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        spec = SyntheticSpec(
            num_classes=args.num_classes,
            samples_per_class=args.samples_per_class,
            num_base_classes=min(args.num_base_classes, args.num_classes),
            seed=args.seed,
        )
        manifest = write_synthetic(args.out, spec, rows_per_shard=args.rows_per_shard)
    except (DataError, ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary_table(manifest, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
