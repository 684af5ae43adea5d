"""What the CLI commands do: prepare a run, train it, sample, export, validate.

``prepare_run`` is the one path from a config to a ``Trainer`` ready to ``fit``: ``advtune train``
runs it and fits, ``advtune validate-config`` runs it with ``dry_run=True`` and stops right before
``fit``, so a config it passes never fails at ``train`` for a reason it could have checked. Everything
a user can get wrong is checked there and reported as one line (:data:`USER_ERRORS`): value types
and ranges, the output folder, the checkpoint to resume and its config, the optimizers on the
module's parameters, the data files and loaders, the callbacks, the Trainer's arguments (Lightning
validates them when the ``Trainer`` is constructed); the discriminator's output contract is checked
on the first batch. ``train(cfg)`` is also the Python entry point (the demo and the tests call it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from advtune.building import Built, build, check_config_types, check_optimizers, set_up_data, value_source
from advtune.config import ConfigError, check_targets, compose_config
from advtune.training.arguments import trainer_arguments
from advtune.training.checkpoint_io import CheckpointError

# Errors caused by the user's input (or a run stopped on purpose, with its reason): the CLI prints
# them as one line, without a traceback. Lightning's MisconfigurationException covers Trainer
# arguments it refuses (an accelerator this machine lacks...).
USER_ERRORS = (ConfigError, CheckpointError, MisconfigurationException, FloatingPointError)

__all__ = ["Built", "PreparedRun", "build", "prepare_run", "train", "run_command", "ConfigError", "load_run",
           "check_config_types", "USER_ERRORS"]


@dataclass
class PreparedRun:
    """A run ready for ``trainer.fit(module, datamodule=datamodule, ckpt_path=resume_path)``."""

    output_dir: Path
    module: Any
    datamodule: Any
    trainer: Any
    callbacks: list[Any]
    start: Any  # the ResumePoint to continue from, or None for a new run

    @property
    def resume_path(self) -> str | None:
        return str(self.start.path) if self.start is not None else None


def prepare_run(cfg: DictConfig, dry_run: bool = False) -> PreparedRun:
    """Check ``cfg`` and build everything ``train`` fits: module, optimizers, data, callbacks, Trainer.

    ``dry_run``: write nothing (``validate-config``): ``output_dir`` is checked, not created, stale
    temporaries stay, ``config.yaml`` is not written.
    """
    try:
        return _prepare(cfg, dry_run)
    except ConfigError as error:  # a key set through another (``${disc_lr}``): name that one too
        raise ConfigError(value_source(cfg, str(error))) from None


def _prepare(cfg: DictConfig, dry_run: bool) -> PreparedRun:
    import lightning as L
    from lightning.pytorch.utilities import rank_zero_only

    from advtune.training import SafeCheckpointIO, TwoPlayerMixedPrecision
    from advtune.training.callbacks import default_callbacks
    from advtune.training.checkpoint_io import remove_stale_temporaries
    from advtune.training.loggers import logging_step_of, run_loggers
    from advtune.training.release import remove_stale_staging
    from advtune.training.resume import check_output_dir, find_resume_point, prepare_output_dir

    check_targets(cfg)  # also for a config not made by compose_config (train(cfg) from Python)
    trainer_kwargs = trainer_arguments(cfg)
    check_config_types(cfg)
    out = Path(cfg.output_dir)
    if dry_run:
        check_output_dir(out)
    else:
        prepare_output_dir(out)
    start = find_resume_point(cfg, out)
    writes = rank_zero_only.rank == 0 and not dry_run
    if writes:
        remove_stale_temporaries(out / "checkpoints")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    built = build(cfg, check_types=False)  # checked above
    module = built.module
    check_optimizers(cfg, module)
    if rank_zero_only.rank == 0:  # other ranks: Lightning's setup, after rank 0's prepare_data built any cache
        set_up_data(built.datamodule, cfg.data)
    if writes:
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
    try:
        callbacks = default_callbacks(cfg, module, out, note=note)
    except TypeError as error:  # a key HealthMonitor does not take (values were checked above)
        raise ConfigError(f"monitor: {str(error).splitlines()[0]}") from None
    try:
        trainer = L.Trainer(**trainer_kwargs, default_root_dir=str(out), callbacks=callbacks, plugins=plugins,
                            logger=run_loggers(out, logging_step_of(start.checkpoint if start else None), cfg),
                            use_distributed_sampler=False)  # advtune's loaders split data across ranks (resumable order)
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as error:
        shown = ", ".join(f"{k}={trainer_kwargs[k]}" for k in ("accelerator", "devices", "strategy", "num_nodes",
                                                                 "precision") if k in trainer_kwargs)
        raise ConfigError(f"trainer: Lightning refuses these arguments ({shown}): "
                          f"{str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    return PreparedRun(out, module, built.datamodule, trainer, callbacks, start)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train as ``cfg`` says; return the final logged metrics.

    A new ``output_dir`` starts a run; one holding a run continues it (``resume=auto``) or is refused
    (``resume=never``). The run ends with a validation at its last step, ``checkpoints/last.ckpt``,
    and what ships exported into ``output_dir`` (rank 0).
    """
    from advtune.console import closing_lines, quiet_dependencies

    quiet_dependencies()
    from advtune.training.callbacks import FinalValidation
    from advtune.training.checkpoint_io import prune_periodic_checkpoints
    from advtune.training.loggers import finish_trackers
    from advtune.training.release import write_release
    from advtune.training.strategies import gathered_weights

    run = prepare_run(cfg)
    trainer, module, out = run.trainer, run.module, run.output_dir
    trainer.fit(module, datamodule=run.datamodule, ckpt_path=run.resume_path)
    # ModelCheckpoint saves `last` only with its periodic checkpoints; the end state must be there too.
    trainer.save_checkpoint(out / "checkpoints" / "last.ckpt", weights_only=False)  # full state: resumable
    final = next(c for c in run.callbacks if isinstance(c, FinalValidation))
    if final.needs_validation(trainer) and trainer.enable_validation:
        trainer.validate(module, datamodule=run.datamodule, verbose=False)
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
        run = prepare_run(cfg, dry_run=True)
        resumes = f"; resumes {run.start.path} at generator update {run.start.step}" if run.start else ""
        print(f"ok: every object of the run builds and the Trainer accepts its arguments "
              f"(output_dir={run.output_dir}{resumes})")
        from advtune.flux_estimate import estimate_lines  # a FLUX.1 adapter job: will it fit the card?

        trainable = sum(p.numel() for p in run.module.task.trainable_parameters())
        for line in estimate_lines(cfg, trainable):
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
