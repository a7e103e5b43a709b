"""Datasets read from a URI (``--data s3://...``), against a real S3 API: moto's server on
loopback, stopped by its process group afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import S3_CREDENTIALS, s3_bucket, s3_client, s3_server

from stars.data.shards import DataError, open_dataset
from stars.location import LocationError
from stars.storage import join

BUCKET = "stars-data"


def upload(endpoint: str, local: Path, prefix: str, public: bool = True) -> str:
    """Copy a dataset directory to ``s3://stars-data/<prefix>``; its URI for pyarrow.

    The objects are public-read, so readers need no credentials: the session's Ray workers
    started before this module and do not have any."""
    s3_bucket(endpoint, BUCKET)
    client = s3_client(endpoint)
    for path in sorted(local.iterdir()):
        extra = {"ACL": "public-read"} if public else {}
        client.upload_file(str(path), BUCKET, f"{prefix}/{path.name}", ExtraArgs=extra)
    return f"s3://{BUCKET}/{prefix}?endpoint_override={endpoint}&scheme=http&region=us-east-1"


@pytest.fixture(scope="module")
def s3_dataset(s3_endpoint: str, tiny_dataset_dir: Path) -> str:
    return upload(s3_endpoint, tiny_dataset_dir, "tiny")


def test_a_dataset_on_s3_opens_and_reads_like_its_local_copy(s3_dataset, tiny_dataset):
    remote = open_dataset(s3_dataset, verify_checksums=True)
    assert remote.root == s3_dataset and remote.absolute_root == s3_dataset
    assert remote.digest == tiny_dataset.digest
    assert remote.shard_paths[0].startswith(f"{BUCKET}/tiny/shard-")
    split = tiny_dataset.protocol()["train"]
    mine, theirs = remote.read_split(split), tiny_dataset.read_split(split)
    assert set(mine) == set(theirs)
    for name in mine:
        np.testing.assert_array_equal(mine[name], theirs[name])


def test_a_missing_shard_on_s3_is_named_by_its_uri(s3_endpoint, tiny_dataset_dir):
    uri = upload(s3_endpoint, tiny_dataset_dir, "broken")
    s3_client(s3_endpoint).delete_object(Bucket=BUCKET, Key="broken/shard-00001.parquet")
    with pytest.raises(
        DataError, match=r"shard s3://stars-data/broken/shard-00001\.parquet .*missing"
    ):
        open_dataset(uri)


def test_a_uri_without_a_dataset_or_with_a_bad_option_is_a_clear_error(s3_endpoint):
    base = f"endpoint_override={s3_endpoint}&scheme=http&region=us-east-1"
    with pytest.raises(DataError, match=r"s3://stars-data/nothing-here is not a STARS dataset"):
        open_dataset(f"s3://{BUCKET}/nothing-here?{base}")
    with pytest.raises(LocationError, match=r"cannot be opened as a dataset location"):
        open_dataset(f"s3://{BUCKET}/tiny?colour=blue")


@pytest.mark.ray
def test_ray_data_streams_a_split_from_s3(ray_local, s3_dataset, tiny_dataset):
    from stars.data.config import DataConfig
    from stars.data.pipeline import build_dataset
    from stars.train.placement import check_data_readable

    remote = open_dataset(s3_dataset)
    check_data_readable(remote)  # one node here: nothing to probe, and nothing raised
    split = tiny_dataset.protocol()["test"]
    cfg = DataConfig(num_frames=32, map_batch_size=16)
    rows = build_dataset(remote, split, "eval", cfg).take_all()
    ids = sorted(int(r["sample_index"]) for r in rows)
    assert ids == sorted(tiny_dataset.read_split(split, ["sample_index"])["sample_index"])
    assert rows[0]["x"].shape == (tiny_dataset.num_bodies, 32, tiny_dataset.num_joints, 3)


@pytest.mark.ray
@pytest.mark.slow
def test_the_main_job_trains_and_evaluates_from_s3(ray_local, s3_dataset, tmp_path, capsys):
    from stars.cli.pretrain import main as pretrain_main
    from stars.tracking.runs import CHECKPOINT, STAGE, client

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--preset", "tiny", "--data", s3_dataset, "--stage1-only", "--name", "from-s3"]
    args += ["--set", f"scale.storage_path={tmp_path / 'runs'}", "--tracking-uri", uri]
    args += ["--protocols", "knn,fewshot", "--eval-set", "fewshot_shots=[1]"]
    assert pretrain_main(args) == 0
    assert "s3://stars-data/tiny" in capsys.readouterr().out
    (run,) = [
        r
        for r in client(uri).search_runs(client(uri).search_experiments()[0].experiment_id)
        if r.data.tags.get(STAGE) == "stage1"
    ]
    assert run.info.status == "FINISHED"
    assert run.data.params["data.path"] == s3_dataset
    assert "knn_top1" in run.data.metrics and Path(run.data.tags[CHECKPOINT]).is_file()
    (dataset_input,) = run.inputs.dataset_inputs
    assert "s3://stars-data/tiny" in dataset_input.dataset.source


# A 1-CPU head with credentials and a node without (its raylet's environment), as when one
# machine of a cluster lacks the instance role: the check before training names that node.
NODE_WITHOUT_CREDENTIALS = textwrap.dedent(
    """
    import sys
    import ray
    from ray.cluster_utils import Cluster
    from stars.data.shards import DataError, open_dataset
    from stars.storage import StorageError
    from stars.train.placement import check_data_readable, check_shared

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        blind = cluster.add_node(
            num_cpus=1, env_vars={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
        )
        ray.init(address=cluster.address, log_to_driver=False)
        data = open_dataset(sys.argv[1])  # the driver has credentials
        print("BLIND", blind.node_id[:8])
        try:
            check_data_readable(data)
            print("NOT RAISED")
        except DataError as err:
            print("ERROR", err)
        try:
            check_shared(sys.argv[2], "scale.storage_path", "Set --set scale.storage_path to")
            print("NOT RAISED")
        except StorageError as err:
            print("STORAGE", err)
    finally:
        ray.shutdown()
        cluster.shutdown()
    """
)


@pytest.fixture(scope="module")
def s3_with_auth(tmp_path_factory) -> Iterator[tuple[str, dict[str, str]]]:
    """An S3 server that checks credentials (the fixture above accepts any): its first
    actions, unauthenticated, create a user with an access key; every later request needs
    that key. Yields the endpoint and the key as environment variables."""
    log = tmp_path_factory.mktemp("s3-auth") / "moto.log"
    with s3_server(log, {"INITIAL_NO_AUTH_ACTION_COUNT": "3"}) as endpoint:
        iam = s3_client(endpoint, service="iam")
        iam.create_user(UserName="stars")
        key = iam.create_access_key(UserName="stars")["AccessKey"]
        allow_all = {"Effect": "Allow", "Action": "*", "Resource": "*"}
        iam.put_user_policy(
            UserName="stars",
            PolicyName="all",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [allow_all]}),
        )
        yield (
            endpoint,
            {
                **S3_CREDENTIALS,
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            },
        )


@pytest.mark.ray
@pytest.mark.slow
def test_a_node_that_cannot_read_the_dataset_or_write_results_is_named_before_training(
    s3_with_auth, tiny_dataset_dir, tmp_path
):
    endpoint, credentials = s3_with_auth
    data = s3_bucket(endpoint, "private", credentials)
    client = s3_client(endpoint, credentials)
    for path in sorted(tiny_dataset_dir.iterdir()):
        client.upload_file(str(path), "private", f"tiny/{path.name}")
    runs = s3_bucket(endpoint, "runs", credentials)
    env = {**os.environ, **credentials}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, "-c", NODE_WITHOUT_CREDENTIALS, join(data, "tiny"), runs],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    lines = {line.split(" ", 1)[0]: line for line in out.stdout.splitlines()}
    assert "ERROR" in lines and "STORAGE" in lines, (out.stdout[-2000:], out.stderr[-3000:])
    blind = lines["BLIND"].split()[1]
    error = lines["ERROR"]
    assert "s3://private/tiny cannot be read on every node" in error
    assert f"{blind}: s3://private/tiny/manifest.json: cannot be read" in error
    assert error.count("manifest.json: cannot be read") == 1, error  # the head reads it
    # Results kept at a URI: the node that cannot write there is named, the head is not.
    storage = lines["STORAGE"]
    assert "scale.storage_path s3://runs cannot be written from every node (node " in storage
    assert f" {blind}: " in storage and "; node" not in storage, storage
    assert "environment of `ray start`" in storage
