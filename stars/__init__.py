"""STARS: self-supervised tuning for 3D skeleton action recognition on Ray.

The two entry points most users need from Python::

    import stars

    encoder = stars.create_encoder("paper")             # random init, the paper's model
    encoder = stars.load_encoder("runs/demo-stage2/checkpoint_000002")
    features = encoder.forward_features(x)              # x (N, M, T, V, 3) -> (N, C)

``load_encoder`` reads any checkpoint the platform writes, a published MAMP / STARS file, an
object-store URI, or a registered MLflow model (``models:/NAME@stage2-best-knn``);
``load_stage1`` the whole MAMP model (encoder and motion decoder) of a stage-1 checkpoint or a
published MAMP file, e.g. to inspect its motion predictions.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "create_encoder", "load_encoder", "load_stage1"]

_ENTRY_POINTS = {
    "create_encoder": "stars.model.encoder",
    "load_encoder": "stars.model.checkpoint",
    "load_stage1": "stars.model.checkpoint",
}


def __getattr__(name: str):
    # Loaded on first use, so that ``import stars.model.mamp`` needs torch alone (the GPU
    # benchmark runs where only torch is installed), not the storage stack behind checkpoints.
    if name in _ENTRY_POINTS:
        import importlib

        return getattr(importlib.import_module(_ENTRY_POINTS[name]), name)
    raise AttributeError(f"module 'stars' has no attribute {name!r}")
