"""Captions beside images and aspect-ratio buckets: sizes, assignment, one bucket per batch, exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advtune.config import ConfigError
from advtune.data.buckets import BucketBatchLoader, assign_bucket, bucket_batches, bucket_sizes
from advtune.data.image_folder import caption_for, load_bucket_image
from advtune.data.latents import LatentDataset


def test_caption_from_the_text_file_else_the_instance_prompt_else_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("  a cat, sks style \n")
    (tmp_path / "b.txt").write_text("   ")
    assert caption_for(tmp_path / "a.png", "fallback") == "a cat, sks style"
    assert caption_for(tmp_path / "b.png", "fallback") == "fallback"  # an empty caption file counts as none
    with pytest.raises(ConfigError, match=r"image .*c\.png has no caption: add c\.txt beside it or set data\.instance_prompt"):
        caption_for(tmp_path / "c.png", None)


def test_bucket_sizes_keep_the_pixel_budget_with_sides_multiple_of_16():
    sizes = bucket_sizes(512, 16)
    assert (512, 512) in sizes and (1024, 256) in sizes and (256, 1024) in sizes
    assert all(w % 16 == 0 and h % 16 == 0 and w * h <= 512 * 512 for w, h in sizes)
    assert all(w * h > 0.9 * 512 * 512 for w, h in sizes if 0.5 <= w / h <= 2)  # near the budget
    assert max(max(w / h, h / w) for w, h in sizes) <= 4
    assert assign_bucket(1000, 1000, sizes) == (512, 512)
    width, height = assign_bucket(1200, 600, sizes)  # 2:1 landscape stays landscape, ~2:1
    assert 1.9 < width / height < 2.1 and width * height <= 512 * 512
    assert assign_bucket(600, 1200, sizes) == (height, width)
    with pytest.raises(ValueError, match="multiple of 16"):
        bucket_sizes(500, 16)


def test_images_are_resized_to_cover_their_bucket_not_cropped_square(tmp_path):
    from PIL import Image

    array = np.zeros((40, 80, 3), dtype=np.uint8)
    array[:, :40] = 255  # left half white, right half black
    Image.fromarray(array).save(tmp_path / "wide.png")
    assert load_bucket_image(tmp_path / "wide.png") == (80, 40)
    image = load_bucket_image(tmp_path / "wide.png", (64, 32))
    assert image.shape == (3, 32, 64) and image.min() >= -1 and image.max() <= 1
    assert image[:, :, :28].mean() > 0.9 and image[:, :, 36:].mean() < -0.9  # both halves kept


def _bucketed_data():
    shapes = [(4, 6)] * 5 + [(6, 4)] * 4 + [(4, 4)] * 3
    latents = [torch.full((2, *shape), float(i)) for i, shape in enumerate(shapes)]
    return LatentDataset(latents), shapes


def test_each_batch_holds_one_bucket_and_order_is_seeded():
    dataset, shapes = _bucketed_data()
    loader = BucketBatchLoader(dataset, shapes, batch_size=2, seed=3)
    batches = [batch["latents"] for batch in loader]
    assert len(batches) == len(loader) == 2 + 2 + 1  # incomplete batches dropped per bucket
    assert {tuple(b.shape) for b in batches} == {(2, 2, 4, 6), (2, 2, 6, 4), (2, 2, 4, 4)}
    again = [batch["latents"] for batch in BucketBatchLoader(dataset, shapes, batch_size=2, seed=3)]
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    next_epoch = [batch["latents"][:, 0, 0, 0].tolist() for batch in loader]
    assert next_epoch != [b[:, 0, 0, 0].tolist() for b in batches]  # a new permutation each epoch
    validation = bucket_batches(shapes, 2, generator=None)  # in order, incomplete batches kept
    assert sorted(i for batch in validation for i in batch) == list(range(12)) and [11] in validation


def test_bucket_loader_resumes_mid_epoch_exactly():
    dataset, shapes = _bucketed_data()
    loader = BucketBatchLoader(dataset, shapes, batch_size=2, seed=0)
    first_epoch = [b["latents"][:, 0, 0, 0].tolist() for b in loader]
    iterator = iter(loader)
    seen = [next(iterator)["latents"][:, 0, 0, 0].tolist() for _ in range(2)]
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches_done": 2}
    resumed = BucketBatchLoader(dataset, shapes, batch_size=2, seed=0)
    resumed.load_state_dict(state)
    rest = [b["latents"][:, 0, 0, 0].tolist() for b in resumed]
    reference = BucketBatchLoader(dataset, shapes, batch_size=2, seed=0)
    reference.load_state_dict({"epoch": 1, "batches_done": 0})
    assert seen + rest == [b["latents"][:, 0, 0, 0].tolist() for b in reference]
    assert seen + rest != first_epoch
