"""Features of each split of one (checkpoint, dataset), computed at most once and cached as
``.npz`` under the evaluation directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stars.data.config import DataConfig
from stars.data.shards import SkeletonDataset
from stars.eval.config import EvalConfig
from stars.eval.features import encode_split, extract_features
from stars.eval.raw_pose import raw_pose_features
from stars.metrics.feature_set import FeatureSet
from stars.model.checkpoint import encoder_state, load_encoder, read

RAW_POSE = "raw"  # as a checkpoint: the raw-pose baseline (no encoder) through the same protocols
RAW_POSE_FRAMES = 64
# Below these sizes the driver encodes a dataset in seconds, while a Ray Data actor pool costs
# its fixed start-up (~5 s): evaluation picks the in-process path on its own.
IN_PROCESS_MAX_SAMPLES = 20_000
IN_PROCESS_MAX_WIDTH = 512  # encoder dim x depth (the `small` preset: 64 x 4)


def use_in_process(
    cfg: EvalConfig, data: SkeletonDataset, model_cfg, use_gpu: bool = False
) -> bool:
    """Whether features are extracted in this process (``eval.in_process``, or chosen by
    size when it is unset: small datasets and encoders, no GPU asked for)."""
    if cfg.in_process is not None:
        return cfg.in_process
    if model_cfg is None:  # the raw-pose baseline needs no encoder
        return True
    small_model = model_cfg.dim * model_cfg.depth <= IN_PROCESS_MAX_WIDTH
    return not use_gpu and small_model and data.num_samples <= IN_PROCESS_MAX_SAMPLES


class FeatureCache:
    """Features of each split of one (checkpoint, dataset), computed at most once."""

    def __init__(
        self,
        checkpoint: Path,
        data: SkeletonDataset,
        cfg: EvalConfig,
        data_cfg: DataConfig,
        out_dir: Path,
        use_gpu: bool = False,
    ):
        self.checkpoint, self.data, self.cfg, self.data_cfg = checkpoint, data, cfg, data_cfg
        self.dir = out_dir / "features"
        self.raw = str(checkpoint) == RAW_POSE
        self.model_cfg = None if self.raw else encoder_state(read(checkpoint), checkpoint)[0]
        self.use_gpu = use_gpu
        self.sets: dict[str, FeatureSet] = {}
        self._encoder = None
        self._all: FeatureSet | None = None

    def __call__(self, split: str) -> FeatureSet:
        """Features of ``split``. In process, each split is encoded from views of the whole
        dataset read once (:func:`eval_views`); the Ray path encodes the whole dataset in
        one pass the first time (a pass has a fixed cost of seconds; protocols need most
        splits anyway) and serves every split from it."""
        if split in self.sets:
            return self.sets[split]
        if self.raw:
            a = self.data.read_split(split, ["joints", "num_frames", "label", "sample_index"])
            feats = raw_pose_features(a["joints"], a["num_frames"], RAW_POSE_FRAMES)
            fs = FeatureSet(
                feats.astype(np.float32),
                a["label"].astype(np.int64),
                a["sample_index"].astype(np.int64),
            )
        elif use_in_process(self.cfg, self.data, self.model_cfg, self.use_gpu):
            if self._encoder is None:
                self._encoder = load_encoder(self.checkpoint)
            fs = encode_split(self._encoder, self.data, split, self.data_cfg)
        else:
            if self._all is None:
                self._all = self._encode_all()
            ids = self.data.read_split(split, ["sample_index"])["sample_index"]
            fs = self._all.subset(np.flatnonzero(np.isin(self._all.sample_index, ids)))
            if len(fs) != len(ids):
                raise RuntimeError(
                    f"feature extraction returned {len(fs)} of the {len(ids)} samples of {split}"
                )
        fs.save(
            self.dir / f"{split}.npz",
            {"checkpoint": str(self.checkpoint), "data_digest": self.data.digest, "split": split},
        )
        self.sets[split] = fs
        return fs

    def _encode_all(self) -> FeatureSet:
        """Every sample's features over a Ray Data actor pool."""
        return extract_features(
            self.checkpoint,
            self.data,
            None,
            self.data_cfg,
            num_frames=self.model_cfg.num_frames,
            dim=self.model_cfg.dim,
            actors=self.cfg.feature_actors,
            use_gpu=self.use_gpu,
            batch_size=self.cfg.feature_batch_size,
            precision=self.cfg.feature_precision,
        )
