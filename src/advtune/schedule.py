"""Which player steps on which batch, and how the loss weights move over training.

All steps here are *training steps*: batches processed since the run began (the data clock).
Generator updates are not a usable clock because the discriminator-only warm-up has none.

Timeline of a run::

    0 ── adversarial_start_step ── + discriminator_warmup_steps ── adversarial stage ──▶
         base loss only (domain     D only (G frozen, so D is    G and D alternate; the adversarial
         adaptation), D idle        not cold when G's term       weight ramps up, the base weight
                                    switches on)                 anneals (down to pure adversarial)
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

__all__ = ["Phase", "PhaseSchedule", "StepPlan", "ramp"]

_RAMPS = ("constant", "linear", "cosine")
_D_MODES = ("consecutive", "repeat")


class Phase(str, enum.Enum):
    """The player being updated: ``Phase.G`` (generator) or ``Phase.D`` (discriminator)."""

    G = "g"
    D = "d"


@dataclass(frozen=True)
class StepPlan:
    """What one training step does.

    Attributes:
        generator: whether the generator is updated on this batch.
        discriminator_updates: how many discriminator updates run on this batch (0 = none).
        adversarial: whether the adversarial terms are on for the generator (False in domain adaptation).
        adversarial_scale: multiplier of the generator's adversarial terms, in ``[0, 1]`` (ramp).
        base_weight: multiplier of the generator's base loss (annealing; 0 = pure adversarial).
    """

    generator: bool
    discriminator_updates: int
    adversarial: bool
    adversarial_scale: float
    base_weight: float

    @property
    def phases(self) -> tuple[Phase, ...]:
        """The updates of this step, in the order the module runs them (G first, then D)."""
        return ((Phase.G,) if self.generator else ()) + (Phase.D,) * self.discriminator_updates


def ramp(kind: str, progress: float) -> float:
    """Ramp from 0 to 1: ``linear`` is ``p``, ``cosine`` is ``(1 - cos(pi p)) / 2``, ``p`` clipped to ``[0, 1]``."""
    p = min(max(progress, 0.0), 1.0)
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return p
    if kind == "cosine":
        return 0.5 * (1.0 - math.cos(math.pi * p))
    raise ValueError(f"unknown ramp {kind!r}; valid: {', '.join(_RAMPS)}")


class PhaseSchedule:
    """The phase schedule of the two-player game.

    Args:
        discriminator_steps: discriminator updates per generator update (WGAN's ``n_critic``).
        discriminator_steps_mode: ``"consecutive"`` spends them on consecutive mini-batches (the
            generator then steps every ``discriminator_steps``-th batch); ``"repeat"`` runs them all
            on the same batch.
        generator_every: the generator steps on every k-th batch of the adversarial stage.
        discriminator_every: the discriminator steps on every k-th batch of the adversarial stage
            (from its first), the generator on every batch: the D costs ``1/k`` per step, as codec
            trainers make it affordable. Needs ``generator_every = 1`` and one D update per batch.
        discriminator_warmup_steps: steps, after ``adversarial_start_step``, where only D trains.
        adversarial_start_step: steps of base loss only before the adversarial stage ("domain
            adaptation"); the discriminator is idle then.
        adversarial_ramp: ``constant``, ``linear`` or ``cosine`` ramp of the adversarial weight.
        adversarial_ramp_steps: length of that ramp, from the first generator adversarial step.
        base_anneal: ``constant``, ``linear`` or ``cosine`` annealing of the base-loss weight.
        base_anneal_steps: length of the annealing, from the start of the adversarial stage.
        base_weight_final: base-loss weight at the end of the annealing.
        pure_adversarial: drop the base loss entirely in the adversarial stage (weight 0).
    """

    def __init__(
        self,
        discriminator_steps: int = 1,
        discriminator_steps_mode: str = "consecutive",
        generator_every: int = 1,
        discriminator_every: int = 1,
        discriminator_warmup_steps: int = 0,
        adversarial_start_step: int = 0,
        adversarial_ramp: str = "constant",
        adversarial_ramp_steps: int = 0,
        base_anneal: str = "constant",
        base_anneal_steps: int = 0,
        base_weight_final: float = 1.0,
        pure_adversarial: bool = False,
    ) -> None:
        for name, value in (("discriminator_steps", discriminator_steps), ("generator_every", generator_every),
                            ("discriminator_every", discriminator_every)):
            if int(value) < 1:
                raise ValueError(f"schedule.{name} must be >= 1, got {value}")
        for name, value in (
            ("discriminator_warmup_steps", discriminator_warmup_steps),
            ("adversarial_start_step", adversarial_start_step),
            ("adversarial_ramp_steps", adversarial_ramp_steps),
            ("base_anneal_steps", base_anneal_steps),
            ("base_weight_final", base_weight_final),
        ):
            if value < 0:
                raise ValueError(f"schedule.{name} must be >= 0, got {value}")
        if discriminator_steps_mode not in _D_MODES:
            raise ValueError(f"schedule.discriminator_steps_mode must be one of {_D_MODES}, got {discriminator_steps_mode!r}")
        for name, kind in (("adversarial_ramp", adversarial_ramp), ("base_anneal", base_anneal)):
            if kind not in _RAMPS:
                raise ValueError(f"schedule.{name} must be one of {_RAMPS}, got {kind!r}")
        self.discriminator_steps = int(discriminator_steps)
        self.discriminator_steps_mode = discriminator_steps_mode
        self.generator_every = int(generator_every)
        self.discriminator_every = int(discriminator_every)
        if self.discriminator_every > 1 and (self.generator_period > 1 or self.discriminator_steps > 1):
            # Both cadences at once would leave batches where nobody steps.
            raise ValueError("schedule.discriminator_every > 1 needs generator_every = 1 and discriminator_steps = 1, "
                             f"got generator_every={generator_every}, discriminator_steps={discriminator_steps}")
        self.discriminator_warmup_steps = int(discriminator_warmup_steps)
        self.adversarial_start_step = int(adversarial_start_step)
        self.adversarial_ramp = adversarial_ramp
        self.adversarial_ramp_steps = int(adversarial_ramp_steps)
        self.base_anneal = base_anneal
        self.base_anneal_steps = int(base_anneal_steps)
        self.base_weight_final = 0.0 if pure_adversarial else float(base_weight_final)

    @property
    def generator_period(self) -> int:
        """Batches between generator updates in the adversarial stage."""
        consecutive = self.discriminator_steps if self.discriminator_steps_mode == "consecutive" else 1
        return self.generator_every * consecutive

    def plan(self, step: int) -> StepPlan:
        """Return the :class:`StepPlan` of training step ``step`` (batches since the run began)."""
        if step < self.adversarial_start_step:
            return StepPlan(True, 0, False, 0.0, 1.0)
        since_start = step - self.adversarial_start_step
        base_weight = 1.0 + (self.base_weight_final - 1.0) * self._progress(self.base_anneal, since_start, self.base_anneal_steps)
        d_updates = self.discriminator_steps if self.discriminator_steps_mode == "repeat" else 1
        if since_start < self.discriminator_warmup_steps:
            return StepPlan(False, d_updates, False, 0.0, base_weight)
        t = since_start - self.discriminator_warmup_steps
        generator = (t + 1) % self.generator_period == 0
        if t % self.discriminator_every:
            d_updates = 0
        scale = self._progress(self.adversarial_ramp, t, self.adversarial_ramp_steps)
        return StepPlan(generator, d_updates, True, scale, base_weight)

    @staticmethod
    def _progress(kind: str, t: int, length: int) -> float:
        # A zero-length ramp is a step function: full value from its first step.
        return 1.0 if length == 0 else ramp(kind, t / length)
