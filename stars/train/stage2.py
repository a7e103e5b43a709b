"""Stage 2: STARS contrastive tuning, the loop each Ray Train worker runs.

The decoder is dropped; the stage-1 encoder's pooled feature y goes through the projector and
predictor; the nearest neighbour (in a support queue) of each projection is the positive of
its own prediction among the global batch. The embeddings and the first half of the blocks
stay frozen and run under ``torch.no_grad()``; the other blocks train with layer-wise
decayed learning rates.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from stars.config import from_dict
from stars.data.local_rows import LocalRows
from stars.data.pipeline import iter_worker_batches
from stars.metrics.feature_set import FeatureSet
from stars.metrics.fewshot import fewshot_report, restrict, validation_classes
from stars.metrics.knn import accuracies, weighted_knn_correct
from stars.model import checkpoint as ckpt
from stars.model.encoder import SkeletonEncoder, actors_as_batch, patchify
from stars.model.heads import ContrastiveHeads
from stars.train.config import Stage2Config, Stage2JobConfig
from stars.train.loop import LoopSettings, StageTask, Worker, run_loop
from stars.train.nnclr import SupportQueue, gather_no_grad, nnclr_loss
from stars.train.optim import build_adamw, freeze_below, param_groups
from stars.train.session import Session


class TunedModel(nn.Module):
    """Encoder + contrastive heads with partial freezing.

    ``forward(x)`` with x (N, M, T, V, 3) returns (y (N, C), z (N, C), p (N, C)).
    """

    def __init__(self, encoder: SkeletonEncoder, frozen_blocks: int, hidden: int):
        super().__init__()
        self.encoder = encoder
        self.heads = ContrastiveHeads(encoder.cfg.dim, hidden)
        depth = encoder.cfg.depth
        self.frozen_blocks = depth // 2 if frozen_blocks < 0 else frozen_blocks
        if not 0 <= self.frozen_blocks <= depth:
            raise ValueError(f"frozen_blocks must be in 0..{depth}")
        self.encoder_frozen = False  # the heads-only phase of STARS-3stage
        # Layer 0 is the embeddings, always frozen; block i is layer i + 1.
        freeze_below(self, self.frozen_blocks + 1)

    @property
    def num_layers(self) -> int:
        """The encoder's layers; the heads share the top id with the final norm."""
        return self.encoder.num_layers

    def layer_id(self, name: str) -> int:
        if name.startswith("encoder."):
            return self.encoder.layer_id(name[len("encoder.") :])
        return self.encoder.num_layers - 1

    def is_frozen(self, encoder_param: str) -> bool:
        return self.encoder.layer_id(encoder_param) < self.frozen_blocks + 1

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled feature y (N, C): frozen part without autograd, the rest with it."""
        N, M = x.shape[:2]
        enc = self.encoder
        with torch.no_grad():
            tokens = enc.embed(patchify(actors_as_batch(x), enc.cfg.patch_frames))
            for block in enc.blocks[: self.frozen_blocks]:
                tokens = block(tokens)
        if self.encoder_frozen:
            with torch.no_grad():
                tokens = enc.run_blocks(tokens, first=self.frozen_blocks)
        else:
            tokens = enc.run_blocks(tokens, first=self.frozen_blocks)
        return tokens.reshape(N, M, tokens.shape[1], -1).mean(dim=(1, 2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = self.features(x)
        z, p = self.heads(y)
        return y, z, p


def contrastive_step(
    model: nn.Module,
    queue: SupportQueue,
    x: torch.Tensor,
    ids: torch.Tensor,
    cfg: Stage2Config,
    enqueue: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Loss of one batch; then the global batch's projections (and ids) enter the queue."""
    _, z, p = model(x)
    nn_z = queue.nearest(z.detach(), ids, cfg.topk, generator)
    loss = nnclr_loss(nn_z, p, cfg.temperature, cfg.symmetric)
    if enqueue:
        queue.enqueue(gather_no_grad(z), gather_no_grad(ids))
    return loss


class MonitorSet:
    """An evaluation dataset that rank 0 encodes every epoch.

    Evaluation views are deterministic, so the first pass keeps the model-ready batches in
    memory (up to ``max_bytes``) and later epochs skip Ray Data's fixed per-pass cost;
    larger sets are streamed each time.
    """

    def __init__(self, shard: Any, data_cfg, device, max_bytes: int = 1 << 30):
        # shard: a Ray Data shard, or in-process rows (LocalRows)
        self.shard, self.data_cfg, self.device, self.max_bytes = shard, data_cfg, device, max_bytes
        self.cached: list[dict[str, torch.Tensor]] | None = None

    def batches(self):
        if self.cached is not None:
            yield from self.cached
            return
        kept: list[dict[str, torch.Tensor]] | None = []
        size = 0
        for batch in self._stream():
            size += sum(t.numel() * t.element_size() for t in batch.values())
            if kept is not None and size <= self.max_bytes:
                kept.append(batch)
            else:
                kept = None
            yield batch
        self.cached = kept

    def _stream(self):
        if isinstance(self.shard, LocalRows):
            return self.shard.eval_batches(self.data_cfg, self.device)
        return iter_worker_batches(self.shard, self.data_cfg, "eval", self.device)

    @torch.no_grad()
    def features(self, encoder: SkeletonEncoder) -> FeatureSet:
        """Pooled features (N, C), labels and sample ids of the whole set."""
        was_training = encoder.training
        encoder.eval()
        parts = [
            {
                "feature": encoder.forward_features(batch["x"]).float().cpu().numpy(),
                "label": batch["label"].cpu().numpy(),
                "sample_index": batch["sample_index"].cpu().numpy(),
            }
            for batch in self.batches()
        ]
        encoder.train(was_training)
        return FeatureSet.from_parts(parts, encoder.cfg.dim)


