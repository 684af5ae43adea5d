"""GAN generators and the DCGAN discriminator: shapes, ranges, parameter counts, contract, I/O."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from advtune.io import load_model, save_model
from advtune.models.gan import DCGANDiscriminator, DCGANGenerator, MLPGenerator


def _num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_mlp_generator_has_the_tutorial_parameter_count():
    # Linear(100,128)            100*128+128           = 12,928
    # Linear(128,256) + BN(256)  128*256+256 + 2*256   = 33,024 + 512
    # Linear(256,512) + BN(512)  256*512+512 + 2*512   = 131,584 + 1,024
    # Linear(512,1024)+ BN(1024) 512*1024+1024 + 2*1024 = 525,312 + 2,048
    # Linear(1024, 64)           1024*64+64            = 65,600
    assert _num_parameters(MLPGenerator(latent_dim=100, img_shape=(1, 8, 8))) == 772_032
    # On MNIST (1, 28, 28) the last layer is Linear(1024, 784) = 803,600: the tutorial's "1.5 M".
    assert _num_parameters(MLPGenerator(latent_dim=100, img_shape=(1, 28, 28))) == 1_510_032


def test_mlp_generator_layout_matches_the_tutorial():
    generator = MLPGenerator()
    layers = list(generator.model)
    norms = [m for m in layers if isinstance(m, nn.BatchNorm1d)]
    assert [n.num_features for n in norms] == [256, 512, 1024]  # none after the first Linear
    assert all(n.eps == 0.8 for n in norms)
    assert isinstance(layers[1], nn.LeakyReLU) and layers[1].negative_slope == 0.2
    assert isinstance(layers[-1], nn.Tanh)


def test_mlp_generator_maps_noise_to_images_in_range():
    generator = MLPGenerator()
    images = generator(torch.randn(5, 100))
    assert images.shape == (5, 1, 8, 8)
    assert images.min() >= -1.0 and images.max() <= 1.0


def test_dcgan_generator_shapes_and_parameter_count():
    generator = DCGANGenerator(latent_dim=64, channels=1, base_channels=64)
    # ConvT(64→128, 4×4, no bias) 131,072 + BN 256 + ConvT(128→64) 131,072 + BN 128
    # + Conv(64→1, 3×3) 577 = 263,105
    assert _num_parameters(generator) == 263_105
    z = torch.randn(3, 64)
    out = generator(z)
    assert out.shape == (3, 1, 8, 8) and out.abs().max() <= 1.0
    assert torch.equal(generator.eval()(z), generator(z.view(3, 64, 1, 1)))
    assert DCGANGenerator(latent_dim=8, base_channels=4, image_size=16)(torch.randn(2, 8)).shape == (
        2, 1, 16, 16,
    )


def test_dcgan_discriminator_follows_the_contract_and_ignores_cond():
    discriminator = DCGANDiscriminator(channels=1, base_channels=64)
    # Conv(1→64, 4×4) 1,088 + Conv(64→128, 4×4) 131,200 + Conv(128→1, 2×2) 513 = 132,801
    assert _num_parameters(discriminator) == 132_801
    logits, features = discriminator(torch.randn(4, 1, 8, 8), sigma=torch.ones(4))
    assert len(logits) == 1 and logits[0].shape == (4, 1)
    assert len(features) == 1 and [f.shape for f in features[0]] == [(4, 64, 4, 4), (4, 128, 2, 2)]
    with pytest.raises(ValueError):
        discriminator(torch.randn(4, 1, 16, 16))


def test_dcgan_discriminator_spectral_norm_bounds_the_largest_singular_value():
    discriminator = DCGANDiscriminator(base_channels=8, spectral_norm=True)
    for _ in range(20):  # power iterations run in training-mode forwards
        discriminator(torch.randn(4, 1, 8, 8))
    weight = discriminator.blocks[1][0].weight  # parametrized: the normalized weight
    assert torch.linalg.matrix_norm(weight.flatten(1), ord=2).item() == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("model_class", [MLPGenerator, DCGANGenerator, DCGANDiscriminator])
def test_model_config_rebuilds_the_model_and_save_load_round_trips(model_class, tmp_path):
    model = model_class().eval()
    json.dumps(model.model_config)  # JSON-able
    rebuilt = model_class(**model.model_config)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]
    path = save_model(model, tmp_path / "model.pt")
    loaded = load_model(path)
    assert type(loaded) is model_class
    x = torch.randn(2, 1, 8, 8) if model_class is DCGANDiscriminator else torch.randn(2, 64)
    if model_class is MLPGenerator:
        x = torch.randn(2, 100)
    expected, actual = model(x), loaded(x)
    if model_class is DCGANDiscriminator:
        expected, actual = expected[0][0], actual[0][0]
    assert torch.equal(expected, actual)
