"""Exact resume: an interrupted run, resumed from its checkpoint, ends with the same weights.

Ways to continue a run: ``ckpt_path=FILE``, ``ckpt_path=last`` (the newest checkpoint), or the
same command again (``resume=auto``). None of them leaves versioned duplicates (``last-v1.ckpt``), and ``metrics.csv``
continues with each logging step once.
"""

from __future__ import annotations

import csv

import pytest
import torch

from advtune.config import compose_config
from advtune.runner import train
from advtune.training.checkpoint_io import load_checkpoint_file


def _weights(path):
    return load_checkpoint_file(path)


@pytest.mark.parametrize(("extra", "how"), [({}, "file"), ({"schedule.discriminator_steps": 2}, "rerun")])
def test_interrupted_run_resumes_to_identical_state(tmp_path, gan_overrides, extra, how):
    # 30 generator updates cross an epoch boundary (digits: 22 batches of 64) and the cut at 13 is mid-epoch.
    common = {"checkpoint_every": 13, **extra}
    train(compose_config(gan_overrides(tmp_path / "full", **{"trainer.max_steps": 30, **common})))
    train(compose_config(gan_overrides(tmp_path / "cut", **{"trainer.max_steps": 13, **common})))
    resumed_ckpt = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    assert _weights(resumed_ckpt)["global_step"] == 13
    resume = {"file": {"ckpt_path": resumed_ckpt}, "rerun": {}}[how]
    train(compose_config(gan_overrides(tmp_path / "cut", **{"trainer.max_steps": 30, **resume, **common})))

    full = _weights(tmp_path / "full" / "checkpoints" / "last.ckpt")
    cut = _weights(tmp_path / "cut" / "checkpoints" / "last.ckpt")
    assert full["global_step"] == cut["global_step"] == 30
    assert full["advtune"]["batch_step"] == cut["advtune"]["batch_step"]
    for key, value in full["state_dict"].items():
        torch.testing.assert_close(cut["state_dict"][key], value, rtol=0, atol=0, msg=key)
    for opt_full, opt_cut in zip(full["optimizer_states"], cut["optimizer_states"]):
        for pid, state in opt_full["state"].items():
            torch.testing.assert_close(opt_cut["state"][pid]["exp_avg"], state["exp_avg"], rtol=0, atol=0)
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == \
        ["last.ckpt", "step000013.ckpt", "step000026.ckpt"]  # overwritten, never last-v1.ckpt
    rows = {}
    for name in ("full", "cut"):
        with open(tmp_path / name / "metrics.csv") as file:
            table = list(csv.DictReader(file))
        rows[name] = {"train": [(r["step"], r["g/total"]) for r in table if r["g/total"]],
                      "val": [r["step"] for r in table if r["val/fid_digits"]]}
    # Each run ends validated at its last step (the cut one at 13 updates too), where it also logs.
    cut_end, end = rows["cut"]["val"][0], rows["full"]["val"][0]
    assert rows["full"]["val"] == [end] and rows["cut"]["val"] == [cut_end, end]
    # The first run's rows are kept and each step is logged once.
    assert [row for row in rows["cut"]["train"] if row[0] != cut_end] == rows["full"]["train"]


def test_checkpoint_loads_without_unpickling_and_holds_both_players(tmp_path, gan_overrides):
    train(compose_config(gan_overrides(tmp_path, **{"trainer.max_steps": 3})))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert len(ckpt["optimizer_states"]) == 2
    keys = ckpt["state_dict"].keys()
    assert any(k.startswith("task.generator.") for k in keys) and any(k.startswith("discriminator.") for k in keys)
    assert ckpt["advtune"]["discriminator_updates"] == 3 and "rng" in ckpt["advtune"]
    assert "experiment" not in ckpt["advtune"]["config"] and "task:" in ckpt["advtune"]["config"]


def test_newest_checkpoint_is_the_last_written(tmp_path):
    import os

    from advtune.training.checkpoint_io import newest_checkpoint, remove_stale_temporaries

    assert newest_checkpoint(tmp_path / "none") is None
    for i, name in enumerate(["step000010.ckpt", "last.ckpt", "step000020.ckpt", ".last.ckpt.x1.tmp"]):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, ns=(10**9 * i, 10**9 * i))
    # Killed between the periodic checkpoint and last.ckpt: the periodic one is newer and is picked.
    assert newest_checkpoint(tmp_path).name == "step000020.ckpt"
    os.utime(tmp_path / "last.ckpt", ns=(2 * 10**9, 2 * 10**9))
    assert newest_checkpoint(tmp_path).name == "last.ckpt"  # same time: last.ckpt
    assert [p.name for p in remove_stale_temporaries(tmp_path)] == [".last.ckpt.x1.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "step000010.ckpt", "step000020.ckpt"]


def test_config_differences_ignore_length_logging_and_keys_added_at_null():
    from omegaconf import OmegaConf

    from advtune.config import config_differences

    stored = OmegaConf.create({"seed": 0, "trainer": {"max_steps": 10, "log_every_n_steps": 5, "precision": "32-true"},
                               "task": {"lr": 1e-3, "dims": [8, 8]}, "output_dir": "a"})
    current = OmegaConf.create({"seed": 0, "trainer": {"max_steps": 99, "log_every_n_steps": 1, "precision": "32-true"},
                                "task": {"lr": 1e-3, "dims": [8, 8], "ema": None}, "output_dir": "b", "resume": "auto"})
    assert config_differences(stored, current) == []
    current.task.dims, current.trainer.precision, current.task.ema = [8, 16], "bf16-mixed", 0.99
    assert config_differences(stored, current) == [
        "task.dims: [8, 8] -> [8, 16]", "task.ema: None -> 0.99", "trainer.precision: '32-true' -> 'bf16-mixed'"]
