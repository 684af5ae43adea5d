"""The two-player step: who changes in each phase, no gradient leaks, accumulation, non-finite losses."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch

from advtune.adversarial import AdversarialLossCalculator
from advtune.schedule import PhaseSchedule
from advtune.training import AdversarialModule


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.named_parameters())


def _fit_one_batch(module: AdversarialModule, data, trainer_factory) -> None:
    trainer_factory(max_epochs=1, limit_train_batches=1).fit(module, datamodule=data)


@pytest.mark.parametrize(
    ("schedule", "g_moves", "d_moves"),
    [
        (PhaseSchedule(), True, True),                                  # G then D
        (PhaseSchedule(discriminator_warmup_steps=1), False, True),     # D-only warm-up
        (PhaseSchedule(adversarial_start_step=1), True, False),         # domain adaptation: base loss only
        (PhaseSchedule(discriminator_steps=2), False, True),            # consecutive: G on the 2nd batch
    ],
)
def test_one_iteration_changes_exactly_the_scheduled_player(toy, trainer_factory, schedule, g_moves, d_moves):
    task, disc, data = toy()
    module = AdversarialModule(task, disc, AdversarialLossCalculator(loss_type="hinge"), schedule)
    g0, d0 = _params(task), _params(disc)
    _fit_one_batch(module, data, trainer_factory)
    assert _changed(g0, task) is g_moves
    assert _changed(d0, disc) is d_moves
    assert module.discriminator_updates == int(d_moves)
    assert module.trainer.global_step == int(g_moves)  # global_step counts generator updates only


def test_no_gradient_leaks_between_players_with_accumulation(toy, trainer_factory):
    """After one micro-batch of 2, each player's .grad is exactly its own loss / 2, nothing more."""
    task, disc, data = toy()
    calc = AdversarialLossCalculator(loss_type="non_saturating", feature_matching_weight=1.0, r1_weight=1.0)
    ref_task, ref_disc = copy.deepcopy(task), copy.deepcopy(disc)
    module = AdversarialModule(task, disc, calc, PhaseSchedule(), accumulate_grad_batches=2)
    seen = {}

    class Grab(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen["batch"] = batch
            seen["g"] = {k: p.grad.clone() for k, p in task.named_parameters()}
            seen["d"] = {k: p.grad.clone() for k, p in disc.named_parameters()}

    trainer_factory(max_epochs=1, limit_train_batches=1, callbacks=[Grab()]).fit(module, datamodule=data)
    assert not _changed(_params(ref_task), task) and not _changed(_params(ref_disc), disc)  # accumulating: no step yet

    # Reference: each player's loss alone, on fresh copies.
    out = ref_task.generator_predict(seen["batch"])
    for p in ref_disc.parameters():
        p.requires_grad_(False)
    g_loss = calc.compute_generator_loss(ref_disc, out.real, out.fake, 0, base_loss=out.base_loss)["loss"]
    g_loss.backward()
    for p in ref_disc.parameters():
        p.requires_grad_(True)
    assert all(p.grad is None for p in ref_disc.parameters())
    d_loss = calc.compute_discriminator_loss(ref_disc, out.real, out.fake.detach(), 0)["loss"]
    d_loss.backward()
    for name, p in ref_task.named_parameters():
        torch.testing.assert_close(seen["g"][name], p.grad / 2)
    for name, p in ref_disc.named_parameters():
        torch.testing.assert_close(seen["d"][name], p.grad / 2)


def test_accumulation_steps_every_k_micro_batches(toy, trainer_factory):
    task, disc, data = toy()
    module = AdversarialModule(task, disc, accumulate_grad_batches=3)
    trainer_factory(max_epochs=1, limit_train_batches=7).fit(module, datamodule=data)
    assert module.trainer.global_step == 2 and module.discriminator_updates == 2
    assert module.micro_steps == {module.active_player.G: 7, module.active_player.D: 7}


def test_repeat_mode_updates_discriminator_n_times_per_batch(toy, trainer_factory):
    task, disc, data = toy()
    schedule = PhaseSchedule(discriminator_steps=3, discriminator_steps_mode="repeat")
    module = AdversarialModule(task, disc, schedule=schedule)
    trainer_factory(max_epochs=1, limit_train_batches=2).fit(module, datamodule=data)
    assert module.discriminator_updates == 6 and module.trainer.global_step == 2


def test_lazy_regularization_counts_discriminator_updates_not_batches(toy, trainer_factory):
    """D on odd batches only (start 1, every 2nd): a batch clock with interval 2 would never apply R1."""
    task, disc, data = toy()
    clock = []

    class Spy(AdversarialLossCalculator):
        def compute_discriminator_loss(self, discriminator, real, fake, global_step=0, **kwargs):
            clock.append(global_step)
            return super().compute_discriminator_loss(discriminator, real, fake, global_step, **kwargs)

    calc = Spy(loss_type="hinge", r1_weight=1.0, regularization_interval=2)
    module = AdversarialModule(task, disc, calc, PhaseSchedule(adversarial_start_step=1, discriminator_every=2))
    trainer_factory(max_epochs=1, limit_train_batches=7).fit(module, datamodule=data)
    assert clock == [0, 1, 2]  # D updates 0, 1, 2 on batches 1, 3, 5: R1 on the 1st and the 3rd


def test_max_steps_counts_generator_updates(toy, trainer_factory):
    task, disc, data = toy()
    module = AdversarialModule(task, disc, schedule=PhaseSchedule(discriminator_steps=2))
    trainer_factory(max_steps=3).fit(module, datamodule=data)
    assert module.trainer.global_step == 3
    assert module.batch_step == 6 and module.discriminator_updates == 6


def test_gradient_clipping_per_player(toy, trainer_factory):
    task, disc, data = toy()
    g0 = _params(task)
    module = AdversarialModule(task, disc, generator_optimizer=lambda p: torch.optim.SGD(p, lr=1.0),
                               generator_clip_norm=1e-3, use_adversarial=True)
    _fit_one_batch(module, data, trainer_factory)
    step = torch.cat([(g0[k] - v.detach()).flatten() for k, v in task.named_parameters()])
    assert float(step.norm()) == pytest.approx(1e-3, rel=1e-3)  # SGD lr 1: the update is the clipped gradient


def test_schedulers_step_only_with_their_player(toy, trainer_factory):
    task, disc, data = toy()
    sched = lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)  # noqa: E731
    module = AdversarialModule(task, disc, schedule=PhaseSchedule(discriminator_steps=2),
                               generator_scheduler=sched, discriminator_scheduler=sched)
    trainer_factory(max_epochs=1, limit_train_batches=4).fit(module, datamodule=data)
    opt_g, opt_d = module.optimizers()
    assert opt_g.param_groups[0]["lr"] == pytest.approx(2e-4 * 0.5**2)  # 2 G updates
    assert opt_d.param_groups[0]["lr"] == pytest.approx(2e-4 * 0.5**4)  # 4 D updates


