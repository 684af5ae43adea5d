"""The root keys and the Trainer's arguments of a run, checked: types, ranges, names, and the strategy
many devices need.

``trainer.max_steps=abc`` or ``trainer.devices=-7`` is one line naming the key, the value and what is
allowed, not a traceback from inside Lightning: types are checked against the annotations of
``lightning.Trainer``, the ranges and names of the keys ``configs/trainer/default.yaml`` ships here
(Lightning's own registries give the accelerator and strategy names), and whatever else Lightning
refuses is caught when the runner constructs the ``Trainer`` (before anything trains). With more than
one device or node and ``strategy: auto``, the strategy is DDP with ``find_unused_parameters``: in
every backward of the two-player step one player's parameters get no gradient, which plain DDP
treats as an error.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from advtune.checks import check_choice, check_integer, refuse
from advtune.config import check_value_types
from advtune.training.resume import RESUME_CHOICES

__all__ = ["trainer_arguments", "check_root_settings", "DDP_STRATEGY"]

DDP_STRATEGY = "ddp_find_unused_parameters_true"
_SEED_RANGE = (0, 2**32 - 1)  # what numpy's and Lightning's seeding accept


def check_root_settings(cfg: DictConfig) -> None:
    """The root keys of ``configs/config.yaml`` that are numbers or names."""
    check_integer("seed", cfg.get("seed"), *_SEED_RANGE)
    check_integer("checkpoint_every", cfg.get("checkpoint_every"), minimum=1)
    check_integer("keep_checkpoints", cfg.get("keep_checkpoints"), minimum=-1)  # -1 keeps all
    check_choice("resume", cfg.get("resume"), RESUME_CHOICES)
    output_dir = cfg.get("output_dir")
    if not isinstance(output_dir, str) or not output_dir.strip():
        refuse("output_dir", output_dir, "a folder path")
    if isinstance(cfg.get("run_name"), (DictConfig, ListConfig)):
        refuse("run_name", OmegaConf.to_container(cfg.run_name), "a name")
    prompts = cfg.get("validation_prompts")
    if prompts is not None and (not isinstance(prompts, ListConfig) or not all(isinstance(p, str) for p in prompts)):
        refuse("validation_prompts", OmegaConf.to_container(prompts) if isinstance(prompts, ListConfig) else prompts,
               'a list of prompts, e.g. ["a cat", "a dog"]')


def trainer_arguments(cfg: DictConfig) -> dict[str, Any]:
    """Check the root keys and the Trainer's arguments; return those arguments, strategy resolved."""
    import lightning as L

    check_root_settings(cfg)
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    check_value_types(trainer_kwargs, L.Trainer, "trainer")
    _check_trainer_ranges(trainer_kwargs)
    if trainer_kwargs.get("strategy", "auto") == "auto" and _is_distributed(trainer_kwargs):
        # The two-player step leaves one player's parameters without gradients in every backward.
        trainer_kwargs["strategy"] = DDP_STRATEGY
    return trainer_kwargs


def _check_trainer_ranges(kwargs: dict[str, Any]) -> None:
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    def given(key: str) -> bool:
        return kwargs.get(key) is not None

    if given("max_steps"):
        check_integer("trainer.max_steps", kwargs["max_steps"], minimum=-1)  # -1: no limit (max_epochs decides)
    if given("max_epochs"):
        check_integer("trainer.max_epochs", kwargs["max_epochs"], minimum=-1)
    if given("num_nodes"):
        check_integer("trainer.num_nodes", kwargs["num_nodes"], minimum=1)
    if given("log_every_n_steps"):
        check_integer("trainer.log_every_n_steps", kwargs["log_every_n_steps"], minimum=1)
    if given("check_val_every_n_epoch"):
        check_integer("trainer.check_val_every_n_epoch", kwargs["check_val_every_n_epoch"], minimum=1)
    if given("num_sanity_val_steps"):
        check_integer("trainer.num_sanity_val_steps", kwargs["num_sanity_val_steps"], minimum=-1)  # -1: all
    _check_batches("trainer.val_check_interval", kwargs.get("val_check_interval"), smallest_int=1)
    _check_batches("trainer.limit_val_batches", kwargs.get("limit_val_batches"), smallest_int=0)
    if isinstance(kwargs.get("accelerator"), str):
        check_choice("trainer.accelerator", kwargs["accelerator"],
                     ("auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators())))
    strategy = kwargs.get("strategy")
    if isinstance(strategy, str) and strategy != "auto" and strategy not in StrategyRegistry.available_strategies():
        refuse("trainer.strategy", strategy, "auto, ddp, fsdp (docs/MULTINODE.md) or another strategy name "
                                             "Lightning knows (ddp_spawn, deepspeed, ...)")
    if "devices" in kwargs:
        _check_devices(kwargs["devices"])


def _check_batches(key: str, value: Any, smallest_int: int) -> None:
    """An int counts batches (>= ``smallest_int``), a float is a fraction of the epoch."""
    if value is None:
        return
    fractions = "[0, 1]" if smallest_int == 0 else "(0, 1]"
    if isinstance(value, float):
        valid = (0.0 <= value if smallest_int == 0 else 0.0 < value) and value <= 1.0  # False for NaN
    else:
        valid = isinstance(value, int) and not isinstance(value, bool) and value >= smallest_int
    if not valid:
        refuse(key, value, f"an integer >= {smallest_int} (batches) or a number in {fractions} (a fraction of an epoch)")


def _check_devices(devices: Any) -> None:
    allowed = "an integer >= 1, -1 (all), auto, a list of device indices or a string like '0,1'"
    if isinstance(devices, bool):
        refuse("trainer.devices", devices, allowed)
    if isinstance(devices, int):
        if devices == -1 or devices >= 1:
            return
    elif isinstance(devices, str):
        parts = [part.strip() for part in devices.split(",") if part.strip()]
        if devices.strip() in ("auto", "-1") or (parts and all(part.isdigit() for part in parts)):
            return
    elif isinstance(devices, list) and devices and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                        for d in devices):
        return
    refuse("trainer.devices", devices, allowed)


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
