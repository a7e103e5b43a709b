"""MLflow tracking: runs per stage, lineage tags, the model registry.

Every call goes through ``MlflowClient`` with an explicit run id, from the driver or from
rank 0 of a training job; nothing relies on MLflow's process-local active run.
"""
