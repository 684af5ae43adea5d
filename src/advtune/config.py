"""Compose and check Hydra configs: one-line errors that name the valid choices.

Every ``_target_`` is checked against an allow-list of module prefixes before anything is
imported, also for configs read back from a checkpoint: a file never picks the code we run.
Values are checked against the type annotations of the object they configure
(``trainer.max_steps=abc`` is one line, not a traceback from deep inside the Trainer), and
:func:`config_differences` names what changed between a run's stored config and a new one.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, ListConfig, OmegaConf

from advtune.errors import ConfigError

__all__ = ["ConfigError", "compose_config", "check_targets", "check_value_types", "config_differences",
           "ALLOWED_TARGET_PREFIXES", "CONFIG_DIR", "RESUMABLE_CHANGES"]

CONFIG_DIR = Path(__file__).parent / "configs"
ALLOWED_TARGET_PREFIXES = ("advtune.", "torch.optim.", "torch.nn.", "diffusers.", "peft.", "lycoris.", "lightning.")
# Keys a resumed run may change: the length of training, and what is logged, shown or saved when.
RESUMABLE_CHANGES = (
    "trainer.max_steps", "trainer.max_epochs", "trainer.log_every_n_steps", "trainer.enable_progress_bar",
    "trainer.enable_model_summary", "trainer.val_check_interval", "trainer.check_val_every_n_epoch",
    "trainer.limit_val_batches", "trainer.num_sanity_val_steps", "output_dir", "ckpt_path", "resume", "run_name",
    "checkpoint_every", "keep_checkpoints", "monitor", "validation_prompts", "logger",
)


def _choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def _check_group_choices(overrides: list[str]) -> None:
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if sep and "." not in key and (CONFIG_DIR / key).is_dir() and value not in ("null", ""):
            names = [v.strip() for v in value.strip("[]").split(",") if v.strip()] if value.startswith("[") else [value]
            unknown = [name for name in names if name not in _choices(key)]
            if unknown:
                raise ConfigError(f"unknown {key} {unknown[0]!r}; valid: {', '.join(_choices(key))}")


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
        if cfg.get("run_name") is None:
            cfg.run_name = choices.get("experiment") or "run"
        from advtune.profiles import apply_profile  # the base model's defaults under the user's overrides

        cfg.profile = apply_profile(cfg, overrides, lambda name: (CONFIG_DIR / name).is_dir())
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
        extra = cfg.allowed_target_prefixes
        extra = [] if extra is None else OmegaConf.to_container(extra) if isinstance(extra, ListConfig) else extra
        if not isinstance(extra, list) or not all(isinstance(p, str) and p.strip(".") for p in extra):
            # a string would allow every module starting with one of its letters, "" every module
            raise ConfigError(f"allowed_target_prefixes={extra!r} is not valid: expected a list of module "
                              "prefixes, e.g. [my_pkg.]")
        prefixes += tuple(extra)

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


def _accepts(annotation: Any) -> tuple[Callable[[Any], bool], str] | None:
    """A check and a description for plain scalar annotations; ``None`` for anything else."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return (lambda v: isinstance(v, bool)), "true/false"
    if annotation is int:
        return (lambda v: isinstance(v, int) and not isinstance(v, bool)), "an integer"
    if annotation is float:  # NaN is not a number any setting can use
        return (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v == v), "a number"
    if annotation is type(None):
        return (lambda v: v is None), "null"
    if origin is typing.Literal and all(isinstance(a, (str, int, float, bool)) for a in args):
        names = {str(a) for a in args}
        return (lambda v: str(v) in names), f"one of {', '.join(sorted(names))}"
    if origin in (typing.Union, types.UnionType):
        literals = [a for a in args if typing.get_origin(a) is typing.Literal]
        if len(literals) > 1:  # Literal[1, 2] | Literal["a"]: one list of names
            args = (typing.Literal[tuple(v for lit in literals for v in typing.get_args(lit))],
                    *(a for a in args if a not in literals))
        parts = [_accepts(a) for a in args]
        if any(part is None for part in parts):
            return None  # a member we do not check (str, list, a class): accept anything
        return (lambda v: any(check(v) for check, _ in parts)), " or ".join(text for _, text in parts)
    return None


def _type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    """The parameters' annotations, evaluated; one by one when some name a type imported only for type
    checkers (a return type ``"FluxTransformer2DModel"``), leaving out those that cannot be evaluated."""
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 - fall back to the annotations that do evaluate
        pass
    hints = {}
    for name, annotation in getattr(function, "__annotations__", {}).items():
        try:
            hints[name] = eval(annotation, getattr(function, "__globals__", {})) if isinstance(annotation, str) else annotation
        except Exception:  # noqa: BLE001 - a name only imported under TYPE_CHECKING
            continue
    return hints


def check_value_types(values: dict[str, Any], target: Callable[..., Any], where: str) -> None:
    """Raise :class:`ConfigError` for a value its parameter's annotation rules out.

    Only scalar annotations (int, float, bool, Literal, Optional/Union of those) are checked;
    anything else, or a target whose annotations cannot be resolved, is left to the target.
    """
    hints = _type_hints(target.__init__ if isinstance(target, type) else target)
    for key, value in values.items():
        if key.startswith("_") or key not in hints or value is None or isinstance(value, (dict, list)):
            continue  # null: a placeholder the code fills in (a _partial_ node), or the target's default
        accepted = _accepts(hints[key])
        if accepted is not None and not accepted[0](value):
            name = f"{where}.{key}" if where else key
            raise ConfigError(f"{name}={value!r} is not valid: expected {accepted[1]}")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat or {prefix: {}}
    return {prefix: node}


def config_differences(stored: Any, current: Any, allowed: tuple[str, ...] = RESUMABLE_CHANGES) -> list[str]:
    """``"key: old -> new"`` for each setting that differs, except keys under ``allowed``.

    A key present on one side only counts when its value is not null (configs written before a
    key existed still match a config that leaves it at null).
    """
    def flat(cfg: Any) -> dict[str, Any]:
        if isinstance(cfg, (DictConfig, ListConfig)):
            try:
                cfg = OmegaConf.to_container(cfg, resolve=True)
            except Exception:  # noqa: BLE001 - an interpolation that no longer resolves: compare the text
                cfg = OmegaConf.to_container(cfg, resolve=False)
        return _flatten(cfg)

    old, new = flat(stored), flat(current)
    changed = []
    for key in sorted(set(old) | set(new)):
        if any(key == a or key.startswith(a + ".") for a in allowed):
            continue
        if old.get(key) != new.get(key):
            changed.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return changed
