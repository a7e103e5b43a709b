"""Where results are tracked."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from stars.paths import check_tracking_uri

DEFAULT_URI = "sqlite:///mlflow.db"


@dataclass(frozen=True)
class TrackingConfig:
    """Attributes:
    uri: MLflow tracking URI; empty means ``$MLFLOW_TRACKING_URI`` or, without it,
        ``sqlite:///mlflow.db`` in the working directory.
    experiment: experiment name; empty means ``stars-<dataset name>``.
    enabled: False runs the job without MLflow.
    register: register selected encoders in the model registry.
    """

    uri: str = ""
    experiment: str = ""
    enabled: bool = True
    register: bool = True


def resolve_uri(uri: str = "") -> str:
    """The tracking URI with any relative SQLite or file path made absolute: training
    workers run in other directories and must reach the same store."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI", "") or DEFAULT_URI
    check_tracking_uri(uri)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
    if "://" not in uri:
        return str(Path(uri).resolve())
    return uri


def is_local_store(uri: str) -> bool:
    """A store only this machine can reach (a SQLite file or a directory)."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri
