"""Registered versions load with MLflow's own API and give the evaluation's features."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from stars.data.transforms import eval_view
from stars.model.checkpoint import CheckpointError, load_encoder, write_random_init
from stars.model.config import ModelConfig
from stars.tracking import registry
from stars.tracking.encoder_model import log_encoder_model


@pytest.fixture
def registered(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = ModelConfig(
        dim=32,
        depth=2,
        num_heads=2,
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=2,
        num_frames=16,
    )
    ckpt = write_random_init(cfg, 0, tmp_path / "checkpoint.pt")
    client = MlflowClient(uri)
    exp = client.create_experiment("e", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(exp)
    source = log_encoder_model(client, run.info.run_id, str(ckpt), eval_crop=0.9)
    name = registry.registered_name("synthetic", "xsub_train")
    alias = registry.stage2_alias("knn_top1")
    registry.register_encoder(client, name, source, run.info.run_id, alias)
    return ckpt, f"models:/{name}@{alias}"


def test_pyfunc_predict_gives_the_evaluation_features(registered):
    ckpt, model_uri = registered
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 2, 40, 25, 3)).astype(np.float32)  # (N, M, T, V, 3)
    x[:, :, 30:] = 0  # frames past the end of each sequence
    x[1, 1] = 0  # one actor
    got = mlflow.pyfunc.load_model(model_uri).predict(x)
    encoder = load_encoder(ckpt).eval()
    frames_first = x.transpose(0, 2, 1, 3, 4)
    view = eval_view(frames_first, np.full(5, 30), out_frames=16, ratio=0.9)
    with torch.inference_mode():
        want = encoder.forward_features(torch.from_numpy(view)).numpy()
    assert got.shape == (5, 32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_load_encoder_reads_a_registered_version(registered):
    ckpt, model_uri = registered
    a, b = load_encoder(ckpt), load_encoder(model_uri)
    assert a.cfg == b.cfg
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)


def test_a_wrong_input_shape_is_named(registered):
    _, model_uri = registered
    with pytest.raises(ValueError, match=r"expected skeletons \(N, M, T, V, 3\)"):
        mlflow.pyfunc.load_model(model_uri).predict(np.zeros((2, 40, 25, 3), np.float32))


def test_an_unknown_model_is_a_named_error(registered):
    with pytest.raises(CheckpointError, match="models:/nope@x: not found"):
        load_encoder("models:/nope@x")


def test_alias_names_its_metric():
    assert registry.stage2_alias("knn_top1") == "stage2-best-knn"
    assert registry.stage2_alias("fewshot_val_5shot_mean") == "stage2-best-fewshot-val-5shot"
