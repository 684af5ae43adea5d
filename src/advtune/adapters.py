"""Low-rank adapters on a frozen model: peft LoRA and LyCORIS (LoRA / LoKr / LoHa).

* peft LoRA (Hu et al. 2021, ``W x + (α / r) · B A x``, ``B`` = 0 at init so the adapted model
  starts equal to the base) is injected with diffusers' ``model.add_adapter(LoraConfig(...))``,
  as diffusers' Flux LoRA training scripts do; it exports to the diffusers / peft format.
* LyCORIS (Yeh et al. 2024, "Navigating Text-To-Image Customization") wraps the ``forward`` of the
  targeted ``nn.Linear`` layers; its :class:`~lycoris.LycorisNetwork` holds the adapter weights and
  must be registered by the caller (a task) as a sub-module so that optimizers and checkpoints see
  it. It is remembered on the model (outside the module tree) so :class:`set_adapters_enabled`
  finds it.

Every base parameter is frozen before adapters are added. Target modules follow peft's rule for a
list of names: a module is targeted when its qualified name equals an entry or ends with
``"." + entry`` (``"attn.to_q"`` hits ``transformer_blocks.0.attn.to_q``). A list matching no
``nn.Linear`` fails at once with one line, before any training.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

__all__ = [
    "ADAPTER_TYPES",
    "FLUX_LORA_TARGET_MODULES",
    "LORA_WEIGHTS_NAME",
    "LYCORIS_WEIGHTS_NAME",
    "add_adapter",
    "count_parameters",
    "export_lora",
    "lycoris_network",
    "matching_linear_modules",
    "set_adapters_enabled",
]

ADAPTER_TYPES: tuple[str, ...] = ("none", "lora", "lycoris_lora", "lokr", "loha")
#: Attention and feed-forward projections of both Flux block types (those of diffusers' Flux scripts),
#: plus ``proj_out``: the single blocks' output projections and the transformer's output layer, whose
#: LoRA ``B`` is the generator's last layer for the adaptive weight (taming-transformers).
FLUX_LORA_TARGET_MODULES: tuple[str, ...] = (
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
    "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
    "proj_mlp", "proj_out",
)
LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
LYCORIS_WEIGHTS_NAME = "lycoris_weights.safetensors"
_LYCORIS_ATTR = "_advtune_lycoris_networks"  # a plain list: not registered as a sub-module


def matching_linear_modules(model: nn.Module, target_modules: Sequence[str]) -> list[str]:
    """Qualified names of the ``nn.Linear`` layers of ``model`` that ``target_modules`` select."""
    targets = [str(t) for t in target_modules]
    return [
        name for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)
    ]


def add_adapter(
    model: nn.Module,
    adapter_type: str = "lora",
    rank: int = 4,
    alpha: float = 4.0,
    dropout: float = 0.0,
    target_modules: Sequence[str] | None = None,
    lokr_factor: int = -1,
) -> nn.Module | None:
    """Freeze ``model`` and add trainable adapters to it.

    Args:
        model: the base model (a diffusers ``ModelMixin`` for peft LoRA).
        adapter_type: ``"lora"`` (peft), ``"lycoris_lora"``, ``"lokr"``, ``"loha"`` (LyCORIS), or
            ``"none"`` (full fine-tuning: nothing frozen, nothing added).
        rank: adapter rank ``r`` (LyCORIS ``linear_dim``).
        alpha: scale numerator; the update is multiplied by ``alpha / rank``.
        dropout: dropout on the adapter branch.
        target_modules: module names as peft's list rule (default :data:`FLUX_LORA_TARGET_MODULES`).
        lokr_factor: LoKr Kronecker factor (``-1`` lets LyCORIS choose).

    Returns:
        The ``LycorisNetwork`` for LyCORIS types (register it as a sub-module), else ``None``.
    """
    if adapter_type not in ADAPTER_TYPES:
        raise ValueError(f"adapter_type must be one of {ADAPTER_TYPES}, got {adapter_type!r}")
    if adapter_type == "none":
        model.requires_grad_(True)
        return None
    if rank < 1 or alpha <= 0 or not 0.0 <= dropout < 1.0:
        raise ValueError(f"adapter needs rank >= 1, alpha > 0, 0 <= dropout < 1; got {rank}, {alpha}, {dropout}")
    targets = list(target_modules) if target_modules is not None else list(FLUX_LORA_TARGET_MODULES)
    matched = matching_linear_modules(model, targets)
    if not matched:
        raise ValueError(f"LoRA target_modules {targets} match no nn.Linear layer of {type(model).__name__}")
    model.requires_grad_(False)
    if adapter_type == "lora":
        from peft import LoraConfig

        config = LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=float(dropout),
                            target_modules=targets, init_lora_weights=True)
        with warnings.catch_warnings():  # an 8-bit (torchao) base cannot merge the LoRA: advtune never merges
            warnings.filterwarnings("ignore", message="TorchaoLoraLinear was instantiated", category=UserWarning)
            model.add_adapter(config)
        return None
    return _add_lycoris(model, adapter_type, int(rank), float(alpha), float(dropout), matched, lokr_factor)


def _add_lycoris(model, adapter_type, rank, alpha, dropout, matched, lokr_factor) -> nn.Module:
    from lycoris import LycorisNetwork

    algo = {"lycoris_lora": "lora", "lokr": "lokr", "loha": "loha"}[adapter_type]
    # LyCORIS keeps its preset in class attributes; set every key so no earlier preset leaks in.
    # Exact module names (anchored regexes) reproduce the peft matching computed above.
    LycorisNetwork.apply_preset({
        "enable_conv": False, "target_module": [], "module_algo_map": {}, "name_algo_map": {},
        "target_name": [re.escape(name) + "$" for name in matched], "use_fnmatch": False,
        "exclude_name": [], "lora_prefix": "lycoris",
    })
    network = LycorisNetwork(model, multiplier=1.0, lora_dim=rank, alpha=alpha, dropout=dropout,
                             network_module=algo, factor=lokr_factor, warn_on_unmatched=False)
    network.apply_to()
    network.requires_grad_(True)
    model.__dict__.setdefault(_LYCORIS_ATTR, []).append(network)
    return network


def lycoris_network(model: nn.Module) -> nn.Module | None:
    """The (last) LyCORIS network added to ``model`` by :func:`add_adapter`, or ``None``."""
    networks = model.__dict__.get(_LYCORIS_ATTR, [])
    return networks[-1] if networks else None


class set_adapters_enabled:  # noqa: N801 - used like a function: set_adapters_enabled(model, False)
    """Switch every adapter of ``model`` on or off; usable as a plain call or as a context manager.

    ``with set_adapters_enabled(model, False): ...`` runs the bare base model and restores the
    previous state on exit. Disabled adapters are skipped entirely (peft's ``disable_adapters``;
    LyCORIS's ``restore``, which puts back the original ``forward``), so no gradient reaches them.
    The ``requires_grad`` flags of all parameters are restored as they were, since peft's toggle
    rewrites them.
    """

    def __init__(self, model: nn.Module, enabled: bool) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        self.model = model
        self._peft_layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
        self._networks = model.__dict__.get(_LYCORIS_ATTR, [])
        self._requires_grad = {p: p.requires_grad for p in model.parameters()}
        for network in self._networks:
            self._requires_grad.update({p: p.requires_grad for p in network.parameters()})
        self._was_enabled = self._enabled_now()
        self._apply(bool(enabled))

    def _enabled_now(self) -> bool:
        if self._peft_layers:
            return not self._peft_layers[0].disable_adapters
        return all(getattr(n, "_advtune_applied", True) for n in self._networks)

    def _apply(self, enabled: bool) -> None:
        for layer in self._peft_layers:
            layer.enable_adapters(enabled)
        for network in self._networks:
            if getattr(network, "_advtune_applied", True) != enabled:
                network.apply_to() if enabled else network.restore()
                network._advtune_applied = enabled
        for param, flag in self._requires_grad.items():
            param.requires_grad_(flag)

    def __enter__(self) -> "set_adapters_enabled":
        return self

    def __exit__(self, *exc) -> None:
        self._apply(self._was_enabled)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"trainable": ..., "total": ...}`` element counts, including attached LyCORIS networks."""
    params = {id(p): p for p in model.parameters()}
    for network in model.__dict__.get(_LYCORIS_ATTR, []):
        params.update({id(p): p for p in network.parameters()})
    return {
        "trainable": sum(p.numel() for p in params.values() if p.requires_grad),
        "total": sum(p.numel() for p in params.values()),
    }


def export_lora(transformer: nn.Module, directory: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write the adapter of ``transformer`` (only the adapter) to ``directory``; return the file.

    ``metadata`` entries are added to the safetensors header (e.g. a distilled LoRA's recommended
    step count), beside the ones diffusers writes.

    peft LoRA → ``pytorch_lora_weights.safetensors`` in the diffusers format (keys
    ``transformer.<module>.lora_A/B.weight`` plus the ``LoraConfig`` as metadata, so alpha survives),
    what ``FluxPipeline.load_lora_weights`` and ``transformer.load_lora_adapter`` read.
    LyCORIS → ``lycoris_weights.safetensors`` in LyCORIS's own format (``lycoris.create_lycoris_from_weights``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    network = lycoris_network(transformer)
    if network is not None:
        path = directory / LYCORIS_WEIGHTS_NAME
        network.save_weights(str(path), torch.float32, {"advtune_adapter": "lycoris", **(metadata or {})})
        return path
    if not getattr(transformer, "peft_config", None):
        raise ValueError(f"export_lora: {type(transformer).__name__} has no adapter to export")
    from diffusers.loaders.lora_pipeline import FluxLoraLoaderMixin
    from peft.utils import get_peft_model_state_dict

    state = {k: v.detach().float().contiguous() for k, v in get_peft_model_state_dict(transformer).items()}
    FluxLoraLoaderMixin.save_lora_weights(
        directory, transformer_lora_layers=state, weight_name=LORA_WEIGHTS_NAME,
        transformer_lora_adapter_metadata=transformer.peft_config["default"].to_dict(),
    )
    if metadata:
        from safetensors import safe_open
        from safetensors.torch import save_file

        path = directory / LORA_WEIGHTS_NAME
        with safe_open(str(path), "pt") as handle:
            header, tensors = handle.metadata() or {}, {k: handle.get_tensor(k) for k in handle.keys()}
        save_file(tensors, str(path), metadata={**header, **{str(k): str(v) for k, v in metadata.items()}})
    return directory / LORA_WEIGHTS_NAME
