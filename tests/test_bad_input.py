"""Bad input gets one line: no traceback, exit code 2, and no checkpoint touched (mtime and bytes).

Each case runs ``advtune.cli.main`` in this process with the output captured, against a copy of a
finished tiny run, so "no checkpoint touched" means the run's files are exactly as they were.
"""

from __future__ import annotations

import resource
import shutil
import textwrap
import wave
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch

from advtune.cli import main
from advtune.config import compose_config
from advtune.runner import train


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from conftest import tiny_gan_overrides

    out = tmp_path_factory.mktemp("finished") / "run"
    train(compose_config(tiny_gan_overrides(out, **{"trainer.max_steps": 4, "checkpoint_every": 2})))
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)  # copy2: the copies keep the originals' mtimes
    return out


def _snapshot(out: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(out)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted((out / "checkpoints").glob("*")) if p.is_file()}


def _one_line_error(capsys, expected: str) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, captured.err[-2000:]
    assert expected in errors[0], errors[0]
    return errors[0]


def _run_into(out: Path, *extra: str) -> list[str]:
    from conftest import tiny_gan_overrides

    return ["train", *tiny_gan_overrides(out, **{"trainer.max_steps": 8, "checkpoint_every": 2}), *extra]


def test_the_same_run_is_continued_not_duplicated(run_copy, capsys):
    """The control of the refusals below: what may change on resume does, through ckpt_path=last."""
    assert main(_run_into(run_copy, "ckpt_path=last", "trainer.log_every_n_steps=3", "resume=never")) == 0
    assert f"resuming {run_copy / 'checkpoints' / 'last.ckpt'} at generator update 4" in capsys.readouterr().out
    assert torch.load(run_copy / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    assert not [p for p in run_copy.rglob("*") if "-v1" in p.name]


def test_wrong_value_type(run_copy, capsys):
    before = _snapshot(run_copy)
    assert main(_run_into(run_copy, "trainer.max_steps=abc")) == 2
    _one_line_error(capsys, "trainer.max_steps='abc' is not valid: expected an integer")
    assert main(_run_into(run_copy, "checkpoint_every=often")) == 2
    _one_line_error(capsys, "checkpoint_every='often' is not valid: expected an integer")
    assert main(_run_into(run_copy, "checkpoint_every=null")) == 2
    _one_line_error(capsys, "checkpoint_every=null is not valid: expected an integer")
    assert main(_run_into(run_copy, "module.generator_clip_norm=big")) == 2
    _one_line_error(capsys, "module.generator_clip_norm='big' is not valid: expected a number or null")
    assert main(_run_into(run_copy, "task.generator.latent_dim=1.5")) == 2
    _one_line_error(capsys, "task.generator.latent_dim=1.5 is not valid: expected an integer")
    assert _snapshot(run_copy) == before


@pytest.mark.parametrize("count", ["0", "-3"])
def test_sample_count_below_one(tmp_path, capsys, count):
    assert main(["sample", f"ckpt_path={tmp_path / 'any.ckpt'}", f"num_samples={count}"]) == 2
    _one_line_error(capsys, f"num_samples={count} is not valid: expected an integer >= 1")


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(_run_into(blocker / "run")) == 2
    _one_line_error(capsys, f"output_dir {blocker / 'run'} is not writable")


def test_full_disk_keeps_the_last_good_checkpoint(run_copy, capsys):
    before = _snapshot(run_copy)
    # A file-size limit makes every write past it fail with EFBIG, as a full disk does with ENOSPC;
    # the checkpoints of this run are ~5x larger than the exports written before them.
    limit = (run_copy / "checkpoints" / "last.ckpt").stat().st_size // 2
    assert max(p.stat().st_size for p in run_copy.glob("*.*")) < limit
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        code = main(_run_into(run_copy))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert code == 2
    _one_line_error(capsys, "cannot write checkpoint")
    assert _snapshot(run_copy) == before
    assert not list((run_copy / "checkpoints").glob(".*.tmp"))


def test_missing_and_foreign_checkpoints(run_copy, tmp_path, capsys):
    before = _snapshot(run_copy)
    assert main(_run_into(tmp_path / "new", f"ckpt_path={tmp_path / 'nope.ckpt'}")) == 2
    _one_line_error(capsys, f"checkpoint not found: {tmp_path / 'nope.ckpt'}")
    assert main(_run_into(tmp_path / "empty", "ckpt_path=last")) == 2
    _one_line_error(capsys, "ckpt_path=last: output_dir")

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    assert main(_run_into(tmp_path / "new2", f"ckpt_path={foreign}")) == 2
    _one_line_error(capsys, "is not an advtune training checkpoint")

    # A run of another config in the same output_dir: refused, naming what differs.
    assert main(_run_into(run_copy, "discriminator.hidden_dims=[16,8]", "seed=5")) == 2
    line = _one_line_error(capsys, "was trained with a different config")
    assert "discriminator.hidden_dims" in line and "seed: 0 -> 5" in line
    assert main(_run_into(run_copy, "resume=never")) == 2
    _one_line_error(capsys, "already holds a run")
    assert _snapshot(run_copy) == before
    assert not (tmp_path / "new").exists() or not (tmp_path / "new" / "checkpoints").exists()


def _write_wav(path: Path, seconds: float = 0.5, rate: int = 8000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes())


def test_corrupt_data_files_are_named_or_skipped(tmp_path, capsys, caplog):
    from advtune.data.audio import AudioDataModule

    for i in range(3):
        _write_wav(tmp_path / f"good{i}.wav")
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00not a wav at all")
    (tmp_path / "empty.flac").write_bytes(b"")
    out = tmp_path / "run"
    args = ["train", "experiment=audio_vae", f"output_dir={out}", f"data.root={tmp_path}", "trainer.max_steps=1"]
    assert main(args) == 2
    line = _one_line_error(capsys, "2 of 5 files in data.root")
    assert "broken.wav" in line and "empty.flac" in line and "data.skip_bad_files=true" in line
    assert not (out / "checkpoints").exists()

    data = AudioDataModule(root=str(tmp_path), skip_bad_files=True, val_fraction=0.34)
    with caplog.at_level("WARNING", logger="advtune.data.scan"):
        data.setup("fit")
    assert "skipping 2 of 5 files" in caplog.text and "broken.wav" in caplog.text
    used = {p.name for p in data.train_dataset.files + data.val_dataset.files}
    assert used == {"good0.wav", "good1.wav", "good2.wav"}


BAD_DISCRIMINATOR = textwrap.dedent('''
    import torch
    from torch import nn

    class TensorOnly(nn.Module):
        """Returns the logits tensor itself instead of ([logits], [[features]])."""

        def __init__(self, **kwargs):
            super().__init__()
            self.net = nn.Linear(64, 1)

        def forward(self, x, **cond):
            return self.net(x.flatten(1))
''')


def test_discriminator_breaking_the_output_contract(tmp_path, capsys, monkeypatch):
    (tmp_path / "my_discriminators.py").write_text(BAD_DISCRIMINATOR)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    args = _run_into(out, "discriminator._target_=my_discriminators.TensorOnly",
                     "allowed_target_prefixes=[my_discriminators.]")
    assert main(args) == 2
    _one_line_error(capsys, "discriminator TensorOnly breaks the output contract: it returned a tensor of shape")
    assert not list(out.glob("checkpoints/*"))


def _settings(steps: int, rate: float | None, flag: bool, mode: Literal["a", "b"], devices: int | str, name: str,
              precision: Literal[16, 32] | Literal["bf16"] | None = None) -> "NotImportedHere":  # noqa: F821
    """A signature to check values against (its return type names a class imported nowhere)."""


@pytest.mark.parametrize(("values", "problem"), [
    ({"steps": 3, "rate": 2, "flag": False, "mode": "b", "devices": "auto", "name": 5}, None),
    ({"rate": None, "steps": None}, None),  # null is left to the target (a default, or filled in later)
    ({"steps": "3"}, "x.steps='3' is not valid: expected an integer"),
    ({"steps": 2.5}, "x.steps=2.5 is not valid: expected an integer"),
    ({"steps": True}, "x.steps=True is not valid: expected an integer"),
    ({"rate": "fast"}, "x.rate='fast' is not valid: expected a number or null"),
    ({"flag": 1}, "x.flag=1 is not valid: expected true/false"),
    ({"mode": "c"}, "x.mode='c' is not valid: expected one of a, b"),
    ({"rate": float("nan")}, "x.rate=nan is not valid: expected a number or null"),  # NaN is no setting's number
    ({"precision": "16-mixed"}, "x.precision='16-mixed' is not valid: expected one of 16, 32, bf16 or null"),
])
def test_value_types_follow_the_annotations(values, problem):
    from advtune.config import ConfigError, check_value_types

    if problem is None:
        check_value_types(values, _settings, "x")
        return
    with pytest.raises(ConfigError) as error:
        check_value_types(values, _settings, "x")
    assert str(error.value) == problem
