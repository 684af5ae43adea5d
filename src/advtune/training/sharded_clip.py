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
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["clip_sharded_grad_norm_"]


def clip_sharded_grad_norm_(parameters: Iterable[torch.nn.Parameter], max_norm: float, group=None) -> Tensor:
    """Clip the gradients of ``parameters`` (local shards) to a global norm ``max_norm``; return that norm.

    Every rank of ``group`` must call it (it all-reduces), also a rank whose shards are empty.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    device = grads[0].device if grads else torch.device("cpu")
    squares = torch.zeros((), dtype=torch.float32, device=device)
    for grad in grads:
        squares += grad.detach().float().pow(2).sum()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(squares, op=dist.ReduceOp.SUM, group=group)
    norm = squares.sqrt()
    scale = (float(max_norm) / (norm + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(scale.to(grad.dtype))
    return norm
