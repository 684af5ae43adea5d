"""Non-finite losses: detected on the device, the poisoned update skipped, counted lazily.

A NaN/Inf loss must not reach the weights, and finding out must not stall the device queue every
step (``if not torch.isfinite(loss)`` is a host-device sync). So, per loss, the flag ``bad`` stays a
device tensor; at the optimizer step it becomes the optimizer's ``found_inf``, which the fused
optimizers (``Adam/AdamW/SGD(fused=True)``) read *on the device* to skip the whole update —
weights, moments and step count untouched — exactly as ``GradScaler`` makes them skip an overflow.
Other optimizers fall back to one host read of the flag at their step (their update is then
skipped by dropping the gradients). The counts (total, longest run in a row) are device tensors
read only by :meth:`NonFiniteGuard.check`, on logging steps and at the end of an epoch.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["NonFiniteGuard"]


class NonFiniteGuard:
    """Device-side non-finite bookkeeping of both players.

    Args:
        max_in_a_row: non-finite losses in a row (both players counted together) after which
            :meth:`check` stops the run.
    """

    def __init__(self, max_in_a_row: int = 3) -> None:
        if max_in_a_row < 1:
            raise ValueError(f"module.max_consecutive_nonfinite must be >= 1, got {max_in_a_row}")
        self.max_in_a_row = int(max_in_a_row)
        self.pending: dict[Any, Tensor] = {}  # player -> bad flag of its accumulated gradients
        self._total: Tensor | None = None  # int64 device counters
        self._run: Tensor | None = None
        self._worst: Tensor | None = None
        self.reported = 0  # total already warned about (host)
        self.last_batch = 0  # batch of the last observation (host), for the messages

    def observe(self, player: Any, loss: Tensor, batch: int) -> None:
        """Record whether ``loss`` is finite (device ops only)."""
        bad = ~torch.isfinite(loss.detach())
        self.pending[player] = bad if player not in self.pending else self.pending[player] | bad
        if self._total is None:
            self._total = torch.zeros((), dtype=torch.long, device=bad.device)
            self._run, self._worst = self._total.clone(), self._total.clone()
        elif self._total.device != bad.device:  # restored from a checkpoint on the CPU
            self._total, self._run, self._worst = (t.to(bad.device) for t in (self._total, self._run, self._worst))
        flag = bad.long()
        self._run = (self._run + flag) * flag
        self._total = self._total + flag
        self._worst = torch.maximum(self._worst, self._run)
        self.last_batch = batch

    def mask_step(self, optimizer: torch.optim.Optimizer, player: Any, extra_bad: Tensor | None = None) -> None:
        """Make the coming ``optimizer.step()`` a no-op when the player's gradients are not finite.

        Call between the backward and the step (Lightning's ``on_before_optimizer_step``).
        ``extra_bad`` adds another device flag (e.g. a non-finite clipped gradient norm).
        """
        bad = self.pending.get(player)
        if extra_bad is not None:
            bad = extra_bad if bad is None else bad | extra_bad
        if bad is None:
            return
        if dist.is_available() and dist.is_initialized():  # every rank skips the same updates (device op)
            bad = bad.float()
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
            bad = bad > 0
        if getattr(optimizer, "_step_supports_amp_scaling", False):
            optimizer.grad_scale = None  # the fused step reads both attributes
            optimizer.found_inf = bad.float()
        elif bool(bad):  # fallback: one host read; parameters without a gradient are not updated
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None

    def after_step(self, optimizer: torch.optim.Optimizer, player: Any) -> None:
        """Forget the player's flag and the attributes :meth:`mask_step` set."""
        self.pending.pop(player, None)
        optimizer.__dict__.pop("found_inf", None)
        optimizer.__dict__.pop("grad_scale", None)

    @property
    def total(self) -> int:
        """Non-finite losses so far (a host read)."""
        return 0 if self._total is None else int(self._total)

    def check(self) -> None:
        """Warn about new non-finite losses; raise when a run in a row reached ``max_in_a_row`` (host reads)."""
        if self._total is None:
            return
        total, worst = int(self._total), int(self._worst)
        if total > self.reported:
            warnings.warn(f"{total - self.reported} non-finite loss(es) up to batch {self.last_batch}: "
                          "their updates were skipped", stacklevel=2)
            self.reported = total
        self._worst = self._run.clone()  # the next check looks at the runs after this one
        if worst >= self.max_in_a_row:
            raise FloatingPointError(
                f"{worst} non-finite losses in a row (checked at batch {self.last_batch}); stopping. Lower the "
                "learning rates or enable gradient clipping; the last good checkpoint is intact."
            )

    def load_total(self, total: int) -> None:
        """Restore the count of a resumed run (``reported`` too: those were warned about)."""
        self._total = torch.tensor(int(total), dtype=torch.long)
        self._run, self._worst = torch.zeros_like(self._total), torch.zeros_like(self._total)
        self.reported = int(total)
