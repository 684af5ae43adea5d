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
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.strategies import FSDPStrategy
import torch
from torch import Tensor, nn

from advtune.adversarial import AdversarialLossCalculator
from advtune.schedule import Phase, PhaseSchedule, StepPlan
from advtune.tasks.base import AdversarialTask, TaskOutput
from advtune.training.bookkeeping import checkpoint_state, restore_checkpoint_state, training_log, write_step_metrics
from advtune.training.ema import GeneratorEMA
from advtune.training.module_arguments import check_module_arguments
from advtune.training.nonfinite import NonFiniteGuard
from advtune.training.state import restore_rng_state

__all__ = ["AdversarialModule"]

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


@contextlib.contextmanager
def _frozen(params: list[nn.Parameter]) -> Iterator[None]:
    """Build the graph without these parameters, so no gradient can reach them."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


class AdversarialModule(L.LightningModule):
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

    # ---- players and optimizers -------------------------------------------------------------
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
            factory = self._optimizer_factories[phase] or (lambda p: torch.optim.Adam(p, lr=2e-4, betas=(0.5, 0.999), fused=True))
            optimizers.append(factory(params))
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
            with _frozen(self.player_parameters(Phase.D)):
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
        with _frozen(self.player_parameters(Phase.G)):
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
        with _frozen(other):  # also in backward: FSDP decides there again which flat parameters get gradients
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
        scheduler = self._scheduler(phase)
        if scheduler is not None and self.scheduler_interval == "step":
            scheduler.step()
        if phase is Phase.G and self.ema is not None:
            self.ema.update(self.player_parameters(Phase.G))
        return metrics

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        phase = self.active_player
        max_norm = self.clip_norms[phase]
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)  # 16-mixed: this player's GradScaler
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm_bad = None
        if max_norm is not None and params:
            if scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False):
                scaler.unscale_(optimizer)  # Lightning leaves a fused optimizer's gradients scaled: clip true units
            if isinstance(self.trainer.strategy, FSDPStrategy):  # gradients are shards: all-reduced norm
                from advtune.training.sharded_clip import clip_sharded_grad_norm_

                norm = clip_sharded_grad_norm_(params, max_norm)
            else:
                norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            if self.logging_step:
                self.log(f"{phase.value}/grad_norm", norm, on_step=True, on_epoch=False)
            norm_bad = ~torch.isfinite(norm)
        if scaler is None:  # a GradScaler skips non-finite gradients itself
            self.nonfinite.mask_step(optimizer, phase, norm_bad)

    def on_train_epoch_end(self) -> None:
        self.nonfinite.check()
        if self.scheduler_interval == "epoch":
            for phase in (Phase.G, Phase.D) if self.discriminator is not None else (Phase.G,):
                scheduler = self._scheduler(phase)
                if scheduler is not None:
                    scheduler.step()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.logging_step:  # after the callbacks' hooks: the health monitor's status is in the row
            write_step_metrics(self)

    def on_train_end(self) -> None:
        self.nonfinite.check()  # the steps after the last logging step

    def _should_log(self) -> bool:
        # Lightning's self.log costs about a millisecond per key; only call it on the steps the
        # logger writes (trainer.log_every_n_steps), which are also the progress bar's updates.
        return self.trainer._logger_connector.should_update_logs

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

    # ---- exact resume ------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["advtune"] = checkpoint_state(self)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("advtune")
        if state is None:
            raise ValueError("checkpoint was not written by advtune (no 'advtune' entry); cannot resume exactly")
        restore_checkpoint_state(self, state)

    def _restore_rng_once(self) -> None:
        # Restored at the first resumed batch, not at load time: what Lightning does between
        # loading and training (sanity checks, loader set-up) must not consume the saved stream.
        if self._rng_to_restore is not None:
            restore_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
