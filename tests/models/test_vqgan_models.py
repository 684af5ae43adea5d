"""VQ autoencoder and style-transfer module: shapes, gradients, identity at init, save/load."""

from __future__ import annotations

import json

import pytest
import torch

from advtune.io import load_model, save_model
from advtune.models import StyleTransferModule, VQAutoencoder, tiny_vq_autoencoder


def _small_autoencoder() -> VQAutoencoder:
    torch.manual_seed(0)
    return VQAutoencoder(base_channels=8, channel_multipliers=[1, 2], num_res_blocks=1, latent_channels=8,
                         code_dim=4, num_codes=16)


def test_autoencoder_shapes_and_indices():
    model = _small_autoencoder()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    out = model(images)
    assert out.reconstruction.shape == (2, 3, 16, 16)
    assert out.latent.shape == (2, 4, 8, 8)  # one halving for two levels
    assert out.quantized.indices.shape == (2, 8, 8)
    assert 0 <= int(out.quantized.indices.min()) and int(out.quantized.indices.max()) < 16
    assert model.decode_indices(out.quantized.indices).shape == (2, 3, 16, 16)
    assert model.last_layer is model.decoder.conv_out.weight


def test_tiny_preset_downsamples_by_four():
    model = tiny_vq_autoencoder()
    assert model.downsampling_factor == 4
    assert model.encode(torch.zeros(1, 3, 32, 32)).shape == (1, 8, 8, 8)
    assert json.loads(json.dumps(model.model_config))["channel_multipliers"] == [1, 2, 2]


def test_encode_rejects_sizes_not_divisible_by_the_downsampling():
    with pytest.raises(ValueError, match="divisible by 2"):
        _small_autoencoder().encode(torch.zeros(1, 3, 15, 16))


def test_reconstruction_loss_reaches_encoder_through_straight_through_and_vq_loss_reaches_codebook():
    model = _small_autoencoder()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    out = model(images)
    (out.reconstruction - images).abs().mean().backward()
    assert model.encoder.layers[0].weight.grad.abs().sum() > 0
    assert model.quantizer.codebook.weight.grad is None  # reconstruction does not train the codes
    model.zero_grad(set_to_none=True)
    model(images).quantized.loss.backward()
    assert model.quantizer.codebook.weight.grad.abs().sum() > 0
    assert model.encoder.layers[0].weight.grad.abs().sum() > 0  # commitment
    assert model.decoder.conv_out.weight.grad is None


def test_autoencoder_save_load_round_trip(tmp_path):
    model = _small_autoencoder()
    path = save_model(model, tmp_path / "vq.pt")
    loaded = load_model(path)
    assert isinstance(loaded, VQAutoencoder) and loaded.model_config == model.model_config
    images = torch.rand(1, 3, 16, 16)
    model.eval()
    assert torch.equal(loaded(images).reconstruction, model(images).reconstruction)


def test_style_transfer_module_is_the_identity_at_initialisation():
    torch.manual_seed(0)
    module = StyleTransferModule(latent_channels=4, hidden_channels=8, num_blocks=1, style_dim=8)
    z_content, z_style = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 3, 5)
    assert torch.equal(module.transfer(z_content, z_style), z_content)


def test_style_transfer_output_depends_on_the_style_once_trained_layers_move():
    torch.manual_seed(0)
    module = StyleTransferModule(latent_channels=4, hidden_channels=8, num_blocks=1, style_dim=8)
    with torch.no_grad():  # stand-in for training: give the zero-initialised layers values
        torch.nn.init.normal_(module.conv_out.weight, std=0.1)
        for block in module.blocks:
            torch.nn.init.normal_(block.norm1.to_scale_shift.weight, std=0.5)
    z_content = torch.randn(1, 4, 6, 6)
    out_a = module(z_content, torch.randn(1, 4, 6, 6))
    out_b = module(z_content, 3.0 + 2.0 * torch.randn(1, 4, 6, 6))
    assert out_a.shape == z_content.shape
    assert not torch.allclose(out_a, out_b)


