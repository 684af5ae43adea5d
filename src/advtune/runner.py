"""What the CLI commands do: build the objects of a config, train, sample, export, validate.

``build`` is the only place a config becomes objects; ``train(cfg)`` is also the Python entry
point (the demo and the tests call it). Everything a user can get wrong is checked before the
first step and reported as one line (:data:`USER_ERRORS`): value types, the output folder, the
checkpoint to resume and its config, the data files, the discriminator's output contract.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from advtune.config import ConfigError, check_targets, check_value_types, compose_config
from advtune.training.arguments import trainer_arguments
from advtune.training.checkpoint_io import CheckpointError

# Errors caused by the user's input (or a run stopped on purpose, with its reason): the CLI prints
# them as one line, without a traceback. Lightning's MisconfigurationException covers Trainer
# arguments it refuses (an accelerator this machine lacks...).
USER_ERRORS = (ConfigError, CheckpointError, MisconfigurationException, FloatingPointError)

__all__ = ["Built", "build", "train", "run_command", "ConfigError", "load_run", "check_config_types", "USER_ERRORS"]


@dataclass
class Built:
    """Everything a config describes, ready for ``Trainer.fit``."""

    module: Any
    datamodule: Any


def build(cfg: DictConfig, with_data: bool = True) -> Built:
    """Instantiate task, discriminator, calculator, schedule and module (and data) from ``cfg``."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf.errors import OmegaConfBaseException

    def make(node: Any, name: str) -> Any:
        try:
            return instantiate(node)
        except (InstantiationException, OmegaConfBaseException) as err:
            cause = err.__cause__ or err
            raise ConfigError(f"cannot build '{name}' ({node.get('_target_')}): {str(cause).splitlines()[0]}") from None

    check_config_types(cfg)
    task = make(cfg.task, "task")
    use_adversarial = bool(cfg.module.get("use_adversarial", True))
    discriminator = None
    if use_adversarial:
        if cfg.get("discriminator") is None:
            raise ConfigError("discriminator must be provided when adversarial training is enabled "
                              "(pick one with discriminator=NAME, or set module.use_adversarial=false)")
        discriminator = make(cfg.discriminator, "discriminator")
        if isinstance(discriminator, functools.partial):
            discriminator = discriminator(**task.discriminator_kwargs())
    module_node = OmegaConf.create(OmegaConf.to_container(cfg.module, resolve=True))
    module_node["_partial_"] = True
    factory = make(module_node, "module")
    out = Path(cfg.output_dir)
    module = factory(task=task, discriminator=discriminator, calculator=make(cfg.adversarial, "adversarial"),
                     schedule=make(cfg.schedule, "schedule"), sample_dir=out / "samples")
    module.run_config = OmegaConf.to_yaml(cfg)
    _initialise_players(cfg, module)
    return Built(module, make(cfg.data, "data") if with_data else None)


def check_config_types(node: Any, path: str = "") -> None:
    """Check the values of every ``_target_`` node under ``node`` against its parameters' annotations."""
    from hydra.utils import get_object

    if isinstance(node, DictConfig):
        target = node.get("_target_")
        if target is not None:
            try:
                obj = get_object(str(target))
            except Exception:  # noqa: BLE001 - a target that cannot be imported is reported by instantiate
                obj = None
            if obj is not None:
                values = OmegaConf.to_container(node, resolve=True)
                check_value_types({k: v for k, v in values.items() if not isinstance(v, dict)}, obj, path)
        for key, value in node.items():
            if isinstance(value, DictConfig):
                check_config_types(value, f"{path}.{key}" if path else str(key))


def _initialise_players(cfg: DictConfig, module: Any) -> None:
    if cfg.get("init_discriminator"):
        from safetensors.torch import load_file

        path = Path(cfg.init_discriminator)
        if not path.is_file():
            raise ConfigError(f"init_discriminator: no file at {path}")
        try:
            module.discriminator.load_state_dict(load_file(str(path)))
        except Exception as err:  # noqa: BLE001 - shape/key mismatch or corrupt file, reported in one line
            raise ConfigError(f"init_discriminator {path} does not fit the configured discriminator: "
                              f"{str(err).splitlines()[0]}") from None
    if cfg.get("init_generator"):
        from advtune.io import load_model

        generator = getattr(module.task, "generator", None)
        if generator is None:
            raise ConfigError(f"init_generator: task {type(module.task).__name__} has no `generator` to initialise")
        generator.load_state_dict(load_model(cfg.init_generator).state_dict())


