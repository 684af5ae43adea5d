"""The one output contract every discriminator follows.

``forward(x, **cond) -> (logits, features)`` where ``logits`` is a list with one tensor per
sub-discriminator (even when there is one) and ``features`` a list, per sub-discriminator, of
its intermediate feature maps (for feature matching). Every tensor keeps the batch dimension first.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["DiscriminatorOutput"]

DiscriminatorOutput = tuple[list[Tensor], list[list[Tensor]]]
