"""Checkpoints: plain dicts of tensors and plain config values, loaded with weights_only=True.

Our format::

    {"format": "stars", "version": 1, "kind": "stage1" | "stage2",
     "model_config": {...ModelConfig fields...}, "model": state_dict, ...training state...}

Also read: the published MAMP pre-training checkpoints (``model`` state dict in the released
layout, plus a pickled ``argparse.Namespace`` under ``args``, allow-listed and nothing else)
and published STARS checkpoints (the encoder under the ``encoder_student.`` prefix).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import torch

from stars import storage
from stars.config import from_dict
from stars.errors import StarsError
from stars.location import Location
from stars.model.config import ModelConfig
from stars.model.encoder import SkeletonEncoder
from stars.model.mamp import MAMP

FORMAT = "stars"
CHECKPOINT_FILE = "checkpoint.pt"
VERSION = 1
STARS_PREFIX = "encoder_student."
_ENCODER_TOP = ("joints_embed.", "temp_embed", "pos_embed", "blocks.", "norm.")


class CheckpointError(StarsError):
    """A checkpoint that cannot be read as asked; the message names the file."""


def save(path: str | Path, payload: dict[str, Any]) -> None:
    """Atomic ``torch.save`` of a plain dict (temp file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict, detached and on the CPU (what checkpoints store)."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def make_payload(kind: str, model_cfg: Any, **state: Any) -> dict[str, Any]:
    """A checkpoint dict of ``kind`` (stage1 / stage2 / finetune) for a model of ``model_cfg``."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "model_config": dataclasses.asdict(model_cfg),
        **state,
    }


def stage1_payload(model: MAMP, **training_state: Any) -> dict[str, Any]:
    return make_payload("stage1", model.cfg, model=cpu_state(model), **training_state)


_GLOBAL_RNG = threading.Lock()
RANDOM_INIT = "random"  # as a checkpoint: a randomly initialised encoder (the control)


def write_random_init(cfg: ModelConfig, seed: int, path: str | Path) -> Path:
    """A stage-1 checkpoint of a randomly initialised (seeded) MAMP model of ``cfg``: the
    control that separates what pre-training adds from what the architecture gives."""
    with _GLOBAL_RNG:  # the modules draw from torch's global RNG; seeds may run in threads
        generator_state = torch.get_rng_state()
        torch.manual_seed(seed)
        try:
            model = MAMP(cfg)
        finally:
            torch.set_rng_state(generator_state)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(path, stage1_payload(model, epoch=-1, global_step=0, random_init_seed=seed))
    return path


def resolve_checkpoint(source: str | Path) -> str:
    """A checkpoint file from a file, a checkpoint directory, or a Ray Train run directory
    (the latest checkpoint Ray Train registered there: a ``checkpoint_*`` folder its
    controller never recorded, e.g. written by workers after their driver died, is never
    taken); each may be a local path or a URI."""
    source = str(source)
    if source.startswith(MLFLOW_SCHEMES):
        return registered_model_file(source)
    if storage.exists(source):
        return source
    if storage.exists(storage.join(source, CHECKPOINT_FILE)):
        return storage.join(source, CHECKPOINT_FILE)
    registered = registered_checkpoint(source)
    if registered:
        return storage.join(registered, CHECKPOINT_FILE)
    raise CheckpointError(
        f"no checkpoint at {storage.shown(source)} (expected a checkpoint file, a checkpoint "
        "directory or a run directory)"
    )


MLFLOW_SCHEMES = ("models:/", "runs:/")


def registered_model_file(uri: str) -> str:
    """The weights-only encoder checkpoint inside an MLflow model (``models:/NAME@ALIAS``,
    ``models:/NAME/3``, ``runs:/RUN_ID/encoder``), downloaded from the tracking store of
    ``$MLFLOW_TRACKING_URI`` (default ``sqlite:///mlflow.db``, as every job)."""
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    tracking = os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    try:
        local = Path(download_artifacts(artifact_uri=uri, tracking_uri=tracking))
    except MlflowException as err:
        raise CheckpointError(f"{uri}: not found in {tracking} ({err.message})") from None
    found = sorted(local.rglob("encoder.pt")) or sorted(local.rglob(CHECKPOINT_FILE))
    if not found:
        raise CheckpointError(f"{uri}: the model holds no encoder.pt (not a STARS encoder)")
    return str(found[0])


SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of registered checkpoints
INDEX = "stars_checkpoints.json"  # an in-process run's (stars.model.checkpoint_index)


def read_entries(run_dir: str) -> list[dict[str, Any]]:
    """The checkpoints the index of an in-process run directory registers, oldest first
    (``{"name", "epoch", "metrics"}``; none without an index)."""
    index = storage.join(run_dir, INDEX)
    if not storage.exists(index):
        return []
    try:
        entries = json.loads(storage.read_bytes(index))["checkpoints"]
        return [
            {"name": e["name"], "epoch": int(e["epoch"]), "metrics": e["metrics"]} for e in entries
        ]
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{storage.shown(index)}: not a checkpoint index ({err})") from None


def registered_checkpoint(run_dir: str) -> str:
    """The latest checkpoint directory Ray Train (or, for an in-process run, its checkpoint
    index) registered in ``run_dir`` ("" when the directory holds no run). A run directory
    with checkpoint folders but no registration record is refused, naming them."""
    indexed = read_entries(run_dir)
    if indexed:
        return storage.join(run_dir, indexed[-1]["name"])
    names = [n for n in storage.subdirectories(run_dir) if n.startswith("checkpoint_")]
    if not storage.exists(storage.join(run_dir, SNAPSHOT)):
        if names:
            raise CheckpointError(
                f"{storage.shown(run_dir)} has checkpoint folders ({', '.join(names[-3:])}) "
                f"but no {SNAPSHOT}: Ray Train registered none of them. Pass one checkpoint "
                "directory explicitly if you trust it"
            )
        return ""
    from ray.train import Result

    try:
        result = Result.from_path(Location(run_dir).absolute)
    except (RuntimeError, OSError, ValueError) as err:
        raise CheckpointError(
            f"cannot read Ray Train's record of {storage.shown(run_dir)}: {err}"
        ) from None
    if result.checkpoint is None:
        return ""
    path = result.checkpoint.path
    # The record holds paths inside the run's filesystem: give back the form we were given.
    return storage.join(run_dir, path.rstrip("/").rsplit("/", 1)[-1])


def read(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict safely (weights only; ``argparse.Namespace`` allow-listed) from a
    file or a checkpoint directory, local or at a URI (``s3://.../checkpoint_000009``)."""
    if str(path).startswith(MLFLOW_SCHEMES):
        path = registered_model_file(str(path))
    if Location(str(path)).remote:
        return _read_uri(str(path))
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is empty")
    return _load(path, path)


def _read_uri(uri: str) -> dict[str, Any]:
    if not storage.exists(uri):
        if not storage.exists(storage.join(uri, CHECKPOINT_FILE)):
            raise CheckpointError(f"checkpoint {storage.shown(uri)} does not exist")
        uri = storage.join(uri, CHECKPOINT_FILE)
    data = storage.read_bytes(uri)
    if not data:
        raise CheckpointError(f"cannot read checkpoint {storage.shown(uri)}: the file is empty")
    return _load(io.BytesIO(data), storage.shown(uri))


def _load(source: Path | io.BytesIO, name: str | Path) -> dict[str, Any]:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            payload = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"cannot read checkpoint {name}: {_condensed(err)}") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {name} holds a {type(payload).__name__}, not a dict")
    return payload


def _condensed(err: BaseException) -> str:
    """One line of an exception's message: torch's unpickling errors span paragraphs."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if "Weights only load failed" in text:
        unsafe = next((ln for ln in lines if "Unsupported global" in ln), "")
        text = "not a weights-only file" + (f" ({unsafe.rstrip('.')})" if unsafe else "")
    text = text or "unreadable"
    return f"{type(err).__name__}: {text[:300]}"


# -- the published layout ------------------------------------------------------------------
def _published_config(state: dict[str, torch.Tensor], args: Any = None) -> ModelConfig:
    """Infer the architecture from a state dict in the published layout."""
    conv = state["joints_embed.proj.weight"]  # (C, 3, l, 1)
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    dec_depth = len({k.split(".")[1] for k in state if k.startswith("decoder_blocks.")})
    dim, channels, patch_frames = conv.shape[0], conv.shape[1], conv.shape[2]
    heads = getattr(args, "num_heads", None) or 8
    dec_dim = state["decoder_embed.weight"].shape[0] if "decoder_embed.weight" in state else dim
    return ModelConfig(
        dim=dim,
        depth=depth,
        num_heads=heads,
        decoder_dim=dec_dim,
        decoder_depth=max(dec_depth, 1),
        decoder_heads=heads,
        mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / dim,
        num_frames=state["temp_embed"].shape[1] * patch_frames,
        patch_frames=patch_frames,
        num_joints=state["pos_embed"].shape[2],
        in_channels=channels,
        mask_ratio=float(getattr(args, "mask_ratio", 0.9) or 0.9),
        motion_tau=float(getattr(args, "motion_aware_tau", 0.8) or 0.0),
        motion_stride=int(getattr(args, "motion_stride", 1) or 1),
    )


def _embed_conv_to_linear(w: torch.Tensor) -> torch.Tensor:
    """Conv2d weight (C, 3, l, 1) -> Linear weight (C, l*3) with input index 3*u + c."""
    return w[..., 0].permute(0, 2, 1).reshape(w.shape[0], -1)


def _embed_linear_to_conv(w: torch.Tensor, channels: int) -> torch.Tensor:
    C = w.shape[0]
    return w.reshape(C, -1, channels).permute(0, 2, 1)[..., None].contiguous()


def from_published(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Published MAMP state dict -> our MAMP state dict (encoder keys under ``encoder.``)."""
    out = {}
    for key, value in state.items():
        if key == "joints_embed.proj.weight":
            out["encoder.joints_embed.weight"] = _embed_conv_to_linear(value)
        elif key == "joints_embed.proj.bias":
            out["encoder.joints_embed.bias"] = value
        elif key.startswith(_ENCODER_TOP):
            out[f"encoder.{key}"] = value
        else:
            out[key] = value
    return out


def to_published(state: dict[str, torch.Tensor], channels: int = 3) -> dict[str, torch.Tensor]:
    """Our MAMP (or encoder-only, ``encoder.``-prefixed) state dict -> the published layout."""
    out = {}
    for key, value in state.items():
        if key == "encoder.joints_embed.weight":
            out["joints_embed.proj.weight"] = _embed_linear_to_conv(value, channels)
        elif key == "encoder.joints_embed.bias":
            out["joints_embed.proj.bias"] = value
        elif key.startswith("encoder."):
            out[key[len("encoder.") :]] = value
        else:
            out[key] = value
    return out


def _is_published(state: dict[str, Any]) -> bool:
    return "joints_embed.proj.weight" in state


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{storage.shown(str(path))}: state dict does not fit the model "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )


def load_stage1(path: str | Path) -> MAMP:
    """A full stage-1 model (encoder + decoder) from our checkpoint or a published MAMP file."""
    payload = read(path)
    if payload.get("format") == FORMAT:
        if payload.get("kind") != "stage1":
            raise CheckpointError(f"{path} is a {payload.get('kind')} checkpoint, not stage 1")
        model = MAMP(from_dict(ModelConfig, payload["model_config"]))
        _load_strict(model, payload["model"], path)
        return model
    state = payload.get("model", payload)
    if not _is_published(state):
        raise CheckpointError(f"{path}: neither a STARS checkpoint nor a published MAMP file")
    model = MAMP(_published_config(state, payload.get("args")))
    _load_strict(model, from_published(state), path)
    return model


def encoder_state(payload: dict[str, Any], path: str | Path) -> tuple[ModelConfig, dict]:
    """(model config, encoder state dict without prefix) from any supported checkpoint."""
    if payload.get("format") == FORMAT:
        cfg = from_dict(ModelConfig, payload["model_config"])
        if payload.get("kind") in ("stage1", "finetune"):
            return cfg, _strip(payload["model"], "encoder.")
        if "encoder" in payload:
            return cfg, payload["encoder"]
        raise CheckpointError(f"{path}: no encoder in this {payload.get('kind')} checkpoint")
    state = payload.get("model", payload.get("state_dict", payload))
    if any(k.startswith(STARS_PREFIX) for k in state):
        state = _strip(state, STARS_PREFIX)
    if not _is_published(state):
        raise CheckpointError(
            f"{path}: no encoder found (expected a STARS checkpoint, a "
            "published MAMP file or an encoder_student.* state dict)"
        )
    cfg = _published_config(state, payload.get("args"))
    return cfg, _strip(from_published(state), "encoder.")


def load_encoder(path: str | Path) -> SkeletonEncoder:
    """The encoder of any supported checkpoint (ours stage 1/2, published MAMP or STARS)."""
    payload = read(path)
    cfg, state = encoder_state(payload, path)
    encoder = SkeletonEncoder(cfg)
    _load_strict(encoder, state, path)
    return encoder
