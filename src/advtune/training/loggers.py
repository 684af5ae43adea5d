"""Loggers that continue a resumed run's files instead of starting them over.

Lightning's CSV logger deletes ``metrics.csv`` whenever its folder is not empty, and TensorBoard
would show the steps between the checkpoint and the crash twice. On resume, ``metrics.csv`` keeps
the rows logged before the checkpoint's step and TensorBoard purges its events from that step on
(``SummaryWriter(purge_step=...)``); the resumed run logs the rest.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

__all__ = ["run_loggers", "logging_step_of"]


def logging_step_of(checkpoint: dict[str, Any] | None) -> int:
    """The logging step a checkpoint resumes at (Lightning logs at ``_batches_that_stepped``)."""
    if checkpoint is None:
        return 0
    loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
    return int(loop.get("_batches_that_stepped", checkpoint.get("global_step", 0)))


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


def run_loggers(output_dir: str | Path, resume_step: int) -> list[Any]:
    """TensorBoard (``output_dir/tensorboard``) and ``output_dir/metrics.csv``, continued from ``resume_step``."""
    out = str(output_dir)
    purge = {"purge_step": resume_step} if resume_step > 0 else {}
    return [TensorBoardLogger(out, name="tensorboard", version="", **purge),
            _ContinuingCSVLogger(out, name="", version="", keep_before=resume_step)]
