"""Optimizers, schedulers and the clipping hook of :class:`~advtune.training.AdversarialModule`.

Kept out of ``module.py`` so the two-player step reads in one screen: :class:`PlayerOptimization` is
a mixin of the module (it reads the module's ``task``, ``discriminator``, factories, clip norms and
non-finite guard), and :func:`clip_player_gradients` is the per-player clipping, usable alone.

Under FSDP each rank holds shards of the gradients, and a rank may hold *no* gradient of a player
(its shards are empty, or its parameters got none this step). The clipping all-reduces the squared
norm, so every rank must join it — also one with nothing to clip — or the others wait forever.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import Tensor, nn

import advtune.training.sharded_clip as sharded_clip
from advtune.schedule import Phase

__all__ = ["PlayerOptimization", "clip_player_gradients", "frozen"]

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


@contextlib.contextmanager
def frozen(params: list[nn.Parameter]) -> Iterator[None]:
    """Build the graph without these parameters, so no gradient can reach them."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _default_optimizer(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999), fused=True)


def clip_player_gradients(optimizer: torch.optim.Optimizer, max_norm: float | None, sharded: bool,
                          scaler: Any = None) -> Tensor | None:
    """Clip the gradients ``optimizer`` holds to a total norm ``max_norm``; return that norm before clipping.

    Args:
        optimizer: one player's optimizer (its parameters are the player's).
        max_norm: the clip norm; ``None``: no clipping (returns ``None``).
        sharded: the gradients are FSDP shards: the norm is all-reduced over the ranks
            (:func:`~advtune.training.sharded_clip.clip_sharded_grad_norm_`), and every rank takes
            part, also one holding no gradient of this player.
        scaler: the player's ``GradScaler`` under 16-bit mixed precision, else ``None``. A fused
            optimizer's gradients are still scaled here (Lightning leaves them so): they are unscaled
            first, so the clip is in true units (a sharded scaler all-reduces in ``unscale_`` too, so
            every rank calls it).

    Returns:
        The total norm (a device tensor: no host sync), or ``None`` when nothing was clipped.
    """
    if max_norm is None:
        return None
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False) and (params or sharded):
        scaler.unscale_(optimizer)
    if sharded:
        return sharded_clip.clip_sharded_grad_norm_(params, max_norm)
    return torch.nn.utils.clip_grad_norm_(params, max_norm) if params else None


class PlayerOptimization:
    """Mixin of :class:`~advtune.training.AdversarialModule`: each player's optimizer, scheduler and clip."""

    def player_parameters(self, phase: Phase) -> list[nn.Parameter]:
        """The parameters one player's optimizer updates."""
        if phase is Phase.G:
            return list(self.task.trainable_parameters())
        return [p for p in self.discriminator.parameters() if p.requires_grad] if self.discriminator else []

    def configure_optimizers(self) -> Any:
        phases = [Phase.G, Phase.D] if self.discriminator is not None else [Phase.G]
        optimizers, schedulers = [], []
        for phase in phases:
            params = self.player_parameters(phase)
            if not params:
                raise ValueError(f"the {phase.name} player has no trainable parameters")
            optimizers.append((self._optimizer_factories[phase] or _default_optimizer)(params))
            if self._scheduler_factories[phase] is not None:
                schedulers.append(self._scheduler_factories[phase](optimizers[-1]))
        if schedulers and len(schedulers) != len(optimizers):
            raise ValueError("give an LR scheduler to both players or to neither")
        return optimizers, schedulers

    def _optimizer(self, phase: Phase) -> Any:
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        return optimizers[0 if phase is Phase.G else 1]

    def _scheduler(self, phase: Phase) -> Any:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return None
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        return schedulers[0 if phase is Phase.G else 1]

    def _step_scheduler(self, phase: Phase) -> None:
        """After an update of ``phase``: step its scheduler when ``scheduler_interval="step"``."""
        scheduler = self._scheduler(phase)
        if scheduler is not None and self.scheduler_interval == "step":
            scheduler.step()

    def _step_epoch_schedulers(self) -> None:
        """At the end of an epoch, step every player's scheduler when ``scheduler_interval="epoch"``."""
        if self.scheduler_interval != "epoch":
            return
        for phase in (Phase.G, Phase.D) if self.discriminator is not None else (Phase.G,):
            scheduler = self._scheduler(phase)
            if scheduler is not None:
                scheduler.step()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        phase = self.active_player
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)  # 16-mixed: this player's GradScaler
        norm = clip_player_gradients(optimizer, self.clip_norms[phase], isinstance(self.trainer.strategy, FSDPStrategy),
                                     scaler)
        if norm is not None and self.logging_step:
            self.log(f"{phase.value}/grad_norm", norm, on_step=True, on_epoch=False)
        if scaler is None:  # a GradScaler skips non-finite gradients itself
            self.nonfinite.mask_step(optimizer, phase, None if norm is None else ~torch.isfinite(norm))
