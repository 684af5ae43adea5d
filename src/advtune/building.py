"""A config becomes objects here, each checked as it is built: ``advtune train`` and ``advtune
validate-config`` (and ``sample``/``export``/``evaluate``, through ``load_run``) build through these.

Every value is checked before or while its object is built: types against the annotations of the ``_target_``
it configures (:func:`check_config_types`), ranges and names by the objects themselves (they raise
:class:`~advtune.config.ConfigError` naming their key, see :mod:`advtune.checks`), and what only shows when
objects meet (optimizers on the module's parameters, data loaders) by calling them now
(:func:`check_optimizers`, :func:`set_up_data`). Whatever an object refuses is one line naming the config node.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from advtune.checks import check_flag
from advtune.config import ConfigError, check_value_types

__all__ = ["Built", "build", "check_config_types", "check_optimizers", "set_up_data", "value_source"]


@dataclass
class Built:
    """Everything a config describes, ready for ``Trainer.fit``."""
    module: Any
    datamodule: Any


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _quoted_negatives(node: Any, path: str, message: str) -> str:
    """``" (task.generator.latent_dim=-7)"``: the negative values of config node ``node`` that an
    error naming no key quotes ("negative dimension -7"), with the key they come from when they are
    interpolated; when it quotes none but is about a negative number, every negative value of the
    node; ``""`` otherwise."""
    negatives: list[tuple[str, str]] = []  # (value, "key=value [from ${...}]")

    def walk(value: Any, raw: Any, key: str) -> None:
        if isinstance(value, dict):
            for child, item in value.items():
                walk(item, raw.get(child) if isinstance(raw, dict) else None, f"{key}.{child}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            source = f" from {raw}" if isinstance(raw, str) and "${" in raw else ""
            negatives.append((str(value), f"{key}={value}{source}"))

    if isinstance(node, DictConfig):
        try:
            walk(OmegaConf.to_container(node, resolve=True), OmegaConf.to_container(node, resolve=False), path)
        except Exception:  # noqa: BLE001 - only a hint; the error itself is reported regardless
            return ""
    quoted = [text for value, text in negatives if re.search(rf"(?<![\w.]){re.escape(value)}(?![\w.])", message)]
    if quoted:
        return f" ({', '.join(quoted)})"
    if negatives and "negative" in message:  # a size derived from the value (a width of 2 x -7)
        return f" (negative here: {', '.join(text for _, text in negatives)})"
    return ""


def _refusal(error: BaseException, name: str, target: Any, node: Any = None) -> ConfigError:
    """``error`` raised while building config node ``name`` (``target``) as one :class:`ConfigError`."""
    while not isinstance(error, ConfigError) and error.__cause__ is not None:
        error = error.__cause__  # Hydra wraps what the target raised
    line = _first_line(error)
    if isinstance(error, ConfigError) or line.startswith(f"{name}."):  # the object named its key itself
        return ConfigError(line)
    return ConfigError(f"cannot build '{name}' ({target}): {line}{_quoted_negatives(node, name, line)}")


def value_source(cfg: DictConfig, message: str) -> str:
    """``message`` about ``key=...``, plus where the value comes from when ``key`` interpolates another
    (``module.discriminator_optimizer.lr: ${disc_lr}``): the user set that one."""
    match = re.match(r"([A-Za-z_][\w.]*)[= ]", message)
    if not match:
        return message
    parent, _, leaf = match.group(1).rpartition(".")
    try:
        node = OmegaConf.select(cfg, parent) if parent else cfg
        raw = OmegaConf.to_container(node, resolve=False).get(leaf) if isinstance(node, DictConfig) else None
    except Exception:  # noqa: BLE001 - a message that only looks like a key: leave it as it is
        return message
    if isinstance(raw, str) and "${" in raw:
        return f"{message} (the value comes from {raw})"
    return message


def _make(node: Any, name: str) -> Any:
    """``hydra.utils.instantiate(node)``; what the target refuses becomes one line."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf.errors import OmegaConfBaseException

    try:
        return instantiate(node)
    except (InstantiationException, OmegaConfBaseException, TypeError, ValueError) as error:
        raise _refusal(error, name, node.get("_target_"), node) from None