def monitor_report(s2: Stage2Config, bank: FeatureSet, query: FeatureSet | None) -> dict:
    """The per-epoch monitor metrics (``monitor_*``) of stage-2 monitoring mode ``s2.monitor``:
    weighted kNN of ``query`` against ``bank``, or few-shot episodes on the validation half
    of the novel classes (``bank`` the gallery, ``query`` the query part or None)."""
    if s2.monitor == "fewshot_val":
        val, _ = validation_classes(bank.labels)
        report, _ = fewshot_report(
            restrict(bank, val),
            restrict(query, val),
            (s2.monitor_shots,),
            s2.monitor_episodes,
            prefix="fewshot_val",
        )
    else:
        report = accuracies(weighted_knn_correct(*bank.tensors(), *query.tensors()))
    return {f"monitor_{k}": v for k, v in report.items()}


class Stage2Task(StageTask):
    """NNCLR tuning of a stage-1 encoder: partial freezing, layer-wise decayed lrs, the
    support queue, optional heads-only first phase (STARS-3stage) and rank-0 monitoring."""

    kind = "stage2"

    def __init__(self, cfg: Stage2JobConfig, source: str, source_sha256: str = ""):
        self.cfg, self.source, self.source_sha256 = cfg, source, source_sha256

    def build(self, worker: Worker) -> None:
        s2 = self.cfg.stage2
        encoder = ckpt.load_encoder(self.source)
        self.model = TunedModel(encoder, s2.frozen_blocks, s2.predictor_hidden).to(worker.device)
        self.queue = SupportQueue(s2.queue_size, encoder.cfg.dim).to(worker.device)
        groups = param_groups(self.model, self.cfg.optim.weight_decay, s2.layer_decay)
        self.optimizer = build_adamw(groups, self.cfg.optim)
        self.monitors: dict[str, MonitorSet] = {}
        if worker.loop_config.get("monitor", "none") != "none" and worker.rank == 0:
            self.monitors = {
                name: MonitorSet(worker.session.dataset(name), self.cfg.data, worker.device)
                for name in ("monitor_bank", "monitor_query")
                if name in worker.loop_config.get("monitor_datasets", [])
            }
        self.objective = worker.loop_config.get("objective_metric", "")

    def model_config(self) -> Any:
        return self.model.encoder.cfg

    def load_state(self, payload: dict[str, Any]) -> None:
        self.model.encoder.load_state_dict(payload["encoder"])
        self.model.heads.load_state_dict(payload["heads"])
        self.queue.load_state_dict(payload["queue"])

    def state(self) -> dict[str, Any]:
        return {
            "encoder": ckpt.cpu_state(self.model.encoder),
            "heads": ckpt.cpu_state(self.model.heads),
            "queue": ckpt.cpu_state(self.queue),
            "source": {"checkpoint": self.source, "sha256": self.source_sha256},
        }

    def ddp_kwargs(self) -> dict[str, Any]:
        # The heads-only phase leaves the encoder's trainable blocks without gradients.
        return {"find_unused_parameters": True} if self.cfg.stage2.head_warmup_epochs else {}

    def begin_epoch(self, epoch: int) -> dict[str, Any]:
        phase = "heads" if epoch < self.cfg.stage2.head_warmup_epochs else "tune"
        self.model.encoder_frozen = phase == "heads"
        return {"phase": phase}

    def loss(self, wrapped: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return contrastive_step(
            wrapped, self.queue, batch["x"], batch["sample_index"], self.cfg.stage2
        )

    def end_epoch(self, epoch: int, worker: Worker) -> dict[str, float]:
        if not self.monitors:
            return {}
        start = time.perf_counter()
        feats = {name: m.features(self.model.encoder) for name, m in self.monitors.items()}
        report = monitor_report(self.cfg.stage2, feats["monitor_bank"], feats.get("monitor_query"))
        # Rank 0 monitors whole sets (they are never split across workers): the counts say so.
        for name, features in feats.items():
            report[f"{name}_samples"] = float(len(features))
        if self.objective:  # a sweep's trial: the value its scheduler compares each epoch
            report["objective"] = report[self.objective]
        report["monitor_time_s"] = time.perf_counter() - start
        return report


def stage2_settings(cfg: Stage2JobConfig) -> LoopSettings:
    s2 = cfg.stage2
    return LoopSettings.for_job(
        cfg, epochs=s2.head_warmup_epochs + s2.epochs, optim=cfg.optim, amp=s2.amp, tf32=s2.tf32
    )


def stage2_worker(config: dict[str, Any], session: Session | None = None) -> None:
    """Ray Train entry (``session`` given: the in-process run). Besides the common keys
    (:mod:`stars.train.loop`): ``source`` (the stage-1 checkpoint file), ``source_sha256``,
    ``monitor`` (the mode), ``monitor_datasets`` (the monitoring datasets handed to the
    trainer) and, in sweeps, ``objective_metric``."""
    cfg = from_dict(Stage2JobConfig, config["job"])
    task = Stage2Task(cfg, config["source"], config.get("source_sha256", ""))
    run_loop(task, stage2_settings(cfg), config, session)
