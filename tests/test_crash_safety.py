"""Crash safety, proven: SIGKILL a training process again and again, re-run the same command each
time, and end with exactly the weights of a run that was never interrupted.

Half of the kills land inside a checkpoint write: ``ADVTUNE_TEST_PAUSE_IN_SAVE`` makes every save
wait between writing its temporary file and renaming it over the checkpoint, and the test kills the
process as soon as it sees such a temporary file. The other half land at random moments of training
(between saves, during exports, validation or shutdown). Each kill comes after at least one new
checkpoint write started, so every attempt makes some progress.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from advtune.config import compose_config
from advtune.runner import train

ADVTUNE = [sys.executable, "-m", "advtune.cli", "train"]
KILLS = 6  # at least 3 inside checkpoint writes, 3 at random moments
MAX_STEPS, EVERY = 90, 3  # 30 checkpoint steps, 2 writes each (stepNNNNNN.ckpt, last.ckpt)


def _temporaries(folder: Path) -> set[str]:
    try:
        return {name for name in os.listdir(folder) if name.endswith(".tmp")}
    except FileNotFoundError:
        return set()


def _kill_when(proc: subprocess.Popen, folder: Path, writes_to_see: int, extra_delay: float) -> bool:
    """SIGKILL ``proc`` once it started ``writes_to_see`` checkpoint writes (+ ``extra_delay`` s);
    ``False`` if it finished first. Temporaries of the previous, killed attempt do not count."""
    stale, seen = _temporaries(folder), set()
    while proc.poll() is None:
        seen |= _temporaries(folder) - stale
        if len(seen) >= writes_to_see:
            time.sleep(extra_delay)
            if proc.poll() is not None:
                return False
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    return False


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_identical_weights(tmp_path, gan_overrides):
    settings = {"trainer.max_steps": MAX_STEPS, "checkpoint_every": EVERY, "keep_checkpoints": 2}
    train(compose_config(gan_overrides(tmp_path / "reference", **settings)))

    out = tmp_path / "killed"
    command = ADVTUNE + gan_overrides(out, **settings)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADVTUNE_TEST_PAUSE_IN_SAVE": "0.1"}
    rng = random.Random(0)
    kills = {"in a checkpoint write": 0, "at a random moment": 0}
    while sum(kills.values()) < KILLS:
        in_save = kills["in a checkpoint write"] <= kills["at a random moment"]
        log = tmp_path / f"attempt{sum(kills.values())}.log"
        with open(log, "w") as stream:
            proc = subprocess.Popen(command, env=env, stdout=stream, stderr=subprocess.STDOUT)
        if in_save:  # the 2nd..5th write of this attempt: the ones before it complete
            killed = _kill_when(proc, out / "checkpoints", rng.randint(2, 5), 0.0)
        else:
            killed = _kill_when(proc, out / "checkpoints", 1, rng.uniform(0.0, 1.5))
        assert killed, f"the run finished before kill {sum(kills.values()) + 1}: {log.read_text()[-1500:]}"
        kills["in a checkpoint write" if in_save else "at a random moment"] += 1

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stdout

    reference = torch.load(tmp_path / "reference" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == reference["global_step"] == MAX_STEPS
    assert resumed["advtune"]["batch_step"] == reference["advtune"]["batch_step"]
    for key, value in reference["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)
    for opt_ref, opt_res in zip(reference["optimizer_states"], resumed["optimizer_states"]):
        for pid, state in opt_ref["state"].items():
            for name in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(opt_res["state"][pid][name], state[name], rtol=0, atol=0)
    assert not _temporaries(out / "checkpoints")  # stale temporaries of killed writes were cleaned up
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt", "step000087.ckpt",
                                                                     "step000090.ckpt"]  # keep_checkpoints=2
    assert (out / "generator.pt").is_file() and (out / "discriminator.safetensors").is_file()
