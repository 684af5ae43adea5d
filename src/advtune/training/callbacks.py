"""The callbacks of every ``advtune train`` run, built in one place: :func:`default_callbacks`.

- checkpoints every ``checkpoint_every`` generator updates (``last.ckpt`` overwritten, never
  versioned as ``last-v1.ckpt``);
- what ships exported at the same steps into ``output_dir/<task.export_subdir>/stepNNNNNN/``
  (:class:`PeriodicExport`; the runner writes the final export into ``output_dir`` after ``fit``);
- a validation at the last generator update, also when it is not a multiple of
  ``val_check_interval`` (:class:`FinalValidation`); every validation leaves the random state as
  it found it (:class:`ValidationKeepsRandomState`), so when and how often a run validates never
  changes its training, and a checkpoint written after a validation resumes exactly;
- each validation's images sent to the loggers, and ``health.png`` at the end of training
  (:class:`ValidationImages`: TensorBoard, W&B, MLflow);
- the discriminator's ``(logits, features)`` contract checked once on the first batch;
- one header line and a progress bar counting generator updates (:mod:`advtune.training.progress`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from advtune.config import ConfigError
from advtune.training.progress import ProgressBar, RunHeader
from advtune.training.release import write_release
from advtune.training.state import capture_rng_state, restore_rng_state
from advtune.training.strategies import gathered_weights

__all__ = ["default_callbacks", "PeriodicExport", "FinalValidation", "ValidationKeepsRandomState", "ValidationImages",
           "DiscriminatorContractCheck", "check_discriminator_output"]


def default_callbacks(cfg: DictConfig, module: Any, output_dir: str | Path, note: str = "") -> list[Callback]:
    """Every callback of a run of ``cfg`` writing into ``output_dir`` (``note``: printed under the header)."""
    out = Path(output_dir)
    every = int(cfg.checkpoint_every)
    discriminator_yaml = OmegaConf.to_yaml(cfg.discriminator) if cfg.get("discriminator") is not None else None
    callbacks: list[Callback] = [
        ModelCheckpoint(dirpath=out / "checkpoints", filename="step{step:06d}", auto_insert_metric_name=False,
                        every_n_train_steps=every, save_last=True, save_top_k=int(cfg.keep_checkpoints),
                        monitor="step", mode="max", enable_version_counter=False),
        RunHeader(str(cfg.get("run_name") or "run"), note),
        DiscriminatorContractCheck(),
        FinalValidation(),
        ValidationKeepsRandomState(),
        PeriodicExport(out, every, discriminator_yaml),
    ]
    monitor = cfg.get("monitor")
    if monitor is not None and monitor.get("enabled", True):
        from advtune.monitor import HealthMonitor

        settings = {k: v for k, v in OmegaConf.to_container(monitor, resolve=True).items() if k != "enabled"}
        callbacks.append(HealthMonitor(out, **settings))
    callbacks.append(ValidationImages(out))  # after the monitor: its on_train_end writes health.png first
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(ProgressBar())
    return callbacks


class PeriodicExport(Callback):
    """Export what ships every ``every`` generator updates into
    ``<output_dir>/<task.export_subdir>/stepNNNNNN/`` (rank 0, under ``module.generator_weights()``)."""

    def __init__(self, output_dir: Path, every: int, discriminator_yaml: str | None) -> None:
        self.output_dir, self.every, self.discriminator_yaml = Path(output_dir), int(every), discriminator_yaml
        self._last_exported_step = -1

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._last_exported_step or step == 0 or step % self.every:
            return
        self._last_exported_step = step
        with gathered_weights(pl_module):  # FSDP: every rank takes part in gathering what rank 0 writes
            if trainer.is_global_zero:
                subdir = getattr(pl_module.task, "export_subdir", "export")
                write_release(pl_module, self.output_dir / subdir / f"step{step:06d}", self.discriminator_yaml)


class FinalValidation(Callback):
    """Ask Lightning to stop at the last generator update: it validates on a requested stop.

    ``needs_validation`` tells the runner when that did not happen (validation only on some
    epochs, or a run of epochs), so it validates once more after ``fit``.
    """

    def __init__(self) -> None:
        self.trained = False
        self.last_validated_step: int | None = None

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.trained = True
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.last_validated_step = trainer.global_step

    def needs_validation(self, trainer: Any) -> bool:
        return self.trained and self.last_validated_step != trainer.global_step


class ValidationKeepsRandomState(Callback):
    """Give the training the Python, NumPy and torch random states it had before each validation.

    Sampling during validation draws from the global generators, and so does creating the
    validation loader's iterator (before ``on_validation_start``); the state is therefore taken at
    the end of every training batch (a few microseconds) and put back after a validation. Without
    this, the final validation of an interrupted run would change the random state its last
    checkpoint stores, and the resumed run would draw other noise than the uninterrupted one.
    """

    def __init__(self) -> None:
        self._state: dict[str, Any] | None = None

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._state = capture_rng_state()

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if self._state is None:  # a validation outside training (sanity check, trainer.validate)
            self._state = capture_rng_state()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if self._state is not None:
            restore_rng_state(self._state)
            self._state = None


class ValidationImages(Callback):
    """Send each validation's images to the loggers (rank 0), and ``health.png`` at the end of training.

    TensorBoard gets the task's ``validation_images`` (name -> ``(C, H, W)`` in [0, 1]), which are then
    cleared; the other loggers that take image files (W&B, MLflow) get the PNGs this validation wrote
    into the module's ``sample_dir`` (sample grids, the Flux prompt x steps grid), under
    ``samples/<kind>`` (``samples/prompts``), and so does TensorBoard for a task that gives no tensors.
    Images are logged at the loggers' step (the one metrics use).

    Args:
        output_dir: where ``health.png`` is looked for at the end of training (``None``: not logged).
    """

    def __init__(self, output_dir: str | Path | None = None) -> None:
        self.output_dir = None if output_dir is None else Path(output_dir)
        self._seen: set[str] | None = None  # sample files already there or already logged

    @staticmethod
    def _pngs(pl_module: Any) -> list[Path]:
        folder = getattr(pl_module, "sample_dir", None)
        return sorted(Path(folder).glob("*.png")) if folder is not None and Path(folder).is_dir() else []

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self._seen is None:  # a resumed run's earlier grids were logged by the earlier process
            self._seen = {p.name for p in self._pngs(pl_module)}

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger

        from advtune.training.trackers import image_key

        images = getattr(getattr(pl_module, "task", None), "validation_images", None) or {}
        if trainer.is_global_zero and not trainer.sanity_checking:
            new = [p for p in self._pngs(pl_module) if p.name not in (self._seen or set())]
            self._seen = (self._seen or set()) | {p.name for p in new}
            step = _logging_step(trainer)
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger) and images:
                    for name, image in images.items():
                        logger.experiment.add_image(name, image.detach().float().clamp(0, 1).cpu(),
                                                    trainer.global_step, dataformats="CHW")
                elif hasattr(logger, "log_image_file"):
                    for path in new:
                        logger.log_image_file(f"samples/{image_key(path)}", path, step)
        images.clear()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        health = self.output_dir / "health.png" if self.output_dir is not None else None
        if trainer.is_global_zero and health is not None and health.is_file():
            from advtune.training.trackers import HEALTH_IMAGE_KEY

            for logger in trainer.loggers:
                if hasattr(logger, "log_image_file"):
                    logger.log_image_file(HEALTH_IMAGE_KEY, health, _logging_step(trainer))


def _logging_step(trainer: Any) -> int:
    return int(trainer.fit_loop.epoch_loop._batches_that_stepped)  # the step Lightning logs metrics at


def check_discriminator_output(output: Any, batch_size: int, name: str) -> None:
    """Raise :class:`ConfigError` unless ``output`` is ``(logits: list[Tensor], features: list[list[Tensor]])``
    with one entry per sub-discriminator and the batch dimension first in every logits tensor."""
    problem = None
    if not isinstance(output, (tuple, list)) or len(output) != 2:
        kind = f"a tensor of shape {tuple(output.shape)}" if isinstance(output, Tensor) else type(output).__name__
        problem = f"it returned {kind}, not a (logits, features) pair"
    else:
        logits, features = output
        if not isinstance(logits, list) or not logits or not all(isinstance(t, Tensor) for t in logits):
            problem = "logits must be a non-empty list of tensors, one per sub-discriminator"
        elif (not isinstance(features, list) or len(features) != len(logits)
              or not all(isinstance(f, list) and all(isinstance(t, Tensor) for t in f) for f in features)):
            problem = f"features must be a list of {len(logits)} lists of tensors, one per sub-discriminator"
        else:
            wrong = [i for i, t in enumerate(logits) if t.dim() == 0 or t.shape[0] != batch_size]
            if wrong:
                problem = (f"logits[{wrong[0]}] has shape {tuple(logits[wrong[0]].shape)}; "
                           f"the batch dimension ({batch_size}) must come first")
    if problem:
        raise ConfigError(f"discriminator {name} breaks the output contract: {problem} "
                          "(see advtune/discriminators/base.py)")


class DiscriminatorContractCheck(Callback):
    """Check the discriminator's output on the first batch, before any update.

    Runs the generator and the discriminator once without gradients, in eval mode and with the
    random state restored afterwards, so training proceeds exactly as without the check.
    """

    def __init__(self) -> None:
        self.done = False

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.done or getattr(pl_module, "discriminator", None) is None:
            return
        self.done = True
        modes = {m: m.training for m in pl_module.modules()}
        rng = capture_rng_state()
        try:
            pl_module.eval()
            with torch.no_grad(), trainer.precision_plugin.train_step_context():
                view = pl_module.discriminator_predict(pl_module.generator_predict(batch))
                output = pl_module.discriminator(view.real, **view.cond)
            check_discriminator_output(output, view.real.shape[0], type(pl_module.discriminator).__name__)
        finally:
            for submodule, training in modes.items():
                submodule.training = training
            restore_rng_state(rng)
