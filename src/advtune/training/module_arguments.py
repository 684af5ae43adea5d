"""The checks of :class:`~advtune.training.AdversarialModule`'s arguments, each naming its ``module.*`` key.

Called first thing in ``AdversarialModule.__init__``, so a wrong value is refused when the module is
built (by ``advtune validate-config`` as by ``advtune train``), not at the first step. The optimizer
and scheduler factories are called later, on the built module's parameters
(:func:`advtune.building.check_optimizers`); here only what can be read without calling them: a
learning rate must be a finite number > 0.
"""

from __future__ import annotations

import functools
from typing import Any

from advtune.checks import check_choice, check_flag, check_integer, check_number

__all__ = ["check_module_arguments", "SCHEDULER_INTERVALS"]

SCHEDULER_INTERVALS = ("step", "epoch")


def check_module_arguments(arguments: dict[str, Any]) -> None:
    """Raise :class:`~advtune.config.ConfigError` for the first argument that makes no sense.

    Args:
        arguments: ``AdversarialModule.__init__``'s arguments by name (its ``locals()`` on entry).
    """
    check_choice("module.scheduler_interval", arguments["scheduler_interval"], SCHEDULER_INTERVALS)
    check_integer("module.accumulate_grad_batches", arguments["accumulate_grad_batches"], minimum=1)
    check_integer("module.max_consecutive_nonfinite", arguments["max_consecutive_nonfinite"], minimum=1)
    check_flag("module.use_adversarial", arguments["use_adversarial"])
    check_flag("module.regenerate_fake", arguments["regenerate_fake"])
    for player in ("generator", "discriminator"):
        # inf means "no clipping" to torch's clip_grad_norm_; null says it more plainly.
        check_number(f"module.{player}_clip_norm", arguments[f"{player}_clip_norm"], above=0.0, allow_none=True,
                     allow_infinite=True)
        _check_learning_rate(f"module.{player}_optimizer", arguments[f"{player}_optimizer"])
    check_number("module.running_average_decay", arguments["running_average_decay"], minimum=0.0, below=1.0,
                 allow_none=True)
    check_number("module.ema_decay", arguments["ema_decay"], minimum=0.0, below=1.0, allow_none=True)
    check_number("module.ema_rampup", arguments["ema_rampup"], minimum=0.0, allow_none=True)


def _check_learning_rate(key: str, factory: Any) -> None:
    """A factory built from a config (``functools.partial``) with an ``lr`` must have a finite ``lr > 0``."""
    if isinstance(factory, functools.partial) and "lr" in factory.keywords:
        lr = factory.keywords["lr"]
        if not hasattr(lr, "dim"):  # a tensor learning rate (torch allows it) is the caller's business
            check_number(f"{key}.lr", lr, above=0.0)
