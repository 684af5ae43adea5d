"""The `logger` config group: TensorBoard, W&B (offline, no account) and MLflow (local SQLite store) each get
every metric, the sample grids, health.png and the resolved config, read back through each library's own
reader; a resumed run continues the same W&B and MLflow runs without logging a step twice."""

from __future__ import annotations

import csv
import json

import pytest

from advtune.config import ConfigError, compose_config
from advtune.runner import train
from advtune.training import wandb_history
from advtune.training.trackers import flat_config, image_key, read_tracker_state

ALL = "logger=[tensorboard,wandb,mlflow]"


@pytest.fixture
def no_wandb_account(tmp_path, monkeypatch):
    """No W&B key, no `wandb login` (~/.netrc), no WANDB_MODE: a user without an account."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / "wandb"))


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory):
    """An empty MLflow SQLite store, made once: creating one runs MLflow's schema migrations (~10 s here)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def _with_store(out, store):
    """Put a copy of the empty store where advtune's default tracking URI points (output_dir/mlflow.db)."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(store, out / "mlflow.db")
    return out


def _csv(out, key):
    with open(out / "metrics.csv") as file:
        return {int(r["step"]): float(r[key]) for r in csv.DictReader(file) if r.get(key)}


def _wandb(out):
    """(history rows of every part of the run, oldest first; the parts' files) through the .wandb reader."""
    run_id = read_tracker_state(out)["wandb"]["run_id"]
    files = wandb_history.run_files(out / "wandb", run_id)
    return [row for path in files for row in wandb_history.history_rows(path)], files


def _mlflow(out):
    from mlflow.tracking import MlflowClient

    state = read_tracker_state(out)["mlflow"]
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    return client, client.get_run(state["run_id"])


def _series(rows, key):
    return [(row["_step"], row[key]) for row in rows if key in row]


def test_every_tracker_gets_metrics_images_and_config(tmp_path, gan_overrides, no_wandb_account, mlflow_store, capfd):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = _with_store(tmp_path / "run", mlflow_store)
    train(compose_config(gan_overrides(out, **{"trainer.max_steps": 20, "trainer.val_check_interval": 10}) + [ALL]))
    printed = capfd.readouterr()
    assert f"wandb sync {out / 'wandb'}" in printed.out and "mlflow ui --backend-store-uri sqlite:///" in printed.out
    noise = printed.out + printed.err
    assert "wandb:" not in noise and "INFO mlflow" not in noise and "LyCORIS" not in noise
    loss = _csv(out, "d/loss")
    assert len(loss) >= 3

    rows, files = _wandb(out)  # W&B: offline, its run folder inside output_dir, read back from the .wandb log
    assert len(files) == 1 and files[0].parent.name.startswith("offline-run-")
    assert [step for step, _ in _series(rows, "d/loss")] == sorted(loss)
    assert all(value == pytest.approx(loss[step], rel=1e-6) for step, value in _series(rows, "d/loss"))
    grids = _series(rows, "samples/samples")
    assert len(grids) == 2 and all(image["_type"] == "image-file" for _, image in grids)  # validations at 10, 20
    assert _series(rows, "health_plot")[0][1]["format"] == "png"
    run_record = next(r.run for r in wandb_history.read_records(files[0]) if r.WhichOneof("record_type") == "run")
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert config["trainer"]["max_steps"] == 20 and config["output_dir"] == str(out)

    client, run = _mlflow(out)  # MLflow: the local SQLite store under output_dir
    assert (out / "mlflow.db").is_file() and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "d/loss")
    assert [(m.step, pytest.approx(m.value, rel=1e-6)) for m in history] == sorted(loss.items())
    assert run.data.params["trainer.max_steps"] == "20" and run.data.params["task._target_"].startswith("advtune.")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    samples = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert {"config.yaml", "health.png"} <= artifacts and len(samples) == 2

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("d/loss")] == sorted(loss)
    assert {"health_plot", "samples/samples"} <= set(events.Tags()["images"])
    assert "trainer.max_steps: 20" in (out / "tensorboard" / "hparams.yaml").read_text()


