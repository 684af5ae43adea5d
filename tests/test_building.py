"""advtune.building: a config becomes checked objects; whatever an object refuses is one line naming the key."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from advtune.building import build, check_config_types, check_optimizers, set_up_data, value_source
from advtune.config import ConfigError, compose_config


def _cfg(tmp_path, *overrides: str):
    return compose_config(["experiment=digits_gan", f"output_dir={tmp_path}", *overrides])


def _refusal(function, *args) -> str:
    with pytest.raises(ConfigError) as error:
        function(*args)
    return str(error.value)


def test_light_objects_are_refused_before_the_model_is_built(tmp_path):
    """Both values are wrong; the data module's (built first, cheaply) is the one reported."""
    cfg = _cfg(tmp_path, "data.num_workers=-7", "task.generator.latent_dim=-7")
    assert _refusal(build, cfg) == "data.num_workers=-7 is not valid: expected an integer >= 0"


def test_an_error_naming_no_key_gets_the_value_it_quotes(tmp_path):
    message = _refusal(build, _cfg(tmp_path, "task.generator.latent_dim=-7"))
    assert message.startswith("cannot build 'task' (advtune.tasks.gan.DigitsGANTask): ")
    assert message.endswith("(task.generator.latent_dim=-7)")  # torch's message names no key


def test_a_value_set_through_an_interpolation_names_its_source(tmp_path):
    cfg = _cfg(tmp_path)
    OmegaConf.update(cfg, "data.seed", "${seed}", merge=False)
    assert value_source(cfg, "data.seed=-7 is not valid") == "data.seed=-7 is not valid (the value comes from ${seed})"
    assert value_source(cfg, "data.batch_size=-7 is not valid") == "data.batch_size=-7 is not valid"
    assert value_source(cfg, "cannot build 'task'") == "cannot build 'task'"


def test_optimizer_and_scheduler_factories_are_called_on_the_parameters(tmp_path):
    cfg = _cfg(tmp_path, "module.generator_optimizer.betas=[1.5,0.9]")
    module = build(cfg, with_data=False).module  # lr and betas are not read before the factory runs
    message = _refusal(check_optimizers, cfg, module)
    assert message == "cannot build 'module.generator_optimizer' (torch.optim.Adam): Invalid beta parameter at index 0: 1.5"
    cfg = _cfg(tmp_path, "+module.discriminator_scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true}")
    message = _refusal(check_optimizers, cfg, build(cfg, with_data=False).module)
    assert message.startswith("cannot build 'module.discriminator_scheduler' (torch.optim.lr_scheduler.StepLR): ")
    assert "step_size" in message
    cfg = _cfg(tmp_path, "+module.discriminator_scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,"
                         "step_size:10}")
    message = _refusal(check_optimizers, cfg, build(cfg, with_data=False).module)
    assert message.endswith("give an LR scheduler to both players or to neither")  # configure_optimizers' own check


def test_types_of_flags_and_monitor_keys(tmp_path):
    assert _refusal(check_config_types, _cfg(tmp_path, "module.generator_optimizer._partial_=abc")) == \
        "module.generator_optimizer._partial_='abc' is not valid: expected true/false"
    assert _refusal(check_config_types, _cfg(tmp_path, "monitor.enabled=1")) == \
        "monitor.enabled=1 is not valid: expected true/false"
    assert _refusal(check_config_types, _cfg(tmp_path, "monitor.patience=2.5")) == \
        "monitor.patience=2.5 is not valid: expected an integer"


def test_init_files_are_checked(tmp_path):
    assert _refusal(build, _cfg(tmp_path, f"init_generator={tmp_path / 'none.pt'}"), False) == \
        f"init_generator: no file at {tmp_path / 'none.pt'}"
    (tmp_path / "text.pt").write_text("not a model")
    message = _refusal(build, _cfg(tmp_path, f"init_generator={tmp_path / 'text.pt'}"), False)
    assert message.startswith(f"init_generator {tmp_path / 'text.pt'} does not fit the task's generator: ")


def test_data_set_up_and_loaders_are_checked(tmp_path):
    cfg = _cfg(tmp_path, "data.val_fraction=1.5")
    datamodule = build(cfg).datamodule  # the data module takes the value; its setup refuses it
    message = _refusal(set_up_data, datamodule, cfg.data)
    assert message == "data (DigitsDataModule): val_fraction must be in (0, 1), got 1.5"
    assert datamodule.train_dataset is None
    good = build(_cfg(tmp_path)).datamodule
    set_up_data(good, None)
    assert len(good.train_dataset) > 0 and len(good.val_dataset) > 0
