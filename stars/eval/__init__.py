"""Evaluation protocols on pooled features (and the raw-pose floor)."""
