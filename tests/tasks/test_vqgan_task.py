"""VQGANTask: base losses, adaptive weight at the decoder's last conv, disc_start, validation, export, run."""

from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F

from advtune import AdversarialLossCalculator
from advtune.discriminators.patchgan import NLayerDiscriminator
from advtune.io import load_model
from advtune.models import VQAutoencoder
from advtune.tasks.vqgan import VQGANTask, psnr, scaled_learning_rate, sharpness_ratio


def _task(**kwargs) -> VQGANTask:
    torch.manual_seed(0)
    autoencoder = VQAutoencoder(base_channels=8, channel_multipliers=[1, 2], num_res_blocks=1, latent_channels=8,
                                code_dim=4, num_codes=16)
    return VQGANTask(autoencoder=autoencoder, image_size=16, **kwargs)


def _batch(n: int = 2) -> dict[str, torch.Tensor]:
    return {"image": torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1}


def test_base_losses_are_weighted_l1_and_quantizer_loss():
    task = _task(reconstruction_weight=2.0, codebook_weight=0.5)
    batch = _batch()
    output = task.generator_predict(batch)
    reference = task.autoencoder(batch["image"])
    assert set(output.base_losses) == {"recon_l1", "codebook"}
    expected_l1 = 2.0 * F.l1_loss(reference.reconstruction, batch["image"])
    assert torch.allclose(output.base_losses["recon_l1"], expected_l1)
    assert torch.allclose(output.base_losses["codebook"], 0.5 * reference.quantized.loss)
    assert output.real is batch["image"] and output.fake.shape == batch["image"].shape
    assert output.last_layer is task.autoencoder.decoder.conv_out.weight
    assert {"g/perplexity", "g/dead_codes"} <= set(output.logs)
    assert 1.0 <= output.logs["g/perplexity"].item() <= 16.0
    assert task.generator is task.autoencoder


def test_adaptive_weight_is_the_gradient_norm_ratio_at_the_decoder_last_conv():
    task = _task()
    discriminator = NLayerDiscriminator(input_nc=3, ndf=8, n_layers=2)
    discriminator.requires_grad_(False)
    calculator = AdversarialLossCalculator(use_adaptive_weight=True, adversarial_weight=0.8, loss_type="hinge")
    output = task.generator_predict(_batch())
    result = calculator.compute_generator_loss(discriminator, output.real, output.fake, global_step=0,
                                               base_loss=output.base_loss, last_layer=output.last_layer)
    last = output.last_layer
    (grad_rec,) = torch.autograd.grad(output.base_losses["recon_l1"], last, retain_graph=True)
    (grad_adv,) = torch.autograd.grad(-discriminator(output.fake)[0][0].mean(), last, retain_graph=True)
    # the codebook loss does not reach the decoder, so ‖∇ base‖ is that of the reconstruction (as taming)
    expected = grad_rec.norm() / (grad_adv.norm() + 1e-4)
    assert result["g/adaptive_weight"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert result["g/adv_weight"].item() == pytest.approx(0.8 * expected.item(), rel=1e-5)


def test_disc_start_gates_the_adversarial_term_exactly():
    task = _task()
    discriminator = NLayerDiscriminator(input_nc=3, ndf=8, n_layers=2)
    calculator = AdversarialLossCalculator(use_adaptive_weight=True, warmup_steps=5, warmup_mode="full")
    output = task.generator_predict(_batch())
    before = calculator.compute_generator_loss(discriminator, output.real, output.fake, 4,
                                               base_loss=output.base_loss, last_layer=output.last_layer)
    assert torch.equal(before["loss"], output.base_loss) and before["g/adv"].item() == 0.0
    assert not calculator.discriminator_active(4) and calculator.discriminator_active(5)
    after = calculator.compute_generator_loss(discriminator, output.real, output.fake, 5,
                                              base_loss=output.base_loss, last_layer=output.last_layer)
    assert not torch.equal(after["loss"], output.base_loss)


def test_psnr_known_value_and_validation_writes_grid(tmp_path):
    images = torch.zeros(2, 3, 4, 4)
    # constant error 0.2 → MSE 0.04, peak-to-peak 2: 10·log10(4 / 0.04) = 20 dB
    assert torch.allclose(psnr(images + 0.2, images), torch.full((2,), 20.0))
    task = _task(num_grid_images=3)
    metrics = task.validation_step(_batch(2))
    metrics2 = task.validation_step(_batch(2))
    assert set(metrics) == {"val/psnr", "val/recon_l1", "val/sharpness_ratio"}
    assert torch.isfinite(metrics2["val/psnr"])
    epoch = task.validation_epoch_end(tmp_path, step=7)
    assert (tmp_path / "reconstructions_step000007.png").is_file()
    assert 1.0 <= epoch["val/perplexity"] <= 16.0 and 0.0 <= epoch["val/dead_codes"] <= 15.0


def test_sharpness_ratio_known_values():
    reference = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])  # every neighbour differs by 1
    assert sharpness_ratio(reference, reference).item() == pytest.approx(1.0)
    assert sharpness_ratio(0.5 * reference, reference).item() == pytest.approx(0.5)
    assert sharpness_ratio(torch.zeros_like(reference), reference).item() == 0.0


def test_sample_reconstructs_fixed_patches_and_export_round_trips(tmp_path):
    task = _task()
    samples = task.sample(3)
    assert samples.shape == (3, 3, 16, 16) and torch.equal(samples, task.sample(3))
    path = task.export(tmp_path)
    loaded = load_model(path)
    assert isinstance(loaded, VQAutoencoder)
    for key, value in task.autoencoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_scaled_learning_rate_follows_taming():
    assert scaled_learning_rate(4.5e-6, batch_size=8) == pytest.approx(3.6e-5)
    assert scaled_learning_rate(4.5e-6, batch_size=8, accumulate_grad_batches=2, num_devices=2) == pytest.approx(
        1.44e-4)
    with pytest.raises(ValueError, match="batch_size"):
        scaled_learning_rate(4.5e-6, batch_size=0)


def test_experiment_vqgan_trains_a_few_steps_and_writes_outputs(tmp_path):
    from advtune.config import compose_config
    from advtune.runner import train

    overrides = [
        "experiment=vqgan", f"output_dir={tmp_path}", "trainer.max_steps=3", "trainer.val_check_interval=3",
        "trainer.limit_val_batches=1", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
        "adversarial.warmup_steps=1", "data.patch_size=16", "data.short_side=48", "data.patches_per_image=2",
        "data.val_patches_per_image=1", "data.batch_size=4", "task.image_size=16", "task.num_grid_images=2",
        "task.autoencoder.base_channels=8", "task.autoencoder.channel_multipliers=[1,2]",
        "discriminator.ndf=8", "discriminator.n_layers=2", "checkpoint_every=3",
    ]
    train(compose_config(overrides))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "samples" / "reconstructions_step000003.png").is_file()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    logged = {key for row in rows for key, value in row.items() if value}
    assert {"g/recon_l1", "g/codebook", "g/perplexity", "g/dead_codes", "d/loss", "val/psnr"} <= logged
