"""``AdversarialModule``: the one place where the two-player step is written out, in order.

Per training step (one batch)::

    plan = schedule.plan(step)                        # which players move, ramps, annealing
    output = model_predict(batch, Phase.G)            # ONE generator forward serves both players
    if plan.generator:                                # G phase: D frozen, gradient flows through D to G
        loss = calculate_generator_loss(output, plan) ; backward ; (every k) clip, step, zero, schedule
    for each of plan.discriminator_updates:           # D phase: fake detached, G receives nothing
        loss = calculate_discriminator_loss(...)      ; backward ; (every k) clip, step, zero, schedule

Step counting: Lightning counts every ``optimizer.step()`` in ``trainer.global_step``; here only
generator updates go through Lightning's counter, so ``trainer.max_steps``, ``global_step`` and
``every_n_train_steps`` all mean *generator updates*. Discriminator updates are counted in
``discriminator_updates`` and the data clock (batches seen, which drives the schedule) in ``batch_step``.

No hidden cost: nothing in the step reads a device value on the host. Non-finite losses are
flagged on the device and their updates skipped there (:mod:`advtune.training.nonfinite`); metrics
are computed, reduced and logged only on the steps the logger writes (``trainer.log_every_n_steps``).
Optimizers, schedulers and the clipping hook are in :mod:`advtune.training.optimization`; logging
and the resume hooks in :mod:`advtune.training.bookkeeping` (mixins of the module).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from advtune.adversarial import AdversarialLossCalculator
from advtune.schedule import Phase, PhaseSchedule, StepPlan
from advtune.tasks.base import AdversarialTask, TaskOutput
from advtune.training.bookkeeping import RunBookkeeping, training_log
from advtune.training.ema import GeneratorEMA
from advtune.training.module_arguments import check_module_arguments
from advtune.training.nonfinite import NonFiniteGuard
from advtune.training.optimization import OptimizerFactory, PlayerOptimization, SchedulerFactory, frozen

__all__ = ["AdversarialModule"]


class AdversarialModule(PlayerOptimization, RunBookkeeping, L.LightningModule):
    """Trains a task's generator against a discriminator with manual optimization.

    Args:
        task: the generator side (:class:`~advtune.tasks.AdversarialTask`).
        discriminator: follows the ``(logits, features)`` contract; required when ``use_adversarial``.
        calculator: the adversarial loss; default ``AdversarialLossCalculator()``.
        schedule: the phase schedule; default: G then D on every batch.
        generator_optimizer: factory ``params -> Optimizer`` (Hydra ``_partial_: true``); default fused Adam 2e-4
            (a fused optimizer skips a non-finite update on the device; others need one host read).
        discriminator_optimizer: likewise for D.
        generator_scheduler: factory ``optimizer -> LRScheduler`` or ``None``.
        discriminator_scheduler: likewise for D.
        scheduler_interval: ``"step"`` (each update of that player) or ``"epoch"``.
        generator_clip_norm: max gradient norm of G updates (``None``: no clipping).
        discriminator_clip_norm: likewise for D.
        accumulate_grad_batches: micro-batches per optimizer step, per player.
        use_adversarial: ``False`` trains the base loss only (no discriminator needed).
        regenerate_fake: run a second generator forward after the G update for D (default: reuse).
        max_consecutive_nonfinite: non-finite losses in a row before the run stops with an error
            (checked on logging steps and at the end of each epoch; their updates are skipped).
        running_average_decay: EMA decay of ``g/total`` and ``d/loss`` logged as ``*_avg`` (``None``: off).
        ema_decay: decay of an exponential moving average of the generator's trainable weights
            (:class:`~advtune.training.ema.GeneratorEMA`), used by validation, sampling and export
            (see :meth:`generator_weights`); ``None``: off.
        ema_rampup: StyleGAN2's EMA ramp-up (half-life at most ``ema_rampup`` × updates so far);
            ``None``: a constant decay.
        sample_dir: where validation writes sample grids (rank 0 only); ``None``: nowhere.
    """

    def __init__(
        self,
        task: AdversarialTask,
        discriminator: nn.Module | None = None,
        calculator: AdversarialLossCalculator | None = None,
        schedule: PhaseSchedule | None = None,
        generator_optimizer: OptimizerFactory | None = None,
        discriminator_optimizer: OptimizerFactory | None = None,
        generator_scheduler: SchedulerFactory | None = None,
        discriminator_scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "step",
        generator_clip_norm: float | None = None,
        discriminator_clip_norm: float | None = None,
        accumulate_grad_batches: int = 1,
        use_adversarial: bool = True,
        regenerate_fake: bool = False,
        max_consecutive_nonfinite: int = 3,
        running_average_decay: float | None = None,
        ema_decay: float | None = None,
        ema_rampup: float | None = None,
        sample_dir: str | Path | None = None,
    ) -> None:
        check_module_arguments(locals())  # a value that makes no sense: one line naming its module.* key
        super().__init__()
        if use_adversarial and discriminator is None:
            raise ValueError("discriminator must be provided when adversarial training is enabled")
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"module.scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
        if accumulate_grad_batches < 1:
            raise ValueError(f"module.accumulate_grad_batches must be >= 1, got {accumulate_grad_batches}")
        self.automatic_optimization = False
        self.task = task
        self.discriminator = discriminator if use_adversarial else None
        task.attach_discriminator(self.discriminator)
        self.calculator = calculator or AdversarialLossCalculator()
        self.schedule = schedule or PhaseSchedule()
        self.use_adversarial = use_adversarial
        self._optimizer_factories = {Phase.G: generator_optimizer, Phase.D: discriminator_optimizer}
        self._scheduler_factories = {Phase.G: generator_scheduler, Phase.D: discriminator_scheduler}
        self.scheduler_interval = scheduler_interval
        self.clip_norms = {Phase.G: generator_clip_norm, Phase.D: discriminator_clip_norm}
        self.accumulate_grad_batches = int(accumulate_grad_batches)
        self.regenerate_fake = regenerate_fake
        self.nonfinite = NonFiniteGuard(max_consecutive_nonfinite)
        self.running_average_decay = running_average_decay
        self.ema = GeneratorEMA(ema_decay, ema_rampup) if ema_decay is not None else None
        self.sample_dir = Path(sample_dir) if sample_dir is not None else None
        # Bookkeeping that a checkpoint must carry for an exact resume (see on_save_checkpoint).
        self.batch_step = 0
        self.discriminator_updates = 0
        self.micro_steps = {Phase.G: 0, Phase.D: 0}
        self.running_averages: dict[str, Tensor] = {}  # device tensors: updated without a sync
        self.active_player = Phase.G  # read by TwoPlayerMixedPrecision to pick this player's scaler
        self.logging_step = False  # whether this step writes logs (set at its start; read by callbacks)
        self.step_metrics: dict[str, float] = {}  # the last logging step's metrics (callbacks may add theirs)
        self._rng_to_restore: dict[str, Any] | None = None
        self.run_config: str | None = None  # the resolved YAML of the run (set by the CLI), kept in checkpoints

    # ---- the two sides ----------------------------------------------------------------------
    def model_predict(self, inputs: Any, phase: Phase) -> TaskOutput:
        """``Phase.G``: run the generator on a batch; ``Phase.D``: the detached view D trains on."""
        if phase is Phase.G:
            return self.generator_predict(inputs)
        return self.discriminator_predict(inputs)

    def generator_predict(self, batch: Any) -> TaskOutput:
        return self.task.generator_predict(batch)

    def discriminator_predict(self, output: TaskOutput) -> TaskOutput:
        detached = TaskOutput(output.real.detach(), output.fake.detach(), cond=output.cond)
        return self.task.discriminator_inputs(detached)

    def calculate_generator_loss(self, output: TaskOutput, plan: StepPlan, step: int) -> dict[str, Tensor]:
        base = output.base_loss  # unannealed: the adaptive weight is computed from it (taming)
        if plan.adversarial and self.discriminator is not None:
            with frozen(self.player_parameters(Phase.D)):
                result = self.calculator.compute_generator_loss(
                    self.discriminator, output.real, output.fake, step, base_loss=base,
                    last_layer=output.last_layer, adversarial_scale=plan.adversarial_scale,
                    base_weight=plan.base_weight, with_metrics=self.logging_step, measure_gradients=self.logging_step,
                    **output.cond,
                )
        else:
            if base is None:
                raise ValueError("the task has no base loss, so the generator needs the adversarial stage")
            base = base if plan.base_weight == 1.0 else base * plan.base_weight
            result = {"loss": base, "g/base": base.detach(), "g/total": base.detach()}
        if self.logging_step:
            result.update({f"g/{k}": v.detach() for k, v in output.base_losses.items()})
            result.update(output.logs)
        return result

    def calculate_discriminator_loss(self, output: TaskOutput, step: int) -> dict[str, Tensor]:
        with frozen(self.player_parameters(Phase.G)):
            return self.calculator.compute_discriminator_loss(
                self.discriminator, output.real, output.fake, step, with_metrics=self.logging_step, **output.cond)

    # ---- the two-player step ----------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> None:
        self._restore_rng_once()
        self.logging_step = self._should_log()
        step = self.batch_step
        plan = self.schedule.plan(step) if self.discriminator is not None else StepPlan(True, 0, False, 0.0, 1.0)
        d_updates = plan.discriminator_updates if self.calculator.discriminator_active(step) else 0
        with torch.set_grad_enabled(plan.generator):
            output = self.model_predict(batch, Phase.G)
        metrics: dict[str, Tensor] = {}
        if plan.generator:
            metrics.update(self._update(Phase.G, self.calculate_generator_loss(output, plan, step)))
            if self.regenerate_fake and d_updates:
                with torch.no_grad():
                    output = self.model_predict(batch, Phase.G)
        if d_updates:
            d_output = self.model_predict(output, Phase.D)
            for _ in range(d_updates):
                # Lazy regularization counts D updates (StyleGAN2), not batches: with D on every k-th
                # batch or several D updates per batch, the batch clock would miss or repeat the penalty.
                d_step = self.discriminator_updates
                metrics.update(self._update(Phase.D, self.calculate_discriminator_loss(d_output, d_step)))
        self.batch_step += 1
        training_log(self, metrics, output, plan)

    def _update(self, phase: Phase, result: dict[str, Tensor]) -> dict[str, Tensor]:
        """backward, then every ``accumulate_grad_batches`` micro-steps: clip, step, zero, schedule."""
        metrics = {k: v for k, v in result.items() if k != "loss"}
        loss = result["loss"]
        if not loss.requires_grad:  # e.g. the adversarial warm-up of a GAN: nothing to learn yet
            return metrics
        self.active_player = phase
        self.nonfinite.observe(phase, loss, self.batch_step)  # device flag: a bad update is skipped, no sync
        other = self.player_parameters(Phase.D if phase is Phase.G else Phase.G)
        with frozen(other):  # also in backward: FSDP decides there again which flat parameters get gradients
            self.manual_backward(loss if self.accumulate_grad_batches == 1 else loss / self.accumulate_grad_batches)
        self.micro_steps[phase] += 1
        if self.micro_steps[phase] % self.accumulate_grad_batches:
            return metrics
        optimizer = self._optimizer(phase)
        if phase is Phase.G:
            optimizer.step()  # through LightningOptimizer: counts in trainer.global_step
        else:
            # Same precision/clipping path, but not counted, so global_step = generator updates.
            self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=lambda: None)
            self.discriminator_updates += 1
        self.nonfinite.after_step(optimizer.optimizer, phase)
        optimizer.zero_grad(set_to_none=True)
        self._step_scheduler(phase)
        if phase is Phase.G and self.ema is not None:
            self.ema.update(self.player_parameters(Phase.G))
        return metrics

    # ---- the weights that ship ----------------------------------------------------------------
    def generator_weights(self) -> contextlib.AbstractContextManager:
        """Context: the task's trainable parameters hold the weights to evaluate and ship.

        With ``ema_decay`` set these are the EMA weights, restored exactly on exit; without, a no-op.
        Validation, ``advtune sample``, export and periodic exports run inside it; nesting is allowed.
        """
        if self.ema is None:
            return contextlib.nullcontext()
        return self.ema.swapped_in(self.player_parameters(Phase.G))

    # ---- validation: the generator alone -----------------------------------------------------
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        with self.generator_weights():
            metrics = self.task.validation_step(batch)
        if metrics:
            self.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        out_dir = self.sample_dir if self.trainer.is_global_zero and not self.trainer.sanity_checking else None
        with self.generator_weights():
            metrics = self.task.validation_epoch_end(out_dir, self.global_step)
        if metrics:
            self.log_dict({k: float(v) for k, v in metrics.items()}, sync_dist=True)
