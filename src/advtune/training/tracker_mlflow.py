"""``logger=mlflow``: an MLflow run with every metric, the sample grids, ``health.png`` and the config.

Without a tracking URI (``logger.mlflow.tracking_uri`` or ``MLFLOW_TRACKING_URI``) the run goes to a
local store inside the run's folder: ``sqlite:///output_dir/mlflow.db``, artifacts under
``output_dir/mlartifacts``. MLflow 3.18's file store (``./mlruns``) refuses to start unless
``MLFLOW_ALLOW_FILE_STORE=true`` ("maintenance mode"), so the local store is MLflow's recommended
SQLite one; ``mlflow ui --backend-store-uri sqlite:///output_dir/mlflow.db`` shows it.

The config goes in as parameters (flat keys, ``trainer.max_steps``) and as the ``config.yaml``
artifact. A resumed advtune run continues the same MLflow run (its id is in
``output_dir/trackers.json``): MLflow parameters cannot change, so a key changed on resume
(``trainer.max_steps``) keeps its first value and the new config is in ``config.yaml``; metric
values are appended, never replaced, so the steps the run holds (read back with
``MlflowClient.get_metric_history``) are not logged again.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from advtune.training.trackers import HEALTH_IMAGE_KEY, Tracker, flat_config

__all__ = ["MLflowTracker"]

_PARAM_VALUE_LIMIT = 6000  # MLflow's limit on a parameter value's length
_BATCH = 100  # MLflow's limit on parameters per log_batch call


class MLflowTracker(Tracker):
    """Log a run to MLflow through ``MlflowClient``.

    Args:
        output_dir, resume_step, run_config: given by ``advtune train`` (:class:`~.trackers.Tracker`).
        experiment_name: MLflow experiment (created when missing).
        run_name: MLflow run name (``None``: the run's ``run_name``).
        tags: MLflow tags ``{name: value}``.
        tracking_uri: MLflow tracking URI (``None``: ``MLFLOW_TRACKING_URI``, else the local store above).
    """

    tracker_name = "mlflow"

    def __init__(self, output_dir: str | Path, resume_step: int, run_config: dict[str, Any],
                 experiment_name: str = "advtune", run_name: str | None = None, tags: dict[str, Any] | None = None,
                 tracking_uri: str | None = None) -> None:
        super().__init__(output_dir, resume_step, run_config)
        self.experiment_name = experiment_name
        self.run_name = run_name or run_config.get("run_name")
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.local = not (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
        self.tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
            f"sqlite:///{(self.output_dir / 'mlflow.db').resolve()}"
        self.client: Any = None

    @property
    def experiment(self) -> Any:
        """The ``MlflowClient`` (rank 0); the run is :attr:`run_id`."""
        self.start()
        return self.client

    def _start(self, previous_id: str | None) -> dict[str, Any]:
        from mlflow.entities import RunStatus
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        existing = set()
        if previous_id:
            try:
                run = self.client.get_run(previous_id)
            except MlflowException:
                run = None  # the store was moved or wiped: a new run
            if run is not None:
                self.client.update_run(previous_id, status=RunStatus.to_string(RunStatus.RUNNING))
                existing = set(run.data.params)
                self._logged_until = {key: max(m.step for m in self.client.get_metric_history(previous_id, key))
                                      for key in run.data.metrics}
                self.run_id = previous_id
        if self.run_id is None:
            self.run_id = self.client.create_run(self._experiment_id(), run_name=self.run_name, tags=self.tags).info.run_id
        self._log_config(existing)
        return {"run_id": self.run_id, "tracking_uri": self.tracking_uri, "local": self.local}

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            return found.experiment_id
        location = (self.output_dir / "mlartifacts").resolve().as_uri() if self.local else None
        return self.client.create_experiment(self.experiment_name, artifact_location=location)

    def _log_config(self, existing: set[str]) -> None:
        from mlflow.entities import Param
        from omegaconf import OmegaConf

        params = [Param(key, str(value)[:_PARAM_VALUE_LIMIT]) for key, value in flat_config(self.run_config).items()
                  if key not in existing]
        for start in range(0, len(params), _BATCH):
            self.client.log_batch(self.run_id, params=params[start:start + _BATCH])
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "config.yaml"
            path.write_text(OmegaConf.to_yaml(OmegaConf.create(self.run_config)))
            self.client.log_artifact(self.run_id, str(path))

    def _log(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def _log_image_file(self, key: str, path: Path, step: int) -> None:
        # Sample grids keep their file names (which carry the step) under samples/; health.png at the top.
        self.client.log_artifact(self.run_id, str(path), None if key == HEALTH_IMAGE_KEY else "samples")

    def _finish(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")
