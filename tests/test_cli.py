"""The command line: fast help on every command, train/sample/export round trip, what a run leaves,
fresh discriminator reuse, a quiet console, DDP by default (and under torchrun)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from advtune.cli import main
from advtune.config import compose_config
from advtune.runner import build, load_run, train

ADVTUNE = [sys.executable, "-m", "advtune.cli"]


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys, advtune.cli as c\n"
            "for args in (['--help'], ['train', '--help'], ['sample', '--help'], ['export', '-h'], "
            "['validate-config', 'help']):\n"
            "    assert c.main(args) == 0\n"
            "assert 'torch' not in sys.modules and 'lightning' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "validate-config" in out and "experiment" in out and "digits_gan" in out
    assert "usage: advtune sample ckpt_path=FILE" in out and "num_samples=" in out and "(default 64)" in out
    assert "usage: advtune train" in out and "resume=auto|never" in out
    assert "usage: advtune export" in out and "usage: advtune validate-config" in out


@pytest.mark.parametrize("command", ["generate", "evaluate"])
def test_generate_and_evaluate_are_dispatched_lazily(command, capsys):
    import importlib.util

    code = main([command, "--help"])
    if importlib.util.find_spec(f"advtune.{command}") is None:
        assert code == 2
        assert capsys.readouterr().err.strip() == (f"error: `advtune {command}` is not available in this "
                                                   f"installation (module advtune.{command} not found)")
    else:
        assert code == 0 and capsys.readouterr().out.strip() == importlib.import_module(f"advtune.{command}").HELP.strip()


def test_unknown_command_and_bad_experiment_are_one_line_errors(capsys):
    assert main(["trian"]) == 2
    assert main(["validate-config", "experiment=nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: unknown command 'trian'")
    assert err[1].startswith("error: unknown experiment 'nope'; valid:")


def test_train_writes_outputs_then_sample_and_export(tmp_path, gan_overrides, capsys):
    out = tmp_path / "run"
    # 19 updates: shorter than val_check_interval (1000) and not a multiple of checkpoint_every (8).
    metrics = train(compose_config(gan_overrides(out, **{"trainer.max_steps": 19, "checkpoint_every": 8})))
    assert "val/fid_digits" in metrics and np.isfinite(metrics["val/fid_digits"])  # the final validation
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "metrics.csv").is_file()
    assert [p.name for p in (out / "samples").glob("*.png")] == ["samples_step000019.png"]
    assert list((out / "tensorboard").glob("events.out.tfevents*"))
    header = (out / "metrics.csv").read_text().splitlines()[0]
    for key in ("g/total", "d/loss", "d/real_acc", "d/fake_acc", "lr/g", "lr/d", "val/fid_digits"):
        assert key in header
    # What ships, at the end and every checkpoint_every generator updates.
    for folder in (out, out / "export" / "step000008", out / "export" / "step000016"):
        assert {"generator.pt", "discriminator.safetensors", "discriminator.yaml"} <= {p.name for p in folder.iterdir()}
    assert sorted(p.name for p in (out / "export").iterdir()) == ["step000008", "step000016"]
    assert not list(out.rglob(".export-*"))
    printed = capsys.readouterr().out
    assert "advtune digits_gan | cpu x1 | 32-true | G 9.63k params (9.63k trainable) | D 6.27k params" in printed
    assert "ships:       discriminator.safetensors, discriminator.yaml, generator.pt" in printed
    assert "samples:     samples/samples_step000019.png" in printed
    assert "health:      health.json, health.png (final status: " in printed

    ckpt = out / "checkpoints" / "last.ckpt"
    assert main(["sample", f"ckpt_path={ckpt}", "num_samples=100", f"out_dir={tmp_path / 's'}"]) == 0
    samples = np.load(tmp_path / "s" / "samples.npy")
    assert samples.shape == (100, 1, 8, 8) and samples.min() >= -1 and samples.max() <= 1
    grid = np.asarray(Image.open(tmp_path / "s" / "samples.png"))
    assert grid.shape == ((8 * 9 + 1) * 4,) * 2  # the first 64 only: 8 x 8 tiles of 8 px + 1 px gap, x4
    assert (grid[:4] == 255).all() and (grid[:, 36:40] == 255).all()  # white gaps around and between tiles
    assert "the first 64" in capsys.readouterr().out

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


# Lines every run printed before advtune quieted its dependencies.
NOISE = ("GPU available", "TPU available", "💡 Tip", "limit_val_batches", "LeafSpec", "Epoch 0/", "distributed_backend",
         "torchao", "Enum subclass")


@pytest.mark.ddp
@pytest.mark.parametrize("job", ["digits_gan", "flux_lora_latent_adv"])
def test_ddp_on_two_cpu_processes(tmp_path, gan_overrides, job):
    ddp = {"trainer.max_steps": 4, "trainer.devices": 2}  # strategy auto: DDP that allows unused parameters
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
    printed = proc.stdout + proc.stderr
    assert printed.count(f"advtune {job} | cpu x2 | 32-true |") == 1  # the header, from rank 0 only
    assert [noise for noise in NOISE if noise in printed] == []


@pytest.mark.ddp
@pytest.mark.slow
def test_torchrun_two_processes(tmp_path, gan_overrides):
    """The command of docs/MULTINODE.md on one machine: torchrun starts the processes, Lightning joins them."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "advtune.cli", "train", *gan_overrides(tmp_path, **{"trainer.max_steps": 4, "trainer.devices": 2})]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4 and (tmp_path / "generator.pt").is_file()
    assert (proc.stdout + proc.stderr).count("advtune digits_gan | cpu x2 |") == 1


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


