from __future__ import annotations

import argparse

import pytest
import torch

from stars.model import checkpoint as ckpt
from stars.model.config import preset
from stars.model.encoder import patchify
from stars.model.mamp import MAMP


class NotAllowListed:
    """Any class other than argparse.Namespace must be refused by the loader."""


def _published_state(cfg, seed=0) -> dict[str, torch.Tensor]:
    """A random state dict in the released MAMP layout (conv embedding, top-level keys)."""
    g = torch.Generator().manual_seed(seed)
    ours = MAMP(cfg).state_dict()
    state = {}
    for key, value in ckpt.to_published(ours).items():
        state[key] = torch.randn(value.shape, generator=g)
    return state


def test_published_layout_imports_every_tensor_in_place(tmp_path):
    cfg = preset("tiny", num_heads=2)
    state = _published_state(cfg)
    assert state["joints_embed.proj.weight"].shape == (cfg.dim, 3, cfg.patch_frames, 1)
    path = tmp_path / "mamp.pth"
    args = argparse.Namespace(num_heads=2, mask_ratio=0.9, motion_aware_tau=0.8)
    torch.save({"model": state, "optimizer": {}, "epoch": 399, "args": args}, path)
    model = ckpt.load_stage1(path)
    ours = model.state_dict()
    for key, value in state.items():
        if key.startswith("joints_embed.proj"):
            continue
        target = (
            f"encoder.{key}"
            if key.split(".")[0] in ("temp_embed", "pos_embed", "blocks", "norm")
            else key
        )
        assert torch.equal(ours[target], value), key
    # The conv embedding and our linear embedding give the same token embedding.
    seq = torch.randn(1, cfg.patch_frames, 1, 3)  # (B, T=l, V=1, C)
    conv = torch.nn.functional.conv2d(
        seq.permute(0, 3, 1, 2),
        state["joints_embed.proj.weight"],
        state["joints_embed.proj.bias"],
        stride=(cfg.patch_frames, 1),
    )
    linear = model.encoder.joints_embed(patchify(seq, cfg.patch_frames))
    torch.testing.assert_close(linear.reshape(-1), conv.reshape(-1), rtol=1e-5, atol=1e-5)
    # The 12 predicted values keep their (frame-in-segment, coordinate) order.
    assert torch.equal(ours["decoder_pred.weight"], state["decoder_pred.weight"])
    # Exported back: identical tensors, identical outputs.
    back = ckpt.to_published(ours)
    assert back.keys() == state.keys()
    for key in state:
        assert torch.equal(back[key], state[key]), key
    again = MAMP(cfg)
    again.load_state_dict(ckpt.from_published(back))
    x = torch.randn(2, 2, cfg.num_frames, cfg.num_joints, 3)
    mask = torch.zeros(4, cfg.num_tokens, dtype=torch.bool)
    mask[:, ::2] = True
    model.eval()
    again.eval()
    torch.testing.assert_close(model(x, mask=mask)["pred"], again(x, mask=mask)["pred"])
    torch.testing.assert_close(model.forward_features(x), again.forward_features(x))


def test_published_config_inference_and_stars_prefix(tmp_path):
    cfg = preset("tiny", num_heads=2)
    state = _published_state(cfg, seed=1)
    encoder_keys = {k: v for k, v in state.items() if not k.startswith(("decoder", "mask"))}
    stars_file = tmp_path / "stars.pth"
    payload = {f"encoder_student.{k}": v for k, v in encoder_keys.items()}
    payload["projector.weight"] = torch.ones(3)
    torch.save({"model": payload, "args": argparse.Namespace(num_heads=2)}, stars_file)
    encoder = ckpt.load_encoder(stars_file)
    assert encoder.cfg.depth == cfg.depth and encoder.cfg.num_frames == cfg.num_frames
    assert encoder.cfg.num_joints == cfg.num_joints and encoder.cfg.dim == cfg.dim
    assert torch.equal(encoder.blocks[1].attn.qkv.weight, state["blocks.1.attn.qkv.weight"])


def test_our_checkpoints_round_trip(tmp_path):
    model = MAMP(preset("tiny"))
    path = tmp_path / "checkpoint.pt"
    ckpt.save(path, ckpt.stage1_payload(model, epoch=3, global_step=10))
    loaded = ckpt.load_stage1(path)
    encoder = ckpt.load_encoder(tmp_path)  # a directory holding checkpoint.pt works too
    x = torch.randn(2, 2, 32, 25, 3)
    model.eval()
    torch.testing.assert_close(loaded.eval().forward_features(x), model.forward_features(x))
    torch.testing.assert_close(encoder.eval()(x), model.forward_features(x))


def test_unsafe_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "args": NotAllowListed()}, path)
    with pytest.raises(ckpt.CheckpointError, match="cannot read checkpoint"):
        ckpt.read(path)
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.read(tmp_path / "missing.pt")
    torch.save({"something": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ckpt.CheckpointError, match="no encoder found"):
        ckpt.load_encoder(tmp_path / "other.pt")
