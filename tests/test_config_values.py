"""Wrong values for every typed option of every shipped experiment, tried as a new user would.

The options come from the same source as docs/OPTIONS.md (``scripts/gen_options.py``): each row of
the root config and of the group options an experiment picks whose value is an int, float, bool or
str. Each gets its wrong values (``abc``, a negative number, ``nan``, an unknown name). Asserted:

- no traceback: ``validate-config`` refuses in one line naming the key, or accepts;
- ``validate-config`` and ``train`` agree: a refusal is the same line from both, and a value
  ``validate-config`` accepts trains (``trainer.max_steps=1``) without an error.

The default suite validates in process (one composition per experiment, the wrong value set on a
copy: what Hydra's override would give) with each option checked in one experiment that picks it,
and trains a fixed sample; ``-m slow`` runs every experiment x option and ``train`` for each case.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from advtune.cli import main
from advtune.config import CONFIG_DIR, compose_config
from advtune.runner import USER_ERRORS, prepare_run

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
WRONG_VALUES = {int: ("abc", -7), float: ("abc", math.nan, -1.5), bool: ("abc",), str: ("nope",)}
# Any string is a valid path or name for these.
FREE_TEXT = {"output_dir", "run_name"}


def _gen_options():
    spec = importlib.util.spec_from_file_location("gen_options", ROOT / "scripts" / "gen_options.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _choices(experiment: str) -> dict[str, str]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    return {group: option for group, option in cfg.hydra.runtime.choices.items()
            if not group.startswith("hydra") and option}


def typed_options(experiment: str) -> list[tuple[str, type, str]]:
    """``(key, type, source)`` of every documented option of ``experiment`` holding a scalar
    (``source``: the config file that documents it, ``group=option`` or ``config``)."""
    gen_options, choices = _gen_options(), _choices(experiment)
    cfg = compose_config([f"experiment={experiment}"])
    found = []
    for key in gen_options.documented_options(choices):
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if key in FREE_TEXT or isinstance(value, (dict, list)) or value is None or OmegaConf.is_config(value):
            continue
        group = key.split(".")[0]
        source = f"{group}={choices[group]}" if group in choices and group != "experiment" else "config"
        found.append((key, type(value), source))
    return found


def wrong_cases(experiment: str) -> list[tuple[str, object, str]]:
    return [(key, value, source) for key, kind, source in typed_options(experiment) for value in WRONG_VALUES[kind]]


def _as_override(key: str, value: object) -> str:
    return f"{key}={'nan' if isinstance(value, float) and math.isnan(value) else value}"


def _raw(cfg, key: str):
    """The value of ``key`` as written (an interpolation stays ``${...}``)."""
    parent, _, leaf = key.rpartition(".")
    return OmegaConf.to_container(OmegaConf.select(cfg, parent) if parent else cfg, resolve=False)[leaf]


def validate_in_process(base, key: str, value: object) -> str:
    """``"ok"`` or ``"error: <line>"``: what ``advtune validate-config ... key=value`` says, checked on
    ``base`` with ``key`` set as Hydra's override would set it (and put back afterwards)."""
    before = _raw(base, key)
    OmegaConf.update(base, key, value, merge=False)
    try:
        prepare_run(base, dry_run=True)
    except USER_ERRORS as error:
        return "error: " + " ".join(str(error).split())
    finally:
        OmegaConf.update(base, key, before, merge=False)
    return "ok"


def composed(experiment: str, out: Path):
    return compose_config([f"experiment={experiment}", f"output_dir={out}"])


