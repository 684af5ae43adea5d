"""``trainer.strategy=fsdp`` for the two-player step, on GPUs and on CPU processes (gloo).

Why a subclass of Lightning's ``FSDPStrategy``:

- Lightning wraps the whole LightningModule as one FSDP unit whose forward is ``training_step``. The
  two-player step calls ``backward`` (twice) *inside* ``training_step``, and torch's FSDP runs a
  unit's backward only after its forward has returned. Here the task names what to shard
  (``task.fsdp_units()``: the Flux transformer, one unit per block) and the discriminator is a
  second FSDP root; Lightning leaves a module that already holds FSDP units unwrapped, so
  ``training_step`` runs outside every unit and each backward follows finished unit forwards.
- In a partly frozen module, every sub-module that holds trainable parameters (peft's LoRA ``A``
  and ``B``) is a unit of its own: a unit's flat parameter needs one dtype (float32 LoRA on a
  bfloat16 base), and a flat parameter mixing trainable and frozen weights would keep a gradient as
  large as the whole block shard. Block units hold frozen weights only and get no gradient.
- Lightning refuses FSDP without a GPU (a check on the string ``"fsdp"`` and the exact class) and
  passes no device to torch's FSDP for CPU, which then refuses. Here the root device is passed, and
  state dicts are not "offloaded to CPU" on CPU (that frees the storage it copies from).
- A discriminator that cannot run sharded says why in its ``fsdp_unsupported_reason`` attribute
  (the Flux feature D, which runs the generator's transformer with adapters off); none is imported here.
- Checkpoints are full state dicts: every rank takes part in gathering, rank 0 writes one file
  through :class:`~advtune.training.SafeCheckpointIO`, and resuming reads it back through the same
  CheckpointIO (``weights_only``; Lightning's FSDP loader unpickles without it).

Gradients of one player are sharded across ranks; the module clips them with
:func:`~advtune.training.sharded_clip.clip_sharded_grad_norm_` (the norm of the whole gradient).
What cannot run under FSDP is refused before the first step, in one line (:func:`check_fsdp_support`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy as LightningFSDPStrategy
from torch import nn

from advtune.config import ConfigError

__all__ = ["FSDPStrategy", "fsdp_strategy", "check_fsdp_support", "gathered_weights"]


def check_fsdp_support(module: Any, precision: str | None = None) -> None:
    """Raise :class:`ConfigError` (one line, the first problem) when ``module`` cannot train under FSDP."""
    problems = _task_problems(module.task) + _engine_problems(module)
    if precision == "16-mixed":
        problems.append("precision=16-mixed uses a loss scaler per player that FSDP's precision plugin lacks; "
                        "use bf16-mixed")
    if problems:
        raise ConfigError(f"trainer.strategy=fsdp: {problems[0]}")


def _task_problems(task: Any) -> list[str]:
    if not hasattr(task, "fsdp_units"):
        return [f"task {type(task).__name__} does not say what to shard (FluxLoRATask does); use DDP"]
    if getattr(task, "lycoris", None) is not None:
        return ["LyCORIS adapters keep their weights outside the transformer; use task.adapter_type=lora"]
    name, _ = task.fsdp_units()
    quantized = [n for n, p in getattr(task, name).named_parameters() if type(p.data) is not torch.Tensor]
    if quantized:  # torchao's tensor subclasses
        return [f"FSDP cannot flatten quantized weights ({quantized[0]}); drop task.quantize, use a bf16 base"]
    return []


def _engine_problems(module: Any) -> list[str]:
    problems = []
    reason = getattr(module.discriminator, "fsdp_unsupported_reason", None)  # the D says what FSDP cannot do
    if reason:
        problems.append(reason)
    if module.ema is not None:
        problems.append("module.ema_decay: each rank would average only its shard and checkpoints keep rank 0's; "
                        "set module.ema_decay=null")
    penalties = [k for k in ("r1_weight", "r2_weight", "gp_weight") if getattr(module.calculator, k, 0.0) > 0]
    if penalties:
        problems.append(f"adversarial.{penalties[0]}: a gradient penalty backpropagates through the discriminator's "
                        "gradient, and FSDP frees the gathered weights that second backward needs")
    if getattr(module.calculator, "use_adaptive_weight", False):
        problems.append("adversarial.use_adaptive_weight needs the gradient at one whole weight; it is sharded")
    return problems


def fsdp_strategy(module: Any, trainer_kwargs: dict[str, Any]) -> "FSDPStrategy":
    """The strategy of ``trainer.strategy=fsdp`` for ``module``, after :func:`check_fsdp_support`."""
    check_fsdp_support(module, trainer_kwargs.get("precision"))
    return FSDPStrategy()


@contextlib.contextmanager
def gathered_weights(module: nn.Module) -> Iterator[None]:
    """Inside, on rank 0: ``module`` as if never sharded — full weights, no FSDP wrappers in its tree.

    Every rank must enter (the weights are all-gathered); only rank 0 may use ``module`` inside
    (to export what ships: peft finds LoRA layers by module names, which the wrappers would change).
    A no-op without FSDP.
    """
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    roots = FSDP.fsdp_modules(module, root_only=True)
    with contextlib.ExitStack() as stack:
        for root in roots:
            offload = root.compute_device.type != "cpu"
            stack.enter_context(FSDP.summon_full_params(root, writeback=False, rank0_only=True, offload_to_cpu=offload))
        wrapped = [(parent, name, child) for parent in module.modules() for name, child in parent.named_children()
                   if isinstance(child, FSDP)] if roots and dist.get_rank() == 0 else []
        for parent, name, child in wrapped:
            setattr(parent, name, child.module)
        try:
            with torch.no_grad():
                yield
        finally:
            for parent, name, child in reversed(wrapped):
                setattr(parent, name, child)


def _trainable_holders(root: nn.Module) -> set[int]:
    """Ids of the sub-modules holding trainable parameters directly, when ``root`` also has frozen ones."""
    if all(p.requires_grad for p in root.parameters()):
        return set()
    return {id(m) for m in root.modules() if any(p.requires_grad for p in m.parameters(recurse=False))}


class FSDPStrategy(LightningFSDPStrategy):
    """Lightning's FSDP with the players sharded separately, on CPU (gloo) or GPU (NCCL).

    Takes Lightning's ``FSDPStrategy`` arguments; ``auto_wrap_policy`` is replaced by the task's units
    and ``state_dict_type`` must be ``"full"``.
    """

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("state_dict_type", "full") != "full":
            raise ConfigError("advtune's FSDP writes full checkpoints only (state_dict_type='full')")
        super().__init__(**kwargs)
        self.kwargs.pop("auto_wrap_policy", None)

    @property
    def mixed_precision_config(self) -> Any:
        config = super().mixed_precision_config
        if config is None:
            return None
        # Every unit casts its inputs: a float32 input reaching a LoRA unit gathered in bf16 would fail.
        return dataclasses.replace(config, cast_forward_inputs=True)

    def _wrap(self, root: nn.Module, units: set[int]) -> nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        def policy(module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
            return True if recurse else id(module) in units

        return FullyShardedDataParallel(root, auto_wrap_policy=policy, cpu_offload=self.cpu_offload,
                                        mixed_precision=self.mixed_precision_config,
                                        sharding_strategy=self.sharding_strategy, device_id=self.root_device,
                                        **self.kwargs)

    def _setup_model(self, model: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        if not any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            check_fsdp_support(model)
            name, blocks = model.task.fsdp_units()
            sharded = getattr(model.task, name)
            setattr(model.task, name, self._wrap(sharded, {id(b) for b in blocks} | _trainable_holders(sharded)))
            if model.discriminator is not None:
                model.discriminator = self._wrap(model.discriminator, set())
                model.task.attach_discriminator(model.discriminator)
        return super()._setup_model(model)  # finds the units: leaves the LightningModule itself unwrapped

    # ---- full checkpoints ----------------------------------------------------------------------
    def _full_state(self, rank0_only: bool = True) -> Any:
        from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        offload = self.root_device.type != "cpu"
        return FSDP.state_dict_type(self.model, StateDictType.FULL_STATE_DICT,
                                    FullStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only),
                                    FullOptimStateDictConfig(offload_to_cpu=offload, rank0_only=rank0_only))

    def lightning_module_state_dict(self) -> dict[str, Any]:
        with self._full_state():
            return self.model.state_dict()

    def optimizer_state(self, optimizer: Any) -> dict[str, Any]:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp import OptimStateKeyType

        optimizer = getattr(optimizer, "_optimizer", optimizer)
        with self._full_state():
            state = FSDP.optim_state_dict(self.model, optimizer)
        if self.global_rank == 0:  # parameter indices, as a plain optimizer's state dict has
            state = FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_ID, self.model)
        return state

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp import OptimStateKeyType

        checkpoint = self.checkpoint_io.load_checkpoint(self.broadcast(checkpoint_path))
        with self._full_state(rank0_only=False):
            self.model.load_state_dict(checkpoint["state_dict"], strict=self.lightning_module.strict_loading)
            if self.lightning_module.trainer.state.fn == "fit":
                for optimizer, state in zip(self.optimizers, checkpoint.get("optimizer_states", [])):
                    state = FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_NAME, self.model)
                    optimizer.load_state_dict(FSDP.optim_state_dict_to_load(self.model, optimizer, state))
        return checkpoint
