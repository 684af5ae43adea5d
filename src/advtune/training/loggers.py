"""The loggers of a run: ``metrics.csv`` always, and the trackers the ``logger`` config group picks.

``logger=[tensorboard]`` (default), ``logger=[tensorboard,wandb]``, ``logger=mlflow``...: each entry of
``cfg.logger`` is a ``_target_`` built with the run's ``output_dir``, resume step and resolved config
(:class:`TensorBoardTracker`, :class:`~advtune.training.tracker_wandb.WandbTracker`,
:class:`~advtune.training.tracker_mlflow.MLflowTracker`).

They continue a resumed run's files instead of starting them over. Lightning's CSV logger deletes
``metrics.csv`` whenever its folder is not empty, and TensorBoard would show the steps between the
checkpoint and the crash twice. On resume, ``metrics.csv`` keeps the rows logged before the
checkpoint's step and TensorBoard purges its events from that step on
(``SummaryWriter(purge_step=...)``); the resumed run logs the rest. W&B and MLflow continue the
same run (:mod:`advtune.training.trackers`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["run_loggers", "logging_step_of", "finish_trackers", "TensorBoardTracker"]


def logging_step_of(checkpoint: dict[str, Any] | None) -> int:
    """The first logging step a resumed run logs again: the checkpoint's ``_batches_that_stepped``
    (the step Lightning logs at), plus one for a periodic checkpoint, which ModelCheckpoint writes inside
    ``on_train_batch_end`` before that batch's row is logged (Lightning counts the batch processed
    but not completed, and the resumed run goes on with the next one)."""
    if checkpoint is None:
        return 0
    fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
    loop = fit_loop.get("epoch_loop.state_dict", {})
    stepped = int(loop.get("_batches_that_stepped", checkpoint.get("global_step", 0)))
    progress = fit_loop.get("epoch_loop.batch_progress", {}).get("total", {})
    return stepped + max(0, int(progress.get("processed", 0)) - int(progress.get("completed", 0)))


def _step(row: dict[str, str]) -> int | None:
    try:
        return int(float(row.get("step") or ""))
    except ValueError:
        return None  # a line cut short by a crash


class _ContinuingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, keep_before: int) -> None:
        self.keep_before = keep_before  # rows of earlier steps are kept; read by the parent's __init__
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="") as file:
            reader = csv.DictReader(file)
            header, rows = list(reader.fieldnames or []), list(reader)
        kept = [r for r in rows if (s := _step(r)) is not None and s < self.keep_before and None not in r]
        if not kept:
            path.unlink()
            return
        self.metrics_keys = sorted(header)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, path)


class _ContinuingCSVLogger(CSVLogger):
    def __init__(self, *args: Any, keep_before: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keep_before = keep_before

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(self.log_dir, self._keep_before)
        return self._experiment


class TensorBoardTracker(TensorBoardLogger):
    """TensorBoard in ``output_dir/tensorboard``, continued from ``resume_step``; a new run also gets the
    resolved config as hyper-parameters (``hparams.yaml`` and TensorBoard's HParams tab)."""

    def __init__(self, output_dir: str | Path, resume_step: int, run_config: dict[str, Any]) -> None:
        purge = {"purge_step": int(resume_step)} if resume_step > 0 else {}
        super().__init__(str(output_dir), name="tensorboard", version="", default_hp_metric=False, **purge)
        self._new_run = resume_step <= 0
        self.run_config = run_config

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: Any = None) -> None:
        if self._new_run:  # once, the resolved config (the module's own hparams are part of it)
            from advtune.training.trackers import flat_config

            self._new_run = False
            super().log_hyperparams(flat_config(self.run_config), metrics)
            (Path(self.log_dir) / self.NAME_HPARAMS_FILE).unlink(missing_ok=True)  # Lightning wrote it empty first
            self.save()

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.log_hyperparams({})  # Lightning calls it only for modules that saved hyper-parameters
        super().log_metrics(metrics, step)

    @rank_zero_only
    def log_image_file(self, key: str, path: str | Path, step: int) -> None:
        """An image file (``health.png``, a sample grid) as an image summary."""
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        self.experiment.add_image(key, pixels, int(step), dataformats="HWC")


def run_loggers(output_dir: str | Path, resume_step: int, cfg: Any = None) -> list[Any]:
    """``output_dir/metrics.csv`` and the trackers of ``cfg.logger`` (TensorBoard when ``cfg`` is ``None``),
    continued from ``resume_step``."""
    from omegaconf import OmegaConf

    out = str(output_dir)
    run_config = OmegaConf.to_container(cfg, resolve=True) if cfg is not None else {}
    loggers: list[Any] = [_ContinuingCSVLogger(out, name="", version="", keep_before=resume_step)]
    if cfg is None:
        return [TensorBoardTracker(out, resume_step, run_config)] + loggers
    from hydra.utils import instantiate

    from advtune.config import ConfigError

    for name, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        try:
            loggers.insert(-1, instantiate(node, _convert_="all", _recursive_=False, output_dir=out, resume_step=int(resume_step),
                                           run_config=run_config))
        except Exception as error:  # noqa: BLE001 - a wrong key or value of one tracker, reported in one line
            cause = error.__cause__ or error
            raise ConfigError(f"cannot build logger '{name}' ({node.get('_target_')}): "
                              f"{str(cause).splitlines()[0]}") from None
    return loggers


def finish_trackers(loggers: list[Any]) -> None:
    """Close the runs of the experiment trackers (the end of ``advtune train``)."""
    for logger in loggers:
        if hasattr(logger, "finish"):
            logger.finish()
