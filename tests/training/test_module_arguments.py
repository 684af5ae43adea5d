"""AdversarialModule refuses arguments that make no sense when it is built, naming the module.* key."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from advtune.config import ConfigError
from advtune.training import AdversarialModule


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scheduler_interval": "batch"}, "module.scheduler_interval='batch' is not valid: expected one of step, epoch"),
    ({"accumulate_grad_batches": 0}, "module.accumulate_grad_batches=0 is not valid: expected an integer >= 1"),
    ({"max_consecutive_nonfinite": -7}, "module.max_consecutive_nonfinite=-7 is not valid: expected an integer >= 1"),
    ({"generator_clip_norm": 0.0}, "module.generator_clip_norm=0.0 is not valid: expected a number > 0 or null"),
    ({"discriminator_clip_norm": math.nan}, "module.discriminator_clip_norm=nan is not valid"),
    ({"ema_decay": 1.5}, "module.ema_decay=1.5 is not valid: expected a number in [0, 1) or null"),
    ({"ema_decay": 0.999, "ema_rampup": -1.0}, "module.ema_rampup=-1.0 is not valid: expected a number >= 0 or null"),
    ({"running_average_decay": 1.0}, "module.running_average_decay=1.0 is not valid: expected a number in [0, 1)"),
    ({"use_adversarial": "yes"}, "module.use_adversarial='yes' is not valid: expected true/false"),
    ({"generator_optimizer": functools.partial(torch.optim.Adam, lr=0.0)},
     "module.generator_optimizer.lr=0.0 is not valid: expected a number > 0"),
    ({"discriminator_optimizer": functools.partial(torch.optim.SGD, lr=math.inf)},
     "module.discriminator_optimizer.lr=inf is not valid: expected a number > 0 (finite)"),
])
def test_nonsense_is_refused(toy, kwargs, message):
    task, discriminator, _ = toy()
    with pytest.raises(ConfigError) as error:
        AdversarialModule(task, discriminator, **kwargs)
    assert str(error.value).startswith(message), str(error.value)


def test_sensible_arguments_build(toy):
    task, discriminator, _ = toy()
    module = AdversarialModule(task, discriminator, generator_clip_norm=math.inf, ema_decay=0.99, ema_rampup=None,
                               generator_optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
                               discriminator_optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    assert len(module.configure_optimizers()[0]) == 2