def test_missing_discriminator_is_a_clear_error(toy):
    task, _, _ = toy()
    with pytest.raises(ValueError, match="discriminator must be provided when adversarial training is enabled"):
        AdversarialModule(task, None)


def test_base_only_training_needs_no_discriminator(toy, trainer_factory):
    task, _, data = toy()
    g0 = _params(task)
    module = AdversarialModule(task, None, use_adversarial=False)
    _fit_one_batch(module, data, trainer_factory)
    assert _changed(g0, task)


class _NaNAfter(torch.nn.Module):
    """Discriminator whose logits become NaN from call ``start`` on."""

    def __init__(self, inner, start):
        super().__init__()
        self.inner, self.start, self.calls = inner, start, 0

    def forward(self, x, **cond):
        self.calls += 1
        logits, feats = self.inner(x)
        return ([logits[0] * float("nan")] if self.calls > self.start else logits), feats


def _optimizer_state(module):
    return [{k: v.clone() for k, v in state.items()} for opt in module.optimizers()
            for state in opt.optimizer.state.values()]


@pytest.mark.parametrize("fused", [True, False])
def test_nonfinite_loss_skips_update_then_stops(toy, trainer_factory, fused):
    """fused: the update is masked on the device (found_inf); not fused: the fallback drops the gradients."""
    task, disc, data = toy(with_base=False)
    nan_disc = _NaNAfter(disc, start=10**9)
    adam = lambda p: torch.optim.Adam(p, lr=1e-2, fused=fused)  # noqa: E731
    module = AdversarialModule(task, nan_disc, max_consecutive_nonfinite=3,
                               generator_optimizer=adam, discriminator_optimizer=adam)
    seen = {}

    class NaNAfterFirstBatch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 0:  # one good update of each player, then every loss is NaN
                nan_disc.start = nan_disc.calls
                seen.update(d=_params(disc), g=_params(task), state=_optimizer_state(pl_module))

    # Checked lazily (logging steps, end of epoch): the 5 batches run, every later update skipped.
    with pytest.warns(UserWarning, match="8 non-finite loss"), pytest.raises(FloatingPointError, match="in a row"):
        trainer_factory(max_epochs=1, limit_train_batches=5, callbacks=[NaNAfterFirstBatch()]).fit(module, datamodule=data)
    assert not _changed(seen["d"], disc) and not _changed(seen["g"], task)  # skipped updates touch nothing
    after = _optimizer_state(module)
    assert len(after) == len(seen["state"]) == 6
    for before, now in zip(seen["state"], after):  # not even the optimizer's moments and step count
        for key in before:
            assert torch.equal(before[key], now[key]), key
    assert module.nonfinite.total == 8  # G and D on each of 4 batches


