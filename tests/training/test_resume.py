"""Exact resume: an interrupted run, resumed from its checkpoint, ends with the same weights."""

from __future__ import annotations

import pytest
import torch

from advtune.config import compose_config
from advtune.runner import train
from advtune.training.checkpoint_io import load_checkpoint_file


def _weights(path):
    return load_checkpoint_file(path)


@pytest.mark.parametrize("extra", [{}, {"schedule.discriminator_steps": 2}])
def test_interrupted_run_resumes_to_identical_state(tmp_path, gan_overrides, extra):
    # 30 generator updates cross an epoch boundary (digits: 22 batches of 64) and the cut at 13 is mid-epoch.
    common = {"checkpoint_every": 13, **extra}
    train(compose_config(gan_overrides(tmp_path / "full", **{"trainer.max_steps": 30, **common})))
    train(compose_config(gan_overrides(tmp_path / "cut", **{"trainer.max_steps": 13, **common})))
    resumed_ckpt = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    assert _weights(resumed_ckpt)["global_step"] == 13
    train(compose_config(gan_overrides(tmp_path / "cut", **{"trainer.max_steps": 30, "ckpt_path": resumed_ckpt, **common})))

    full = _weights(tmp_path / "full" / "checkpoints" / "last.ckpt")
    cut = _weights(tmp_path / "cut" / "checkpoints" / "last.ckpt")
    assert full["global_step"] == cut["global_step"] == 30
    assert full["advtune"]["batch_step"] == cut["advtune"]["batch_step"]
    for key, value in full["state_dict"].items():
        torch.testing.assert_close(cut["state_dict"][key], value, rtol=0, atol=0, msg=key)
    for opt_full, opt_cut in zip(full["optimizer_states"], cut["optimizer_states"]):
        for pid, state in opt_full["state"].items():
            torch.testing.assert_close(opt_cut["state"][pid]["exp_avg"], state["exp_avg"], rtol=0, atol=0)


def test_checkpoint_loads_without_unpickling_and_holds_both_players(tmp_path, gan_overrides):
    train(compose_config(gan_overrides(tmp_path, **{"trainer.max_steps": 3})))
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert len(ckpt["optimizer_states"]) == 2
    keys = ckpt["state_dict"].keys()
    assert any(k.startswith("task.generator.") for k in keys) and any(k.startswith("discriminator.") for k in keys)
    assert ckpt["advtune"]["discriminator_updates"] == 3 and "rng" in ckpt["advtune"]
    assert "experiment" not in ckpt["advtune"]["config"] and "task:" in ckpt["advtune"]["config"]
