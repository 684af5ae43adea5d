"""Exact resume with every stateful stabiliser on: generator EMA, ADA's p, LeCam's anchors, R1."""

from __future__ import annotations

import torch

from advtune.config import compose_config
from advtune.runner import train
from advtune.training.checkpoint_io import load_checkpoint_file

STABILISERS = {"module.ema_decay": 0.99, "adversarial.lecam_weight": 0.1, "adversarial.r1_weight": 0.1,
               "adversarial.augment": "{_target_:advtune.augment.AdaptiveAugment,initial_p:0.3,interval:2,speed_images:2000}"}


def test_interrupted_run_with_stabilisers_resumes_bit_identical(tmp_path, gan_overrides):
    common = {"checkpoint_every": 13, **STABILISERS}
    train(compose_config(gan_overrides(tmp_path / "full", **{"trainer.max_steps": 30, **common})))
    train(compose_config(gan_overrides(tmp_path / "cut", **{"trainer.max_steps": 13, **common})))
    resumed = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    train(compose_config(gan_overrides(tmp_path / "cut", **{"trainer.max_steps": 30, "ckpt_path": resumed, **common})))
    full = load_checkpoint_file(tmp_path / "full" / "checkpoints" / "last.ckpt")
    cut = load_checkpoint_file(tmp_path / "cut" / "checkpoints" / "last.ckpt")
    for key, value in full["state_dict"].items():  # the weights and the EMA (extra state)
        torch.testing.assert_close(cut["state_dict"][key], value, rtol=0, atol=0, msg=key)
    torch.testing.assert_close(cut["advtune"]["calculator"], full["advtune"]["calculator"], rtol=0, atol=0)
    assert full["state_dict"]["ema._extra_state"]["updates"] == 30
    assert full["advtune"]["calculator"]["augment"]["p"].item() != 0.3  # ADA moved p
    assert full["advtune"]["calculator"]["lecam"]["steps"] == 30