def test_isolated_nonfinite_losses_are_skipped_without_stopping(toy, trainer_factory):
    task, disc, data = toy(with_base=False)
    nan_disc = _NaNAfter(disc, start=10**9)

    class NaNEveryOther(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            nan_disc.start = 10**9 if batch_idx % 2 else nan_disc.calls  # even batches: NaN from G's D call on

    module = AdversarialModule(task, nan_disc, max_consecutive_nonfinite=3)
    with pytest.warns(UserWarning, match="non-finite"):
        trainer_factory(max_epochs=1, limit_train_batches=6, callbacks=[NaNEveryOther()]).fit(module, datamodule=data)
    assert module.nonfinite.total == 6 and module.trainer.global_step == 6  # 2 per bad batch, never 3 in a row


def test_a_non_logging_step_never_reads_a_device_value_on_the_host(toy, trainer_factory, monkeypatch):
    """No ``.item()``, ``float()``, ``bool()``, ``.tolist()`` of a tensor inside the step (a sync on a GPU)."""
    task, disc, data = toy()
    module = AdversarialModule(task, disc, AdversarialLossCalculator(loss_type="hinge", r1_weight=1.0),
                               ema_decay=0.9, running_average_decay=0.9)
    reads = []
    step = module.training_step

    def counted_step(batch, batch_idx):
        originals = {name: getattr(torch.Tensor, name) for name in ("item", "tolist", "__bool__", "__float__", "__int__")}

        def spy(name):
            def read(self, *args, **kwargs):
                reads.append((batch_idx, name))
                return originals[name](self, *args, **kwargs)
            return read

        for name in originals:
            monkeypatch.setattr(torch.Tensor, name, spy(name))
        try:
            return step(batch, batch_idx)
        finally:
            for name, original in originals.items():
                monkeypatch.setattr(torch.Tensor, name, original)

    module.training_step = counted_step
    trainer_factory(max_steps=6, log_every_n_steps=5).fit(module, datamodule=data)
    assert {batch for batch, _ in reads} == {4}  # only the logging step (the 5th) reads values
