"""``AudioVAEModule``: the :class:`AdversarialModule` of the audio VAE job, with legacy arguments.

Older audio trainers took the adversarial settings as flat module arguments
(``adversarial_warmup_steps``, ``adversarial_weight``, ``feature_matching_weight``). They still
work here, with a ``DeprecationWarning`` naming their place in the ``adversarial`` config
(:class:`~advtune.adversarial.AdversarialLossCalculator`). Checkpoints also record the VAE's class
and ``model_config`` so :func:`advtune.io.load_from_lightning_checkpoint` can rebuild it.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

from torch import nn

from advtune.adversarial import AdversarialLossCalculator
from advtune.io import attach_model_to_checkpoint
from advtune.tasks.base import AdversarialTask
from advtune.training.module import AdversarialModule

__all__ = ["AudioVAEModule", "LEGACY_TO_CALCULATOR"]

# legacy module argument -> AdversarialLossCalculator argument (config key adversarial.<name>)
LEGACY_TO_CALCULATOR = {
    "adversarial_warmup_steps": "warmup_steps",
    "adversarial_weight": "adversarial_weight",
    "feature_matching_weight": "feature_matching_weight",
}
# Defaults of the audio job when no calculator is given: configs/adversarial/adversarial_loss.yaml.
_AUDIO_DEFAULTS = {"adversarial_weight": 1.0, "feature_matching_weight": 10.0, "warmup_steps": 0}


def _with_overrides(calculator: AdversarialLossCalculator, overrides: dict[str, Any]
                    ) -> AdversarialLossCalculator:
    """A new calculator with ``calculator``'s settings and ``overrides`` (validated again)."""
    names = [n for n in inspect.signature(AdversarialLossCalculator).parameters
             if hasattr(calculator, n)]
    settings = {name: getattr(calculator, name) for name in names}
    return type(calculator)(**{**settings, **overrides})


class AudioVAEModule(AdversarialModule):
    """:class:`AdversarialModule` for :class:`~advtune.tasks.audio_vae.AudioVAETask`.

    Args:
        task: the audio VAE task.
        discriminator: required when ``use_adversarial`` (e.g. ``EnCodecDiscriminator``).
        calculator: the adversarial loss; default weight 1.0, feature matching 10.0, no warm-up.
        use_adversarial: ``False`` trains the reconstruction losses only.
        adversarial_warmup_steps: deprecated, use ``adversarial.warmup_steps``.
        adversarial_weight: deprecated, use ``adversarial.adversarial_weight``.
        feature_matching_weight: deprecated, use ``adversarial.feature_matching_weight``.
        **kwargs: the other :class:`AdversarialModule` arguments (optimizers, schedule, ...).

    Raises:
        ValueError: ``use_adversarial`` without a discriminator.
    """

    def __init__(self, task: AdversarialTask, discriminator: nn.Module | None = None,
                 calculator: AdversarialLossCalculator | None = None, use_adversarial: bool = True,
                 adversarial_warmup_steps: int | None = None, adversarial_weight: float | None = None,
                 feature_matching_weight: float | None = None, **kwargs: Any) -> None:
        if use_adversarial and discriminator is None:
            raise ValueError("discriminator must be provided when use_adversarial=True")
        legacy = {"adversarial_warmup_steps": adversarial_warmup_steps,
                  "adversarial_weight": adversarial_weight,
                  "feature_matching_weight": feature_matching_weight}
        legacy = {name: value for name, value in legacy.items() if value is not None}
        if calculator is None:
            calculator = AdversarialLossCalculator(**_AUDIO_DEFAULTS)
        if legacy:
            moved = ", ".join(f"{name} -> adversarial.{LEGACY_TO_CALCULATOR[name]}"
                              for name in legacy)
            warnings.warn(
                f"AudioVAEModule: the flat arguments are deprecated ({moved}); set them in the "
                "`adversarial` config (configs/adversarial/adversarial_loss.yaml, "
                "advtune.adversarial.AdversarialLossCalculator), e.g. "
                "`advtune train adversarial.warmup_steps=20000`",
                DeprecationWarning, stacklevel=2)
            calculator = _with_overrides(
                calculator, {LEGACY_TO_CALCULATOR[name]: value for name, value in legacy.items()})
        super().__init__(task, discriminator, calculator, use_adversarial=use_adversarial,
                         **kwargs)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # model_class, model_config and the VAE's state_dict prefix ("task.vae.")
        attach_model_to_checkpoint(checkpoint, self.task)
        if "advtune_model_prefix" in checkpoint:
            checkpoint["advtune_model_prefix"] = "task." + checkpoint["advtune_model_prefix"]
