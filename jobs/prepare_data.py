"""Convert skeleton recordings (or generate the synthetic set) into sharded Parquet.

python jobs/prepare_data.py FORMAT SOURCE --out DIR [options]   (--help for all formats)
"""

import sys

from stars.cli.prepare_data import main

if __name__ == "__main__":
    sys.exit(main())
