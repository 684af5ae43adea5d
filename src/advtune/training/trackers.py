"""What the experiment trackers (``logger=`` config group) share: the run ids kept in ``output_dir``,
the config as flat hyper-parameters, image keys, and one rule for resumed runs.

A run's tracker ids live in ``output_dir/trackers.json``, so re-running the command into the same
``output_dir`` (``resume=auto``) continues the same W&B run and the same MLflow run. A resumed run
restarts at its checkpoint's step, while the tracker already holds the steps up to the crash:
TensorBoard and ``metrics.csv`` drop those and log them again; W&B and MLflow cannot delete logged
values, so a tracker skips every ``(key, step)`` it already holds (the values are the same: resumes
are exact). Every tracker is a Lightning ``Logger`` that logs from rank 0 only.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["HEALTH_IMAGE_KEY", "TRACKERS_FILE", "Tracker", "flat_config", "image_key", "read_tracker_state", "write_tracker_state"]

TRACKERS_FILE = "trackers.json"
HEALTH_IMAGE_KEY = "health_plot"  # health.png (not "health": the health/status metric has that prefix)


def read_tracker_state(output_dir: str | Path) -> dict[str, Any]:
    """``{tracker name: {"run_id": ..., ...}}`` of the run in ``output_dir`` (empty for a new one)."""
    path = Path(output_dir) / TRACKERS_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}  # a file cut short by a crash: the trackers start new runs


def write_tracker_state(output_dir: str | Path, name: str, state: dict[str, Any]) -> None:
    """Record ``state`` for tracker ``name``, atomically (a crash leaves the old file or the new one)."""
    path = Path(output_dir) / TRACKERS_FILE
    merged = {**read_tracker_state(output_dir), name: state}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(merged, indent=1))
    os.replace(tmp, path)


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"trainer": {"max_steps": 5}}`` -> ``{"trainer.max_steps": 5}``; lists and ``None`` become text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flat_config(value, name + "."))
        else:
            flat[name] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return flat


def image_key(path: Path) -> str:
    """``samples/prompts_0000012.png`` -> ``prompts``, ``samples_step000500.png`` -> ``samples``: one key per kind."""
    return re.sub(r"_(step)?\d+$", "", path.stem) or path.stem


class Tracker(Logger):
    """A Lightning logger for one experiment tracker; subclasses start the run in :meth:`_start`.

    Args:
        output_dir: the run's folder (``trackers.json``, local stores).
        resume_step: the logging step the run resumes at (0: a new run).
        run_config: the resolved config, logged as hyper-parameters.
    """

    tracker_name = "tracker"

    def __init__(self, output_dir: str | Path, resume_step: int, run_config: dict[str, Any]) -> None:
        super().__init__()
        self.output_dir = Path(output_dir)
        self.resume_step = int(resume_step)
        self.run_config = run_config
        self.run_id: str | None = None
        self._logged_until: dict[str, int] = {}  # key -> last step the tracker already holds (resumed runs)
        self._held_until = -1  # every key: steps up to this one are held (a tracker that knows no keys)
        self._started = False

    # ---- what subclasses implement ------------------------------------------------------------
    def _start(self, previous_id: str | None) -> dict[str, Any]:
        """Open the run (``previous_id``: continue that one); return the state to keep in trackers.json."""
        raise NotImplementedError

    def _log(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def _log_image_file(self, key: str, path: Path, step: int) -> None:
        raise NotImplementedError

    def _finish(self, failed: bool) -> None:
        raise NotImplementedError

    def holds(self, key: str, step: int) -> bool:
        """Whether the run already holds ``key`` at ``step`` (logged before a resume)."""
        return step <= max(self._held_until, self._logged_until.get(key, -1))

    # ---- Lightning's Logger -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.tracker_name

    @property
    def version(self) -> str:
        return self.run_id or ""

    @property
    def save_dir(self) -> str:
        """The run's folder (``trainer.log_dir`` when a tracker is the first logger)."""
        return str(self.output_dir)

    @rank_zero_only
    def start(self) -> None:
        """Open (or continue) the tracker's run; idempotent. Lightning's first log call does it too."""
        if self._started:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        previous = read_tracker_state(self.output_dir).get(self.tracker_name, {}).get("run_id")
        state = self._start(previous if self.resume_step > 0 else None)
        self.run_id = state["run_id"]
        write_tracker_state(self.output_dir, self.tracker_name, state)
        self._started = True

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """The run's resolved config is logged when the run starts; the module's own hparams are not needed."""
        self.start()

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.start()
        step = int(step or 0)
        kept = {k: float(v) for k, v in metrics.items() if not self.holds(k, step)}
        if kept:
            self._log(kept, step)

    @rank_zero_only
    def log_image_file(self, key: str, path: str | Path, step: int) -> None:
        """Log the image file at ``path`` (a sample grid, ``health.png``) under ``key`` at ``step``."""
        self.start()
        if not self.holds(key, int(step)):
            self._log_image_file(key, Path(path), int(step))

    @rank_zero_only
    def finalize(self, status: str) -> None:
        # "success" also ends each trainer.validate after fit: the run stays open until finish().
        if status != "success":
            self.finish(failed=True)

    @rank_zero_only
    def finish(self, failed: bool = False) -> None:
        """Close the run (the end of ``advtune train``, or a failure)."""
        if self._started:
            self._finish(failed)
            self._started = False