def test_style_transfer_rejects_wrong_channels_and_batch():
    module = StyleTransferModule(latent_channels=4, hidden_channels=8, num_blocks=1, style_dim=8)
    with pytest.raises(ValueError, match="z_style must be"):
        module(torch.zeros(1, 4, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="batch sizes differ"):
        module(torch.zeros(2, 4, 4, 4), torch.zeros(1, 4, 4, 4))


def test_style_transfer_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    module = StyleTransferModule(latent_channels=4, hidden_channels=8, num_blocks=2, style_dim=8)
    with torch.no_grad():
        torch.nn.init.normal_(module.conv_out.weight, std=0.1)
    loaded = load_model(save_model(module, tmp_path / "t.pt"))
    z_content, z_style = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    assert isinstance(loaded, StyleTransferModule)
    assert torch.equal(loaded(z_content, z_style), module(z_content, z_style))


def test_group_norm_keeps_at_least_four_channels_per_group():
    from advtune.models.vqgan import group_norm

    assert group_norm(128).num_groups == 32  # taming's 32 groups at its widths
    assert group_norm(16).num_groups == 4 and group_norm(8).num_groups == 2 and group_norm(3).num_groups == 1


def test_data_initialised_codebook_copies_latents_once_and_only_in_training():
    from advtune.models import VectorQuantizer

    torch.manual_seed(0)
    quantizer = VectorQuantizer(num_codes=4, code_dim=2, codebook_init="data")
    z_e = torch.randn(1, 2, 3, 3)  # 9 latent vectors
    quantizer.eval()
    quantizer(z_e)
    assert not bool(quantizer.initialized)  # validation never initialises
    quantizer.train()
    out = quantizer(z_e)
    vectors = z_e.permute(0, 2, 3, 1).reshape(-1, 2)
    for code in quantizer.codebook.weight:
        assert (vectors == code).all(dim=1).any()  # every code is one of the latents
    assert bool(quantizer.initialized) and "initialized" in quantizer.state_dict()
    exact = (out.quantized.permute(0, 2, 3, 1).reshape(-1, 2) == vectors).all(dim=1)
    assert int(exact.sum()) >= 4  # the 4 copied latents quantize to themselves
    codes = quantizer.codebook.weight.detach().clone()
    quantizer(torch.randn(1, 2, 3, 3))
    assert torch.equal(quantizer.codebook.weight, codes)  # not re-initialised
    with pytest.raises(ValueError, match="codebook_init"):
        VectorQuantizer(4, 2, codebook_init="kmeans")


def test_dead_codes_are_restarted_from_the_batch_and_the_usage_ema_has_known_values():
    from advtune.models import VectorQuantizer

    quantizer = VectorQuantizer(num_codes=3, code_dim=2, dead_code_threshold=1.0)
    with torch.no_grad():
        quantizer.codebook.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [50.0, 50.0]]))  # code 2: far away
    z_e = torch.tensor([[0.1, 0.0, 0.9, 1.1], [0.0, 0.1, 1.0, 0.9]]).reshape(1, 2, 2, 2)  # 2 near code 0, 2 near 1
    quantizer.train()
    quantizer(z_e)
    # usage starts at the threshold: 0.99·1 + 0.01·count, counts (2, 2, 0)
    assert quantizer.usage.tolist() == pytest.approx([1.01, 1.01, 0.99])
    restarted = quantizer(z_e).indices  # code 2 is below 1.0: replaced by a latent of this batch, before the lookup
    vectors = z_e.permute(0, 2, 3, 1).reshape(-1, 2)
    assert (vectors == quantizer.codebook.weight[2]).all(dim=1).any()
    assert (restarted == 2).any()  # the restarted code is used at once, by the latent it was copied from
    assert quantizer.codebook.weight[:2].tolist() == [[0.0, 0.0], [1.0, 1.0]]  # live codes untouched


def test_restarts_only_in_training_and_files_without_restarts_keep_their_keys():
    from advtune.models import VectorQuantizer

    quantizer = VectorQuantizer(num_codes=3, code_dim=2, dead_code_threshold=1.0).eval()
    before = quantizer.codebook.weight.detach().clone()
    for _ in range(3):
        quantizer(torch.randn(1, 2, 2, 2) + 100.0)
    assert torch.equal(quantizer.codebook.weight, before) and quantizer.usage.tolist() == [1.0, 1.0, 1.0]
    assert "usage" not in VectorQuantizer(num_codes=3, code_dim=2).state_dict()
    model = VQAutoencoder(base_channels=8, channel_multipliers=[1, 2], latent_channels=8, code_dim=4, num_codes=16,
                          dead_code_threshold=0.5)
    model.train()
    images = torch.rand(2, 3, 16, 16)
    for _ in range(2):  # a restart happens in the second forward: the backward still works
        out = model(images)
        ((out.reconstruction - images).abs().mean() + out.quantized.loss).backward()
    assert model.quantizer.codebook.weight.grad is not None
    with pytest.raises(ValueError, match="dead_code_threshold"):
        VectorQuantizer(3, 2, dead_code_threshold=-1.0)
