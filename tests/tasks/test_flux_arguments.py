"""FluxLoRATask refuses arguments that make no sense before any base model is built, naming the task.* key."""

from __future__ import annotations

import pytest

from advtune.config import ConfigError
from advtune.tasks.flux_lora import FluxLoRATask


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rank": 0}, "task.rank=0 is not valid: expected an integer >= 1"),
    ({"dropout": 1.0}, "task.dropout=1.0 is not valid: expected a number in [0, 1)"),
    ({"alpha": -4.0}, "task.alpha=-4.0 is not valid: expected a number > 0"),
    ({"validation_batch_size": -7}, "task.validation_batch_size=-7 is not valid: expected an integer >= 1"),
    ({"logit_std": 0.0}, "task.logit_std=0.0 is not valid: expected a number > 0"),
    ({"latent_channels": 0}, "task.latent_channels=0 is not valid: expected an integer >= 1 or null"),
    ({"transformer_config": {"num_layers": "abc"}},
     "task.transformer_config.num_layers='abc' is not valid: expected an integer"),
    ({"transformer_config": {"guidance_embeds": "abc"}},
     "task.transformer_config.guidance_embeds='abc' is not valid: expected true/false"),
    ({"transformer_config": {"num_attention_heads": -7}},
     "task.transformer_config.num_attention_heads=-7 is not valid: expected an integer >= 1"),
])
def test_nonsense_is_refused(kwargs, message):
    with pytest.raises(ConfigError) as error:
        FluxLoRATask(**kwargs)
    assert str(error.value) == message


def test_the_tiny_default_builds():
    task = FluxLoRATask(transformer_config={"num_layers": 1, "num_single_layers": 0}, rank=2)
    assert sum(p.numel() for p in task.trainable_parameters()) > 0
