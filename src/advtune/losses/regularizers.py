"""Gradient penalties on the discriminator, and the lazy-regularization gain.

* R1 / R2 (Mescheder et al. 2018, "Which Training Methods for GANs do actually Converge?"):
  ``E[‖∇_x D(x)‖²]`` at real (R1) or generated (R2) inputs. The functions return the plain
  expectation; the ``γ / 2`` factor is applied by the caller, as in StyleGAN2 (Karras et al. 2020).
  R3GAN (Huang et al. 2024) uses both at once.
* Reduction: ``D(x)`` here is the *per-sample critic* :func:`critic_values`, the mean of a sample's
  logits within each sub-discriminator, averaged over sub-discriminators — the reduction of the GAN
  criteria in :mod:`advtune.losses.gan`. So a discriminator replicated over ``N`` patches or ``N``
  sub-discriminators has the same penalty as the single one, and ``γ`` means the same for an MLP,
  a PatchGAN or a multi-head discriminator (differentiating the *sum* of the logits would scale
  the penalty by ``N²``).
* WGAN-GP (Gulrajani et al. 2017): ``E[(‖∇_x̂ D(x̂)‖₂ - 1)²]`` on random interpolates
  ``x̂ = α x_real + (1 - α) x_fake`` with one ``α ~ U[0, 1]`` per sample.
* LeCam (Tseng et al. 2021, "Regularizing GANs under Limited Data"): pulls the D's real logits
  towards a moving average of its fake logits and vice versa, which bounds how far apart the D can
  push the two sets; helps most on small data sets.
* Lazy regularization (StyleGAN2): apply a penalty only every ``interval`` steps and multiply it
  by ``interval`` so its average strength is unchanged.

The gradients are taken with ``create_graph=True`` so the penalty can itself be backpropagated
into the discriminator's parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advtune.discriminators.base import prepare_discriminator_input
from advtune.losses.gan import Logits, _paired, as_logits_list

__all__ = [
    "LeCamAnchors", "critic_values", "gradient_penalty", "lazy_regularization_gain", "lecam_penalty", "r1_penalty",
    "r2_penalty",
]


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


def critic_values(logits: Logits) -> Tensor:
    """Per-sample critic ``c_i = mean_k mean_j D_k(x)_{i,j}`` ``(B,)``: logits of sub-D ``k`` averaged
    over their non-batch elements ``j`` (patches), then over sub-discriminators (the losses' reduction)."""
    items = as_logits_list(logits, "logits")
    return torch.stack([item.reshape(item.shape[0], -1).mean(dim=1) for item in items]).mean(dim=0)


def _squared_gradient_norm(logits: Logits, inputs: Tensor, inputs_name: str) -> Tensor:
    # Summing the critic over the batch gives each sample's own gradient, because samples do not
    # interact in D (not true with BatchNorm in train mode: avoid it with these penalties).
    gradient = _input_gradient(critic_values(logits).sum(), inputs, inputs_name)
    return gradient.float().square().reshape(gradient.shape[0], -1).sum(dim=1).mean()


def r1_penalty(real_logits: Logits, real_inputs: Tensor) -> Tensor:
    """R1 penalty ``mean_i ‖∇_{x_i} c(x_i)‖²`` at real inputs (Mescheder et al. 2018, eq. 9).

    Args:
        real_logits: ``discriminator(real_inputs)`` logits, one tensor per sub-discriminator.
        real_inputs: the tensor the discriminator scored, ``(B, ...)``; it must require grad.

    Returns:
        Scalar: squared L2 norm of the per-sample gradient of the critic ``c`` (:func:`critic_values`),
        mean over the batch. Multiply by ``γ / 2`` in the caller.
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
    of a sample is :func:`critic_values` — the same reduction as the losses — so
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
    # Differentiated at the tensor the D's network scores (after any re-noising of its own).
    interpolates, cond = prepare_discriminator_input(discriminator, interpolates, cond)
    interpolates = interpolates.detach().requires_grad_(True)
    logits, _ = discriminator(interpolates, **cond)
    # Summing the per-sample critic over the batch keeps the gradients per sample.
    gradient = _input_gradient(critic_values(logits).sum(), interpolates, "interpolates")
    norms = gradient.reshape(batch, -1).norm(2, dim=1)
    return (norms - 1.0).square().mean()


def lecam_penalty(real_logits: Logits, fake_logits: Logits, real_anchor: Tensor, fake_anchor: Tensor) -> Tensor:
    """LeCam regularization ``mean(relu(r − α_F)²) + mean(relu(α_R − f)²)`` (Tseng et al. 2021, eq. 3).

    One-sided (the ReLU), as in the authors' code: only a real logit above the fake anchor, or a
    fake logit below the real anchor, is pulled back. The anchors are moving averages of the mean
    real and fake logits, kept by the caller (``advtune.adversarial``: decay 0.99, bias-corrected).

    Args:
        real_logits: D logits on real inputs, one tensor per sub-discriminator.
        fake_logits: D logits on generated inputs, same sub-discriminators.
        real_anchor: ``α_R``, ``(K,)`` for ``K`` sub-discriminators (constants).
        fake_anchor: ``α_F``, ``(K,)``.

    Returns:
        Scalar: per sub-discriminator, mean over its logits; then mean over sub-discriminators.
        Multiply by the weight λ in the caller.
    """
    pairs = _paired(real_logits, fake_logits)
    if real_anchor.numel() != len(pairs) or fake_anchor.numel() != len(pairs):
        raise ValueError(f"lecam_penalty: {len(pairs)} sub-discriminators but anchors of size "
                         f"{real_anchor.numel()} and {fake_anchor.numel()}")
    terms = [F.relu(r.float() - a_fake).square().mean() + F.relu(a_real - f.float()).square().mean()
             for (r, f), a_real, a_fake in zip(pairs, real_anchor.detach(), fake_anchor.detach())]
    return torch.stack(terms).mean()


class LeCamAnchors:
    """LeCam's anchors ``α_R, α_F``: moving averages of the mean real and fake logits, one per sub-D.

    Updated with the current batch before use, with the authors' decay (0.99), and bias-corrected
    (divided by ``1 − decay^t``, as Adam's moments) so the first steps do not pull the logits towards
    0. That is the authors' StyleGAN2 code (``google/lecam-gan``, ``stylegan2/lecam_loss.py``:
    TensorFlow's ``assign_moving_average(..., decay=0.99, zero_debias=True)``). Their BigGAN code
    differs: it pegs the averages to the current batch means (decay 0) for the first 1,000 iterations
    and only then switches the penalty on.
    """

    def __init__(self, decay: float = 0.99) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"LeCam decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.averages: Tensor | None = None  # (2, K): biased running means of real (row 0) and fake logits
        self.steps = 0

    def update(self, real_logits: Logits, fake_logits: Logits, commit: bool = True) -> tuple[Tensor, Tensor]:
        """Fold in this batch; return the bias-corrected ``(α_R, α_F)``, each ``(K,)``, detached.

        A non-finite mean (a skipped update) leaves its average as it was, so one bad batch does not
        poison every later penalty. ``commit=False`` (validation) returns the anchors without keeping them.
        """
        means = torch.stack([torch.stack([r.detach().float().mean(), f.detach().float().mean()])
                             for r, f in _paired(real_logits, fake_logits)], dim=1)
        previous = torch.zeros_like(means) if self.averages is None else self.averages.to(means.device)
        averages = self.decay * previous + (1.0 - self.decay) * means
        averages = torch.where(torch.isfinite(averages), averages, previous)  # device op: no sync
        steps = self.steps + 1
        if commit:
            self.averages, self.steps = averages, steps
        corrected = averages / (1.0 - self.decay**steps)
        return corrected[0], corrected[1]

    def state_dict(self) -> dict[str, object]:
        return {"averages": None if self.averages is None else self.averages.clone(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.averages = None if state["averages"] is None else state["averages"].clone()
        self.steps = int(state["steps"])


def lazy_regularization_gain(step: int, interval: int) -> float:
    """Gain for lazy regularization (Karras et al. 2020, StyleGAN2 section 3.1).

    Returns ``float(interval)`` on steps where ``step % interval == 0`` and ``0.0`` otherwise, so a
    penalty applied every ``interval`` steps has the same average strength as one applied always.
    """
    if interval < 1:
        raise ValueError(f"lazy_regularization_gain: interval must be >= 1, got {interval}")
    return float(interval) if step % interval == 0 else 0.0