def test_resume_continues_the_same_runs_without_logging_a_step_twice(tmp_path, gan_overrides, no_wandb_account,
                                                                    mlflow_store):
    out = _with_store(tmp_path / "run", mlflow_store)
    common = {"checkpoint_every": 10, "trainer.val_check_interval": 1000}
    train(compose_config(gan_overrides(out, **{"trainer.max_steps": 25, **common}) + [ALL]))
    first = read_tracker_state(out)
    before = _csv(out, "g/total")
    (out / "checkpoints" / "last.ckpt").unlink()  # as if killed after step 25: the newest checkpoint is step 20
    train(compose_config(gan_overrides(out, **{"trainer.max_steps": 40, **common}) + [ALL]))
    after = _csv(out, "g/total")
    assert {k: v for k, v in after.items() if k in before} == before  # exact resume: the same values again

    assert read_tracker_state(out)["wandb"]["run_id"] == first["wandb"]["run_id"]
    rows, files = _wandb(out)
    assert len(files) == 2  # one part per process, the second recorded as a resume of the same run
    resumed = next(r.run for r in wandb_history.read_records(files[1]) if r.WhichOneof("record_type") == "run")
    assert resumed.resume and resumed.run_id == first["wandb"]["run_id"]
    steps = [step for step, _ in _series(rows, "g/total")]
    assert steps == sorted(after) and len(steps) == len(set(steps))  # every logging step once, over both parts
    assert all(value == pytest.approx(after[step], rel=1e-6) for step, value in _series(rows, "g/total"))

    client, run = _mlflow(out)
    assert run.info.run_id == first["mlflow"]["run_id"] and run.info.status == "FINISHED"
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "g/total")]
    assert [step for step, _ in history] == sorted(after)  # no step twice
    assert all(value == pytest.approx(after[step], rel=1e-6) for step, value in history)
    assert run.data.params["trainer.max_steps"] == "25"  # MLflow parameters are write-once: the first value stays


def test_logger_choices_and_bad_values_are_one_line(tmp_path, gan_overrides):
    assert set(compose_config([]).logger) == {"tensorboard"}
    assert set(compose_config(["logger=[tensorboard,wandb]"]).logger) == {"tensorboard", "wandb"}
    assert set(compose_config(["logger=mlflow"]).logger) == {"mlflow"}
    with pytest.raises(ConfigError, match="unknown logger 'wandbx'; valid: mlflow, tensorboard, wandb"):
        compose_config(["logger=[tensorboard,wandbx]"])
    with pytest.raises(ConfigError, match="cannot build logger 'wandb'.*mode must be online, offline or null"):
        train(compose_config(gan_overrides(tmp_path, **{"trainer.max_steps": 1}) + ["logger=wandb",
                                                                                  "logger.wandb.mode=cloud"]))


def test_metrics_csv_only_and_a_changed_logger_on_resume(tmp_path, gan_overrides, no_wandb_account, mlflow_store):
    train(compose_config(gan_overrides(tmp_path, **{"trainer.max_steps": 5}) + ["logger=[]"]))
    assert (tmp_path / "metrics.csv").is_file() and not (tmp_path / "tensorboard").exists()
    _with_store(tmp_path, mlflow_store)
    train(compose_config(gan_overrides(tmp_path, **{"trainer.max_steps": 10}) + ["logger=mlflow"]))  # allowed
    client, run = _mlflow(tmp_path)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "g/total")][0] >= 5  # from the resume on


def test_wandb_mode_follows_the_users_setup(tmp_path, monkeypatch, no_wandb_account):
    from advtune.training.tracker_wandb import wandb_mode

    assert wandb_mode(None) == "offline" and wandb_mode("online") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(None) is None  # W&B's own setting decides
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "home" / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    (tmp_path / "home" / ".netrc").chmod(0o600)
    assert wandb_mode(None) == "online"  # `wandb login` was run


def test_flat_config_and_image_keys():
    assert flat_config({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": {}}) == {"a.b": 1, "a.c": "[1, 2]", "d": "null",
                                                                            "e": "{}"}
    from pathlib import Path

    assert [image_key(Path(p)) for p in ("prompts_0000012.png", "samples_step000500.png", "grid.png")] == \
        ["prompts", "samples", "grid"]


def test_a_truncated_wandb_log_yields_the_records_before_the_cut(tmp_path, no_wandb_account):
    import wandb

    run = wandb.init(dir=str(tmp_path), mode="offline", settings=wandb.Settings(silent=True, console="off"))
    for step in range(50):
        run.log({"x": float(step)}, step=step)
    run.finish()
    wandb.teardown()  # the service process closes the file: under load finish() returned before its last write
    path = wandb_history.run_files(tmp_path / "wandb", run.id)[0]
    full = [row["x"] for row in wandb_history.history_rows(path)]
    assert full == [float(s) for s in range(50)]
    cut = tmp_path / "cut.wandb"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    partial = [row["x"] for row in wandb_history.history_rows(cut)]
    assert 0 < len(partial) < 50 and partial == full[: len(partial)]
    with pytest.raises(ValueError, match="not a W&B transaction log"):
        list(wandb_history.read_records(tmp_path / "wandb" / "debug.log"))
