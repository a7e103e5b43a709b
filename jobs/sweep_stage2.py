"""Ray Tune sweep over STARS stage 2, every trial in the MLflow lineage.

python jobs/sweep_stage2.py --stage1-runs RUN_ID [--space search_spaces/stage2.yaml]
python jobs/sweep_stage2.py --stage1-space search_spaces/stage1.yaml --preset small
python jobs/sweep_stage2.py --name NAME --resume ...      (continue an interrupted sweep)
"""

import sys

from stars.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
