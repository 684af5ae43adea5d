"""Adaptive weight that balances the adversarial loss against the base loss (Esser et al. 2021).

Taming Transformers (VQGAN, eq. 7) scales the generator's adversarial loss by

    λ = ‖∇_{G_L} L_base‖ / (‖∇_{G_L} L_adv‖ + δ),     δ = 1e-4,

where ``G_L`` is the last layer of the generator (decoder), then clamps ``λ`` to ``[0, 1e4]`` and
detaches it, so both losses push the last layer with gradients of about the same size and ``λ``
itself is not optimised.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["adaptive_weight", "adaptive_weighting", "last_layer_gradient_norms", "weight_from_norms"]


def _last_layer_gradient(loss: Tensor, last_layer: Tensor, loss_name: str) -> Tensor:
    if not loss.requires_grad:
        raise ValueError(f"adaptive_weight: {loss_name} does not require grad (computed under no_grad?)")
    # retain_graph: the same graph is backpropagated afterwards through the weighted total loss.
    (gradient,) = torch.autograd.grad(loss, last_layer, retain_graph=True, allow_unused=True)
    if gradient is None:
        raise ValueError(f"adaptive_weight: {loss_name} does not depend on last_layer")
    return gradient


def last_layer_gradient_norms(base_loss: Tensor, adversarial_loss: Tensor, last_layer: Tensor) -> tuple[Tensor, Tensor]:
    """``(‖∇_{G_L} L_base‖, ‖∇_{G_L} L_adv‖)``: both losses' gradient norms at the last layer, detached.

    The graph is kept (``retain_graph``) for the backward of the total loss afterwards.
    """
    if not isinstance(last_layer, Tensor) or not last_layer.requires_grad:
        raise ValueError("adaptive_weight: last_layer must be a tensor (parameter) that requires grad")
    base_gradient = _last_layer_gradient(base_loss, last_layer, "base_loss")
    adversarial_gradient = _last_layer_gradient(adversarial_loss, last_layer, "adversarial_loss")
    return torch.linalg.vector_norm(base_gradient).detach(), torch.linalg.vector_norm(adversarial_gradient).detach()


def adaptive_weight(
    base_loss: Tensor,
    adversarial_loss: Tensor,
    last_layer: Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> Tensor:
    """VQGAN's adaptive adversarial weight ``clamp(‖∇ base‖ / (‖∇ adv‖ + eps), 0, max_weight)``.

    Args:
        base_loss: scalar base (reconstruction / NLL) loss of the generator, *before* any annealing
            of its weight (taming applies it to the NLL: annealing the base loss must not shrink
            the adversarial term with it).
        adversarial_loss: scalar adversarial loss of the generator.
        last_layer: weight tensor of the generator's last layer (a leaf that requires grad).
        max_weight: upper clamp of the weight.
        eps: added to the adversarial gradient norm to avoid dividing by zero.

    Returns:
        Detached scalar tensor, the weight to multiply ``adversarial_loss`` by.
    """
    base_norm, adversarial_norm = last_layer_gradient_norms(base_loss, adversarial_loss, last_layer)
    return weight_from_norms(base_norm, adversarial_norm, max_weight, eps)


def weight_from_norms(base_norm: Tensor, adversarial_norm: Tensor, max_weight: float = 1e4, eps: float = 1e-4) -> Tensor:
    """``clamp(base_norm / (adversarial_norm + eps), 0, max_weight)``, detached (see :func:`adaptive_weight`)."""
    return (base_norm / (adversarial_norm + eps)).clamp(0.0, max_weight).detach()


def adaptive_weighting(
    base_loss: Tensor | None, adversarial_loss: Tensor, last_layer: Tensor | None, adaptive: bool, measure: bool,
    max_weight: float = 1e4,
) -> tuple[Tensor | None, tuple[Tensor, Tensor] | None]:
    """``(w_adapt, norms)`` of one generator step: the adaptive weight when ``adaptive`` (1 without a
    graph to differentiate, e.g. validation), else ``None``; and the two last-layer gradient norms
    when they were computed (``adaptive`` or ``measure``, with a graph), else ``None``.

    Raises:
        ValueError: ``adaptive`` without ``base_loss`` or ``last_layer``.
    """
    measurable = base_loss is not None and last_layer is not None and torch.is_grad_enabled()
    if adaptive:
        if base_loss is None or last_layer is None:
            raise ValueError("use_adaptive_weight=True needs base_loss and last_layer in compute_generator_loss")
        norms = last_layer_gradient_norms(base_loss, adversarial_loss, last_layer) if measurable else None
        weight = weight_from_norms(*norms, max_weight=max_weight) if norms else torch.ones((), device=adversarial_loss.device)
        return weight, norms
    return None, (last_layer_gradient_norms(base_loss, adversarial_loss, last_layer) if measure and measurable else None)
