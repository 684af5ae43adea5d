"""DigitsGANTask: what is real and fake, sampling, validation (digits FID + PNG grid), export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from advtune.data.digits import load_digits_images
from advtune.io import load_model
from advtune.models.gan import DCGANGenerator, MLPGenerator
from advtune.tasks.gan import DigitsGANTask
from advtune.visualize import save_image_grid, save_side_by_side


@pytest.fixture()
def task() -> DigitsGANTask:
    torch.manual_seed(0)
    return DigitsGANTask(MLPGenerator(latent_dim=16, hidden_dims=(32, 64)), latent_dim=16,
                         num_val_samples=100, grid_size=16)


def test_generator_predict_gives_real_batch_and_differentiable_fake(task):
    images = torch.rand(8, 1, 8, 8) * 2 - 1
    output = task.generator_predict({"image": images, "label": torch.zeros(8)})
    assert output.real.shape == output.fake.shape == (8, 1, 8, 8)
    assert torch.equal(output.real, images)
    assert output.fake.grad_fn is not None
    assert output.base_loss is None and output.last_layer is None and output.cond == {}
    output.fake.sum().backward()
    assert all(p.grad is not None for p in task.generator.parameters())


def test_generator_predict_reshapes_flat_images_to_the_generator_output():
    task = DigitsGANTask(DCGANGenerator(latent_dim=8, base_channels=4), latent_dim=8)
    output = task.generator_predict({"image": torch.zeros(4, 64)})
    assert output.real.shape == output.fake.shape == (4, 1, 8, 8)
    with pytest.raises(ValueError):
        task.generator_predict({"image": torch.zeros(4, 1, 16, 16)})


def test_sample_is_seeded_in_range_and_leaves_generator_state_alone(task):
    running_mean = task.generator.model[3].running_mean.clone()  # BatchNorm1d after block 2
    first = task.sample(20, torch.Generator().manual_seed(3))
    second = task.sample(20, torch.Generator().manual_seed(3))
    assert first.shape == (20, 1, 8, 8) and torch.equal(first, second)
    assert first.min() >= -1.0 and first.max() <= 1.0 and not first.requires_grad
    assert task.generator.training  # restored after eval-mode sampling
    assert torch.equal(task.generator.model[3].running_mean, running_mean)


def test_validation_writes_grid_and_reports_digits_fid(task, tmp_path):
    val_images, _ = load_digits_images("val")
    for batch in val_images.split(64):
        assert task.validation_step({"image": batch}) == {}
    rng_state = torch.get_rng_state()
    metrics = task.validation_epoch_end(tmp_path, step=12)
    assert torch.equal(torch.get_rng_state(), rng_state)  # validating never shifts training noise
    fid = metrics["val/fid_digits"]
    assert set(metrics) == {"val/fid_digits"} and np.isfinite(fid) and fid > 100.0  # untrained
    grid = Image.open(tmp_path / "samples_step000012.png")
    assert grid.size == ((4 * 9 + 1) * 4, (4 * 9 + 1) * 4)  # 16 images: 4×4 of 8 px + 1 px pad, ×4
    # Same fixed noise, same weights, cached reference: the same value without re-validating.
    assert task.validation_epoch_end(None, step=13)["val/fid_digits"] == pytest.approx(fid)


def test_reference_statistics_follow_the_images_validated(task):
    val_images, _ = load_digits_images("val")
    task.validation_step({"image": val_images[:64]})  # a sanity-check-sized validation
    partial = task.validation_epoch_end(None, step=0)["val/fid_digits"]
    task.validation_step({"image": val_images})
    full = task.validation_epoch_end(None, step=1)["val/fid_digits"]
    assert partial != pytest.approx(full)


def test_export_writes_a_loadable_generator(task, tmp_path):
    path = task.export(tmp_path)
    assert path == tmp_path / "generator.pt" and path.exists()
    loaded = load_model(path)
    z = torch.randn(5, 16)
    assert torch.equal(loaded(z), task.generator.eval()(z))


def test_save_image_grid_maps_minus_one_to_black_and_one_to_white(tmp_path):
    images = torch.stack([torch.full((1, 2, 2), -1.0), torch.full((1, 2, 2), 1.0)])
    path = save_image_grid(images, tmp_path / "sub" / "grid.png", nrow=2, upscale=1, padding=1)
    pixels = np.asarray(Image.open(path))
    assert pixels.shape == (4, 7)  # 1 row: 2+2 px tall; 2 cols: 1+2+1+2+1 px wide
    assert (pixels[1:3, 1:3] == 0).all() and (pixels[1:3, 4:6] == 255).all()
    assert (pixels[0] == 255).all() and (pixels[:, 3] == 255).all()  # white gaps around and between tiles
    auto = np.asarray(Image.open(save_image_grid(torch.zeros(100, 1, 8, 8), tmp_path / "auto.png")))
    assert auto.shape == (4 * (8 * 9 + 1),) * 2  # the first 64 of 100 tiles, 8×8 enlarged ×4 to 32 px
    with pytest.raises(ValueError, match="upscale"):
        save_image_grid(images, tmp_path / "zero.png", upscale=0)


def test_save_side_by_side_places_labelled_panels_in_a_row(tmp_path):
    before, after = torch.zeros(4, 1, 8, 8) - 1, torch.ones(4, 1, 8, 8)
    path = save_side_by_side({"before": before, "after": after}, tmp_path / "cmp.png", upscale=2)
    canvas = Image.open(path)
    panel = (2 * 9 + 1) * 2  # 2×2 grid of 8 px + 1 px pad, ×2
    assert canvas.mode == "RGB" and canvas.size[0] == 2 * panel + 3 * 8
    with pytest.raises(ValueError):
        save_side_by_side({}, tmp_path / "none.png")
