"""One resolution step per training job: every value a job derives is fixed here, before
any MLflow run exists, so the params logged are exactly what the workers receive.

Derived values: the dataset path (absolute; the embedded synthetic set's cache directory when
none is given), ``model.num_joints`` from the dataset, ``data.num_frames`` from the model (stage
1) or the checkpoint's encoder (stage 2), and stage 2's unaltered view. A derived key that the
user set explicitly to another value is an error naming the key (:func:`stars.config.pin`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from stars.config import ConfigError, Layered, load_layers, pin, set_dotted
from stars.data.shards import SkeletonDataset
from stars.model.config import ModelConfig
from stars.paths import check_kept
from stars.presets import job_preset
from stars.train.config import Stage1JobConfig, Stage2JobConfig

T = TypeVar("T")

UNALTERED_VIEW = {"data.train_crop": (1.0, 1.0), "data.rotation": 0.0}


def pin_dataset(layered: Layered[T], data: SkeletonDataset) -> Layered[T]:
    """``data.path`` as the absolute root of the dataset the job reads, and
    ``scale.storage_path`` as an absolute path (or URI) that outlives the job."""
    synthetic = sorted(k for k in layered.explicit if k.startswith("data.synthetic."))
    if layered.was_set("data.path") and synthetic and not _is_described(layered.config, data):
        raise ConfigError(
            f"{synthetic[0]} describes the embedded synthetic dataset, but data.path is set "
            f"({layered.config.data.path}): drop one of them"
        )
    root = data.absolute_root
    cfg = set_dotted(layered.config, "data.path", root)
    storage = check_kept("scale.storage_path", cfg.scale.storage_path, "--set scale.storage_path")
    return Layered(set_dotted(cfg, "scale.storage_path", storage), layered.explicit)


def _is_described(cfg: Stage1JobConfig | Stage2JobConfig, data: SkeletonDataset) -> bool:
    """Whether ``data`` is the synthetic set that ``data.synthetic`` describes (a resolved
    config names both: ``--print-config`` output given back as ``--config``)."""
    from pathlib import PurePath

    from stars.data.prepare import synthetic_dir_name

    return PurePath(str(data.absolute_root)).name == synthetic_dir_name(cfg.data.synthetic)


def resolve_stage1(layered: Layered[Stage1JobConfig], data: SkeletonDataset) -> Stage1JobConfig:
    """The stage-1 config the workers receive."""
    layered = pin_dataset(layered, data)
    layered = pin(
        layered,
        {"model.num_joints": data.num_joints, "model.in_channels": 3},
        f"the dataset {data.root} (V={data.num_joints} joints, x y z)",
    )
    layered = pin(layered, {"data.num_frames": layered.config.model.num_frames}, "model.num_frames")
    return layered.config


def resolve_stage2(
    layered: Layered[Stage2JobConfig], data: SkeletonDataset, encoder: ModelConfig, source: str
) -> Stage2JobConfig:
    """The stage-2 config the workers receive, for the encoder ``encoder`` of checkpoint
    ``source``."""
    if data.num_joints != encoder.num_joints:
        raise ConfigError(
            f"the encoder of {source} takes V={encoder.num_joints} joints, the dataset "
            f"{data.root} has V={data.num_joints}"
        )
    layered = pin_dataset(layered, data)
    layered = pin(
        layered,
        {"data.num_frames": encoder.num_frames},
        f"the stage-1 checkpoint {source} (its encoder's T)",
    )
    if not layered.config.stage2.augment:
        why = "stage2.augment=false (one unaltered view: the whole sequence, no rotation)"
        layered = pin(layered, UNALTERED_VIEW, why)
        if layered.was_set("data.min_crop_frames"):
            raise ConfigError(f"data.min_crop_frames has no effect with {why}")
    return layered.config


def stage1_config(
    preset: str, data: SkeletonDataset, overrides: Iterable[str] = (), path: str | None = None
) -> Stage1JobConfig:
    """Preset < YAML file < overrides, resolved for ``data``: a stage-1 config as the main job
    builds it, for scripts and tests that run stage 1 alone."""
    layered = load_layers(Stage1JobConfig, job_preset(preset, "stage1"), path, overrides)
    return resolve_stage1(layered, data)


def stage2_config(
    preset: str,
    data: SkeletonDataset,
    source: str,
    overrides: Iterable[str] = (),
    path: str | None = None,
) -> Stage2JobConfig:
    """Preset < YAML file < overrides, resolved for ``data`` and the checkpoint ``source``."""
    from stars.model.checkpoint import encoder_state, read

    encoder = encoder_state(read(source), source)[0]
    layered = load_layers(Stage2JobConfig, job_preset(preset, "stage2"), path, overrides)
    return resolve_stage2(layered, data, encoder, source)
