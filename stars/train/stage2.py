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

from stars.config import from_dict, to_dict
from stars.data.pipeline import iter_worker_batches
from stars.eval.knn import weighted_knn_report
from stars.model import checkpoint as ckpt
from stars.model.encoder import SkeletonEncoder, actors_as_batch, patchify
from stars.model.heads import ContrastiveHeads
from stars.tracking.epochs import EpochLogger
from stars.train import loop
from stars.train.config import Stage2Config, TuneConfig
from stars.train.nnclr import SupportQueue, gather_no_grad, nnclr_loss
from stars.train.optim import build_adamw, param_groups, scheduled_lr, set_lr


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
        for name, p in encoder.named_parameters():
            if self.is_frozen(name):
                p.requires_grad_(False)

    def is_frozen(self, encoder_param: str) -> bool:
        if encoder_param.startswith(("joints_embed", "temp_embed", "pos_embed")):
            return True
        if encoder_param.startswith("blocks."):
            return int(encoder_param.split(".")[1]) < self.frozen_blocks
        return False

    def lr_scale(self, alpha: float):
        """name -> multiplier: block i of N at alpha^(N - i); final norm and heads at 1."""
        depth = self.encoder.cfg.depth

        def scale(name: str) -> float:
            if name.startswith("encoder.blocks."):
                return alpha ** (depth - int(name.split(".")[2]))
            return 1.0

        return scale

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
        self.shard, self.data_cfg, self.device, self.max_bytes = shard, data_cfg, device, max_bytes
        self.cached: list[dict[str, torch.Tensor]] | None = None

    def batches(self):
        if self.cached is not None:
            yield from self.cached
            return
        kept: list[dict[str, torch.Tensor]] | None = []
        size = 0
        for batch in iter_worker_batches(self.shard, self.data_cfg, "eval", self.device):
            size += sum(t.numel() * t.element_size() for t in batch.values())
            if kept is not None and size <= self.max_bytes:
                kept.append(batch)
            else:
                kept = None
            yield batch
        self.cached = kept

    @torch.no_grad()
    def features(self, encoder: SkeletonEncoder) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features (N, C) and labels (N,) of the whole set."""
        was_training = encoder.training
        encoder.eval()
        feats, labels = [], []
        for batch in self.batches():
            feats.append(encoder.forward_features(batch["x"]).float().cpu())
            labels.append(batch["label"].cpu())
        encoder.train(was_training)
        if not feats:
            return torch.zeros(0, encoder.cfg.dim), torch.zeros(0, dtype=torch.long)
        return torch.cat(feats), torch.cat(labels)


def stage2_worker(config: dict[str, Any]) -> None:
    """Per-worker loop. ``config``: ``job`` (TuneConfig dict), ``source`` (stage-1 checkpoint
    path), ``source_sha256``, ``steps_per_epoch``, ``monitor`` (bool), ``extra``."""
    import ray.train
    import ray.train.torch

    cfg = from_dict(TuneConfig, config["job"])
    s2 = cfg.stage2
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    if cfg.scale.torch_threads > 0:
        torch.set_num_threads(cfg.scale.torch_threads)
    loop.configure_device(device, s2.tf32)
    loop.seed_everything(s2.seed + rank)

    encoder = ckpt.load_encoder(config["source"])
    model = TunedModel(encoder, s2.frozen_blocks, s2.predictor_hidden)
    queue = SupportQueue(s2.queue_size, encoder.cfg.dim)
    groups = param_groups(model, cfg.optim.weight_decay, model.lr_scale(s2.layer_decay))
    optimizer = build_adamw(groups, cfg.optim)
    total_epochs = s2.head_warmup_epochs + s2.epochs
    steps_per_epoch = int(config["steps_per_epoch"])
    start_epoch, step, history = 0, 0, []
    resumed = loop.load_resume_state()
    if resumed is not None:
        model.encoder.load_state_dict(resumed["encoder"])
        model.heads.load_state_dict(resumed["heads"])
        queue.load_state_dict(resumed["queue"])
        optimizer.load_state_dict(resumed["optimizer"])
        start_epoch, step, history = loop.resume_position(resumed, rank, s2.seed)
    model.to(device)
    queue.to(device)
    ddp_kwargs = {"find_unused_parameters": True} if s2.head_warmup_epochs else {}
    wrapped = ray.train.torch.prepare_model(model, parallel_strategy_kwargs=ddp_kwargs)
    shard = ray.train.get_dataset_shard("train")
    epoch_log = EpochLogger(config.get("extra", {}), rank)
    if config.get("monitor") and rank == 0:
        monitor_bank = MonitorSet(ray.train.get_dataset_shard("monitor_bank"), cfg.data, device)
        monitor_query = MonitorSet(ray.train.get_dataset_shard("monitor_query"), cfg.data, device)

    for epoch in range(start_epoch, total_epochs):
        phase = "heads" if epoch < s2.head_warmup_epochs else "tune"
        model.encoder_frozen = phase == "heads"
        wrapped.train()
        start, seen, loss_sum, epoch_steps = time.perf_counter(), 0, 0.0, 0
        for batch in iter_worker_batches(shard, cfg.data, "train", device):
            set_lr(optimizer, scheduled_lr(step, total_epochs * steps_per_epoch, 0, cfg.optim))
            with loop.autocast(device, s2.amp):
                loss = contrastive_step(wrapped, queue, batch["x"], batch["sample_index"], s2)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.clip_grad:
                torch.nn.utils.clip_grad_norm_(wrapped.parameters(), cfg.optim.clip_grad)
            optimizer.step()
            loop.maybe_inject_failure(step, s2.fail_at_step, s2.fail_marker)
            step += 1
            epoch_steps += 1
            seen += len(batch["x"])
            loss_sum += float(loss.detach())
        elapsed = time.perf_counter() - start
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "phase": phase,
            "global_step": step,
            "loss": loss_sum / max(epoch_steps, 1),
            "epoch_time_s": elapsed,
            "throughput_seq_per_s": seen * ctx.get_world_size() / max(elapsed, 1e-9),
            "steps": epoch_steps,
        }
        if config.get("monitor") and rank == 0:
            bank = monitor_bank.features(model.encoder)
            query = monitor_query.features(model.encoder)
            report = weighted_knn_report(bank[0], bank[1], query[0], query[1])
            metrics.update({f"monitor_{k}": v for k, v in report.items()})
        history.append(metrics)
        payload = None
        if rank == 0:
            payload = ckpt.make_payload(
                "stage2",
                encoder.cfg,
                encoder=ckpt.cpu_state(model.encoder),
                heads=ckpt.cpu_state(model.heads),
                queue=ckpt.cpu_state(queue),
                **loop.loop_state(optimizer, epoch, step, history),
                job_config=to_dict(cfg),
                source={
                    "checkpoint": config["source"],
                    "sha256": config.get("source_sha256", ""),
                },
                extra=config.get("extra", {}),
            )
        loop.report({k: v for k, v in metrics.items() if k != "phase"}, payload)
        epoch_log.log(metrics, epoch)
