"""Mixed precision per player, and checkpoints that never replace a good file with a broken one."""

from __future__ import annotations

import hashlib

import pytest
import torch

from advtune.training import AdversarialModule, SafeCheckpointIO, TwoPlayerMixedPrecision
from advtune.training.checkpoint_io import CheckpointError, load_checkpoint_file, nonfinite_tensors


def test_bf16_mixed_trains_both_players(toy, trainer_factory):
    task, disc, data = toy()
    g0 = [p.clone() for p in task.parameters()]
    module = AdversarialModule(task, disc)
    trainer_factory(max_steps=2, precision="bf16-mixed").fit(module, datamodule=data)
    assert module.trainer.global_step == 2 and module.discriminator_updates == 2
    assert any(not torch.equal(a, b) for a, b in zip(g0, task.parameters()))


def test_16_mixed_keeps_one_scaler_per_player_and_saves_both(toy, trainer_factory, tmp_path):
    task, disc, data = toy()
    plugin = TwoPlayerMixedPrecision("cpu")
    module = AdversarialModule(task, disc, generator_clip_norm=1.0, discriminator_clip_norm=1.0)
    trainer = trainer_factory(max_steps=3, plugins=[plugin])
    trainer.fit(module, datamodule=data)
    assert plugin.scalers["g"] is not plugin.scalers["d"]
    # The toy's fp16 gradients overflow at the initial scale 2**16 for G more often than for D; with
    # one scaler per player each backs off on its own overflows only, so their states differ.
    g, d = plugin.scalers["g"], plugin.scalers["d"]
    assert g.get_scale() < 2.0**16 and g.state_dict() != d.state_dict()
    trainer.save_checkpoint(tmp_path / "amp.ckpt")
    saved = torch.load(tmp_path / "amp.ckpt", weights_only=True)["TwoPlayerMixedPrecision"]
    assert set(saved) == {"g", "d"} and saved["g"]["scale"] == plugin.scalers["g"].get_scale()


def test_nonfinite_weights_never_overwrite_the_last_good_checkpoint(tmp_path):
    io = SafeCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.warns(UserWarning, match="non-finite weights in w"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("nan"), 2.0])}}, path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == good
    assert not list(tmp_path.glob("*.tmp"))
    assert nonfinite_tensors({"a": {"b": torch.tensor([float("inf")])}, "c": torch.zeros(2)}) == ["a.b"]


def test_checkpoint_gets_the_usual_file_mode(tmp_path):
    """Not mkstemp's 0600: the mode of any other file the run writes (0644 under umask 022)."""
    path = tmp_path / "last.ckpt"
    SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    reference = tmp_path / "plain"
    reference.write_bytes(b"")
    assert path.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


def test_corrupt_or_missing_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="cannot load checkpoint .*cut.ckpt: corrupt"):
        load_checkpoint_file(bad)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint_file(tmp_path / "missing.ckpt")
