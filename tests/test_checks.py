"""advtune.checks: each refusal is one line naming the key, the value and what is allowed."""

from __future__ import annotations

import math

import pytest

from advtune.checks import check_choice, check_flag, check_integer, check_loader_settings, check_number
from advtune.config import ConfigError


def _refusal(check, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as error:
        check(*args, **kwargs)
    assert isinstance(error.value, ValueError)  # code building objects itself sees a ValueError
    return str(error.value)


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (("a.n", -7), {"minimum": 0}, "a.n=-7 is not valid: expected an integer >= 0"),
    (("a.n", "abc"), {"minimum": 1}, "a.n='abc' is not valid: expected an integer >= 1"),
    (("a.n", True), {}, "a.n=True is not valid: expected an integer"),  # true is not a count
    (("a.n", 2.0), {}, "a.n=2.0 is not valid: expected an integer"),
    (("a.n", 11), {"minimum": 1, "maximum": 10}, "a.n=11 is not valid: expected an integer in [1, 10]"),
    (("a.n", None), {"minimum": 1}, "a.n=null is not valid: expected an integer >= 1"),
    (("seed", -1), {"minimum": 0, "maximum": 2**32 - 1}, "seed=-1 is not valid: expected an integer from 0 to 4294967295"),
])
def test_integers(args, kwargs, message):
    assert _refusal(check_integer, *args, **kwargs) == message


def test_integers_accepted():
    check_integer("a.n", 0, minimum=0)
    check_integer("a.n", None, minimum=1, allow_none=True)
    check_integer("a.n", 10, minimum=1, maximum=10)


@pytest.mark.parametrize(("value", "kwargs", "message"), [
    (math.nan, {}, "a.x=nan is not valid: expected a number"),
    (math.inf, {"above": 0.0}, "a.x=inf is not valid: expected a number > 0 (finite)"),
    (0.0, {"above": 0.0}, "a.x=0.0 is not valid: expected a number > 0"),
    (1.0, {"minimum": 0.0, "below": 1.0}, "a.x=1.0 is not valid: expected a number in [0, 1)"),
    (-0.5, {"above": 0.0, "maximum": 1.0}, "a.x=-0.5 is not valid: expected a number in (0, 1]"),
    ("fast", {"allow_none": True}, "a.x='fast' is not valid: expected a number or null"),
    (False, {}, "a.x=False is not valid: expected a number"),
])
def test_numbers(value, kwargs, message):
    assert _refusal(check_number, "a.x", value, **kwargs) == message


def test_numbers_accepted():
    check_number("a.x", 0, minimum=0.0)  # an int is a number
    check_number("a.x", math.inf, above=0.0, allow_infinite=True)
    check_number("a.x", None, allow_none=True)
    check_number("a.x", 0.999, above=0.0, below=1.0)


def test_choices_and_flags():
    check_choice("m.mode", "step", ("step", "epoch"))
    assert _refusal(check_choice, "m.mode", "nope", ("step", "epoch")) == \
        "m.mode='nope' is not valid: expected one of step, epoch"
    assert "expected one of 1, 2" in _refusal(check_choice, "k", True, (1, 2))  # True == 1, but is not 1
    check_flag("m.flag", False)
    assert _refusal(check_flag, "m.flag", "abc") == "m.flag='abc' is not valid: expected true/false"


def test_loader_settings():
    check_loader_settings("data", 1, 0, 0)
    assert _refusal(check_loader_settings, "data", 8, -7) == "data.num_workers=-7 is not valid: expected an integer >= 0"
    assert _refusal(check_loader_settings, "data", 0, 0) == "data.batch_size=0 is not valid: expected an integer >= 1"
    assert "data.seed=-7" in _refusal(check_loader_settings, "data", 8, 0, -7)
