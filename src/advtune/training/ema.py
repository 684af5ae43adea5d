"""Exponential moving average of the generator's trainable weights (StyleGAN's ``G_ema``, BigGAN).

After every generator update ``θ_ema ← β_t θ_ema + (1 − β_t) θ``. With ``rampup`` (StyleGAN2's
``ema_rampup``), the half-life grows with training so the average never lags far behind a young
generator: with ``h = ln 0.5 / ln decay`` the half-life of ``decay`` in updates and ``t`` the updates
done so far, ``h_t = min(h, rampup · t)`` and ``β_t = 0.5^(1 / h_t)`` (``β_0 = 0``: the first
update copies the weights). Without ``rampup``, ``β_t = decay``.

The average covers ``task.trainable_parameters()`` only — so for an adapter run it averages the
LoRA weights and nothing of the frozen base — and is kept in float32 whatever the weights' dtype
(a bf16 average would not move at ``decay = 0.999``). Buffers (BatchNorm statistics) stay the live
ones, as StyleGAN copies them into ``G_ema``. The average lives in the module's ``state_dict`` as
extra state (so ``advtune sample`` / ``export`` load it with the weights) and is moved to the
weights' device lazily.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from advtune.checks import check_number

__all__ = ["GeneratorEMA"]


class GeneratorEMA(nn.Module):
    """The average, its update and the swap of it into the live weights.

    Args:
        decay: ``β`` once ramped up, in ``[0, 1)`` (0.999: half-life of 693 updates; 0: the live weights).
        rampup: StyleGAN2's ``ema_rampup`` (0.05 there), ``>= 0``, or ``None`` for a constant ``β``.

    Raises:
        ConfigError: (a ``ValueError``) ``decay`` outside ``[0, 1)`` or a negative ``rampup``, naming the
            config key, so ``advtune train`` prints one line.
    """

    def __init__(self, decay: float, rampup: float | None = None) -> None:
        super().__init__()
        check_number("module.ema_decay", decay, minimum=0.0, below=1.0)  # NaN too
        check_number("module.ema_rampup", rampup, minimum=0.0, allow_none=True)
        self.decay = float(decay)
        self.rampup = None if rampup is None else float(rampup)
        self.half_life = math.log(0.5) / math.log(self.decay) if self.decay > 0 else 0.0
        self.shadow: list[Tensor] | None = None
        self.updates = 0
        self._swapped = False

    def beta(self) -> float:
        """``β_t`` of the next update (a host number: no device sync)."""
        if self.rampup is None:
            return self.decay
        half_life = min(self.half_life, self.rampup * self.updates)
        return 0.5 ** (1.0 / half_life) if half_life > 0 else 0.0

    @torch.no_grad()
    def update(self, params: Sequence[Tensor]) -> None:
        """Fold the current weights into the average (call after each generator update)."""
        live = [p.detach().float() for p in params]
        if self.shadow is None or len(self.shadow) != len(live):
            self.shadow = [p.clone() for p in live]
        else:
            self.shadow = [s.to(p.device) for s, p in zip(self.shadow, live)]
            torch._foreach_lerp_(self.shadow, live, 1.0 - self.beta())
        self.updates += 1

    @contextlib.contextmanager
    def swapped_in(self, params: Sequence[nn.Parameter]) -> Iterator[None]:
        """Inside: ``params`` hold the average; afterwards exactly their previous values (nesting: no-op)."""
        if self.shadow is None or self._swapped:  # no update yet (the live weights are the average), or nested
            yield
            return
        if len(self.shadow) != len(params):
            raise RuntimeError(f"generator EMA holds {len(self.shadow)} tensors for {len(params)} trainable parameters")
        with torch.no_grad():
            backup = [p.detach().clone() for p in params]
            for p, s in zip(params, self.shadow):
                p.copy_(s)
        self._swapped = True
        try:
            yield
        finally:
            self._swapped = False
            with torch.no_grad():
                for p, b in zip(params, backup):
                    p.copy_(b)

    def get_extra_state(self) -> dict[str, Any]:
        return {"shadow": [] if self.shadow is None else [s.clone() for s in self.shadow], "updates": self.updates}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.shadow = [s.clone().float() for s in state["shadow"]] or None
        self.updates = int(state["updates"])
