"""What a run shows while it trains: one header line, then a bar of generator updates.

Lightning's bar counts batches of the current epoch ("Epoch 0/-2" when training by steps); a
two-player run is measured in generator updates (``trainer.max_steps``), so the bar shows
``generator updates 120/2000``, the elapsed time and the time left, the losses, and the status word
of the health monitor (any callback with a ``status_word`` property).
"""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch.callbacks import Callback, RichProgressBar

from advtune.console import header_line

__all__ = ["ProgressBar", "RunHeader"]


class ProgressBar(RichProgressBar):
    """Rich progress bar over generator updates, with the health status word.

    Redrawn at most every ``min_interval_s`` (and at the last update): reading the losses and
    rendering the bar on every batch cost more than the whole step of a small model.
    """

    min_interval_s = 0.1
    _last_redraw = float("-inf")

    def _by_steps(self) -> bool:
        return self.trainer.max_steps is not None and self.trainer.max_steps > 0

    def _get_train_description(self, current_epoch: int) -> str:
        if self._by_steps():
            return "generator updates"
        return f"epoch {current_epoch + 1}/{self.trainer.max_epochs}"

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if not self._by_steps():
            return super().on_train_epoch_start(trainer, pl_module)
        if self.is_disabled or self.progress is None or self.train_progress_bar_id is not None:
            return None
        # One task for the whole run, starting where a resumed run left off (keeps the ETA honest).
        self.train_progress_bar_id = self.progress.add_task(
            self._get_train_description(trainer.current_epoch), total=trainer.max_steps,
            completed=trainer.global_step)
        self.refresh()
        return None

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._by_steps():
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.train_progress_bar_id is None:
            self.on_train_epoch_start(trainer, pl_module)
        now = time.monotonic()
        if now - self._last_redraw < self.min_interval_s and trainer.global_step < trainer.max_steps:
            return None
        self._last_redraw = now
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()
        return None

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        for callback in trainer.callbacks:
            word = getattr(callback, "status_word", None)
            if isinstance(word, str) and word:
                items["status"] = word
        return items


class RunHeader(Callback):
    """Print :func:`advtune.console.header_line` once (rank 0), then ``note`` (e.g. where it resumes)."""

    def __init__(self, name: str, note: str = "") -> None:
        self.name, self.note = name, note

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.is_global_zero:
            print(header_line(self.name, trainer, pl_module), flush=True)
            if self.note:
                print(self.note, flush=True)
