"""Every shipped config composes, passes the allow-list and builds; bad input gives one clear line."""

from __future__ import annotations

import re

import pytest

from advtune.config import CONFIG_DIR, ConfigError, check_targets, compose_config
from advtune.runner import build

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
# Group options that need an experiment around them (the task they fit), checked inside it.
GROUP_OPTIONS = [(g.name, p.stem) for g in sorted(CONFIG_DIR.iterdir()) if g.is_dir() and g.name != "experiment"
                 for p in sorted(g.glob("*.yaml"))]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}", f"output_dir={tmp_path}"])
    built = build(cfg, with_data=False)
    assert sum(p.numel() for p in built.module.player_parameters(built.module.active_player.G)) > 0
    if built.module.discriminator is not None:
        assert sum(p.numel() for p in built.module.discriminator.parameters()) > 0


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_group_option_composes_and_passes_allow_list(group, option):
    cfg = compose_config([f"{group}={option}"])
    assert cfg[group] is not None
    check_targets(cfg)


def test_unknown_experiment_names_the_choices():
    with pytest.raises(ConfigError, match=r"unknown experiment 'nope'; valid: .*digits_gan"):
        compose_config(["experiment=nope"])


def test_unknown_key_names_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config key 'trainer.max_stepz'; valid keys under 'trainer': .*max_steps"):
        compose_config(["trainer.max_stepz=3"])


def test_target_outside_allow_list_is_refused():
    with pytest.raises(ConfigError, match="'os.system' at 'task' is not allowed"):
        compose_config(["task._target_=os.system"])
    cfg = compose_config(["task._target_=mypkg.MyTask", "allowed_target_prefixes=[mypkg.]"])
    assert cfg.task._target_ == "mypkg.MyTask"
    # A string would allow every module starting with one of its letters, an empty prefix every module.
    for wrong, shown in (("os", "'os'"), ("['']", "['']")):
        with pytest.raises(ConfigError, match=rf"allowed_target_prefixes={re.escape(shown)} is not valid: expected a list"):
            compose_config(["task._target_=os.system", f"allowed_target_prefixes={wrong}"])


def test_adversarial_without_discriminator_fails_at_start(tmp_path):
    cfg = compose_config(["experiment=digits_gan", "~discriminator", f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="discriminator must be provided when adversarial training is enabled"):
        build(cfg, with_data=False)
