"""Gradient penalties on the discriminator, and the lazy-regularization gain.

* R1 / R2 (Mescheder et al. 2018, "Which Training Methods for GANs do actually Converge?"):
  ``E[‖∇_x D(x)‖²]`` at real (R1) or generated (R2) inputs. The functions return the plain
  expectation; the ``γ / 2`` factor is applied by the caller, as in StyleGAN2 (Karras et al. 2020).
* WGAN-GP (Gulrajani et al. 2017): ``E[(‖∇_x̂ D(x̂)‖₂ - 1)²]`` on random interpolates
  ``x̂ = α x_real + (1 - α) x_fake`` with one ``α ~ U[0, 1]`` per sample.
* Lazy regularization (StyleGAN2): apply a penalty only every ``interval`` steps and multiply it
  by ``interval`` so its average strength is unchanged.

The gradients are taken with ``create_graph=True`` so the penalty can itself be backpropagated
into the discriminator's parameters.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from advtune.losses.gan import Logits, as_logits_list

__all__ = ["gradient_penalty", "lazy_regularization_gain", "r1_penalty", "r2_penalty"]


def _input_gradient(outputs: Tensor, inputs: Tensor, inputs_name: str) -> Tensor:
    """``d outputs / d inputs`` with a graph kept for double backpropagation."""
    if not inputs.requires_grad:
        raise ValueError(
            f"{inputs_name} must require grad before the discriminator sees it "
            f"(call {inputs_name}.requires_grad_(True) first)"
        )
    (gradient,) = torch.autograd.grad(outputs, inputs, create_graph=True, allow_unused=True)
    if gradient is None:
        raise ValueError(f"the discriminator logits do not depend on {inputs_name}")
    return gradient


def _squared_gradient_norm(logits: Logits, inputs: Tensor, inputs_name: str) -> Tensor:
    # Summing the logits over the batch gives each sample's own gradient, because samples do not
    # interact in D (not true with BatchNorm in train mode: avoid it with these penalties).
    total = torch.stack([item.sum() for item in as_logits_list(logits, "logits")]).sum()
    gradient = _input_gradient(total, inputs, inputs_name)
    return gradient.square().reshape(gradient.shape[0], -1).sum(dim=1).mean()


def r1_penalty(real_logits: Logits, real_inputs: Tensor) -> Tensor:
    """R1 penalty: ``mean_i ‖∇_{x_i} Σ logits‖²`` at real inputs (Mescheder et al. 2018, eq. 9).

    Args:
        real_logits: ``discriminator(real_inputs)`` logits, one tensor per sub-discriminator.
            All logits of all sub-discriminators are summed before differentiating.
        real_inputs: the tensor given to the discriminator, ``(B, ...)``; it must require grad.

    Returns:
        Scalar: squared L2 norm of the per-sample input gradient, mean over the batch.
        Multiply by ``γ / 2`` in the caller.
    """
    return _squared_gradient_norm(real_logits, real_inputs, "real_inputs")


def r2_penalty(fake_logits: Logits, fake_inputs: Tensor) -> Tensor:
    """R2 penalty: as :func:`r1_penalty` but at generated inputs (Mescheder et al. 2018, eq. 10)."""
    return _squared_gradient_norm(fake_logits, fake_inputs, "fake_inputs")


def gradient_penalty(
    discriminator: nn.Module,
    real: Tensor,
    fake: Tensor,
    *,
    generator: torch.Generator | None = None,
    **cond: object,
) -> Tensor:
    """WGAN-GP penalty ``mean_i (‖∇ D(x̂_i)‖₂ - 1)²`` (Gulrajani et al. 2017, eq. 3).

    ``x̂ = α real + (1 - α) fake`` with ``α ~ U[0, 1]`` drawn once per sample. The critic value
    of a sample is the mean of its logits within each sub-discriminator, averaged over
    sub-discriminators — the same reduction as the losses in :mod:`advtune.losses.gan` — so
    a PatchGAN is held to 1-Lipschitz as a whole, not patch by patch. For a discriminator with
    one logit per sample this is exactly the paper's ``D(x̂)``.

    Args:
        discriminator: returns ``(logits, features)``; called as ``discriminator(x̂, **cond)``.
        real: real batch ``(B, ...)``; detached here.
        fake: generated batch, same shape as ``real``; detached here.
        generator: optional ``torch.Generator`` for the interpolation weights (determinism).
        **cond: conditioning passed through to the discriminator.

    Returns:
        Scalar penalty (multiply by λ, 10 in the paper, in the caller).
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real {tuple(real.shape)} and fake {tuple(fake.shape)} differ in shape")
    batch = real.shape[0]
    weight_shape = (batch,) + (1,) * (real.dim() - 1)
    rng_device = generator.device if generator is not None else real.device
    alpha = torch.rand(weight_shape, generator=generator, device=rng_device, dtype=real.dtype).to(real.device)
    interpolates = (alpha * real.detach() + (1.0 - alpha) * fake.detach()).requires_grad_(True)
    logits, _ = discriminator(interpolates, **cond)
    logits = as_logits_list(logits, "discriminator logits")
    # Per-sample critic = mean of its logits; summing over the batch keeps the gradients per sample.
    critic_sum = torch.stack([item.sum() * batch / item.numel() for item in logits]).mean()
    gradient = _input_gradient(critic_sum, interpolates, "interpolates")
    norms = gradient.reshape(batch, -1).norm(2, dim=1)
    return (norms - 1.0).square().mean()


def lazy_regularization_gain(step: int, interval: int) -> float:
    """Gain for lazy regularization (Karras et al. 2020, StyleGAN2 section 3.1).

    Returns ``float(interval)`` on steps where ``step % interval == 0`` and ``0.0`` otherwise, so a
    penalty applied every ``interval`` steps has the same average strength as one applied always.
    """
    if interval < 1:
        raise ValueError(f"lazy_regularization_gain: interval must be >= 1, got {interval}")
    return float(interval) if step % interval == 0 else 0.0
