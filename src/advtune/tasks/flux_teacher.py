"""The teacher of a distillation run, on the one base the student adapts (never a second copy).

* No teacher LoRA: the teacher is the frozen base with every adapter off
  (:class:`advtune.adapters.set_adapters_enabled`), as the feature discriminator runs it.
* ``teacher_lora=FILE`` (a diffusers-format LoRA, e.g. the domain LoRA of an earlier ``advtune train``):
  two peft adapters sit on the base. ``"teacher"`` is loaded from the file and frozen; the trainable
  student ``"default"`` gets the teacher's targets and scale ``α/r`` and starts equal to it: with a
  rank ``r_s`` above the teacher's ``r_t`` its factors are ``A_s = [A_t; A_new]`` and
  ``B_s = [B_t, 0]`` (``A_new`` initialised as LoRA does), so ``B_s A_s = B_t A_t`` and the extra rank
  is free to learn. Only ``"default"`` is exported, so the student LoRA stands alone on the base.
  :func:`active_adapter` switches which one runs.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

__all__ = ["TEACHER_ADAPTER", "load_teacher_lora", "add_student_from_teacher", "active_adapter", "weights_fingerprint"]

TEACHER_ADAPTER = "teacher"
_STUDENT_ADAPTER = "default"  # peft's default name: what export_lora writes and the EMA averages


def _tuner_layers(model: nn.Module) -> list[nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def load_teacher_lora(transformer: nn.Module, path: str | Path) -> None:
    """Load the LoRA file as the frozen adapter ``"teacher"``; one-line ``ValueError`` when it does not fit."""
    from advtune.console import quiet_model_loading

    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"task.teacher_lora: no LoRA file at {file}")
    quiet_model_loading()
    from diffusers.loaders.lora_pipeline import FluxLoraLoaderMixin

    try:  # as FluxPipeline.load_lora_weights reads it: the header's LoraConfig keeps alpha
        state, alphas, metadata = FluxLoraLoaderMixin.lora_state_dict(str(file), return_alphas=True,
                                                                      return_lora_metadata=True)
        transformer.load_lora_adapter(state, prefix="transformer", adapter_name=TEACHER_ADAPTER,
                                      network_alphas=alphas, metadata=metadata)
    except (ValueError, RuntimeError, KeyError, OSError) as error:
        raise ValueError(f"task.teacher_lora {file} does not fit the base: {str(error).splitlines()[0]}") from None
    if TEACHER_ADAPTER not in getattr(transformer, "peft_config", {}):
        raise ValueError(f"task.teacher_lora {file} holds no transformer LoRA weights")
    for name, param in transformer.named_parameters():
        if f".{TEACHER_ADAPTER}." in name:
            param.requires_grad_(False)


def add_student_from_teacher(transformer: nn.Module, rank: int) -> None:
    """Add the trainable ``"default"`` adapter equal to the teacher, of rank ``max(rank, teacher's)``
    (uniform ranks only; per-module ``rank_pattern`` teachers keep their own); make it the active one."""
    config = copy.deepcopy(transformer.peft_config[TEACHER_ADAPTER])
    config.inference_mode = False
    if int(rank) > config.r and not config.rank_pattern and not config.alpha_pattern:
        config.lora_alpha, config.r = config.lora_alpha * int(rank) / config.r, int(rank)  # same scale α/r
    with warnings.catch_warnings():  # peft notes that a second adapter joins the first: that is the point
        warnings.filterwarnings("ignore", message="Already found a `peft_config`", category=UserWarning)
        transformer.add_adapter(config, adapter_name=_STUDENT_ADAPTER)
    with torch.no_grad():
        for layer in _tuner_layers(transformer):
            if TEACHER_ADAPTER in layer.lora_A:
                teacher_a, teacher_b = layer.lora_A[TEACHER_ADAPTER].weight, layer.lora_B[TEACHER_ADAPTER].weight
                layer.lora_A[_STUDENT_ADAPTER].weight[: teacher_a.shape[0]].copy_(teacher_a)
                student_b = layer.lora_B[_STUDENT_ADAPTER].weight
                student_b.zero_()
                student_b[:, : teacher_b.shape[1]].copy_(teacher_b)
    transformer.set_adapter(_STUDENT_ADAPTER)
    for name, param in transformer.named_parameters():
        param.requires_grad_(f".{_STUDENT_ADAPTER}." in name)


class active_adapter:  # noqa: N801 - a context manager used like a function
    """``with active_adapter(transformer, "teacher"): ...`` runs that adapter alone; restores the active
    adapters and every ``requires_grad`` flag on exit (peft's ``set_adapter`` rewrites them)."""

    def __init__(self, transformer: nn.Module, name: str) -> None:
        self.layers = _tuner_layers(transformer)
        self.flags = {p: p.requires_grad for p in transformer.parameters()}
        self.previous = [list(layer.active_adapters) for layer in self.layers]
        self._switch([[name]] * len(self.layers))

    def _switch(self, names: list[list[str]]) -> None:
        for layer, active in zip(self.layers, names):
            layer.set_adapter(active)
        for param, flag in self.flags.items():
            param.requires_grad_(flag)

    def __enter__(self) -> "active_adapter":
        return self

    def __exit__(self, *exc) -> None:
        self._switch(self.previous)


def weights_fingerprint(named: Iterable[tuple[str, torch.Tensor]], values_per_tensor: int = 4096) -> str:
    """A cheap content hash of named tensors: names, shapes, dtypes and up to ``values_per_tensor``
    evenly spaced values of each (a teacher-sample cache key; a 12 B base hashes in seconds)."""
    digest = hashlib.sha256()
    for name, tensor in named:
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        try:
            flat = tensor.detach().reshape(-1)
            values = flat[:: max(1, flat.numel() // values_per_tensor)][:values_per_tensor]
            digest.update(values.float().cpu().numpy().tobytes())
        except (RuntimeError, NotImplementedError, TypeError):  # 8-bit tensor subclasses: shape and dtype only
            continue
    return digest.hexdigest()[:20]

