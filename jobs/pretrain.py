"""STARS main job: stage 1 (MAMP) -> evaluation -> stage 2 (STARS) -> evaluation, in MLflow.

    python jobs/pretrain.py [--preset small] [--data DIR] [--stage1-only] [--from-run RUN_ID]
        [--tracking-uri URI] [--set key=value ...]
    ray job submit --working-dir . -- python jobs/pretrain.py --preset paper --data DIR \\
        --set scale.num_workers=4 --set scale.use_gpu=true --set scale.storage_path=s3://...
"""

import sys

from stars.cli.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
