"""Registered encoders as MLflow models: a pyfunc whose ``predict`` maps skeleton arrays to
the pooled features every protocol uses.

Why a pyfunc and not ``mlflow.pytorch``: an ``mlflow.pytorch`` model is a pickled module that
``torch.load`` must unpickle with ``weights_only=False`` (arbitrary code from the store); the
pyfunc keeps the encoder as a weights-only STARS checkpoint (``artifacts/encoder.pt``) that
:func:`stars.model.checkpoint.load_encoder` reads, and applies the evaluation's own view
(centred crop-resize to the encoder's T) inside ``predict``.

    model = mlflow.pyfunc.load_model("models:/stars-ntu60-xsub_train@stage2-best-knn")
    features = model.predict(x)  # x (N, M, T, V, 3) float32, zero-padded frames -> (N, C)
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

ENCODER_ARTIFACT = "encoder"  # the run artifact folder holding MLmodel
ENCODER_FILE = "encoder.pt"


class EncoderFeatures(mlflow.pyfunc.PythonModel):
    """``predict(x)``: x (N, M, T, V, 3) skeleton sequences (frames past a sequence's end are
    zeros) -> (N, C) float32 pooled encoder features, from the evaluation's view of each."""

    def __init__(self, eval_crop: float = 0.95):
        self.eval_crop = eval_crop

    def load_context(self, context: Any) -> None:
        from stars.model.checkpoint import load_encoder

        self.encoder = load_encoder(context.artifacts["encoder"]).eval()

    # No type hints: MLflow would read them as an input schema and validate against it.
    def predict(self, context, model_input, params=None):
        import torch

        from stars.data.transforms import eval_view, valid_lengths

        x = np.asarray(model_input, dtype=np.float32)
        if x.ndim != 5 or x.shape[-1] != 3:
            raise ValueError(f"expected skeletons (N, M, T, V, 3), got shape {x.shape}")
        cfg = self.encoder.cfg
        if x.shape[3] != cfg.num_joints:
            raise ValueError(f"the encoder takes V={cfg.num_joints} joints, got {x.shape[3]}")
        frames_first = np.ascontiguousarray(x.transpose(0, 2, 1, 3, 4))  # (N, T, M, V, 3)
        lengths = valid_lengths(frames_first)
        view = eval_view(frames_first, lengths, out_frames=cfg.num_frames, ratio=self.eval_crop)
        with torch.inference_mode():
            feats = self.encoder.forward_features(torch.from_numpy(view))
        return feats.float().numpy()


def encoder_payload(checkpoint: str | Path) -> dict[str, Any]:
    """A weights-only checkpoint of just the encoder of ``checkpoint`` (any stage)."""
    from stars.model.checkpoint import encoder_state, make_payload, read

    cfg, state = encoder_state(read(checkpoint), checkpoint)
    return make_payload("encoder", cfg, encoder=state)


def log_encoder_model(client: Any, run_id: str, checkpoint: str, eval_crop: float) -> str:
    """Save the pyfunc of ``checkpoint``'s encoder and log it as the run's ``encoder``
    artifact; returns its URI (what a registered version points at)."""
    import importlib.metadata as md

    from stars.model.checkpoint import save

    with tempfile.TemporaryDirectory(prefix="stars-encoder-") as tmp:
        weights = Path(tmp) / ENCODER_FILE
        save(weights, encoder_payload(checkpoint))
        model_dir = Path(tmp) / ENCODER_ARTIFACT
        # Named requirements: MLflow's inference of them imports the model in a subprocess.
        requirements = [f"{name}=={md.version(name)}" for name in ("torch", "numpy", "mlflow")]
        mlflow.pyfunc.save_model(
            model_dir,
            python_model=EncoderFeatures(eval_crop),
            artifacts={"encoder": str(weights)},
            pip_requirements=requirements,
        )
        client.log_artifacts(run_id, str(model_dir), ENCODER_ARTIFACT)
    return f"{client.get_run(run_id).info.artifact_uri}/{ENCODER_ARTIFACT}"
