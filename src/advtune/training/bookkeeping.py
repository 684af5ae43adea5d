"""What :class:`~advtune.training.AdversarialModule` does around its step: logging and resume state.

Kept out of ``module.py`` so the two-player step reads in one screen (:class:`RunBookkeeping` is a
mixin of the module: its Lightning hooks around the step). Logging costs nothing on the
steps the logger does not write: running averages are device tensors updated in place, and
everything else — metrics, the diversity of the fakes, learning rates, the non-finite check, and
the one host transfer of all of them — happens on logging steps only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from advtune.monitor import fake_diversity
from advtune.schedule import Phase, StepPlan
from advtune.tasks.base import TaskOutput
from advtune.training.state import capture_rng_state, restore_rng_state

__all__ = ["RunBookkeeping", "checkpoint_state", "restore_checkpoint_state", "training_log", "write_step_metrics"]

_PROGRESS_BAR_KEYS = ("g/total", "d/loss")


def _update_running_averages(module: Any, metrics: dict[str, Tensor]) -> None:
    decay = module.running_average_decay
    for key in _PROGRESS_BAR_KEYS:
        if key in metrics:
            value = metrics[key].detach().float()
            average = module.running_averages.get(key)
            if average is None:
                module.running_averages[key] = value.clone()
                continue
            if average.device != value.device:  # restored from a checkpoint on the CPU: still fold this value in
                average = module.running_averages[key] = average.to(value.device)
            average.mul_(decay).add_(value, alpha=1.0 - decay)


def _as_floats(values: dict[str, Any]) -> dict[str, float]:
    """Scalars to Python floats with one device-to-host transfer for all the tensors."""
    keys = [k for k, v in values.items() if isinstance(v, Tensor)]
    floats = {k: float(v) for k, v in values.items() if not isinstance(v, Tensor)}
    if keys:
        stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys]).tolist()
        floats.update(zip(keys, stacked))
    return floats


def training_log(module: Any, metrics: dict[str, Tensor], output: TaskOutput, plan: StepPlan) -> None:
    """Update the running averages (every step, on the device); on logging steps, gather every metric.

    The gathered floats are in ``module.step_metrics`` for callbacks (the health monitor adds its
    status there) and go to the loggers at the end of the batch (:func:`write_step_metrics`); only
    the progress bar's two keys go through ``self.log``.
    """
    if module.running_average_decay is not None:
        _update_running_averages(module, metrics)
    if not module.logging_step:
        return
    module.nonfinite.check()
    values: dict[str, Any] = dict(metrics)
    values["g/base_weight"] = plan.base_weight
    values["g/adversarial_scale"] = plan.adversarial_scale
    diversity = fake_diversity(output.real, output.fake)
    if diversity is not None:
        values["g/diversity"] = diversity
    values.update({f"{key}_avg": value for key, value in module.running_averages.items()})
    for phase in (Phase.G, Phase.D) if module.discriminator is not None else (Phase.G,):
        values[f"lr/{phase.value}"] = module._optimizer(phase).param_groups[0]["lr"]
    values["train/nonfinite_skipped"] = module.nonfinite.total
    values["train/discriminator_updates"] = module.discriminator_updates
    module.step_metrics = _as_floats(values)
    shown = {k: v for k, v in module.step_metrics.items() if k in _PROGRESS_BAR_KEYS}
    if shown:
        module.log_dict(shown, on_step=True, on_epoch=False, prog_bar=True, logger=False, batch_size=output.real.shape[0])


def write_step_metrics(module: Any) -> None:
    """Send ``module.step_metrics`` to the run's loggers as one row at this logging step.

    This is what Lightning's loop does with values logged by ``self.log`` (same step, an ``epoch``
    column, ``trainer.logged_metrics`` updated), without ``self.log``'s per-key bookkeeping, which
    costs about half a millisecond per key and call on a CPU (measured: 25 keys, 100 steps).
    """
    connector = module.trainer._logger_connector
    connector._logged_metrics.update(module.step_metrics)  # also without loggers, as Lightning keeps them
    connector.log_metrics(dict(module.step_metrics))


def checkpoint_state(module: Any) -> dict[str, Any]:
    """The module's ``checkpoint["advtune"]`` entry: counters, averages, the calculator's state, RNG."""
    return {
        "batch_step": module.batch_step,
        "discriminator_updates": module.discriminator_updates,
        "micro_steps": {p.value: n for p, n in module.micro_steps.items()},
        "nonfinite_total": module.nonfinite.total,
        "running_averages": {k: v.detach().clone() for k, v in module.running_averages.items()},
        "calculator": module.calculator.state_dict(),
        "rng": capture_rng_state(),
        "config": module.run_config,
    }


def restore_checkpoint_state(module: Any, state: dict[str, Any]) -> None:
    """Inverse of :func:`checkpoint_state` (the RNG is kept for the first resumed batch)."""
    module.batch_step = int(state["batch_step"])
    module.discriminator_updates = int(state["discriminator_updates"])
    module.micro_steps = {Phase(k): int(v) for k, v in state["micro_steps"].items()}
    module.nonfinite.load_total(int(state["nonfinite_total"]))
    module.running_averages = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in state["running_averages"].items()}
    module.calculator.load_state_dict(state.get("calculator", {}))
    module._rng_to_restore = state["rng"]


class RunBookkeeping:
    """Mixin of :class:`~advtune.training.AdversarialModule`: its hooks around the step (logging, the
    non-finite checks, epoch schedulers, exact resume)."""

    def on_train_epoch_end(self) -> None:
        self.nonfinite.check()
        self._step_epoch_schedulers()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.logging_step:  # after the callbacks' hooks: the health monitor's status is in the row
            write_step_metrics(self)

    def on_train_end(self) -> None:
        self.nonfinite.check()  # the steps after the last logging step

    def _should_log(self) -> bool:
        # Lightning's self.log costs about a millisecond per key; only call it on the steps the
        # logger writes (trainer.log_every_n_steps), which are also the progress bar's updates.
        return self.trainer._logger_connector.should_update_logs

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
