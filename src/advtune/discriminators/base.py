"""The one output contract every discriminator follows.

``forward(x, **cond) -> (logits, features)`` where ``logits`` is a list with one tensor per
sub-discriminator (even when there is one) and ``features`` a list, per sub-discriminator, of
its intermediate feature maps (for feature matching). Every tensor keeps the batch dimension first.

A discriminator that transforms its input before its network scores it (the re-noising of the
latent discriminators) may split that step out as ``prepare_input(x, **cond) -> (x_scored, cond)``;
``forward(x_scored, **cond)`` with the returned ``cond`` then scores ``x_scored`` as given. The
gradient penalties use it to differentiate at the tensor the network actually sees.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["DiscriminatorOutput", "prepare_discriminator_input"]

DiscriminatorOutput = tuple[list[Tensor], list[list[Tensor]]]


def prepare_discriminator_input(discriminator: nn.Module, x: Tensor, cond: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
    """``(tensor the network scores, cond)``: ``discriminator.prepare_input`` when it has one, else ``(x, cond)``."""
    prepare = getattr(discriminator, "prepare_input", None)
    return prepare(x, **cond) if prepare is not None else (x, dict(cond))
