"""What the CLI commands do: build the objects of a config, train, sample, export, validate.

``build`` is the only place a config becomes objects; ``train(cfg)`` is also the Python entry
point (the demo and the tests call it).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from advtune.config import ConfigError, check_targets, compose_config
from advtune.training.checkpoint_io import CheckpointError

# Errors caused by the user's input: the CLI prints them as one line, without a traceback.
USER_ERRORS = (ConfigError, CheckpointError)

__all__ = ["Built", "build", "train", "run_command", "ConfigError", "load_run", "USER_ERRORS"]


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


def train(cfg: DictConfig) -> dict[str, float]:
    """Train as ``cfg`` says; return the final logged metrics."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from advtune.training import SafeCheckpointIO, TwoPlayerMixedPrecision

    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    # Lightning's advice for automatic optimization does not apply to the two-player step.
    warnings.filterwarnings("ignore", message=".*ModelCheckpoint with manual optimization.*")
    warnings.filterwarnings("ignore", message=".*Experiment logs directory.*exists and is not empty.*")
    # Frozen parts (a VQ autoencoder under style transfer) are kept in eval mode on purpose.
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
    built = build(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    plugins: list[Any] = [SafeCheckpointIO()]
    if trainer_kwargs.get("precision") == "16-mixed":
        # One loss scaler per player instead of Lightning's shared one.
        plugins.append(TwoPlayerMixedPrecision("cuda" if trainer_kwargs.get("accelerator") != "cpu" else "cpu"))
        trainer_kwargs.pop("precision")
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", filename="step{step:06d}", auto_insert_metric_name=False,
                                 every_n_train_steps=int(cfg.checkpoint_every), save_last=True,
                                 save_top_k=int(cfg.keep_checkpoints), monitor="step", mode="max")
    trainer = L.Trainer(
        **trainer_kwargs,
        default_root_dir=str(out),
        logger=[TensorBoardLogger(str(out), name="tensorboard", version=""), CSVLogger(str(out), name="", version="")],
        callbacks=[checkpoint] + ([RichProgressBar()] if trainer_kwargs.get("enable_progress_bar", True) else []),
        plugins=plugins,
        use_distributed_sampler=False,  # advtune's loaders split data across ranks themselves (resumable order)
    )
    trainer.fit(built.module, datamodule=built.datamodule, ckpt_path=cfg.ckpt_path)
    # ModelCheckpoint saves `last` only with its periodic checkpoints; the end state must be there too.
    trainer.save_checkpoint(out / "checkpoints" / "last.ckpt", weights_only=False)  # full state: resumable
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.is_global_zero:
        print(f"done: {trainer.global_step} generator updates, {built.module.discriminator_updates} discriminator updates")
        print(f"  checkpoints: {out / 'checkpoints'}   samples: {out / 'samples'}   metrics: {out / 'metrics.csv'}")
        print(f"  tensorboard --logdir {out / 'tensorboard'}")
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


def _simple_args(overrides: list[str], allowed: dict[str, Any]) -> dict[str, Any]:
    args = dict(allowed)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in allowed:
            raise ConfigError(f"unknown argument {item!r}; valid: {', '.join(f'{k}=' for k in allowed)}")
        args[key] = type(allowed[key])(value) if allowed[key] is not None else value
    if args.get("ckpt_path") is None:
        raise ConfigError("ckpt_path=... is required")
    return args


def _prefixes(args: dict[str, Any]) -> tuple[str, ...]:
    return tuple(p for p in str(args["allowed_target_prefixes"]).split(",") if p)


def run_command(command: str, overrides: list[str]) -> None:
    if command == "train":
        train(compose_config(overrides))
    elif command == "validate-config":
        cfg = compose_config(overrides)
        build(cfg)
        print(f"ok: config composes and every object builds (output_dir={cfg.output_dir})")
    elif command == "sample":
        args = _simple_args(overrides, {"ckpt_path": None, "num_samples": 64, "seed": 0, "out_dir": "samples",
                                        "allowed_target_prefixes": ""})
        _sample(args)
    elif command == "export":
        args = _simple_args(overrides, {"ckpt_path": None, "out_dir": "export", "allowed_target_prefixes": ""})
        _export(args)


def _sample(args: dict[str, Any]) -> None:
    import numpy as np
    import torch

    from advtune.visualize import save_image_grid

    module, _ = load_run(args["ckpt_path"], _prefixes(args))
    out = Path(args["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    samples = module.task.sample(int(args["num_samples"]), generator=torch.Generator().manual_seed(int(args["seed"])))
    np.save(out / "samples.npy", samples.float().cpu().numpy())
    if samples.dim() == 4 and samples.shape[1] in (1, 3):
        save_image_grid(samples, out / "samples.png")
    print(f"wrote {out / 'samples.npy'}" + (f" and {out / 'samples.png'}" if samples.dim() == 4 else ""))


def _export(args: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    module, cfg = load_run(args["ckpt_path"], _prefixes(args))
    out = Path(args["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    path = module.task.export(out)
    print(f"generator side: {path}")
    if module.discriminator is not None:
        state = {k: v.detach().contiguous() for k, v in module.discriminator.state_dict().items()}
        save_file(state, str(out / "discriminator.safetensors"))
        (out / "discriminator.yaml").write_text(OmegaConf.to_yaml(cfg.discriminator))
        print(f"discriminator: {out / 'discriminator.safetensors'} (reuse with init_discriminator=...)")
