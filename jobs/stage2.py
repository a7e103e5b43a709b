"""STARS stage 2: contrastive tuning of a stage-1 encoder on Ray Train.

python jobs/stage2.py --from runs/stage1-.../ [--preset small] [--data DIR]
    [--set stage2.layer_decay=0.45 --set stage2.head_warmup_epochs=20 ...]
"""

import sys

from stars.cli.stage2 import main

if __name__ == "__main__":
    sys.exit(main())
