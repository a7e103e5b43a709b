"""The evaluation job's resolution step: the dataset path, the encoder's T and the
fine-tuning batch are fixed here, before anything runs (see :mod:`stars.train.resolve`)."""

from __future__ import annotations

from stars.config import Layered, pin
from stars.data.shards import SkeletonDataset
from stars.eval.config import EvalJobConfig
from stars.eval.feature_cache import RAW_POSE_FRAMES
from stars.model.config import ModelConfig
from stars.train.resolve import pin_dataset


def resolve_eval(
    layered: Layered[EvalJobConfig], data: SkeletonDataset, encoder: ModelConfig | None, source: str
) -> EvalJobConfig:
    """The config every protocol receives. ``encoder`` None: the raw-pose baseline."""
    layered = pin_dataset(layered, data)
    frames = encoder.num_frames if encoder is not None else RAW_POSE_FRAMES
    why = f"the encoder of {source} (its T)" if encoder is not None else "the raw-pose baseline"
    layered = pin(layered, {"data.num_frames": frames}, why)
    batch = layered.config.eval.finetune.batch_size
    return pin(
        layered, {"data.batch_size": batch}, "eval.finetune.batch_size (the fine-tuning batch)"
    ).config
