"""Stage 1: MAMP pre-training, the loop each Ray Train worker runs."""

from __future__ import annotations

import time
from typing import Any

import torch

from stars.config import from_dict, to_dict
from stars.data.pipeline import iter_worker_batches
from stars.model import checkpoint as ckpt
from stars.model.mamp import MAMP
from stars.tracking.epochs import EpochLogger
from stars.train import loop
from stars.train.config import PretrainConfig
from stars.train.optim import build_adamw, param_groups, scheduled_lr, set_lr


def stage1_worker(config: dict[str, Any]) -> None:
    """Per-worker loop. ``config``: ``job`` (PretrainConfig as a dict), ``steps_per_epoch``,
    and ``extra`` (plain values stored in every checkpoint, e.g. the MLflow run id)."""
    import ray.train
    import ray.train.torch

    cfg = from_dict(PretrainConfig, config["job"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    if cfg.scale.torch_threads > 0:
        torch.set_num_threads(cfg.scale.torch_threads)
    loop.configure_device(device, cfg.stage1.tf32)
    loop.seed_everything(cfg.stage1.seed + rank)

    model = MAMP(cfg.model)
    optimizer = build_adamw(param_groups(model, cfg.optim.weight_decay), cfg.optim)
    steps_per_epoch = int(config["steps_per_epoch"])
    total_steps = steps_per_epoch * cfg.stage1.epochs
    warmup_steps = round(cfg.optim.warmup_epochs * steps_per_epoch)
    start_epoch, step, history = 0, 0, []
    resumed = loop.load_resume_state()
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        start_epoch, step, history = loop.resume_position(resumed, rank, cfg.stage1.seed)
    model = ray.train.torch.prepare_model(model.to(device))
    shard = ray.train.get_dataset_shard("train")
    epoch_log = EpochLogger(config.get("extra", {}), rank)

    for epoch in range(start_epoch, cfg.stage1.epochs):
        model.train()
        start, seen, loss_sum, epoch_steps = time.perf_counter(), 0, 0.0, 0
        for batch in iter_worker_batches(shard, cfg.data, "train", device):
            lr = scheduled_lr(step, total_steps, warmup_steps, cfg.optim)
            set_lr(optimizer, lr)
            with loop.autocast(device, cfg.stage1.amp):
                loss = model(batch["x"])["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
            optimizer.step()
            loop.maybe_inject_failure(step, cfg.stage1.fail_at_step, cfg.stage1.fail_marker)
            step += 1
            epoch_steps += 1
            seen += len(batch["x"])
            loss_sum += float(loss.detach())
        elapsed = time.perf_counter() - start
        metrics = {
            "epoch": epoch,
            "global_step": step,
            "loss": loss_sum / max(epoch_steps, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "epoch_time_s": elapsed,
            "throughput_seq_per_s": seen * ctx.get_world_size() / max(elapsed, 1e-9),
            "steps": epoch_steps,
        }
        history.append(metrics)
        payload = None
        if rank == 0:
            payload = ckpt.stage1_payload(
                loop.unwrap(model),
                **loop.loop_state(optimizer, epoch, step, history),
                job_config=to_dict(cfg),
                extra=config.get("extra", {}),
            )
        loop.report(metrics, payload)
        epoch_log.log(metrics, epoch)
