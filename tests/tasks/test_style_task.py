"""StyleTransferTask: frozen parts stay bit-identical, loss weighting, adaptive weight, loading, export, run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advtune import AdversarialLossCalculator
from advtune.discriminators.patchgan import NLayerDiscriminator
from advtune.io import load_model, save_model
from advtune.losses import adaptive_weight, content_loss, identity_loss, style_loss
from advtune.models import StyleTransferModule, VQAutoencoder
from advtune.tasks.style_transfer import StyleTransferTask


def _autoencoder() -> VQAutoencoder:
    torch.manual_seed(0)
    return VQAutoencoder(base_channels=8, channel_multipliers=[1, 2], num_res_blocks=1, latent_channels=8,
                         code_dim=4, num_codes=16)


def _task(**kwargs) -> StyleTransferTask:
    kwargs.setdefault("autoencoder", _autoencoder())
    return StyleTransferTask(hidden_channels=8, num_blocks=1, style_dim=8, image_size=16, **kwargs)


def _batch(n: int = 2) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {"content": torch.rand(n, 3, 16, 16, generator=generator) * 2 - 1,
            "style": torch.rand(n, 3, 16, 16, generator=generator) * 0.5}


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _train_steps(task: StyleTransferTask, steps: int = 3) -> None:
    """Optimizer steps on the task's trainable parameters with the full generator loss (PatchGAN included)."""
    discriminator = NLayerDiscriminator(input_nc=3, ndf=8, n_layers=2)
    discriminator.requires_grad_(False)
    calculator = AdversarialLossCalculator(use_adaptive_weight=True, loss_type="hinge")
    optimizer = torch.optim.Adam(task.trainable_parameters(), lr=1e-2, betas=(0.5, 0.9))
    task.train()
    for step in range(steps):
        output = task.generator_predict(_batch())
        result = calculator.compute_generator_loss(discriminator, output.real, output.fake, step,
                                                   base_loss=output.base_loss, last_layer=output.last_layer)
        optimizer.zero_grad()
        result["loss"].backward()
        optimizer.step()


def test_frozen_encoder_and_decoder_stay_bit_identical_while_the_transfer_trains():
    task = _task()
    frozen, transfer = _snapshot(task.autoencoder), _snapshot(task.transfer)
    assert all(not p.requires_grad for p in task.autoencoder.parameters())
    assert {id(p) for p in task.trainable_parameters()} == {id(p) for p in task.transfer.parameters()}
    _train_steps(task)
    for key, value in task.autoencoder.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    assert any(not torch.equal(v, transfer[k]) for k, v in task.transfer.state_dict().items())


def test_unfrozen_quantizer_trains_but_encoder_and_decoder_do_not():
    task = _task(freeze_quantizer=False)
    before = _snapshot(task.autoencoder)
    _train_steps(task)
    after = task.autoencoder.state_dict()
    assert not torch.equal(after["quantizer.codebook.weight"], before["quantizer.codebook.weight"])
    for key in before:
        if not key.startswith("quantizer."):
            assert torch.equal(after[key], before[key]), key


def test_frozen_autoencoder_stays_in_eval_mode():
    task = _task()
    task.train()
    assert task.transfer.training and not task.autoencoder.training


def test_base_losses_are_the_weighted_latent_losses():
    task = _task(reverse_weight=2.0, style_weight=10.0, codebook_weight=0.5, identity_weight=3.0)
    with torch.no_grad():  # move T away from the identity so every loss is non-zero
        nn.init.normal_(task.transfer.conv_out.weight, std=0.1)
    batch = _batch()
    output = task.generator_predict(batch)
    z_content, z_style = task.autoencoder.encode(batch["content"]), task.autoencoder.encode(batch["style"])
    z_out = task.transfer(z_content, z_style)
    assert set(output.base_losses) == {"rev", "style", "code", "id"}
    assert torch.allclose(output.base_losses["rev"], 2.0 * content_loss(z_out, z_content))
    assert torch.allclose(output.base_losses["style"], 10.0 * style_loss(z_out, z_style))
    assert torch.allclose(output.base_losses["code"], 0.5 * task.autoencoder.quantizer(z_out).loss)
    assert torch.allclose(output.base_losses["id"], 3.0 * identity_loss(task.transfer(z_content, z_content), z_content))
    assert output.real is batch["style"] and output.fake.shape == batch["content"].shape
    assert output.last_layer is task.transfer.conv_out.weight
    assert task.generator is task.transfer


