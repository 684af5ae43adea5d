"""Bundled images, patch positions and the two image data modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advtune.data import (
    BUNDLED_IMAGES,
    CONTENT_IMAGES,
    STYLE_IMAGES,
    ImagePatchDataModule,
    StyleTransferDataModule,
    load_bundled_image,
)
from advtune.data.bundled_images import patch_coordinates


def test_every_listed_image_is_bundled_and_loads_in_range():
    from advtune.data.bundled_images import HELD_OUT_PHOTOS, bundled_image_path

    for name in set(CONTENT_IMAGES) | set(STYLE_IMAGES) | set(HELD_OUT_PHOTOS):
        image = load_bundled_image(name, short_side=40)
        assert image.shape[0] == 3 and min(image.shape[1:]) == 40, name
        assert image.min() >= -1.0 and image.max() <= 1.0, name
    assert set(CONTENT_IMAGES) | set(STYLE_IMAGES) | set(HELD_OUT_PHOTOS) <= set(BUNDLED_IMAGES)
    assert not set(HELD_OUT_PHOTOS) & (set(CONTENT_IMAGES) | set(STYLE_IMAGES))  # no training run sees them
    assert bundled_image_path("motorcycle").name == "motorcycle_left.png"


def test_grey_textures_are_repeated_over_three_channels():
    brick = load_bundled_image("brick", short_side=32)
    assert torch.equal(brick[0], brick[1]) and torch.equal(brick[1], brick[2])


def test_unknown_image_names_the_choices():
    with pytest.raises(ValueError, match="bundled images: .*astronaut"):
        load_bundled_image("lena")
    with pytest.raises(ValueError, match="unknown image 'lena'"):
        ImagePatchDataModule(images=["lena"])


def test_train_patches_never_overlap_the_validation_strip_and_are_seeded():
    sizes = [(100, 150), (120, 80)]
    train = patch_coordinates(sizes, 16, "train", 50, val_fraction=0.25, seed=3)
    val = patch_coordinates(sizes, 16, "val", 4, val_fraction=0.25, seed=3)
    for image, (height, _) in enumerate(sizes):
        strip_top = height - round(0.25 * height)
        assert (train[train[:, 0] == image, 1] + 16 <= strip_top).all()
        assert (val[val[:, 0] == image, 1] >= strip_top).all()
    assert val[:2, 0].tolist() == [0, 1]  # round-robin over images
    assert np.array_equal(train, patch_coordinates(sizes, 16, "train", 50, 0.25, seed=3))
    assert not np.array_equal(train, patch_coordinates(sizes, 16, "train", 50, 0.25, seed=4))


def test_patch_coordinates_refuse_images_too_small():
    with pytest.raises(ValueError, match="too small"):
        patch_coordinates([(20, 20)], 16, "train", 1, val_fraction=0.25, seed=0)


def test_image_patch_data_module_batches_and_fixed_validation():
    kwargs = dict(images=["astronaut", "china"], patch_size=16, short_side=64, patches_per_image=8,
                  val_patches_per_image=2, batch_size=4, seed=0)
    data = ImagePatchDataModule(**kwargs)
    batch = next(iter(data.train_dataloader()))
    assert set(batch) == {"image"} and batch["image"].shape == (4, 3, 16, 16)
    assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
    val_a = torch.cat([b["image"] for b in data.val_dataloader()])
    val_b = torch.cat([b["image"] for b in ImagePatchDataModule(**kwargs).val_dataloader()])
    assert val_a.shape == (4, 3, 16, 16) and torch.equal(val_a, val_b)
    again = next(iter(ImagePatchDataModule(**kwargs).train_dataloader()))
    assert torch.equal(batch["image"], again["image"])  # same seed, same first batch


def test_style_transfer_data_module_pairs_content_with_every_style_in_validation():
    data = StyleTransferDataModule(content_images=["coffee", "rocket"], patch_size=16, content_short_side=64,
                                   style_short_side=64, patches_per_image=4, val_patches_per_image=1,
                                   batch_size=5)
    batch = next(iter(data.val_dataloader()))
    assert set(batch) == {"content", "style", "style_image"}
    assert batch["content"].shape == (2, 3, 16, 16) and batch["style"].shape == (2, 3, 16, 16)
    assert batch["style_image"].tolist() == [0, 1]  # round-robin: brick, grass
    train = next(iter(data.train_dataloader()))
    assert train["content"].shape == (5, 3, 16, 16)
    assert set(train["style_image"].tolist()) <= set(range(len(STYLE_IMAGES)))
