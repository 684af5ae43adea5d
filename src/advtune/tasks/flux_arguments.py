"""The checks of the Flux tasks' arguments, each naming its ``task.*`` key.

Called at the top of ``FluxLoRATask.__init__`` and ``FluxDistillTask.__init__`` (before a base model is loaded), so a value that makes
no sense (a LoRA of rank -7, a dropout of 1.5, a negative validation batch) is refused when the task
is built, by ``advtune validate-config`` as by ``advtune train``, instead of failing at the first
validation. ``transformer_config`` is checked against the annotations of
:func:`advtune.models.flux.build_flux_transformer`, which it configures.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from advtune.checks import check_integer, check_number
from advtune.config import check_value_types

__all__ = ["check_flux_task_arguments"]

_POSITIVE_INTEGERS = ("rank", "latent_size", "num_validation_samples", "validation_batch_size")
_TRANSFORMER_WIDTHS = ("in_channels", "attention_head_dim", "num_attention_heads", "joint_attention_dim",
                       "pooled_projection_dim")


def check_flux_task_arguments(arguments: dict[str, Any]) -> None:
    """Raise :class:`~advtune.config.ConfigError` for the first argument that makes no sense.

    Args:
        arguments: the task's ``__init__`` arguments by name (its ``locals()`` on entry); a key the
            task does not take (the distillation task has no ``logit_std``) is not checked.
    """
    for name in _POSITIVE_INTEGERS:
        check_integer(f"task.{name}", arguments[name], minimum=1)
    check_integer("task.latent_channels", arguments["latent_channels"], minimum=1, allow_none=True)
    check_number("task.alpha", arguments["alpha"], above=0.0)
    check_number("task.dropout", arguments["dropout"], minimum=0.0, below=1.0)
    for name in ("logit_std", "disc_sigma_logit_std"):  # spreads of logit-normal draws
        if name in arguments:
            check_number(f"task.{name}", arguments[name], above=0.0)
    for name in ("diffusion_loss_weight", "guidance_scale", "regression_weight"):
        if name in arguments:
            check_number(f"task.{name}", arguments[name], minimum=0.0)
    config = arguments["transformer_config"]
    if isinstance(config, Mapping):  # a dict, or Hydra's DictConfig
        from advtune.models.flux import build_flux_transformer

        config = dict(config)
        check_value_types(config, build_flux_transformer, "task.transformer_config")
        for name in _TRANSFORMER_WIDTHS:
            if name in config:
                check_integer(f"task.transformer_config.{name}", config[name], minimum=1)
        for name in ("num_layers", "num_single_layers"):
            if name in config:
                check_integer(f"task.transformer_config.{name}", config[name], minimum=0)
