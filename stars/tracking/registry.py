"""Encoders in the MLflow model registry: one registered model per dataset and split.

Every version is an MLflow pyfunc model (:mod:`stars.tracking.encoder_model`) that
``mlflow.pyfunc.load_model`` loads. Aliases: ``stage1-latest`` (the newest stage-1 run) and
one ``stage2-best-<metric>`` per metric tuned runs are ranked by (``stage2-best-knn`` for the
main job's ``knn_top1``, ``stage2-best-fewshot-val-5shot`` for a sweep's objective). One rule
moves a ``stage2-best-*`` alias: a candidate's lower 95 % bound on that metric must beat the
value the holder was registered with.
"""

from __future__ import annotations

import re

STAGE1_ALIAS = "stage1-latest"
STAGE2_ALIAS_PREFIX = "stage2-best-"
VALUE_TAG = "stars.value"  # the value a version was registered for (a trial's mean, say)
METRIC_TAG = "stars.metric"


def stage2_alias(metric: str) -> str:
    """The alias a tuned run ranked by ``metric`` competes for: ``knn_top1`` ->
    ``stage2-best-knn``, ``fewshot_val_5shot_mean`` -> ``stage2-best-fewshot-val-5shot``."""
    short = re.sub(r"_(top1|mean)$", "", metric)
    return STAGE2_ALIAS_PREFIX + re.sub(r"[^A-Za-z0-9-]+", "-", short).strip("-")


def registered_name(dataset: str, split: str) -> str:
    """``stars-<dataset>-<split>`` with characters the registry dislikes replaced."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"stars-{dataset}-{split}")


def register_encoder(
    mlflow_client, name: str, source_uri: str, run_id: str, alias: str, tags: dict | None = None
) -> str:
    """New version of ``name`` pointing at the model artifact ``source_uri`` (a pyfunc
    folder with its MLmodel); ``alias`` moves to it. Returns the version."""
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
