"""Load what :mod:`advtune.io.saving` wrote: ``torch.load(weights_only=True)`` and the allow-list.

Nothing in a file is unpickled into an arbitrary object, and the class to rebuild is looked up by
name among the registered ones (:func:`~advtune.io.saving.registered_models`).
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch
from torch import nn

from advtune.io.saving import registered_models

__all__ = ["load_from_lightning_checkpoint", "load_model", "load_training_state"]

_OLD_STYLE_FIX = (
    "Checkpoint does not contain 'model_config': {path} is an old-style file (a bare state dict "
    "or a dict without the constructor arguments). Fix: build the model with its constructor "
    "arguments, call model.load_state_dict(torch.load(path, weights_only=True)[...]) and save it "
    "again with advtune.io.save_model(model, path)."
)


def _safe_load(path: str | os.PathLike, map_location: Any = None) -> Any:
    """``torch.load(weights_only=True)`` with one clear error for files it refuses."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"Refusing to load {path}: it contains objects other than tensors and plain "
            f"containers, and advtune never unpickles arbitrary objects ({error})"
        ) from None


def _build(entries: dict[str, Any], state_dict: dict[str, torch.Tensor], path: Any,
           map_location: Any, strict: bool) -> nn.Module:
    """Rebuild the allow-listed class named in ``entries`` and load ``state_dict`` into it."""
    name = entries.get("model_class")
    registry = registered_models()
    if name not in registry:
        raise ValueError(
            f"{path} names model class {name!r}, which is not in advtune's allow-list "
            f"{sorted(registry)}; import and decorate it with @advtune.io.register_model first"
        )
    config = entries["model_config"]
    if not isinstance(config, dict):
        raise ValueError(f"{path}: 'model_config' must be a dict, got {type(config).__name__}")
    model = registry[name](**config)
    model.load_state_dict(state_dict, strict=strict)
    if entries.get("encoder_frozen") is not None and hasattr(model, "encoder_frozen"):
        model.encoder_frozen = bool(entries["encoder_frozen"])
    if map_location is not None and not callable(map_location) and not isinstance(map_location,
                                                                                  dict):
        model.to(map_location)
    return model


def load_model(path: str | os.PathLike, map_location: Any = None, strict: bool = True) -> nn.Module:
    """Rebuild a model written by :func:`save_model`.

    Raises:
        ValueError: the file is not a safe tensor/container file, is an old-style file
            without ``model_config``, or names a class that is not registered.
    """
    checkpoint = _safe_load(path, map_location)
    if not isinstance(checkpoint, dict) or "model_config" not in checkpoint:
        raise ValueError(_OLD_STYLE_FIX.format(path=path))
    if "model_state_dict" not in checkpoint and "state_dict" in checkpoint:
        return _from_lightning(checkpoint, path, map_location, strict)  # a Lightning checkpoint
    model = _build(checkpoint, checkpoint["model_state_dict"], path, map_location, strict)
    model.eval()
    return model


def load_training_state(
    path: str | os.PathLike,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    map_location: Any = None,
) -> dict[str, Any]:
    """Restore optimizer/scheduler state saved by :func:`save_model`, for resuming.

    Returns:
        ``{"epoch", "global_step", "metadata", "optimizer_state_dict", "scheduler_state_dict"}``.

    Raises:
        ValueError: an optimizer (scheduler) is given but the file holds no state for it.
    """
    checkpoint = _safe_load(path, map_location)
    if not isinstance(checkpoint, dict) or "model_config" not in checkpoint:
        raise ValueError(_OLD_STYLE_FIX.format(path=path))
    for obj, key in ((optimizer, "optimizer_state_dict"), (scheduler, "scheduler_state_dict")):
        if obj is None:
            continue
        if checkpoint.get(key) is None:
            raise ValueError(f"{path} holds no {key}; save it with save_model(..., {key[:-11]}"
                             f"_state=...)")
        obj.load_state_dict(checkpoint[key])
    keys = ("epoch", "global_step", "metadata", "optimizer_state_dict", "scheduler_state_dict")
    return {key: checkpoint.get(key) for key in keys}


def load_from_lightning_checkpoint(ckpt_path: str | os.PathLike, map_location: Any = None,
                                   strict: bool = True) -> nn.Module:
    """Extract the model from a Lightning checkpoint written by advtune.

    Raises:
        ValueError: the checkpoint carries no ``model_config`` (not written by advtune, or
            written before models recorded themselves).
    """
    checkpoint = _safe_load(ckpt_path, map_location)
    if not isinstance(checkpoint, dict) or "model_config" not in checkpoint:
        raise ValueError(_OLD_STYLE_FIX.format(path=ckpt_path))
    if "state_dict" not in checkpoint:
        raise ValueError(f"{ckpt_path} is not a Lightning checkpoint (no 'state_dict'); "
                         "load files written by save_model with advtune.io.load_model")
    return _from_lightning(checkpoint, ckpt_path, map_location, strict)


def _from_lightning(checkpoint: dict[str, Any], path: Any, map_location: Any,
                    strict: bool) -> nn.Module:
    prefix = checkpoint.get("advtune_model_prefix", "")
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    model = _build(checkpoint, state, path, map_location, strict)
    model.eval()
    return model
