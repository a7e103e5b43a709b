from __future__ import annotations

import pytest
import torch

from stars.model.config import preset
from stars.model.encoder import patchify
from stars.model.mamp import (
    MAMP,
    mask_indices,
    motion_intensity,
    motion_target,
    normalise_per_token,
    sample_mask,
    visible_count,
)
from stars.presets import PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_runs_forward_and_backward(name):
    cfg = preset(name)
    model = MAMP(cfg)
    x = torch.randn(2, 2, cfg.num_frames, cfg.num_joints, 3)
    out = model(x)
    out["loss"].backward()
    L = cfg.num_tokens
    assert out["pred"].shape == out["target"].shape == (4, L, cfg.patch_values)
    assert out["mask"].shape == (4, L)
    assert model.forward_features(x).shape == (2, cfg.dim)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)


def test_paper_mask_count_is_exact():
    cfg = preset("paper")
    mask = sample_mask(torch.rand(3, cfg.num_tokens), cfg.mask_ratio, cfg.motion_tau)
    assert mask.sum(dim=1).tolist() == [675, 675, 675]  # 75 of 750 tokens visible


def test_motion_aware_masking_prefers_moving_tokens_and_tau0_is_uniform():
    L = 200
    intensity = torch.zeros(1, L)
    intensity[0, :50] = 1.0  # a quarter of the tokens move
    counts_aware = torch.zeros(L)
    counts_uniform = torch.zeros(L)
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        counts_aware += sample_mask(intensity, 0.5, 0.2, g)[0].float()
        counts_uniform += sample_mask(intensity, 0.5, 0.0, g)[0].float()
    assert counts_aware[:50].mean() > 0.95 * 400  # almost always masked
    assert counts_aware[50:].mean() < counts_uniform[50:].mean()
    # Uniform: every token masked about half of the time, moving or not.
    assert abs(counts_uniform[:50].mean() / 400 - 0.5) < 0.05
    assert abs(counts_uniform[50:].mean() / 400 - 0.5) < 0.05


