"""One training step of the released MAMP code (``../shared/fixtures/mamp_reference_step.pt``):
its weights in the published layout, a batch, its own mask, loss and every gradient. Loading
through ``load_stage1`` and stepping with the same mask must reproduce them; this guards the
model's math and the published-layout import against the released code itself."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from stars.model.checkpoint import from_published, load_encoder, load_stage1, to_published


@pytest.fixture(scope="module")
def fixture_file(shared_fixtures) -> Path:
    return shared_fixtures / "mamp_reference_step.pt"


@pytest.fixture(scope="module")
def reference(fixture_file):
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(fixture_file, weights_only=True)


def test_published_weights_load_into_the_model(reference, fixture_file):
    model = load_stage1(fixture_file)
    cfg = model.cfg
    assert (cfg.dim, cfg.depth, cfg.decoder_depth, cfg.num_heads) == (64, 3, 2, 4)
    assert (cfg.num_frames, cfg.num_joints, cfg.patch_frames) == (120, 25, 4)
    assert cfg.motion_tau == pytest.approx(0.75) and cfg.mask_ratio == pytest.approx(0.9)
    ours = model.state_dict()
    mapped = from_published(reference["model"])
    assert set(mapped) == set(ours)
    # Every published tensor is used, unchanged except the embedding's conv layout.
    encoder_top = ("blocks.", "norm.", "temp_embed", "pos_embed", "joints_embed.proj.bias")
    for key, value in reference["model"].items():
        if key == "joints_embed.proj.weight":  # conv (C, 3, l, 1) -> linear (C, l*3)
            w = mapped["encoder.joints_embed.weight"]
            assert torch.equal(w[:, 3 * 1 + 2], value[:, 2, 1, 0])  # frame 1, coordinate z
            continue
        ours_key = f"encoder.{key}" if key.startswith(encoder_top) else key
        ours_key = ours_key.replace("joints_embed.proj.bias", "joints_embed.bias")
        assert torch.equal(value, mapped[ours_key]), key
    assert load_encoder(fixture_file).cfg.depth == 3


def test_loss_and_gradients_match_the_released_code(reference, fixture_file):
    model = load_stage1(fixture_file)
    model.train()
    out = model(reference["x"], mask=reference["mask"])
    assert out["loss"].item() == pytest.approx(float(reference["loss"]), rel=1e-6)
    out["loss"].backward()
    grads = to_published({k: p.grad for k, p in model.named_parameters() if p.grad is not None})
    assert set(grads) == set(reference["grads"])
    for key, expected in reference["grads"].items():
        got = grads[key]
        scale = expected.abs().max().clamp_min(1e-12)
        assert (got - expected).abs().max() / scale < 5e-6, key