@pytest.mark.parametrize(("override", "expected"), [
    ("monitor.patience=abc", "error: monitor.patience='abc' is not valid: expected an integer"),
    ("module.generator_optimizer.lr=abc", "error: module.generator_optimizer.lr='abc' is not valid: expected a number > 0"),
    ("trainer.devices=abc", "error: trainer.devices='abc' is not valid: expected an integer >= 1, -1 (all), auto"),
    ("data.num_workers=-7", "error: data.num_workers=-7 is not valid: expected an integer >= 0"),
])
def test_validate_config_refuses_what_train_would(override, expected, tmp_path, capsys):
    """The issue's four examples: validate-config used to print "ok" for them, then train crashed."""
    assert main(["validate-config", "experiment=digits_gan_stable", f"output_dir={tmp_path / 'run'}", override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(expected) and "\n" not in err, err
    assert not (tmp_path / "run").exists()


def test_validate_config_writes_nothing_and_names_the_resume_point(tmp_path, gan_overrides, capsys):
    out = tmp_path / "run"
    assert main(["validate-config", *gan_overrides(out)]) == 0
    assert capsys.readouterr().out.strip() == ("ok: every object of the run builds and the Trainer accepts its "
                                               f"arguments (output_dir={out})")
    assert not out.exists()
    train(compose_config(gan_overrides(out, **{"trainer.max_steps": 2})))
    stale = out / "checkpoints" / ".last.ckpt.4242.tmp"  # what train would clean up; validate leaves it
    stale.write_bytes(b"x")
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in out.rglob("*") if p.is_file()}
    assert main(["validate-config", *gan_overrides(out), "trainer.max_steps=4"]) == 0
    assert f"resumes {out / 'checkpoints' / 'last.ckpt'} at generator update 2" in capsys.readouterr().out
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in out.rglob("*") if p.is_file()} == before
    assert main(["validate-config", *gan_overrides(out), "discriminator.hidden_dims=[8]"]) == 2  # train refuses too
    assert "was trained with a different config (discriminator.hidden_dims" in capsys.readouterr().err


def test_validate_config_checks_an_unwritable_output_dir_without_writing(tmp_path, gan_overrides, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["validate-config", *gan_overrides(blocker / "run")]) == 2
    assert capsys.readouterr().err.strip() == f"error: output_dir {blocker / 'run'} is not writable: {blocker} is not a folder"


@pytest.mark.parametrize(("argument", "expected"), [
    ("seed=-1", "error: seed=-1 is not valid: expected an integer from 0 to 4294967295"),
    ("out_dir=", "error: out_dir='' is not valid: expected a folder path"),
])
def test_sample_arguments_are_checked(argument, expected, tmp_path, capsys):
    assert main(["sample", f"ckpt_path={tmp_path / 'x.ckpt'}", argument]) == 2
    assert capsys.readouterr().err.strip() == expected
