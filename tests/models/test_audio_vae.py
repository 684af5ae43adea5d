"""AudioVAE: shapes at any length, hop, latent statistics (EMA), encoder freeze, config."""

import json
import math

import pytest
import torch

from advtune.losses.reconstruction import l1_waveform_loss
from advtune.models.audio_vae import AudioVAE


def tiny(**overrides) -> AudioVAE:
    config = dict(in_channels=1, base_channels=4, channel_mults=[1, 2], strides=[2, 4],
                  latent_dim=3, kernel_size=3, dilations=[1, 3])
    config.update(overrides)
    return AudioVAE(**config)


@pytest.mark.parametrize("length", [8, 97, 256, 1001])
def test_forward_shapes_at_any_length(length):
    torch.manual_seed(0)
    vae = tiny(in_channels=2)
    audio = torch.randn(2, 2, length)
    recon, z, mean, logvar = vae(audio)
    frames = math.ceil(length / 8)
    assert vae.hop_length == 8
    assert recon.shape == audio.shape
    assert z.shape == mean.shape == logvar.shape == (2, 3, frames)


def test_encode_rejects_length_not_multiple_of_hop():
    with pytest.raises(ValueError, match="multiple of 8"):
        tiny().encode(torch.randn(1, 1, 10))


def test_default_signature_matches_issue_and_hop_is_product_of_strides():
    vae = AudioVAE(in_channels=1, base_channels=2, latent_dim=4)  # defaults but tiny widths
    assert vae.model_config["channel_mults"] == [1, 2, 4, 8]
    assert vae.model_config["strides"] == [2, 4, 4, 8]
    assert vae.model_config["dilations"] == [1, 3, 9]
    assert vae.hop_length == 2 * 4 * 4 * 8
    assert vae(torch.randn(1, 1, 256))[0].shape == (1, 1, 256)


def test_mismatched_levels_rejected():
    with pytest.raises(ValueError, match="same length"):
        tiny(channel_mults=[1, 2, 4], strides=[2, 4])


def test_latent_statistics_are_an_ema_updated_in_training_only():
    torch.manual_seed(0)
    vae = tiny(latent_momentum=0.25)
    first = torch.randn(4, 1, 64)
    _, z1, _, _ = vae(first)
    # First update copies the batch statistics.
    torch.testing.assert_close(vae.latent_mean, z1.mean(dim=(0, 2)))
    torch.testing.assert_close(vae.latent_std, z1.transpose(0, 1).flatten(1).std(1, unbiased=False))
    mean1, std1 = vae.latent_mean.clone(), vae.latent_std.clone()
    _, z2, _, _ = vae(torch.randn(4, 1, 64) * 3)
    batch_std = z2.transpose(0, 1).flatten(1).std(1, unbiased=False)
    torch.testing.assert_close(vae.latent_mean, 0.75 * mean1 + 0.25 * z2.mean(dim=(0, 2)))
    torch.testing.assert_close(vae.latent_std, 0.75 * std1 + 0.25 * batch_std)
    vae.eval()
    frozen_mean = vae.latent_mean.clone()
    vae(torch.randn(4, 1, 64))
    torch.testing.assert_close(vae.latent_mean, frozen_mean)
    z = torch.randn(2, 3, 5)
    torch.testing.assert_close(vae.denormalize_latent(vae.normalize_latent(z)), z)


def test_eval_is_deterministic_and_training_samples():
    torch.manual_seed(0)
    vae = tiny()
    audio = torch.randn(2, 1, 64)
    _, z_train, mean, _ = vae(audio)
    assert not torch.allclose(z_train, mean)
    vae.eval()
    first, second = vae(audio)[0], vae(audio)[0]
    torch.testing.assert_close(first, second)


def test_encoder_frozen_gets_no_gradient_decoder_does():
    torch.manual_seed(0)
    vae = tiny()
    vae.encoder_frozen = True
    recon, *_ = vae(torch.randn(2, 1, 64))
    recon.square().mean().backward()
    assert all(p.grad is None for p in vae.encoder.parameters())
    assert all(not p.requires_grad for p in vae.encoder.parameters())
    assert vae.output_conv.weight.grad is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vae.decoder.parameters())
    vae.encoder_frozen = False
    assert all(p.requires_grad for p in vae.encoder.parameters())


def test_model_config_rebuilds_same_architecture_and_is_json():
    vae = tiny()
    clone = AudioVAE(**json.loads(json.dumps(vae.model_config)))
    assert {k: v.shape for k, v in clone.state_dict().items()} == {
        k: v.shape for k, v in vae.state_dict().items()}
    assert vae.last_layer is vae.output_conv.weight


def test_tiny_preset_learns_to_reconstruct():
    torch.manual_seed(0)
    vae = AudioVAE.tiny()
    t = torch.arange(512) / 8000
    audio = (0.5 * torch.sin(2 * math.pi * 220 * t)).expand(2, 1, 512).contiguous()
    optimizer = torch.optim.Adam(vae.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = l1_waveform_loss(vae(audio)[0], audio)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
