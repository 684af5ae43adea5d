"""Write whole models (generator + config) safely, and the allow-list of classes that may be rebuilt.

A saved file is a plain ``torch.save`` dictionary holding only tensors, numbers, strings, lists and
dicts (checked before writing), so :mod:`advtune.io.loading` reads it with
``torch.load(path, weights_only=True)``. The class to rebuild is recorded *by name* and must be in the
allow-list (:func:`register_model`).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = ["FORMAT_VERSION", "attach_model_to_checkpoint", "register_model", "registered_models", "save_model"]

FORMAT_VERSION = 1
# Packages whose import registers advtune's own models (imported lazily: they import this module).
_BUILTIN_MODEL_PACKAGES = ("advtune.models",)
_REGISTRY: dict[str, type[nn.Module]] = {}
ModelT = TypeVar("ModelT", bound=type)


def register_model(cls: ModelT) -> ModelT:
    """Class decorator: allow :func:`load_model` to rebuild ``cls`` from a file.

    The class must be an ``nn.Module`` whose instances keep their JSON-able constructor kwargs in
    ``self.model_config``. Registering another class under a name already taken is refused, so a
    file can never be loaded into a class it was not saved from.

    Raises:
        TypeError: ``cls`` is not an ``nn.Module`` subclass.
        ValueError: a different class with the same name is already registered.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_model expects an nn.Module subclass, got {cls!r}")
    existing = _REGISTRY.get(cls.__name__)
    if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
        raise ValueError(
            f"register_model: the name {cls.__name__!r} is already registered for "
            f"{existing.__module__}.{existing.__qualname__}; rename your class"
        )
    _REGISTRY[cls.__name__] = cls
    return cls


def registered_models() -> dict[str, type[nn.Module]]:
    """Copy of the allow-list (class name -> class), advtune's own models included."""
    for package in _BUILTIN_MODEL_PACKAGES:
        importlib.import_module(package)
    return dict(_REGISTRY)


def _check_plain(value: Any, where: str) -> None:
    """Refuse values that ``torch.load(weights_only=True)`` could not read back."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor, torch.dtype,
                                           torch.device, torch.Size)):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise TypeError(f"save_model: key {key!r} at {where} is not a str/int")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
        return
    raise TypeError(
        f"save_model: {where} holds a {type(value).__name__}, which a weights_only load cannot "
        "read; store plain numbers, strings, lists, dicts and tensors only"
    )


def _model_entries(model: nn.Module) -> dict[str, Any]:
    """The model-describing part of a file or of a Lightning checkpoint."""
    name = type(model).__name__
    if _REGISTRY.get(name) is not type(model):
        raise ValueError(
            f"save_model: {type(model).__qualname__} is not registered; decorate the class with "
            "@advtune.io.register_model so load_model may rebuild it"
        )
    config = getattr(model, "model_config", None)
    if not isinstance(config, dict):
        raise TypeError(f"save_model: {name}.model_config must be a dict of constructor kwargs")
    try:
        json.dumps(config)
    except (TypeError, ValueError) as error:
        raise TypeError(f"save_model: {name}.model_config is not JSON-able ({error})") from None
    stats = None
    if isinstance(getattr(model, "latent_mean", None), torch.Tensor):
        stats = {"latent_mean": model.latent_mean.detach().cpu().clone(),
                 "latent_std": model.latent_std.detach().cpu().clone()}
    frozen = getattr(model, "encoder_frozen", None)
    return {
        "format_version": FORMAT_VERSION,
        "model_class": name,
        "model_config": json.loads(json.dumps(config)),
        "latent_statistics": stats,
        "encoder_frozen": bool(frozen) if frozen is not None else None,
    }


def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    optimizer_state: dict | None = None,
    scheduler_state: dict | None = None,
    epoch: int | None = None,
    global_step: int | None = None,
    metadata: dict | None = None,
) -> Path:
    """Write ``model`` with everything needed to rebuild it (atomically: tmp file + rename).

    Args:
        model: a registered model with a ``model_config`` dict.
        path: destination file (parents are created).
        optimizer_state: ``optimizer.state_dict()`` to resume training, optional.
        scheduler_state: ``scheduler.state_dict()``, optional.
        epoch: training epoch, optional.
        global_step: optimizer steps done, optional.
        metadata: JSON-able dict (sample rate, dataset, notes...), optional.

    Returns:
        The path written.
    """
    payload = _model_entries(model)
    payload["model_state_dict"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if metadata is not None:
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as error:
            raise TypeError(f"save_model: metadata is not JSON-able ({error})") from None
    payload.update(optimizer_state_dict=optimizer_state, scheduler_state_dict=scheduler_state,
                   epoch=epoch, global_step=global_step, metadata=metadata)
    _check_plain(payload, "the file")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def attach_model_to_checkpoint(checkpoint: dict[str, Any], root: nn.Module) -> None:
    """Record, in a Lightning checkpoint dict, the first registered model inside ``root``.

    Called from ``on_save_checkpoint`` so every Lightning checkpoint advtune writes carries
    ``model_class``, ``model_config`` and the ``state_dict`` prefix of the model
    (``advtune_model_prefix``); :func:`load_from_lightning_checkpoint` uses them. Does nothing when
    ``root`` holds no registered model.
    """
    registry = registered_models()
    for prefix, module in root.named_modules():
        if registry.get(type(module).__name__) is type(module):
            checkpoint.update(_model_entries(module))
            checkpoint["advtune_model_prefix"] = f"{prefix}." if prefix else ""
            return