def test_adaptive_weight_against_a_hand_computation_on_a_small_module():
    # last layer y = W x with W (1×2), x = (1, 2); base = (y − 3)², adv = 5·y.
    last = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        last.weight.copy_(torch.tensor([[1.0, 0.5]]))
    x = torch.tensor([1.0, 2.0])
    y = last(x).squeeze()  # 1 + 1 = 2
    base, adv = (y - 3.0) ** 2, 5.0 * y
    # ∇_W base = 2(y − 3)·x = (−2, −4), norm √20 ; ∇_W adv = 5·x = (5, 10), norm √125
    expected = 20 ** 0.5 / (125 ** 0.5 + 1e-4)
    assert adaptive_weight(base, adv, last.weight).item() == pytest.approx(expected, rel=1e-6)


def test_task_adaptive_weight_matches_the_gradient_ratio_at_the_transfer_last_layer():
    task = _task()
    with torch.no_grad():
        nn.init.normal_(task.transfer.conv_out.weight, std=0.1)
    discriminator = NLayerDiscriminator(input_nc=3, ndf=8, n_layers=2)
    discriminator.requires_grad_(False)
    output = task.generator_predict(_batch())
    calculator = AdversarialLossCalculator(use_adaptive_weight=True, loss_type="hinge")
    result = calculator.compute_generator_loss(discriminator, output.real, output.fake, 0,
                                               base_loss=output.base_loss, last_layer=output.last_layer)
    (grad_base,) = torch.autograd.grad(output.base_loss, output.last_layer, retain_graph=True)
    (grad_adv,) = torch.autograd.grad(-discriminator(output.fake)[0][0].mean(), output.last_layer)
    expected = grad_base.norm() / (grad_adv.norm() + 1e-4)
    assert result["g/adaptive_weight"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_loads_the_autoencoder_from_a_file_and_refuses_a_missing_one(tmp_path):
    autoencoder = _autoencoder()
    path = save_model(autoencoder, tmp_path / "vq.pt")
    task = _task(autoencoder=None, autoencoder_path=str(path))
    for key, value in autoencoder.state_dict().items():
        assert torch.equal(task.autoencoder.state_dict()[key], value)
    assert task.transfer.latent_channels == 4
    with pytest.raises(ValueError, match="does not exist"):
        _task(autoencoder=None, autoencoder_path=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="not both"):
        _task(autoencoder_path=str(path))


def test_validation_logs_metrics_and_the_discriminator_view_and_writes_grid(tmp_path):
    task = _task(num_grid_images=3)
    metrics = task.validation_step(_batch())
    assert set(metrics) == {"val/content_mse", "val/style_distance", "val/style_distance_input",
                            "val/style_distance_rgb"}
    assert metrics["val/content_mse"].item() == 0.0  # T is the identity at initialisation
    assert metrics["val/style_distance"].item() == pytest.approx(metrics["val/style_distance_input"].item())
    task.attach_discriminator(NLayerDiscriminator(input_nc=3, ndf=8, n_layers=2).eval())
    assert {"val/d_logits_real", "val/d_logits_fake"} <= set(task.validation_step(_batch()))
    assert not any("discriminator" in key for key in task.state_dict())
    task.validation_epoch_end(tmp_path, step=5)
    assert (tmp_path / "transfer_step000005.png").is_file()


def test_sample_and_export(tmp_path):
    task = _task()
    assert task.sample(2).shape == (2, 3, 16, 16)
    path = task.export(tmp_path)
    assert isinstance(load_model(path), StyleTransferModule)
    assert isinstance(load_model(tmp_path / "vq_autoencoder.pt"), VQAutoencoder)


def test_experiment_style_transfer_trains_a_few_steps_and_writes_outputs(tmp_path):
    from advtune.config import compose_config
    from advtune.runner import train

    autoencoder_path = save_model(_autoencoder(), tmp_path / "vq.pt")
    overrides = [
        "experiment=style_transfer", f"output_dir={tmp_path / 'run'}", f"task.autoencoder_path={autoencoder_path}",
        "trainer.max_steps=3", "trainer.val_check_interval=3", "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "adversarial.warmup_steps=1",
        "data.patch_size=16", "data.content_short_side=48", "data.style_short_side=48", "data.patches_per_image=2",
        "data.val_patches_per_image=1", "data.batch_size=4", "task.image_size=16", "task.num_grid_images=2",
        "task.hidden_channels=8", "task.style_dim=8", "discriminator.ndf=8", "discriminator.n_layers=2",
        "checkpoint_every=3",
    ]
    train(compose_config(overrides))
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "run" / "samples" / "transfer_step000003.png").is_file()
    logged = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"g/rev", "g/style", "g/code", "g/adaptive_weight", "d/loss", "val/style_distance"} <= set(logged)
