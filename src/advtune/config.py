"""Compose and check Hydra configs: one-line errors that name the valid choices.

Every ``_target_`` is checked against an allow-list of module prefixes before anything is
imported, also for configs read back from a checkpoint: a file never picks the code we run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

__all__ = ["ConfigError", "compose_config", "check_targets", "ALLOWED_TARGET_PREFIXES", "CONFIG_DIR"]

CONFIG_DIR = Path(__file__).parent / "configs"
ALLOWED_TARGET_PREFIXES = ("advtune.", "torch.optim.", "torch.nn.", "diffusers.", "peft.", "lycoris.", "lightning.")


class ConfigError(ValueError):
    """A config problem, reported to the user as one line."""


def _choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _check_group_choices(overrides: list[str]) -> None:
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if sep and "." not in key and (CONFIG_DIR / key).is_dir() and value not in ("null", ""):
            if value not in _choices(key):
                raise ConfigError(f"unknown {key} {value!r}; valid: {', '.join(_choices(key))}")


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose ``configs/config.yaml`` with Hydra overrides; raise :class:`ConfigError` on bad input."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _check_group_choices(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise ConfigError(_explain(err, overrides)) from None
    choices = cfg.hydra.runtime.choices
    with open_dict(cfg):
        del cfg["hydra"]
        if cfg.output_dir is None:
            cfg.output_dir = f"outputs/{choices.get('experiment') or 'run'}"
    check_targets(cfg)
    return cfg


def open_dict(cfg: DictConfig) -> Any:
    from omegaconf import open_dict as _open_dict

    return _open_dict(cfg)


def _explain(err: Exception, overrides: list[str]) -> str:
    text = str(err)
    match = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", text)
    if match:
        key = match.group(1)
        parent, _, leaf = key.rpartition(".")
        rest = [o for o in overrides if not o.lstrip("+~").startswith(key + "=")]
        try:
            base = compose_config(rest)
            node = OmegaConf.select(base, parent) if parent else base
            valid = ", ".join(sorted(node.keys())) if isinstance(node, DictConfig) else "(none)"
        except ConfigError:
            valid = "(could not list)"
        where = f"under '{parent}'" if parent else "at the top level"
        return f"unknown config key '{key}'; valid keys {where}: {valid} (use +{key}=... to add a new key)"
    return " ".join(text.split())


def check_targets(cfg: Any, extra_prefixes: tuple[str, ...] = (), trust_config_prefixes: bool = True) -> None:
    """Refuse any ``_target_`` outside the allow-list.

    Args:
        cfg: the config to walk.
        extra_prefixes: prefixes the user allowed on the command line.
        trust_config_prefixes: also allow ``cfg.allowed_target_prefixes``. ``False`` for a config read
            from a file (a checkpoint), which must not widen its own allow-list.
    """
    prefixes = ALLOWED_TARGET_PREFIXES + tuple(extra_prefixes)
    if trust_config_prefixes and isinstance(cfg, DictConfig) and "allowed_target_prefixes" in cfg:
        prefixes += tuple(cfg.allowed_target_prefixes or ())

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            if target is not None and not str(target).startswith(prefixes):
                raise ConfigError(f"_target_ {target!r} at '{path or '<root>'}' is not allowed; allowed prefixes: "
                                  f"{', '.join(prefixes)} (add yours with allowed_target_prefixes=[...])")
            for key, value in node.items():
                walk(value, f"{path}.{key}".lstrip("."))
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    walk(OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, (DictConfig, ListConfig)) else cfg, "")
