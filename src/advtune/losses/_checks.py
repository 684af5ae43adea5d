"""Input checks shared by the loss modules."""

from __future__ import annotations

from torch import Tensor


def check_same_shape(pred: Tensor, target: Tensor, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` when the two tensors differ in shape."""
    if pred.shape != target.shape:
        raise ValueError(f"{where}: shapes differ, {tuple(pred.shape)} vs {tuple(target.shape)}")
