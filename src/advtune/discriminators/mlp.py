"""Fully connected discriminator for small flattened inputs (e.g. 8×8 digits)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from advtune.discriminators.base import DiscriminatorOutput

__all__ = ["MLPDiscriminator"]


class MLPDiscriminator(nn.Module):
    """MLP discriminator: flatten → [Linear → LeakyReLU (→ Dropout)] × n → Linear → one logit.

    The default (hidden ``512 → 256``, LeakyReLU slope 0.2) is the discriminator of Lightning's
    manual-optimization GAN tutorial, without its final sigmoid: the losses take logits.

    Args:
        input_shape: shape of one sample without the batch dimension, e.g. ``(1, 8, 8)``, or the
            number of input features.
        hidden_dims: widths of the hidden layers.
        negative_slope: slope of the LeakyReLU for negative inputs.
        dropout: dropout probability after each hidden activation (0 disables it).
        spectral_norm: wrap every linear layer in spectral normalization (Miyato et al. 2018).

    Forward:
        ``x`` of shape ``(B, *input_shape)`` → ``([logits (B, 1)], [[h_1 (B, d_1), ...]])`` where
        ``h_i`` is the activation after the i-th LeakyReLU (before dropout).
    """

    def __init__(
        self,
        input_shape: Sequence[int] | int,
        hidden_dims: Sequence[int] = (512, 256),
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        shape = (int(input_shape),) if isinstance(input_shape, int) else tuple(int(d) for d in input_shape)
        if not shape or any(d < 1 for d in shape):
            raise ValueError(f"MLPDiscriminator: input_shape must be positive sizes, got {input_shape!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLPDiscriminator: dropout must be in [0, 1), got {dropout}")
        self.input_shape = shape
        self.in_features = math.prod(shape)

        def linear(in_features: int, out_features: int) -> nn.Module:
            layer = nn.Linear(in_features, out_features)
            return apply_spectral_norm(layer) if spectral_norm else layer

        widths = [self.in_features, *(int(d) for d in hidden_dims)]
        self.hidden = nn.ModuleList(linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.activation = nn.LeakyReLU(negative_slope)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = linear(widths[-1], 1)

    def forward(self, x: Tensor, **cond: object) -> DiscriminatorOutput:
        """Score a batch; ``cond`` is accepted and ignored (unconditional discriminator)."""
        if x.dim() < 2 or math.prod(x.shape[1:]) != self.in_features:
            raise ValueError(
                f"MLPDiscriminator: expected input (B, *{self.input_shape}) with {self.in_features} "
                f"features per sample, got {tuple(x.shape)}"
            )
        h = x.reshape(x.shape[0], -1)
        features = []
        for layer in self.hidden:
            h = self.activation(layer(h))
            features.append(h)
            h = self.dropout(h)
        return [self.head(h)], [features]
