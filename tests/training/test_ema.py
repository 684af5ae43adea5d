"""Generator EMA: known values, ramp-up, exact swap, adapters only, validation and checkpoints use it."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advtune.training import AdversarialModule
from advtune.training.ema import GeneratorEMA


def test_constant_decay_known_values():
    ema = GeneratorEMA(decay=0.75)
    p = nn.Parameter(torch.tensor([4.0]))
    ema.update([p])  # first update copies
    assert ema.shadow[0].item() == 4.0
    with torch.no_grad():
        p.fill_(8.0)
    ema.update([p])  # 0.75 * 4 + 0.25 * 8 = 5
    assert ema.shadow[0].item() == pytest.approx(5.0)


def test_rampup_is_stylegan_ema_rampup():
    ema = GeneratorEMA(decay=0.999, rampup=0.05)
    assert ema.half_life == pytest.approx(math.log(0.5) / math.log(0.999))  # 692.8 updates
    assert ema.beta() == 0.0  # first update: the average is the weights
    ema.updates = 100  # half-life min(692.8, 0.05 * 100 = 5) -> beta = 0.5 ** (1 / 5)
    assert ema.beta() == pytest.approx(0.5 ** 0.2)
    ema.updates = 10**6  # ramped up: the configured decay
    assert ema.beta() == pytest.approx(0.999)
    assert GeneratorEMA(decay=0.9).beta() == 0.9


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"decay": 1.0}, "module.ema_decay=1.0 is not valid: expected a number in [0, 1)"),
    ({"decay": 1.5}, "module.ema_decay=1.5 is not valid: expected a number in [0, 1)"),
    ({"decay": -0.1}, "module.ema_decay=-0.1 is not valid: expected a number in [0, 1)"),
    ({"decay": float("nan")}, "module.ema_decay=nan is not valid: expected a number in [0, 1)"),
    ({"decay": 0.9, "rampup": -0.05}, "module.ema_rampup=-0.05 is not valid: expected a number >= 0 or null"),
])
def test_bad_decay_or_rampup_is_one_clear_value_error(kwargs, message):
    with pytest.raises(ValueError) as error:
        GeneratorEMA(**kwargs)
    assert str(error.value) == message


def test_decay_zero_is_the_live_weights_without_a_math_error():
    live = nn.Parameter(torch.tensor([1.0]))
    for rampup in (None, 0.0):
        ema = GeneratorEMA(decay=0.0, rampup=rampup)
        ema.update([live])
        with torch.no_grad():
            live.fill_(3.0)
        ema.update([live])
        assert ema.beta() == 0.0 and ema.shadow[0].item() == 3.0
        live.data.fill_(1.0)


def test_cli_refuses_a_decay_above_one_in_one_line(tmp_path, capsys):
    from advtune.cli import main

    code = main(["train", "experiment=digits_gan", "module.ema_decay=1.5", "trainer.max_steps=2",
                 f"output_dir={tmp_path / 'run'}"])
    captured = capsys.readouterr()
    assert code == 2 and "Traceback" not in captured.err + captured.out
    assert [line for line in captured.err.splitlines() if line.startswith("error:")] == [
        "error: module.ema_decay=1.5 is not valid: expected a number in [0, 1) or null"]


def test_swap_restores_the_live_weights_bit_for_bit():
    live = nn.Parameter(torch.randn(5))
    ema = GeneratorEMA(decay=0.5)
    ema.update([live])
    with torch.no_grad():
        live.add_(torch.randn(5) * 1e-3)
    ema.update([live])
    before = live.detach().clone()
    with ema.swapped_in([live]):
        assert torch.equal(live.detach(), ema.shadow[0])
    assert torch.equal(live.detach(), before)


def test_module_averages_trainables_and_validation_sees_the_average(toy, trainer_factory):
    task, disc, data = toy()
    frozen = nn.Linear(4, 4).requires_grad_(False)
    task.frozen_base = frozen  # a frozen part of the task: not averaged, not swapped
    frozen_before = frozen.weight.detach().clone()
    seen = {}
    task.validation_epoch_end = lambda out_dir, step: seen.update(w=task.generator.weight.detach().clone()) or {}
    module = AdversarialModule(task, disc, ema_decay=0.9, ema_rampup=None,
                               generator_optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    trainer_factory(max_steps=5).fit(module, datamodule=data)
    assert module.ema.updates == 5 and len(module.ema.shadow) == len(list(task.trainable_parameters()))
    live = task.generator.weight.detach().clone()
    assert not torch.equal(module.ema.shadow[0], live)  # the average lags the live weights
    with module.generator_weights():
        with module.generator_weights():  # nesting is harmless
            assert torch.equal(task.generator.weight.detach(), module.ema.shadow[0])
        module.on_validation_epoch_end()  # validation runs inside generator_weights
    assert torch.equal(seen["w"], module.ema.shadow[0])
    assert torch.equal(task.generator.weight.detach(), live) and torch.equal(frozen.weight, frozen_before)


def test_ema_is_in_the_state_dict_so_sample_and_export_load_it(toy, trainer_factory):
    task, disc, data = toy()
    module = AdversarialModule(task, disc, ema_decay=0.9)
    trainer_factory(max_steps=3).fit(module, datamodule=data)
    state = module.state_dict()
    assert state["ema._extra_state"]["updates"] == 3
    fresh_task, fresh_disc, _ = toy()
    fresh = AdversarialModule(fresh_task, fresh_disc, ema_decay=0.9)
    fresh.load_state_dict(state)
    with fresh.generator_weights(), module.generator_weights():
        assert torch.equal(fresh_task.generator.weight, task.generator.weight)
    assert "ema._extra_state" not in AdversarialModule(*toy()[:2]).state_dict()  # off: nothing extra
