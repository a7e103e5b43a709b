"""Fine-tuning protocol on Ray Train (protocols.md §8): encoder + MLP head trained end to end.

Warm-up to 3e-4 over 5 epochs then cosine to 1e-5, layer-wise lr decay 0.8 (head at the full
rate), drop path 0.3, label smoothing 0.1, AdamW. The semi-supervised protocol is the same loop
restricted to a driver-drawn, class-stratified subset of the training split; transfer is the
same loop on another dataset (its own class count).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from stars.config import from_dict, to_dict
from stars.data.config import DataConfig
from stars.data.pipeline import iter_worker_batches
from stars.model import checkpoint as ckpt
from stars.model.encoder import SkeletonEncoder
from stars.train import loop
from stars.train.config import OptimConfig, ScaleConfig
from stars.train.optim import build_adamw, param_groups, scheduled_lr, set_lr


@dataclass(frozen=True)
class FinetuneConfig:
    """The fine-tuning recipe (MAMP's, protocols.md §8)."""

    epochs: int = 100
    batch_size: int = 48
    lr: float = 3e-4
    min_lr: float = 1e-5
    warmup_epochs: float = 5.0
    weight_decay: float = 0.05
    layer_decay: float = 0.8
    drop_path: float = 0.3
    label_smoothing: float = 0.1
    head_dropout: float = 0.0
    clip_grad: float = 0.0
    seed: int = 0
    amp: str = "bf16"

    def optim(self) -> OptimConfig:
        return OptimConfig(
            lr=self.lr,
            min_lr=self.min_lr,
            warmup_epochs=self.warmup_epochs,
            weight_decay=self.weight_decay,
            clip_grad=self.clip_grad,
            schedule="cosine",
        )


class Classifier(nn.Module):
    """Encoder -> pooled feature (N, C) -> MLP head -> logits (N, K)."""

    def __init__(self, encoder: SkeletonEncoder, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.encoder = encoder
        C = encoder.cfg.dim
        self.head = nn.Sequential(
            nn.LayerNorm(C),
            nn.Linear(C, C),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(C, num_classes),
        )
        for m in self.head.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()}

    def lr_scale(self, decay: float):
        """Block i of N at decay^(N - i), embeddings at decay^(N + 1), head at 1."""
        top = self.encoder.num_layers

        def scale(name: str) -> float:
            if not name.startswith("encoder."):
                return 1.0
            return decay ** (top - self.encoder.layer_id(name[len("encoder.") :]))

        return scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, M, T, V, 3) -> logits (N, K)."""
        return self.head(self.encoder.forward_features(x))


def load_for_finetune(path: str, drop_path: float) -> SkeletonEncoder:
    """The encoder of any supported checkpoint, rebuilt with stochastic depth ``drop_path``."""
    cfg, state = ckpt.encoder_state(ckpt.read(path), path)
    encoder = SkeletonEncoder(dataclasses.replace(cfg, drop_path=drop_path))
    encoder.load_state_dict(state, strict=True)
    return encoder


@torch.no_grad()
def evaluate_classifier(model: nn.Module, shard: Any, data_cfg: DataConfig, device) -> dict:
    """Top-1 / top-5 of ``model`` over a whole evaluation dataset."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    for batch in iter_worker_batches(shard, data_cfg, "eval", device):
        logits = model(batch["x"]).float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        y = batch["label"]
        correct1 += int((top[:, 0] == y).sum())
        correct5 += int((top == y[:, None]).any(dim=1).sum())
        total += len(y)
    model.train(was_training)
    return {"top1": correct1 / max(total, 1), "top5": correct5 / max(total, 1), "count": total}


def finetune_worker(config: dict[str, Any]) -> None:
    """Per-worker loop. ``config``: ``finetune`` (FinetuneConfig dict), ``data`` (DataConfig
    dict), ``scale`` (ScaleConfig dict), ``source`` (checkpoint path), ``num_classes``,
    ``steps_per_epoch``, ``eval_every`` (epochs; the last epoch always evaluates)."""
    import ray.train
    import ray.train.torch

    ft = from_dict(FinetuneConfig, config["finetune"])
    data_cfg = from_dict(DataConfig, config["data"])
    scale = from_dict(ScaleConfig, config["scale"])
    optim_cfg = ft.optim()
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    if scale.torch_threads > 0:
        torch.set_num_threads(scale.torch_threads)
    loop.seed_everything(ft.seed + rank)

    model = Classifier(
        load_for_finetune(config["source"], ft.drop_path),
        int(config["num_classes"]),
        ft.head_dropout,
    )
    groups = param_groups(model, ft.weight_decay, model.lr_scale(ft.layer_decay))
    optimizer = build_adamw(groups, optim_cfg)
    steps_per_epoch = int(config["steps_per_epoch"])
    total_steps = steps_per_epoch * ft.epochs
    warmup_steps = round(ft.warmup_epochs * steps_per_epoch)
    start_epoch, step, history = 0, 0, []
    resumed = loop.load_resume_state()
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        start_epoch, step, history = loop.resume_position(resumed, rank, ft.seed)
    wrapped = ray.train.torch.prepare_model(model.to(device))
    criterion = nn.CrossEntropyLoss(label_smoothing=ft.label_smoothing)
    shard = ray.train.get_dataset_shard("train")
    eval_every = max(1, int(config.get("eval_every", 10)))

    for epoch in range(start_epoch, ft.epochs):
        wrapped.train()
        start, seen, loss_sum, epoch_steps = time.perf_counter(), 0, 0.0, 0
        for batch in iter_worker_batches(shard, data_cfg, "train", device):
            set_lr(optimizer, scheduled_lr(step, total_steps, warmup_steps, optim_cfg))
            with loop.autocast(device, ft.amp):
                loss = criterion(wrapped(batch["x"]).float(), batch["label"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if ft.clip_grad:
                torch.nn.utils.clip_grad_norm_(wrapped.parameters(), ft.clip_grad)
            optimizer.step()
            step += 1
            epoch_steps += 1
            seen += len(batch["x"])
            loss_sum += float(loss.detach())
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "global_step": step,
            "loss": loss_sum / max(epoch_steps, 1),
            "epoch_time_s": time.perf_counter() - start,
        }
        last = epoch == ft.epochs - 1
        if rank == 0 and (last or (epoch + 1) % eval_every == 0):
            result = evaluate_classifier(
                model, ray.train.get_dataset_shard("test"), data_cfg, device
            )
            metrics.update({"test_top1": result["top1"], "test_top5": result["top5"]})
        history.append(metrics)
        payload = None
        if rank == 0:
            payload = ckpt.make_payload(
                "finetune",
                model.encoder.cfg,
                model=ckpt.cpu_state(model),
                **loop.loop_state(optimizer, epoch, step, history),
                finetune_config=to_dict(ft),
                source={"checkpoint": config["source"]},
            )
        loop.report(metrics, payload)


def restrict_to(batch: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """Keep the rows whose ``sample_index`` is in the sorted id array ``keep``."""
    rows = np.isin(batch["sample_index"], keep, assume_unique=False)
    return {k: v[rows] for k, v in batch.items()}
