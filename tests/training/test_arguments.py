"""The root keys and the Trainer's arguments: types, ranges and names, one line each; DDP when distributed."""

from __future__ import annotations

import pytest

from advtune.config import ConfigError, compose_config
from advtune.training.arguments import DDP_STRATEGY, trainer_arguments


def _arguments(*overrides: str) -> dict:
    return trainer_arguments(compose_config(["experiment=digits_gan", *overrides]))


@pytest.mark.parametrize(("override", "message"), [
    ("seed=-7", "seed=-7 is not valid: expected an integer from 0 to 4294967295"),
    ("keep_checkpoints=-2", "keep_checkpoints=-2 is not valid: expected an integer >= -1"),
    ("checkpoint_every=0", "checkpoint_every=0 is not valid: expected an integer >= 1"),
    ("resume=sometimes", "resume='sometimes' is not valid: expected one of auto, never"),
    ("run_name=[1,2]", "run_name=[1, 2] is not valid: expected a name"),
    ("validation_prompts=a cat", "validation_prompts='a cat' is not valid: expected a list of prompts"),
    ("trainer.max_steps=-7", "trainer.max_steps=-7 is not valid: expected an integer >= -1"),
    ("trainer.num_nodes=0", "trainer.num_nodes=0 is not valid: expected an integer >= 1"),
    ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0 is not valid: expected an integer >= 1"),
    ("trainer.devices=0", "trainer.devices=0 is not valid: expected an integer >= 1, -1 (all), auto"),
    ("trainer.devices=[]", "trainer.devices=[] is not valid"),
    ("trainer.devices='0,x'", "trainer.devices='0,x' is not valid"),
    ("trainer.accelerator=gpus", "trainer.accelerator='gpus' is not valid: expected one of auto, gpu, cpu, cuda"),
    ("trainer.strategy=nope", "trainer.strategy='nope' is not valid: expected auto, ddp, fsdp"),
    ("trainer.precision=8", "trainer.precision=8 is not valid: expected one of 16, 16-mixed"),
    ("trainer.val_check_interval=1.5", "trainer.val_check_interval=1.5 is not valid: expected an integer >= 1 "
                                       "(batches) or a number in (0, 1] (a fraction of an epoch)"),
    ("trainer.val_check_interval=0", "trainer.val_check_interval=0 is not valid"),
    ("trainer.limit_val_batches=-1", "trainer.limit_val_batches=-1 is not valid: expected an integer >= 0"),
    ("trainer.num_sanity_val_steps=-2", "trainer.num_sanity_val_steps=-2 is not valid: expected an integer >= -1"),
])
def test_nonsense_is_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        _arguments(override)
    assert str(error.value).startswith(message), str(error.value)


@pytest.mark.parametrize("override", [
    "trainer.max_steps=-1", "trainer.devices=-1", "trainer.devices=auto", "trainer.devices=[0]",
    "trainer.devices='0,1'", "trainer.limit_val_batches=0", "trainer.limit_val_batches=0.5",
    "trainer.val_check_interval=0.25", "trainer.num_sanity_val_steps=-1", "keep_checkpoints=-1",
    "trainer.strategy=ddp_spawn", "trainer.precision=bf16-mixed", "trainer.accelerator=gpu",
])
def test_what_lightning_accepts_is_accepted(override):
    _arguments(override)


def test_many_devices_pick_ddp_with_unused_parameters():
    assert _arguments("trainer.devices=2")["strategy"] == DDP_STRATEGY
    assert _arguments("trainer.num_nodes=2")["strategy"] == DDP_STRATEGY
    assert _arguments("trainer.devices=1")["strategy"] == "auto"
    assert _arguments("trainer.devices=2", "trainer.strategy=fsdp")["strategy"] == "fsdp"