def run_cli(argv: list[str]) -> str:
    """``"ok"`` or ``"error: <line>"`` from ``advtune`` run in this process; a traceback fails the test."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(argv)
    lines = [line for line in err.getvalue().splitlines() if line.startswith("error:")]
    assert "Traceback" not in err.getvalue() + out.getvalue(), err.getvalue()[-2000:]
    if code == 0:
        return "ok"
    assert code == 2 and len(lines) == 1, err.getvalue()[-2000:]
    return lines[0]


def _check_refusal(key: str, value: object, said: str) -> None:
    """A refusal names the key it is about (or, for a value read by Lightning, the ``trainer``)."""
    leaf = key.rsplit(".", 1)[-1]
    assert key in said or (leaf in said and key.split(".")[0] in said), f"{key}={value!r}: {said}"


# digits_gan first: it picks the shared groups (module, trainer, monitor, ...) and builds fastest.
_ORDER = ["digits_gan"] + [e for e in EXPERIMENTS if e != "digits_gan"]


def cases_once_per_source(every_value: bool) -> list[tuple[str, str, object]]:
    """``(experiment, key, value)``: each option of each config file in the first experiment of
    ``_ORDER`` that picks it; with every wrong value, or one (rotating through them option by option,
    so every kind of wrong value is tried)."""
    cases, seen = [], set()
    for experiment in _ORDER:
        options = [(key, kind, source) for key, kind, source in typed_options(experiment) if (source, key) not in seen]
        seen |= {(source, key) for key, _, source in options}
        for index, (key, kind, _) in enumerate(options):
            values = WRONG_VALUES[kind] if every_value else WRONG_VALUES[kind][index % len(WRONG_VALUES[kind]):][:1]
            cases += [(experiment, key, value) for value in values]
    return cases


def test_every_option_of_every_experiment_is_checked_without_a_traceback(tmp_path):
    """Each option once, one wrong value each: refused in one line naming its key, or accepted."""
    out, results, bases = tmp_path / "never-created", [], {}
    for experiment, key, value in cases_once_per_source(every_value=False):
        if experiment not in bases:
            bases[experiment] = composed(experiment, out)
        said = validate_in_process(bases[experiment], key, value)
        if said != "ok":
            _check_refusal(key, value, said)
        results.append(said)
    assert not out.exists(), "validate-config wrote into output_dir"
    refused = sum(said != "ok" for said in results)
    assert len(results) > 200 and refused / len(results) > 0.9, (len(results), refused)


def train_in_process(base, key: str, value: object, out: Path) -> str:
    """``"ok"`` or ``"error: <line>"``: what ``advtune train ... key=value`` says (``base`` is composed
    with ``trainer.max_steps=1``), run into ``out``."""
    from advtune.runner import train

    before = _raw(base, key), _raw(base, "output_dir")
    OmegaConf.update(base, "output_dir", str(out), merge=False)
    OmegaConf.update(base, key, value, merge=False)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            train(base)
    except USER_ERRORS as error:
        return "error: " + " ".join(str(error).split())
    finally:
        OmegaConf.update(base, key, before[0], merge=False)
        OmegaConf.update(base, "output_dir", before[1], merge=False)
    return "ok"


_SHORT_RUN = ["trainer.max_steps=1", "trainer.enable_progress_bar=false", "monitor.plot=false"]


@pytest.mark.slow
@pytest.mark.timeout(2400)  # ~160 short train runs: about 15 minutes on 2 cores, over the slow tests' 900 s
def test_validate_config_and_train_agree_on_every_value_of_every_option(tmp_path):
    """Every wrong value of each option: ``validate-config``'s answer is ``train``'s (in process)."""
    bases = {}
    for index, (experiment, key, value) in enumerate(cases_once_per_source(every_value=True)):
        if experiment not in bases:
            bases[experiment] = compose_config([f"experiment={experiment}", f"output_dir={tmp_path / 'never'}",
                                                *_SHORT_RUN])
        said = validate_in_process(bases[experiment], key, value)
        trained = train_in_process(bases[experiment], key, value, tmp_path / f"run{index}")
        assert trained == said, f"{experiment} {key}={value!r}: validate-config said {said!r}, train {trained!r}"


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_value_of_every_option_in_every_experiment_is_checked(experiment, tmp_path):
    """The whole cross product, validated in process: no traceback, each refusal names its key."""
    base = composed(experiment, tmp_path / "never-created")
    for key, value, _ in wrong_cases(experiment):
        said = validate_in_process(base, key, value)
        if said != "ok":
            _check_refusal(key, value, said)
    assert not (tmp_path / "never-created").exists()


# A fixed sample of digits_gan_stable (the experiment), run through the command line: a
# value refused by each layer (root keys, monitor, module, an optimizer, trainer and Lightning's
# own checks, data, schedule, adversarial, task) and one validate-config accepts (it must train:
# a negative LeakyReLU slope is unusual, not wrong).
SAMPLE = [
    ("seed", -7), ("monitor.patience", "abc"), ("module.generator_optimizer.lr", -1.5),
    ("module.scheduler_interval", "nope"), ("trainer.devices", "abc"), ("trainer.strategy", "nope"),
    ("data.num_workers", -7), ("schedule.discriminator_steps", -7), ("adversarial.r1_weight", math.nan),
    ("discriminator.negative_slope", -1.5), ("task.grid_size", -7),
]


@pytest.mark.parametrize(("key", "value"), SAMPLE, ids=[f"{k}={v}" for k, v in SAMPLE])
def test_validate_config_and_train_agree(key, value, tmp_path):
    argv = [f"experiment=digits_gan_stable", f"output_dir={tmp_path / 'run'}", *_SHORT_RUN, _as_override(key, value)]
    said = run_cli(["validate-config", *argv])
    assert not (tmp_path / "run").exists(), "validate-config wrote into output_dir"
    if said != "ok":
        _check_refusal(key, value, said)
    trained = run_cli(["train", *argv])
    assert trained == said, f"{key}={value!r}: validate-config said {said!r}, train {trained!r}"
    assert (trained == "ok") == (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_sample_covers_every_layer():
    """The sample stays representative: a key of every section, accepted values, and real keys."""
    sections = {key.split(".")[0] for key, _ in SAMPLE}
    assert {"monitor", "module", "trainer", "data", "schedule", "adversarial", "discriminator", "task"} <= sections
    keys = {key for key, _, _ in typed_options("digits_gan_stable")}
    assert {key for key, _ in SAMPLE} <= keys  # a renamed option must be renamed here too
