"""The digits data: shapes, range, the fixed stratified split, class filtering, the DataModule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advtune.data.digits import DigitsDataModule, load_digits_images


def _row_multiset(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows, counts = torch.unique(images.flatten(1), dim=0, return_counts=True)
    return rows, counts


@pytest.fixture(scope="module")
def splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {split: load_digits_images(split) for split in ("all", "train", "val")}


def test_all_images_have_digit_shape_and_span_minus_one_to_one(splits):
    images, labels = splits["all"]
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (1797,) and labels.dtype == torch.int64
    # sklearn pixels are 0..16: 0 → -1 and 16 → 1 exactly, and 8 → 0.
    assert images.min().item() == -1.0 and images.max().item() == 1.0
    assert set(labels.tolist()) == set(range(10))


def test_split_is_a_partition_of_all_images(splits):
    (all_x, _), (train_x, _), (val_x, _) = splits["all"], splits["train"], splits["val"]
    assert len(train_x) + len(val_x) == len(all_x)
    union_rows, union_counts = _row_multiset(torch.cat([train_x, val_x]))
    all_rows, all_counts = _row_multiset(all_x)
    assert torch.equal(union_rows, all_rows) and torch.equal(union_counts, all_counts)


def test_split_is_stratified_with_round_fraction_per_class(splits):
    all_labels, val_labels = splits["all"][1], splits["val"][1]
    for digit in range(10):
        expected = round(0.2 * int((all_labels == digit).sum()))
        assert int((val_labels == digit).sum()) == expected


def test_split_is_the_same_every_call_and_changes_with_seed(splits):
    again_x, again_y = load_digits_images("val")
    assert torch.equal(again_x, splits["val"][0]) and torch.equal(again_y, splits["val"][1])
    other_x, _ = load_digits_images("val", seed=1)
    assert other_x.shape == again_x.shape and not torch.equal(other_x, again_x)


def test_class_filter_keeps_the_same_validation_images_of_those_digits(splits):
    val_x, val_y = splits["val"]
    kept_x, kept_y = load_digits_images("val", digits=[3, 7])
    assert set(kept_y.tolist()) == {3, 7}
    mask = (val_y == 3) | (val_y == 7)
    assert torch.equal(kept_x, val_x[mask]) and torch.equal(kept_y, val_y[mask])


@pytest.mark.parametrize(
    "kwargs",
    [{"split": "test"}, {"split": "train", "val_fraction": 1.0}, {"split": "all", "digits": [10]}],
)
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        load_digits_images(**kwargs)


def test_datamodule_train_batches_are_dicts_of_full_seeded_shuffled_batches():
    module = DigitsDataModule(batch_size=64)
    module.setup("fit")
    loader = module.train_dataloader()
    batches = list(loader)
    num_train = len(module.train_dataset)
    assert len(batches) == num_train // 64  # drop_last
    assert all(b["image"].shape == (64, 1, 8, 8) and b["label"].shape == (64,) for b in batches)
    # Same seed → same order; the order is shuffled (not the dataset order).
    first_again = next(iter(DigitsDataModule(batch_size=64).train_dataloader()))
    assert torch.equal(first_again["image"], batches[0]["image"])
    assert not torch.equal(batches[0]["label"], module.train_dataset.labels[:64])


def test_datamodule_val_loader_keeps_every_image_in_order_without_using_the_global_rng():
    module = DigitsDataModule(batch_size=100)
    rng_state = torch.get_rng_state()
    images = torch.cat([b["image"] for b in module.val_dataloader()])
    assert torch.equal(torch.get_rng_state(), rng_state)  # validating never shifts training noise
    assert torch.equal(images, load_digits_images("val")[0])


def test_datamodule_upscale_and_flatten():
    nearest = DigitsDataModule(upscale=2)
    nearest.setup()
    big = nearest.val_dataset.images
    assert big.shape[1:] == (1, 16, 16)
    assert torch.equal(big[:, :, ::2, ::2], load_digits_images("val")[0])  # nearest copies pixels
    bilinear = DigitsDataModule(upscale=2, upscale_mode="bilinear")
    bilinear.setup()
    values = bilinear.val_dataset.images
    assert values.shape[1:] == (1, 16, 16) and values.min() >= -1.0 and values.max() <= 1.0
    flat = DigitsDataModule(flatten=True, digits=[0])
    batch = next(iter(flat.val_dataloader()))
    assert batch["image"].shape[1:] == (64,) and set(batch["label"].tolist()) == {0}
    with pytest.raises(ValueError):
        DigitsDataModule(upscale=1.5)
    assert np.isclose(len(flat.val_dataset) / len(flat.train_dataset), 0.25, atol=0.01)
