"""``import stars`` gives the two entry points a Python user needs, like timm's create_model."""

from __future__ import annotations

import torch

import stars
from stars.model import checkpoint as ckpt
from stars.model.config import preset


def test_create_encoder_builds_the_named_preset_with_overrides():
    encoder = stars.create_encoder("tiny", num_joints=20)
    assert encoder.cfg == preset("tiny", num_joints=20)
    x = torch.randn(3, 2, encoder.cfg.num_frames, 20, 3)
    assert encoder.forward_features(x).shape == (3, encoder.cfg.dim)


def test_load_encoder_reads_back_what_a_checkpoint_holds(tmp_path):
    path = ckpt.write_random_init(preset("tiny"), seed=3, path=tmp_path / "init.pt")
    saved = ckpt.read(path)["model"]
    loaded = stars.load_encoder(str(path))
    assert loaded.cfg == preset("tiny")
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, saved[f"encoder.{name}"]), name
    assert set(stars.__all__) >= {"create_encoder", "load_encoder"}