def _set_up_data(datamodule: Any) -> None:
    """Run the data module's ``setup`` now (Lightning's later call finds it done): missing folders
    and unreadable files are reported before the Trainer starts."""
    try:
        datamodule.setup("fit")
    except ConfigError:
        raise
    except (ValueError, OSError) as error:
        raise ConfigError(f"data ({type(datamodule).__name__}): {str(error).splitlines()[0]}") from None


def train(cfg: DictConfig) -> dict[str, float]:
    """Train as ``cfg`` says; return the final logged metrics.

    A new ``output_dir`` starts a run; one holding a run continues it (``resume=auto``) or is refused
    (``resume=never``). The run ends with a validation at its last step, ``checkpoints/last.ckpt``,
    and what ships exported into ``output_dir`` (rank 0).
    """
    from advtune.console import closing_lines, quiet_dependencies

    quiet_dependencies()
    import lightning as L
    from lightning.pytorch.utilities import rank_zero_only

    from advtune.training import SafeCheckpointIO, TwoPlayerMixedPrecision
    from advtune.training.callbacks import FinalValidation, default_callbacks
    from advtune.training.checkpoint_io import prune_periodic_checkpoints, remove_stale_temporaries
    from advtune.training.loggers import finish_trackers, logging_step_of, run_loggers
    from advtune.training.release import remove_stale_staging, write_release
    from advtune.training.resume import find_resume_point, prepare_output_dir
    from advtune.training.strategies import gathered_weights

    trainer_kwargs = trainer_arguments(cfg)
    check_config_types(cfg)
    out = Path(cfg.output_dir)
    prepare_output_dir(out)
    start = find_resume_point(cfg, out)
    if rank_zero_only.rank == 0:
        remove_stale_temporaries(out / "checkpoints")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    built = build(cfg)
    module = built.module
    if rank_zero_only.rank == 0:  # other ranks: Lightning's setup, after rank 0's prepare_data built any cache
        _set_up_data(built.datamodule)
        remove_stale_staging(out, getattr(module.task, "export_subdir", "export"))
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    if trainer_kwargs.get("strategy") == "fsdp":  # Lightning's own refuses CPU and cannot shard the two-player step
        from advtune.training.strategies import fsdp_strategy

        trainer_kwargs["strategy"] = fsdp_strategy(module, trainer_kwargs)
    checkpoint_io = SafeCheckpointIO()
    plugins: list[Any] = [checkpoint_io]
    if trainer_kwargs.get("precision") == "16-mixed":
        # One loss scaler per player instead of Lightning's shared one.
        plugins.append(TwoPlayerMixedPrecision("cuda" if trainer_kwargs.get("accelerator") != "cpu" else "cpu"))
        trainer_kwargs.pop("precision")
    note = ""
    if start is not None:
        checkpoint_io.preload(start.path, start.checkpoint)
        note = f"resuming {start.path} at generator update {start.step}"
        if start.step >= trainer_kwargs.get("max_steps", -1) > 0:
            note += f" (max_steps={trainer_kwargs['max_steps']} already reached: nothing left to train)"
    callbacks = default_callbacks(cfg, module, out, note=note)
    trainer = L.Trainer(**trainer_kwargs, default_root_dir=str(out), callbacks=callbacks, plugins=plugins,
                        logger=run_loggers(out, logging_step_of(start.checkpoint if start else None), cfg),
                        use_distributed_sampler=False)  # advtune's loaders split data across ranks (resumable order)
    trainer.fit(module, datamodule=built.datamodule, ckpt_path=str(start.path) if start else None)
    # ModelCheckpoint saves `last` only with its periodic checkpoints; the end state must be there too.
    trainer.save_checkpoint(out / "checkpoints" / "last.ckpt", weights_only=False)  # full state: resumable
    final = next(c for c in callbacks if isinstance(c, FinalValidation))
    if final.needs_validation(trainer) and trainer.enable_validation:
        trainer.validate(module, datamodule=built.datamodule, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    with gathered_weights(module):  # FSDP: every rank takes part in gathering what rank 0 writes
        if trainer.is_global_zero:
            prune_periodic_checkpoints(out / "checkpoints", int(cfg.keep_checkpoints))
            yaml = OmegaConf.to_yaml(cfg.discriminator) if cfg.get("discriminator") is not None else None
            shipped = write_release(module, out, yaml)
            finish_trackers(trainer.loggers)
            print(closing_lines(out, trainer.global_step, module, shipped))
    return metrics


def load_run(ckpt_path: str | Path, extra_prefixes: tuple[str, ...] = ()) -> Any:
    """Rebuild the module of a checkpoint from the config stored in it, and load its weights."""
    from advtune.training.checkpoint_io import load_checkpoint_file

    checkpoint = load_checkpoint_file(ckpt_path)
    text = (checkpoint.get("advtune") or {}).get("config")
    if not text:
        raise ConfigError(f"{ckpt_path} holds no advtune run config; it was not written by `advtune train`")
    cfg = OmegaConf.create(text)
    # The file must not choose the code we import: its own allowed_target_prefixes are ignored,
    # only the ones the user passes on the command line count.
    check_targets(cfg, extra_prefixes, trust_config_prefixes=False)
    module = build(cfg, with_data=False).module
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval(), cfg


def _prefixes(args: dict[str, Any]) -> tuple[str, ...]:
    return tuple(p for p in str(args["allowed_target_prefixes"]).split(",") if p)


def run_command(command: str, overrides: list[str]) -> None:
    """Run a built-in command (``generate``/``evaluate`` are dispatched by the CLI to their modules)."""
    from advtune.commands import parse_simple_args

    if command == "train":
        train(compose_config(overrides))
    elif command == "validate-config":
        cfg = compose_config(overrides)
        trainer_kwargs = trainer_arguments(cfg)
        module = build(cfg).module
        if trainer_kwargs.get("strategy") == "fsdp":
            from advtune.training.strategies import check_fsdp_support

            check_fsdp_support(module, trainer_kwargs.get("precision"))
        print(f"ok: config composes and every object builds (output_dir={cfg.output_dir})")
        from advtune.flux_estimate import estimate_lines  # a FLUX.1 adapter job: will it fit the card?

        for line in estimate_lines(cfg, sum(p.numel() for p in module.task.trainable_parameters())):
            print(line)
    elif command == "sample":
        _sample(parse_simple_args(command, overrides))
    elif command == "export":
        _export(parse_simple_args(command, overrides))
    else:
        raise ConfigError(f"unknown command {command!r}")


def _sample(args: dict[str, Any]) -> None:
    import numpy as np
    import torch

    from advtune.visualize import MAX_TILES, save_image_grid

    module, _ = load_run(args["ckpt_path"], _prefixes(args))
    out = Path(args["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    with module.generator_weights():
        samples = module.task.sample(int(args["num_samples"]),
                                     generator=torch.Generator().manual_seed(int(args["seed"])))
    np.save(out / "samples.npy", samples.float().cpu().numpy())
    print(f"wrote {out / 'samples.npy'} ({len(samples)} samples, shape {tuple(samples.shape[1:])})")
    if samples.dim() == 4 and samples.shape[1] in (1, 3):
        save_image_grid(samples, out / "samples.png")
        shown = f"the first {MAX_TILES}" if len(samples) > MAX_TILES else "all"
        print(f"wrote {out / 'samples.png'} ({shown} as a grid)")


def _export(args: dict[str, Any]) -> None:
    from advtune.training.release import write_release

    module, cfg = load_run(args["ckpt_path"], _prefixes(args))
    yaml = OmegaConf.to_yaml(cfg.discriminator) if cfg.get("discriminator") is not None else None
    for path in write_release(module, Path(args["out_dir"]), yaml):
        print(f"wrote {path}")
    if module.discriminator is not None:
        print("  the discriminator can start another run: init_discriminator=.../discriminator.safetensors")
