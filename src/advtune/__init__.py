"""advtune: add a discriminator and an adversarial loss to the training of generative models.

Heavy dependencies (torch, lightning, diffusers) load on first use, so ``advtune --help`` is fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["AdversarialLossCalculator", "AdversarialModule", "Phase", "PhaseSchedule", "__version__"]
__version__ = "0.1.0"

_LAZY = {
    "AdversarialLossCalculator": "advtune.adversarial",
    "AdversarialModule": "advtune.training.module",
    "Phase": "advtune.schedule",
    "PhaseSchedule": "advtune.schedule",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'advtune' has no attribute {name!r}")
