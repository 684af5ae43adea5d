"""MLP, PatchGAN and Multi discriminators: output contract, parameter counts, options."""

import pytest
import torch
from torch import nn

from advtune.discriminators import MLPDiscriminator, MultiDiscriminator, NLayerDiscriminator
from advtune.losses import discriminator_loss, feature_matching_loss, r1_penalty


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_mlp_contract_and_default_matches_lightning_tutorial():
    disc = MLPDiscriminator((1, 28, 28))
    # 784*512 + 512 + 512*256 + 256 + 256*1 + 1 = 401920 + 131328 + 257
    assert count(disc) == 533_505
    x = torch.randn(3, 1, 28, 28)
    logits, features = disc(x, label=torch.zeros(3))  # cond ignored
    assert len(logits) == 1 and logits[0].shape == (3, 1)
    assert [f.shape for f in features[0]] == [(3, 512), (3, 256)]
    # features are the LeakyReLU(0.2) activations; logits are raw (not squashed into (0, 1))
    expected = torch.nn.functional.leaky_relu(disc.hidden[0](x.flatten(1)), 0.2)
    assert torch.allclose(features[0][0], expected)
    assert torch.allclose(logits[0], disc.head(features[0][1]))


def test_mlp_int_shape_dropout_spectral_norm_and_bad_input():
    disc = MLPDiscriminator(64, hidden_dims=(16,), dropout=0.5, spectral_norm=True)
    assert hasattr(disc.hidden[0], "parametrizations") and hasattr(disc.head, "parametrizations")
    logits, features = disc(torch.randn(2, 1, 8, 8))
    assert logits[0].shape == (2, 1) and len(features[0]) == 1 and torch.isfinite(logits[0]).all()
    with pytest.raises(ValueError, match="64 features per sample, got \\(2, 10\\)"):
        disc(torch.randn(2, 10))
    with pytest.raises(ValueError, match="dropout must be in"):
        MLPDiscriminator(4, dropout=1.0)


def test_patchgan_has_exactly_the_taming_parameter_count():
    # conv 3->64 (+bias) 3136; 64->128 131072 + BN 256; 128->256 524288 + BN 512;
    # 256->512 (stride 1) 2097152 + BN 1024; 512->1 (+bias) 8193  => 2,765,633
    assert count(NLayerDiscriminator(input_nc=3, ndf=64, n_layers=3, norm="batch")) == 2_765_633


def test_patchgan_contract_shapes():
    disc = NLayerDiscriminator(input_nc=3, ndf=8, n_layers=3)
    logits, features = disc(torch.randn(2, 3, 32, 32), class_labels=None)
    # 32 -> 16 -> 8 -> 4 (stride 2) -> 3 (4x4, stride 1, pad 1) -> 2 (head)
    assert len(logits) == 1 and logits[0].shape == (2, 1, 2, 2)
    assert [f.shape for f in features[0]] == [(2, 8, 16, 16), (2, 16, 8, 8), (2, 32, 4, 4), (2, 64, 3, 3)]


def test_patchgan_weights_init():
    disc = NLayerDiscriminator()
    conv = disc.blocks[3][0].weight  # 2M values: sample std is 0.02 to well within 1%
    assert conv.std().item() == pytest.approx(0.02, rel=0.01) and abs(conv.mean().item()) < 1e-4
    bn = disc.blocks[3][1]
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.01) and bn.weight.std().item() > 0
    assert torch.equal(bn.bias, torch.zeros(512))


def test_patchgan_no_norm_and_instance_norm_use_conv_bias_and_differ_in_count():
    batch, none, instance = (NLayerDiscriminator(norm=n) for n in ("batch", "none", "instance"))
    # no BN affine (256 + 512 + 1024 = 1792) but conv biases (128 + 256 + 512 = 896)
    assert count(none) == count(instance) == 2_765_633 - 1792 + 896
    assert count(batch) != count(none)
    assert all(block[0].bias is not None for block in none.blocks)
    assert batch.blocks[1][0].bias is None
    logits, features = NLayerDiscriminator(ndf=4, norm="instance")(torch.randn(1, 3, 32, 32))
    assert logits[0].shape == (1, 1, 2, 2) and len(features[0]) == 4
    with pytest.raises(ValueError, match="valid: batch, instance, none"):
        NLayerDiscriminator(norm="group")


