"""STARS main job: MAMP pre-training (stage 1) on Ray Train.

    python jobs/pretrain.py --stage1-only [--preset small] [--data DIR] [--set key=value ...]
    ray job submit --working-dir . -- python jobs/pretrain.py --preset paper --data DIR \\
        --set scale.num_workers=4 --set scale.use_gpu=true --set scale.storage_path=s3://...
"""

import sys

from stars.train.jobs import pretrain_main

if __name__ == "__main__":
    sys.exit(pretrain_main())
