"""Fine-tuning protocol on Ray Train (MAMP paper Sec. 4.1): encoder + MLP head trained end to end.

Warm-up to 3e-4 over 5 epochs then cosine to 1e-5, layer-wise lr decay 0.8 (head at the full
rate), drop path 0.3, label smoothing 0.1, AdamW. The semi-supervised protocol is the same loop
restricted to a driver-drawn, class-stratified subset of the training split; transfer is the
same loop on another dataset (its own class count).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from stars.config import from_dict
from stars.data.config import DataConfig
from stars.data.pipeline import iter_worker_batches
from stars.model import checkpoint as ckpt
from stars.model.encoder import SkeletonEncoder
from stars.train.config import OptimConfig, ScaleConfig
from stars.train.loop import LoopSettings, StageTask, Worker, run_loop
from stars.train.optim import build_adamw, param_groups


@dataclass(frozen=True)
class FinetuneConfig:
    """The fine-tuning recipe (MAMP's fine-tuning recipe)."""

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
    amp: Literal["bf16", "fp16", "none"] = "bf16"

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

    @property
    def num_layers(self) -> int:
        """The encoder's layers and the head above them: block i of N trains at
        decay^(N + 1 - i), the final norm at decay, the head at the scheduled rate."""
        return self.encoder.num_layers + 1

    def layer_id(self, name: str) -> int:
        if name.startswith("encoder."):
            return self.encoder.layer_id(name[len("encoder.") :])
        return self.encoder.num_layers

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


@dataclass(frozen=True)
class FinetuneJobConfig:
    """What a fine-tuning worker receives: the recipe, the data pipeline, the scaling and the
    run's seed (the evaluation's, or a semi-supervised draw's)."""

    seed: int = 0
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)


class FinetuneTask(StageTask):
    """Encoder + MLP head trained end to end with label-smoothed cross-entropy; rank 0 tests
    on the whole test set every ``eval_every`` epochs and after the last."""

    kind = "finetune"

    def __init__(self, job: FinetuneJobConfig, source: str, num_classes: int, eval_every: int):
        self.job, self.source, self.num_classes = job, source, num_classes
        self.eval_every = max(1, eval_every)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=job.finetune.label_smoothing)

    def build(self, worker: Worker) -> None:
        ft = self.job.finetune
        encoder = load_for_finetune(self.source, ft.drop_path)
        self.model = Classifier(encoder, self.num_classes, ft.head_dropout).to(worker.device)
        groups = param_groups(self.model, ft.weight_decay, ft.layer_decay)
        self.optimizer = build_adamw(groups, ft.optim())

    def model_config(self) -> Any:
        return self.model.encoder.cfg

    def state(self) -> dict[str, Any]:
        return {"model": ckpt.cpu_state(self.model), "source": {"checkpoint": self.source}}

    def loss(self, wrapped: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.criterion(wrapped(batch["x"]).float(), batch["label"])

    def end_epoch(self, epoch: int, worker: Worker) -> dict[str, float]:
        import ray.train

        last = epoch == self.job.finetune.epochs - 1
        if worker.rank != 0 or not (last or (epoch + 1) % self.eval_every == 0):
            return {}
        test = ray.train.get_dataset_shard("test")
        result = evaluate_classifier(self.model, test, self.job.data, worker.device)
        return {"test_top1": result["top1"], "test_top5": result["top5"]}


def finetune_worker(config: dict[str, Any]) -> None:
    """Ray Train entry. Besides the common keys (:mod:`stars.train.loop`): ``source``
    (checkpoint path), ``num_classes`` and ``eval_every``."""
    job = from_dict(FinetuneJobConfig, config["job"])
    ft = job.finetune
    settings = LoopSettings.for_job(job, epochs=ft.epochs, optim=ft.optim(), amp=ft.amp)
    task = FinetuneTask(job, config["source"], int(config["num_classes"]), config["eval_every"])
    run_loop(task, settings, config)


def restrict_to(table: pa.Table, keep: np.ndarray) -> pa.Table:
    """Keep the rows whose ``sample_index`` is in the sorted id array ``keep`` (a block of
    stored or of transformed rows alike)."""
    rows = np.isin(table.column("sample_index").to_numpy(), keep, assume_unique=False)
    return table.filter(pa.array(rows))
