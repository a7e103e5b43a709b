"""Training: optimiser and schedules, the per-worker loops, TorchTrainer construction."""