def test_patchgan_spectral_norm_runs_and_bounds_the_top_singular_value():
    torch.manual_seed(0)
    disc = NLayerDiscriminator(ndf=4, n_layers=2, norm="none", spectral_norm=True)
    assert all(hasattr(block[0], "parametrizations") for block in disc.blocks)
    x = torch.randn(2, 3, 16, 16)
    for _ in range(3):  # one power iteration per forward in train mode (15 already ran at wrapping)
        logits, _ = disc(x)
    assert torch.isfinite(logits[0]).all()
    weight = disc.head.weight  # the normalised weight, viewed as (out, in * k * k)
    sigma = torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2)
    assert sigma.item() == pytest.approx(1.0, abs=1e-3)


def test_r1_through_patchgan_backpropagates():
    disc = NLayerDiscriminator(ndf=4, n_layers=2, norm="none")
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    logits, _ = disc(x)
    r1_penalty(logits, x).backward()
    assert disc.blocks[0][0].weight.grad.abs().sum() > 0


class LabelScaled(nn.Module):
    """A conditional test discriminator that needs the ``scale`` cond key."""

    def forward(self, x, scale, **cond):
        return [x.flatten(1).sum(1, keepdim=True) * scale], [[x * scale]]


def test_multi_concatenates_members_and_passes_cond():
    inner = MultiDiscriminator([LabelScaled(), LabelScaled()])  # a member with 2 sub-discriminators
    multi = MultiDiscriminator({"mlp": MLPDiscriminator((3, 16, 16), hidden_dims=(8, 4)),
                                "patch": NLayerDiscriminator(ndf=4, n_layers=2), "pair": inner})
    assert "discriminators.patch.head.weight" in multi.state_dict()
    x = torch.randn(2, 3, 16, 16)
    logits, features = multi(x, scale=2.0)
    assert [tuple(item.shape) for item in logits] == [(2, 1), (2, 1, 2, 2), (2, 1), (2, 1)]
    assert [len(f) for f in features] == [2, 3, 1, 1]
    assert torch.allclose(logits[2], x.flatten(1).sum(1, keepdim=True) * 2.0)
    # the outputs plug straight into the losses
    assert discriminator_loss(logits, [item.detach() - 1 for item in logits], "hinge").dim() == 0
    assert feature_matching_loss(features, features).item() == 0.0


def test_multi_list_and_bad_members():
    multi = MultiDiscriminator([MLPDiscriminator(4, hidden_dims=(3,)), MLPDiscriminator(4, hidden_dims=(5,))])
    logits, features = multi(torch.randn(5, 4))
    assert len(logits) == 2 and [f[0].shape[1] for f in features] == [3, 5]

    class Bare(nn.Module):
        def forward(self, x, **cond):
            return x, []

    with pytest.raises(TypeError, match="member '1' must return"):
        MultiDiscriminator([MLPDiscriminator(4), Bare()])(torch.randn(2, 4))
    with pytest.raises(ValueError, match="at least one"):
        MultiDiscriminator([])
    with pytest.raises(TypeError, match="list or dict"):
        MultiDiscriminator(MLPDiscriminator(4))


def test_multi_spectral_norm_wraps_every_member_weight_once():
    from torch.nn.utils import parametrize

    multi = MultiDiscriminator([MLPDiscriminator(4, hidden_dims=(3,), spectral_norm=True),
                                NLayerDiscriminator(input_nc=1, ndf=2, n_layers=1, norm="none")], spectral_norm=True)
    layers = [m for m in multi.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert all(len(m.parametrizations.weight) == 1 for m in layers)  # the MLP's own wrapping is not doubled
    assert not any(parametrize.is_parametrized(m) for m in MultiDiscriminator([MLPDiscriminator(4)]).modules())
