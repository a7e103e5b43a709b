"""Encoders in the MLflow model registry: one registered model per dataset and split, with
aliases ``stage1-latest`` and ``stage2-best``."""

from __future__ import annotations

import re

STAGE1_ALIAS = "stage1-latest"
STAGE2_ALIAS = "stage2-best"
VALUE_TAG = "stars.value"  # the value a version was registered for (a trial's mean, say)
METRIC_TAG = "stars.metric"


def registered_name(dataset: str, split: str) -> str:
    """``stars-<dataset>-<split>`` with characters the registry dislikes replaced."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"stars-{dataset}-{split}")


def register_encoder(
    mlflow_client, name: str, source_uri: str, run_id: str, alias: str, tags: dict | None = None
) -> str:
    """New version of ``name`` pointing at the checkpoint artifact ``source_uri``; ``alias``
    moves to it. Returns the version."""
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.create_registered_model(name)
    except MlflowException as err:
        if "already exists" not in str(err).lower() and "RESOURCE_ALREADY_EXISTS" not in str(err):
            raise
    version = mlflow_client.create_model_version(
        name, source_uri, run_id=run_id, tags=tags or {}, await_creation_for=0
    )
    mlflow_client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def alias_beats(mlflow_client, name: str, alias: str, metric: str, value: float) -> bool:
    """True when ``value`` (a candidate's value, or the lower end of its interval) beats the
    ``metric`` of the run behind ``alias`` (or there is no alias yet)."""
    from mlflow.exceptions import MlflowException

    try:
        current = mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return True
    tags = current.tags or {}
    if tags.get(METRIC_TAG) == metric and VALUE_TAG in tags:
        return value > float(tags[VALUE_TAG])
    if not current.run_id:
        return True
    best = mlflow_client.get_run(current.run_id).data.metrics.get(metric)
    return best is None or value > best
