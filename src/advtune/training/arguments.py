"""The Trainer's arguments of a run, checked: value types, and the strategy many devices need.

``trainer.max_steps=abc`` is one line naming the key and the expected type (checked against the
annotations of ``lightning.Trainer``), not a traceback from inside Lightning. With more than one
device or node and ``strategy: auto``, the strategy is DDP with ``find_unused_parameters``: in
every backward of the two-player step one player's parameters get no gradient, which plain DDP
treats as an error.
"""

from __future__ import annotations

from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf

from advtune.config import ConfigError, check_value_types

__all__ = ["trainer_arguments", "DDP_STRATEGY"]

DDP_STRATEGY = "ddp_find_unused_parameters_true"


def _root_settings(seed: int, checkpoint_every: int, keep_checkpoints: int,
                   resume: Literal["auto", "never"]) -> None:
    """The types of the root keys of ``configs/config.yaml`` (read by ``check_value_types``)."""


def trainer_arguments(cfg: DictConfig) -> dict[str, Any]:
    """Check the root keys and the Trainer's arguments; return those arguments, strategy resolved."""
    import lightning as L

    check_value_types({k: cfg.get(k) for k in ("seed", "checkpoint_every", "keep_checkpoints", "resume")},
                      _root_settings, "")
    for key in ("seed", "checkpoint_every", "keep_checkpoints"):  # check_value_types leaves null alone
        if cfg.get(key) is None:
            raise ConfigError(f"{key}=null is not valid: expected an integer")
    if int(cfg.checkpoint_every) < 1:
        raise ConfigError(f"checkpoint_every={cfg.checkpoint_every} is not valid: expected an integer >= 1")
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    check_value_types(trainer_kwargs, L.Trainer, "trainer")
    if trainer_kwargs.get("strategy", "auto") == "auto" and _is_distributed(trainer_kwargs):
        # The two-player step leaves one player's parameters without gradients in every backward.
        trainer_kwargs["strategy"] = DDP_STRATEGY
    return trainer_kwargs


def _is_distributed(trainer_kwargs: dict[str, Any]) -> bool:
    devices = trainer_kwargs.get("devices", "auto")
    if int(trainer_kwargs.get("num_nodes") or 1) > 1:
        return True
    if isinstance(devices, (list, tuple)):
        return len(devices) > 1
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()]) > 1
    if str(devices).isdigit():
        return int(devices) > 1
    if trainer_kwargs.get("accelerator") == "cpu":  # "auto" or -1 on CPU: one process
        return False
    import torch

    return torch.cuda.device_count() > 1  # "auto" or -1: every GPU
