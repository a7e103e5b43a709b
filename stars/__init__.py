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

from stars.model.checkpoint import load_encoder, load_stage1
from stars.model.encoder import create_encoder

__all__ = ["__version__", "create_encoder", "load_encoder", "load_stage1"]
