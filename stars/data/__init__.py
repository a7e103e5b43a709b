"""Skeleton data: source formats, sharded Parquet, transforms and Ray Data pipelines."""
