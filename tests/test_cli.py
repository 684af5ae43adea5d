"""The command line: fast help, train/sample/export round trip, fresh discriminator reuse, DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from advtune.cli import main
from advtune.config import compose_config
from advtune.runner import build, load_run, train

ADVTUNE = [sys.executable, "-m", "advtune.cli"]


def test_help_is_fast_and_imports_nothing_heavy():
    code = "import sys, advtune.cli as c; c.main(['--help']); assert 'torch' not in sys.modules and 'lightning' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "validate-config" in out and "experiment" in out and "digits_gan" in out


def test_unknown_command_and_bad_experiment_are_one_line_errors(capsys):
    assert main(["trian"]) == 2
    assert main(["validate-config", "experiment=nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: unknown command 'trian'")
    assert err[1].startswith("error: unknown experiment 'nope'; valid:")


def test_train_writes_outputs_then_sample_and_export(tmp_path, gan_overrides, capsys):
    out = tmp_path / "run"
    metrics = train(compose_config(gan_overrides(out, **{"trainer.max_steps": 20, "trainer.val_check_interval": 20})))
    assert "val/fid_digits" in metrics and np.isfinite(metrics["val/fid_digits"])
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "metrics.csv").is_file()
    assert list((out / "samples").glob("*.png")) and list((out / "tensorboard").glob("events.out.tfevents*"))
    header = (out / "metrics.csv").read_text().splitlines()[0]
    for key in ("g/total", "d/loss", "d/real_acc", "d/fake_acc", "lr/g", "lr/d"):
        assert key in header

    ckpt = out / "checkpoints" / "last.ckpt"
    assert main(["sample", f"ckpt_path={ckpt}", "num_samples=16", f"out_dir={tmp_path / 's'}"]) == 0
    samples = np.load(tmp_path / "s" / "samples.npy")
    assert samples.shape == (16, 1, 8, 8) and samples.min() >= -1 and samples.max() <= 1
    assert (tmp_path / "s" / "samples.png").is_file()

    assert main(["export", f"ckpt_path={ckpt}", f"out_dir={tmp_path / 'e'}"]) == 0
    disc_file = tmp_path / "e" / "discriminator.safetensors"
    saved = load_file(str(disc_file))

    # A new run starts from a fresh generator and the exported discriminator ...
    cfg = compose_config(gan_overrides(tmp_path / "run2", init_discriminator=disc_file))
    disc = build(cfg, with_data=False).module.discriminator
    for key, value in disc.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    # ... or from the exported generator with a fresh discriminator warmed up alone first.
    cfg = compose_config(gan_overrides(tmp_path / "run3", init_generator=tmp_path / "e" / "generator.pt",
                                       **{"schedule.discriminator_warmup_steps": 5, "trainer.max_steps": 1}))
    module = build(cfg, with_data=False).module
    reference, _ = load_run(ckpt)
    for key, value in module.task.generator.state_dict().items():
        torch.testing.assert_close(value, reference.task.generator.state_dict()[key])
    assert any(not torch.equal(v, saved[k]) for k, v in module.discriminator.state_dict().items())


def test_sample_refuses_a_pickle_payload(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    bad = tmp_path / "bad.ckpt"
    torch.save({"x": Payload()}, bad)
    assert main(["sample", f"ckpt_path={bad}"]) == 2
    assert not (tmp_path / "pwned").exists()
    assert "not loadable without unpickling code" in capsys.readouterr().err


@pytest.mark.ddp
@pytest.mark.parametrize("job", ["digits_gan", "flux_lora_latent_adv"])
def test_ddp_on_two_cpu_processes(tmp_path, gan_overrides, job):
    ddp = {"trainer.max_steps": 4, "trainer.devices": 2, "trainer.strategy": "ddp_find_unused_parameters_true"}
    if job == "digits_gan":
        overrides = gan_overrides(tmp_path, **ddp)
    else:  # both stages: one flow-matching step, one D-only step, then hybrid
        overrides = [f"experiment={job}", f"output_dir={tmp_path}", "latent_adv_start_step=1", "disc_warmup_steps=1",
                     "trainer.val_check_interval=1000", "trainer.enable_progress_bar=false"]
        overrides += [f"{k}={v}" for k, v in ddp.items()]
    proc = subprocess.run(ADVTUNE + ["train", *overrides], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    assert ckpt["advtune"]["discriminator_updates"] == 4  # flux: 1 D-only step + 3 hybrid steps


def test_checkpoint_cannot_widen_its_own_allow_list(tmp_path, gan_overrides, capsys):
    train(compose_config(gan_overrides(tmp_path / "run", **{"trainer.max_steps": 2})))
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    crafted = ckpt["advtune"]["config"].replace("_target_: advtune.tasks.gan.DigitsGANTask", "_target_: os.system")
    crafted = crafted.replace("allowed_target_prefixes: []", "allowed_target_prefixes:\n- os.")
    assert "os.system" in crafted and "- os." in crafted
    ckpt["advtune"]["config"] = crafted
    torch.save(ckpt, tmp_path / "crafted.ckpt")
    assert main(["sample", f"ckpt_path={tmp_path / 'crafted.ckpt'}", f"out_dir={tmp_path / 's'}"]) == 2
    assert "'os.system' at 'task' is not allowed" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
