"""Per-player gradient clipping when every rank holds only a shard of each gradient (FSDP).

Under FSDP with ``use_orig_params=True`` (Lightning's default), ``p.grad`` on a rank is that
rank's shard of the gradient. ``torch.nn.utils.clip_grad_norm_`` would then compute each rank's
*local* norm and every rank would scale by a different factor, so the replicas drift apart.
The global norm of one player's gradients is

    ‖g‖ = sqrt( Σ_ranks Σ_{p ∈ player} ‖g_p^(rank)‖² )

(the shards partition every gradient, so squared norms add), all-reduced once, and every shard is
scaled by the same ``min(1, max_norm / (‖g‖ + 1e-6))`` as ``clip_grad_norm_`` does. Restricting
the sum to one player's parameters keeps the clipping per player (FSDP's own
``FullyShardedDataParallel.clip_grad_norm_`` clips the whole module at once).

The all-reduced tensor lives where the process group's backend can reduce it
(:func:`collective_device`): NCCL only reduces accelerator tensors, so a rank holding no gradient
(nothing to take a device from) or CPU-offloaded gradients must not hand it a CPU tensor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["clip_sharded_grad_norm_", "collective_device"]

_CPU_BACKENDS = ("gloo", "mpi")
_CURRENT = object()  # collective_device's default: ask torch.accelerator


def collective_device(backend: str, fallback: torch.device, accelerator: Any = _CURRENT) -> torch.device:
    """The device of a tensor that a collective of ``backend`` reduces.

    ``gloo``/``mpi``: the CPU. A per-device map (``"cpu:gloo,cuda:nccl"``): ``fallback`` (either
    works). Any other backend (``nccl``, ``xccl``, ...) reduces accelerator tensors: the current
    ``accelerator`` device (default: ``torch.accelerator``'s), or ``fallback`` when there is none.
    """
    if ":" in backend:
        return fallback
    if backend in _CPU_BACKENDS:
        return torch.device("cpu")
    if accelerator is _CURRENT:
        current = torch.accelerator.current_accelerator()
        accelerator = None if current is None else torch.device(current.type, torch.accelerator.current_device_index())
    return fallback if accelerator is None else torch.device(accelerator)


def clip_sharded_grad_norm_(parameters: Iterable[torch.nn.Parameter], max_norm: float, group=None) -> Tensor:
    """Clip the gradients of ``parameters`` (local shards) to a global norm ``max_norm``; return that norm.

    Every rank of ``group`` must call it (it all-reduces), also a rank whose shards are empty or
    whose list is empty. The norm is returned on the device of the collective (a device tensor).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    device = grads[0].device if grads else torch.device("cpu")
    squares = torch.zeros((), dtype=torch.float32, device=device)
    for grad in grads:
        squares += grad.detach().float().pow(2).sum()
    if dist.is_available() and dist.is_initialized():
        squares = squares.to(collective_device(str(dist.get_backend(group)), device))
        dist.all_reduce(squares, op=dist.ReduceOp.SUM, group=group)
    norm = squares.sqrt()
    scale = (float(max_norm) / (norm + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(scale.to(grad.device, grad.dtype))
    return norm
