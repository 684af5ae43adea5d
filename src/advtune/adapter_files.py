"""Adapter files: which format a LoRA file is in, and loading one onto a Flux transformer or pipeline.

advtune writes both formats as ``pytorch_lora_weights.safetensors`` (:func:`advtune.adapters.export_lora`):

* **peft LoRA**, the diffusers format: keys ``transformer.<module>.lora_A/B.weight`` and the
  ``LoraConfig`` in the header. Loaded through diffusers (``FluxPipeline.load_lora_weights``, or
  ``lora_state_dict`` + ``load_lora_into_transformer`` for a bare transformer), which also converts the
  kohya / ComfyUI / XLabs Flux LoRA layouts.
* **LyCORIS** (LoKr, LoHa, LyCORIS-LoRA): keys ``lycoris_<diffusers module name, "." -> "_">.<tensor>``
  (``lokr_w1``, ``hada_w1_a``, ``lora_up.weight``, ``alpha``...) and a ``lycoris_config`` header
  entry: the file SimpleTuner writes for Flux, and the names ComfyUI maps for Flux
  (``comfy/lora.py``: ``key_map["lycoris_" + diffusers_name.replace(".", "_")]``). diffusers cannot
  read it; the ``lycoris`` package does: ``create_lycoris_from_weights(1.0, file, transformer)``,
  then ``apply_to()`` with ``set_multiplier(scale)`` (switchable), or ``merge_to(scale)`` (merged
  into the base; ``merge_to`` takes its own multiplier and ignores the one given at creation).

The format is told by the file itself: a ``lycoris_config`` / ``advtune_adapter`` header entry or
``lycoris_``-prefixed keys. Tensors are read with safetensors only (never unpickled).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["LoadedAdapter", "adapter_format", "load_adapter_file", "lycoris_module_key"]

_LYCORIS_PREFIX = "lycoris"
# Tensor names of the LyCORIS algorithms ComfyUI's loader reads (comfy/lora.py and weight_adapter/).
_LYCORIS_TENSORS = ("lokr_w1", "lokr_w2", "lokr_t2", "hada_w1", "hada_w2", "hada_t1", "hada_t2")


def lycoris_module_key(module_name: str) -> str:
    """``transformer_blocks.0.attn.to_q`` -> ``lycoris_transformer_blocks_0_attn_to_q`` (ComfyUI/SimpleTuner)."""
    return f"{_LYCORIS_PREFIX}_{module_name}".replace(".", "_")


def _read_header(path: Path) -> tuple[list[str], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys()), dict(handle.metadata() or {})
    except Exception as error:  # noqa: BLE001 - not a safetensors file, truncated, unreadable: one line
        raise ValueError(f"{path} is not a readable safetensors file: {str(error).splitlines()[0]}") from None


def adapter_format(path: str | Path) -> str:
    """``"lycoris"`` or ``"lora"`` (diffusers/peft, or a layout diffusers converts) for the file at ``path``.

    Raises:
        ValueError: unreadable file, or LoKr/LoHa tensors not named after diffusers modules.
    """
    path = Path(path).expanduser()
    keys, metadata = _read_header(path)
    if "lycoris_config" in metadata or metadata.get("advtune_adapter") == "lycoris":
        return "lycoris"
    if any(key.startswith(_LYCORIS_PREFIX + "_") for key in keys):
        return "lycoris"
    foreign = next((key for key in keys if key.rsplit(".", 1)[-1].startswith(_LYCORIS_TENSORS)), None)
    if foreign is not None:
        raise ValueError(f"{path} holds LoKr/LoHa tensors named {foreign.split('.')[0]!r}; advtune loads LyCORIS "
                         "files whose keys are lycoris_<diffusers module name> (SimpleTuner's Flux format)")
    return "lora"


@dataclass
class LoadedAdapter:
    """An adapter file loaded onto a transformer: ``network`` (LyCORIS) or ``adapter_name`` (peft, on
    ``pipeline`` when it was loaded onto one)."""

    format: str
    transformer: nn.Module
    network: nn.Module | None = None
    adapter_name: str | None = None
    pipeline: Any = None

    def set_scale(self, scale: float) -> None:
        """Strength of the adapter: 0 renders the base, 1 the adapter as trained."""
        if self.network is not None:
            self.network.set_multiplier(float(scale))
            return
        if self.pipeline is not None:  # diffusers' own call: the text encoders' LoRA layers too
            self.pipeline.set_adapters([self.adapter_name], adapter_weights=[float(scale)])
            return
        from peft.tuners.tuners_utils import BaseTunerLayer

        for module in self.transformer.modules():
            if isinstance(module, BaseTunerLayer) and self.adapter_name in getattr(module, "scaling", {}):
                module.set_scale(self.adapter_name, float(scale))


def load_adapter_file(target: Any, path: str | Path, scale: float = 1.0, adapter_name: str = "advtune") -> LoadedAdapter:
    """Load the adapter file at ``path`` onto ``target`` and set its strength to ``scale``.

    Args:
        target: a ``FluxTransformer2DModel``, or a pipeline with a ``transformer`` (a peft file's
            text-encoder LoRA weights then load too, through ``load_lora_weights``).
        path: a ``.safetensors`` adapter file in either format (see the module docstring).
        scale: adapter strength (``lora_scale``); 0 gives the base model's outputs exactly.
        adapter_name: peft adapter name (LyCORIS networks are unnamed).

    Returns:
        The :class:`LoadedAdapter`; ``advtune.adapters.set_adapters_enabled(transformer, False)``
        switches it off, as it does for adapters added for training.

    Raises:
        ValueError: unreadable file, or one whose modules or shapes do not fit the transformer (one line).
    """
    path = Path(path).expanduser()
    transformer = getattr(target, "transformer", target)
    kind = adapter_format(path)
    try:
        if kind == "lycoris":
            loaded = LoadedAdapter(kind, transformer, network=_load_lycoris(transformer, path))
        else:
            _load_peft(target, path, adapter_name)
            pipeline = target if target is not transformer else None
            loaded = LoadedAdapter(kind, transformer, adapter_name=adapter_name, pipeline=pipeline)
    except (RuntimeError, KeyError, IndexError) as error:  # shape mismatches and missing tensors
        raise ValueError(f"{path} does not fit {type(transformer).__name__}: {str(error).splitlines()[0]}") from None
    loaded.set_scale(scale)
    return loaded


def _load_lycoris(transformer: nn.Module, path: Path) -> nn.Module:
    from lycoris import LycorisNetwork, create_lycoris_from_weights
    from safetensors.torch import load_file

    from advtune.adapters import register_lycoris_network
    from advtune.console import quiet_lycoris

    quiet_lycoris()  # LyCORIS's coloured stdout lines -> Python logging, warnings only
    weights = load_file(str(path))
    names = {key.split(".", 1)[0] for key in weights if "." in key}
    known = {lycoris_module_key(name) for name, _ in transformer.named_modules()}
    unmatched = sorted(names - known)
    if unmatched:
        raise ValueError(f"{path}: {len(unmatched)} of {len(names)} LyCORIS modules match no layer of "
                         f"{type(transformer).__name__} (first: {unmatched[0]}); was it trained on another model?")
    LycorisNetwork.apply_preset({"lora_prefix": _LYCORIS_PREFIX})  # the name create_lycoris_from_weights matches
    network, _ = create_lycoris_from_weights(1.0, str(path), transformer, weights_sd=weights)
    if len(network.loras) != len(names):
        raise ValueError(f"{path}: LyCORIS built {len(network.loras)} of its {len(names)} modules "
                         "(an algorithm or layer type it cannot load)")
    network.apply_to()
    parameter = next(transformer.parameters())
    network.to(parameter.device)
    network.requires_grad_(False)
    register_lycoris_network(transformer, network)
    return network


def _load_peft(target: Any, path: Path, adapter_name: str) -> None:
    if hasattr(target, "load_lora_weights"):  # a pipeline: diffusers' own entry point, text encoders included
        target.load_lora_weights(str(path), adapter_name=adapter_name)
        return
    from diffusers.loaders.lora_pipeline import FluxLoraLoaderMixin

    state, alphas, metadata = FluxLoraLoaderMixin.lora_state_dict(str(path), return_alphas=True,
                                                                  return_lora_metadata=True)
    others = sorted({key.split(".", 1)[0] for key in state if not key.startswith("transformer.")})
    if others:
        raise ValueError(f"{path} also holds LoRA weights for {', '.join(others)}; load it onto the pipeline")
    if not state:
        raise ValueError(f"{path} holds no LoRA weights diffusers recognises")
    FluxLoraLoaderMixin.load_lora_into_transformer(state, network_alphas=alphas, transformer=target,
                                                   adapter_name=adapter_name, metadata=metadata)
