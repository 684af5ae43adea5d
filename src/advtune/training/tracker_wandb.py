"""``logger=[tensorboard,wandb]``: Weights & Biases, offline unless the user has set W&B up.

With no account and no network a run is written offline into ``output_dir/wandb/`` and the closing
lines print ``wandb sync output_dir/wandb``, which uploads it later. It is online when the user has
configured W&B: ``WANDB_API_KEY``, a ``wandb login`` (its ``~/.netrc`` entry), or ``WANDB_MODE``
(then W&B decides); ``logger.wandb.mode`` overrides all of them.

A resumed advtune run continues the same W&B run (``id`` from ``output_dir/trackers.json``,
``resume="allow"``). Offline, W&B writes each process's part as its own folder with the same id,
records the resume in it, and ``wandb sync`` uploads the parts of one run in order of start time
as that one run. Steps the run already holds are not logged again (:mod:`advtune.training.trackers`):
their values come from the transaction logs of the earlier parts (:mod:`.wandb_history`), and
online also from W&B's own ``run.step``. Metrics use advtune's step as W&B's ``_step``.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

from advtune.training.trackers import Tracker

__all__ = ["WandbTracker", "wandb_mode"]


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None  # where `wandb login` keeps the key
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(mode: str | None) -> str | None:
    """``online``/``offline`` as chosen, W&B's own choice (``None``) when ``WANDB_MODE`` is set, else
    ``online`` for a user with W&B credentials and ``offline`` for everyone else."""
    if mode is not None:
        return mode
    if os.environ.get("WANDB_MODE"):
        return None
    return "online" if _has_credentials() else "offline"


class WandbTracker(Tracker):
    """Metrics, sample grids, ``health.png`` and the resolved config to a W&B run.

    Args:
        output_dir, resume_step, run_config: given by ``advtune train`` (:class:`~.trackers.Tracker`).
        project: W&B project.
        name: run name shown by W&B (``None``: the run's ``run_name``).
        tags: W&B tags.
        entity: W&B user or team (``None``: the account's default).
        group: W&B run group (e.g. one per study).
        mode: ``online`` | ``offline`` | ``None`` (offline unless W&B is configured, see the module).
    """

    tracker_name = "wandb"

    def __init__(self, output_dir: str | Path, resume_step: int, run_config: dict[str, Any], project: str = "advtune",
                 name: str | None = None, tags: Sequence[str] = (), entity: str | None = None,
                 group: str | None = None, mode: str | None = None) -> None:
        if mode not in (None, "online", "offline"):
            raise ValueError(f"logger.wandb.mode must be online, offline or null, got {mode!r}")
        super().__init__(output_dir, resume_step, run_config)
        self.settings = dict(project=project, name=name or run_config.get("run_name"), tags=list(tags),
                             entity=entity, group=group, mode=wandb_mode(mode))
        self.run: Any = None

    @property
    def experiment(self) -> Any:
        """The ``wandb`` run (rank 0)."""
        self.start()
        return self.run

    def _start(self, previous_id: str | None) -> dict[str, Any]:
        import wandb

        from advtune.training import wandb_history

        earlier = wandb_history.run_files(self.output_dir / "wandb", previous_id) if previous_id else []
        run = wandb.init(dir=str(self.output_dir), id=previous_id, resume="allow" if previous_id else None,
                         config=self.run_config, allow_val_change=True, reinit="create_new",
                         settings=wandb.Settings(silent=True, console="off"), **self.settings)
        if previous_id:
            try:
                self._logged_until = wandb_history.last_logged_steps(earlier)
            except (OSError, ValueError) as error:  # a log W&B may change the layout of: log everything again
                import warnings

                warnings.warn(f"wandb: cannot read the earlier parts of run {previous_id} ({error}); "
                              "their last steps may be logged twice", stacklevel=2)
            if not run.offline:  # online: the server holds every step below run.step
                self._held_until = run.step - 1
        self.run = run
        return {"run_id": run.id, "offline": bool(run.offline), "dir": str(Path(run.dir).parent),
                "url": run.url if not run.offline else None, "project": run.project}

    def _log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def _log_image_file(self, key: str, path: Path, step: int) -> None:
        import wandb

        self.run.log({key: wandb.Image(str(path), caption=path.name)}, step=step)

    def _finish(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)
        self.run = None
