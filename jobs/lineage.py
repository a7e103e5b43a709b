"""Print the lineage tree: ``python jobs/lineage.py [--experiment NAME] [--best RUN_ID]``."""

import sys

from stars.cli.lineage import main

if __name__ == "__main__":
    sys.exit(main())
