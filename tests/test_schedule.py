"""Phase schedule: which player steps on which batch, ramps and annealing."""

import math

import pytest

from advtune.schedule import Phase, PhaseSchedule, ramp


def _phases(schedule, n):
    return [schedule.plan(i).phases for i in range(n)]


def test_default_is_g_then_d_every_batch():
    assert _phases(PhaseSchedule(), 3) == [(Phase.G, Phase.D)] * 3


def test_consecutive_discriminator_steps():
    # n_critic = 3 on consecutive batches: D on every batch, G on every 3rd.
    assert _phases(PhaseSchedule(discriminator_steps=3), 6) == [(Phase.D,), (Phase.D,), (Phase.G, Phase.D)] * 2


def test_repeat_discriminator_steps_on_same_batch():
    assert _phases(PhaseSchedule(discriminator_steps=2, discriminator_steps_mode="repeat"), 2) == [(Phase.G, Phase.D, Phase.D)] * 2


def test_generator_every_k_after_discriminator_warmup():
    # Lightning tutorial "custom": D alone for 2 batches, then G on every 3rd batch.
    s = PhaseSchedule(discriminator_warmup_steps=2, generator_every=3)
    assert _phases(s, 8) == [(Phase.D,)] * 4 + [(Phase.G, Phase.D)] + [(Phase.D,)] * 2 + [(Phase.G, Phase.D)]
    assert [s.plan(i).adversarial for i in range(3)] == [False, False, True]


def test_discriminator_every_k_after_warmup_only():
    # D-only warm-up keeps D on every batch; then G on every batch, D on the 1st, 4th, 7th...
    s = PhaseSchedule(adversarial_start_step=1, discriminator_warmup_steps=2, discriminator_every=3)
    assert _phases(s, 9) == [(Phase.G,), (Phase.D,), (Phase.D,)] + [(Phase.G, Phase.D), (Phase.G,), (Phase.G,)] * 2
    assert all(s.plan(i).adversarial for i in range(3, 9))
    assert [s.plan(i).discriminator_updates for i in range(3, 9)] == [1, 0, 0, 1, 0, 0]


@pytest.mark.parametrize("kwargs", [{"generator_every": 2}, {"discriminator_steps": 2},
                                    {"discriminator_steps": 2, "discriminator_steps_mode": "repeat"}])
def test_discriminator_every_refuses_a_second_cadence(kwargs):
    with pytest.raises(ValueError, match="schedule.discriminator_every > 1 needs"):
        PhaseSchedule(discriminator_every=2, **kwargs)


def test_adversarial_start_is_base_loss_only():
    s = PhaseSchedule(adversarial_start_step=2)
    plans = [s.plan(i) for i in range(3)]
    assert [p.phases for p in plans] == [(Phase.G,), (Phase.G,), (Phase.G, Phase.D)]
    assert [p.adversarial for p in plans] == [False, False, True]


@pytest.mark.parametrize(("kind", "expected"), [("linear", [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]),
                                                ("cosine", [0.0, (1 - math.cos(math.pi / 4)) / 2, 0.5,
                                                            (1 - math.cos(3 * math.pi / 4)) / 2, 1.0, 1.0])])
def test_adversarial_ramp(kind, expected):
    s = PhaseSchedule(adversarial_start_step=1, adversarial_ramp=kind, adversarial_ramp_steps=4)
    assert [s.plan(i).adversarial_scale for i in range(1, 7)] == pytest.approx(expected)


def test_base_anneal_down_to_pure_adversarial():
    s = PhaseSchedule(adversarial_start_step=2, base_anneal="linear", base_anneal_steps=4, base_weight_final=0.0)
    assert [s.plan(i).base_weight for i in range(8)] == pytest.approx([1, 1, 1, 0.75, 0.5, 0.25, 0, 0])
    pure = PhaseSchedule(adversarial_start_step=1, pure_adversarial=True)
    assert [pure.plan(i).base_weight for i in range(3)] == [1.0, 0.0, 0.0]


def test_ramp_known_values_and_errors():
    assert ramp("linear", 0.3) == pytest.approx(0.3)
    assert ramp("cosine", 0.5) == pytest.approx(0.5)
    assert ramp("constant", 0.0) == 1.0
    with pytest.raises(ValueError, match="unknown ramp"):
        ramp("exp", 0.5)


@pytest.mark.parametrize("kwargs", [{"discriminator_steps": 0}, {"generator_every": 0}, {"discriminator_every": 0}, {"adversarial_ramp": "exp"},
                                    {"discriminator_steps_mode": "sometimes"}, {"adversarial_start_step": -1}])
def test_bad_schedule_is_a_clear_error(kwargs):
    with pytest.raises(ValueError, match="schedule"):
        PhaseSchedule(**kwargs)