def _call(factory: Callable[..., Any], name: str, node: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a factory built from config node ``name`` (a ``_partial_``); what it refuses becomes one line."""
    try:
        return factory(*args, **kwargs)
    except (TypeError, ValueError, RuntimeError) as error:
        raise _refusal(error, name, node.get("_target_"), node) from None


def build(cfg: DictConfig, with_data: bool = True, check_types: bool = True) -> Built:
    """Instantiate task, discriminator, calculator, schedule and module (and data) from ``cfg``.

    The light objects are built first (calculator, schedule, the data module's settings; none draws
    random numbers), so a wrong value there is refused before a large model is built.
    ``check_types=False``: the caller has run :func:`check_config_types` already.
    """
    if check_types:
        check_config_types(cfg)
    calculator, schedule = _make(cfg.adversarial, "adversarial"), _make(cfg.schedule, "schedule")
    datamodule = _make(cfg.data, "data") if with_data else None
    task = _make(cfg.task, "task")
    discriminator = None
    if cfg.module.get("use_adversarial", True):
        if cfg.get("discriminator") is None:
            raise ConfigError("discriminator must be provided when adversarial training is enabled "
                              "(pick one with discriminator=NAME, or set module.use_adversarial=false)")
        discriminator = _make(cfg.discriminator, "discriminator")
        if isinstance(discriminator, functools.partial):
            discriminator = _call(discriminator, "discriminator", cfg.discriminator, **task.discriminator_kwargs())
    module_node = OmegaConf.create(OmegaConf.to_container(cfg.module, resolve=True))
    module_node["_partial_"] = True
    factory = _make(module_node, "module")
    module = _call(factory, "module", cfg.module, task=task, discriminator=discriminator,
                   calculator=calculator, schedule=schedule, sample_dir=Path(cfg.output_dir) / "samples")
    module.run_config = OmegaConf.to_yaml(cfg)
    _initialise_players(cfg, module)
    return Built(module, datamodule)


def check_config_types(cfg: DictConfig) -> None:
    """Check the values of every ``_target_`` node of ``cfg`` against its parameters' annotations,
    and ``monitor.*`` (no ``_target_``: the keys of :class:`~advtune.monitor.HealthMonitor`)."""
    from advtune.monitor import HealthMonitor

    from omegaconf.errors import OmegaConfBaseException

    values: dict[str, Any] = {}
    for key in cfg:
        try:  # each group resolved once (interpolations give their values)
            node = cfg[key]
            values[key] = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        except OmegaConfBaseException:
            continue  # an interpolation that fails to resolve: building that group reports it
    _check_node_types(values, "")
    monitor = values.get("monitor")
    if isinstance(monitor, dict):
        settings = dict(monitor)
        check_flag("monitor.enabled", settings.pop("enabled", True))
        check_value_types(settings, HealthMonitor, "monitor")


def _check_node_types(node: dict[str, Any], path: str) -> None:
    from hydra.utils import get_object

    if node.get("_partial_") is not None:
        check_flag(f"{path}._partial_" if path else "_partial_", node["_partial_"])
    target = node.get("_target_")
    if target is not None:
        try:
            obj = get_object(str(target))
        except Exception:  # noqa: BLE001 - a target that cannot be imported is reported by instantiate
            obj = None
        if obj is not None:
            check_value_types({k: v for k, v in node.items() if not isinstance(v, dict)}, obj, path)
    for key, value in node.items():
        if isinstance(value, dict):
            _check_node_types(value, f"{path}.{key}" if path else str(key))


def check_optimizers(cfg: DictConfig, module: Any) -> None:
    """Call each player's optimizer and LR-scheduler factory on the built module's parameters, as
    ``fit`` will (a wrong ``betas``, ``weight_decay`` or scheduler argument is one line naming the
    node), then ``configure_optimizers`` itself."""
    from advtune.schedule import Phase

    for phase, player in ((Phase.G, "generator"), (Phase.D, "discriminator")):
        params, node = module.player_parameters(phase), cfg.module.get(f"{player}_optimizer")
        if not params or node is None:
            continue  # the module's default optimizer, or a player without parameters (refused below)
        name = f"module.{player}_optimizer"
        optimizer = _call(_make(node, name), name, node, params)
        scheduler = cfg.module.get(f"{player}_scheduler")
        if scheduler is not None:
            name = f"module.{player}_scheduler"
            _call(_make(scheduler, name), name, scheduler, optimizer)
    _call(module.configure_optimizers, "module", cfg.module)


def set_up_data(datamodule: Any, node: Any = None) -> None:
    """Run the data module's ``setup`` and build its loaders now (Lightning's later calls find the setup
    done): missing folders, unreadable files and loader settings are reported before the Trainer starts.
    A module whose loaders need the Trainer (``loaders_need_trainer``: teacher samples) has its ``source`` checked."""
    from lightning import LightningDataModule

    if getattr(datamodule, "loaders_need_trainer", False):
        return set_up_data(datamodule.source, node.get("source") if node is not None else None)
    try:
        datamodule.setup("fit")
        datamodule.train_dataloader()
        if type(datamodule).val_dataloader is not LightningDataModule.val_dataloader:
            datamodule.val_dataloader()
    except ConfigError:
        raise
    except (ValueError, TypeError, OSError) as error:
        line = _first_line(error)
        raise ConfigError(f"data ({type(datamodule).__name__}): {line}{_quoted_negatives(node, 'data', line)}") from None


def _initialise_players(cfg: DictConfig, module: Any) -> None:
    if cfg.get("init_discriminator"):
        from safetensors.torch import load_file

        path = Path(cfg.init_discriminator)
        if not path.is_file():
            raise ConfigError(f"init_discriminator: no file at {path}")
        try:
            module.discriminator.load_state_dict(load_file(str(path)))
        except Exception as err:  # noqa: BLE001 - shape/key mismatch or corrupt file, reported in one line
            raise ConfigError(f"init_discriminator {path} does not fit the configured discriminator: "
                              f"{_first_line(err)}") from None
    if cfg.get("init_generator"):
        from advtune.io import load_model

        path = Path(cfg.init_generator)
        generator = getattr(module.task, "generator", None)
        if generator is None:
            raise ConfigError(f"init_generator: task {type(module.task).__name__} has no `generator` to initialise")
        if not path.is_file():
            raise ConfigError(f"init_generator: no file at {path}")
        try:
            state = load_model(path).state_dict()
            generator.load_state_dict(state)
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - a foreign, corrupt or mismatched file, reported in one line
            raise ConfigError(f"init_generator {path} does not fit the task's generator: {_first_line(err)}") from None
