"""Evaluate any encoder checkpoint: ``python jobs/evaluate.py --checkpoint PATH --data DIR``."""

import sys

from stars.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