def test_masking_is_reproducible_under_a_seed():
    intensity = torch.rand(4, 100)
    a = sample_mask(intensity, 0.9, 0.8, torch.Generator().manual_seed(3))
    b = sample_mask(intensity, 0.9, 0.8, torch.Generator().manual_seed(3))
    c = sample_mask(intensity, 0.9, 0.8, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_motion_intensity_matches_definition():
    patches = torch.randn(2, 5, 3, 12)
    out = motion_intensity(patches).reshape(2, 5, 3)
    expected = (patches[:, 2] - patches[:, 1]).abs().mean(-1)
    torch.testing.assert_close(out[:, 2], expected)
    torch.testing.assert_close(out[:, 0], out[:, 1])


def test_motion_target_is_temporal_difference_and_patch_order():
    x = torch.randn(2, 8, 3, 3)
    m = motion_target(x, 1)
    torch.testing.assert_close(m[:, :-1], x[:, 1:] - x[:, :-1])
    assert m[:, -1].abs().max() == 0
    p = patchify(x, 4)  # (2, 2, 3, 12): index 3 * u + c
    torch.testing.assert_close(p[0, 1, 2, 3 * 2 + 1], x[0, 4 + 2, 2, 1])


def test_loss_only_over_masked_tokens_with_normalised_targets():
    cfg = preset("tiny")
    model = MAMP(cfg)
    x = torch.randn(2, 1, cfg.num_frames, cfg.num_joints, 3)
    mask = sample_mask(torch.rand(2, cfg.num_tokens), cfg.mask_ratio, 0.0)
    out = model(x, mask=mask)
    target = out["target"]
    torch.testing.assert_close(target.mean(-1), torch.zeros_like(target[..., 0]), atol=1e-5, rtol=0)
    manual = ((out["pred"] - target) ** 2).mean(-1)[mask].mean()
    torch.testing.assert_close(out["loss"], manual)
    # Changing the prediction of a visible token changes nothing.
    pred = out["pred"].detach().clone()
    visible = (~mask).nonzero()[0]
    pred[visible[0], visible[1]] += 100
    torch.testing.assert_close(MAMP.masked_mse(pred, target, mask), out["loss"].detach())
    raw = torch.randn(3, 10, 12) * 5 + 2
    n = normalise_per_token(raw)
    torch.testing.assert_close(n.var(-1), torch.ones(3, 10), atol=1e-3, rtol=0)


def test_explicit_mask_indices_roundtrip():
    mask = torch.tensor([[True, False, True, False], [False, True, True, False]])
    keep, restore = mask_indices(mask)
    assert keep.tolist() == [[1, 3], [0, 3]]
    shuffled = torch.cat([keep, mask.nonzero()[:, 1].reshape(2, 2)], dim=1)
    assert torch.equal(shuffled.gather(1, restore), torch.arange(4).expand(2, 4))
    with pytest.raises(ValueError, match="same number of visible"):
        mask_indices(torch.tensor([[True, False], [True, True]]))
    # A count the caller knows gives the same indices as one read from the mask.
    given = mask_indices(mask, num_visible=2)
    assert all(torch.equal(a, b) for a, b in zip(given, (keep, restore), strict=True))


def test_sampled_masks_leave_the_count_the_model_assumes():
    """The model tells mask_indices how many tokens stay visible instead of counting them on
    the device: every sampled mask must leave exactly that many, at any ratio."""
    for ratio in (0.9, 0.75, 0.5, 0.333):
        for tau in (0.0, 0.8):
            mask = sample_mask(torch.rand(5, 750), ratio, tau)
            assert ((~mask).sum(dim=1) == visible_count(750, ratio)).all()
    assert visible_count(750, 0.9) == 75


def test_coordinate_target_variant():
    cfg = preset("tiny", target="coords", motion_tau=0.0)
    model = MAMP(cfg)
    x = torch.randn(1, 1, cfg.num_frames, cfg.num_joints, 3)
    out = model(x)
    expected = normalise_per_token(patchify(x[:, 0], cfg.patch_frames).flatten(1, 2))
    torch.testing.assert_close(out["target"], expected)


def test_layer_ids_and_no_weight_decay():
    model = MAMP(preset("tiny"))
    ids = {n: model.encoder.layer_id(n) for n, _ in model.encoder.named_parameters()}
    assert ids["joints_embed.weight"] == 0 and ids["pos_embed"] == 0
    assert ids["blocks.0.attn.qkv.weight"] == 1
    assert ids["blocks.1.mlp.fc2.bias"] == 2
    assert ids["norm.weight"] == 3 == model.encoder.num_layers - 1
    assert {"encoder.temp_embed", "mask_token", "decoder_pos_embed"} <= model.no_weight_decay()


def test_eval_features_encode_an_absent_actor_once_and_match_every_actor_encoded():
    cfg = preset("tiny")
    encoder = MAMP(cfg).encoder.eval()
    torch.manual_seed(0)
    x = torch.randn(5, 2, cfg.num_frames, cfg.num_joints, 3)
    x[[0, 2, 3], 1] = 0.0  # single-actor samples: the second actor is padding
    x[4, 1, : cfg.num_frames // 2] = 0.0  # present for half the sequence: still encoded
    every_actor = encoder.forward_tokens(x).mean(dim=(1, 2))
    seen = []
    hook = encoder.blocks[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    with torch.no_grad():
        fast = encoder.forward_features(x)
    hook.remove()
    torch.testing.assert_close(fast, every_actor, rtol=1e-5, atol=1e-6)
    assert seen == [7 + 1]  # 7 present actors and one zero sequence for the 3 absent ones
    encoder.train()  # training encodes every actor (dropout and drop-path act per sequence)
    seen.clear()
    hook = encoder.blocks[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    encoder.forward_features(x)
    hook.remove()
    assert seen == [10]
