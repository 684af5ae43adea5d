"""What a run prints: one header line, and none of the dependencies' routine noise.

``quiet_dependencies`` drops, by exact message, the lines every run of Lightning, torch, diffusers
and torchao prints before the first step (an advertising tip, "GPU available: False", the
``limit_val_batches`` notice, deprecation notes about their own internals, optional kernels that
could not load). Filters match those messages only: a new warning, or any warning of advtune,
still shows. ``header_line`` says what runs where, in one line.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any

__all__ = ["quiet_dependencies", "quiet_lycoris", "quiet_model_loading", "header_line", "closing_lines", "count_parameters", "human_count"]

# Lightning's routine lines, matched with re.match on the formatted message. They go through
# whichever rank-zero logger was imported last (fabric's or pytorch's), so both get the filter.
_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
_LIGHTNING_LINES = (
    r"(GPU|TPU|HPU) available",
    r"💡 Tip",
    r"`Trainer\((limit_\w+_batches|val_check_interval)=1(\.0)?\)` was configured",
    r"`Trainer.fit` stopped",
    r"Restor(ing|ed all) states",  # advtune prints "resuming ... at generator update N"
    r"LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES",
    r"Using (16bit|bfloat16) Automatic Mixed Precision",
    r"-+\ndistributed_backend=",  # the header line says "cpu x2"
)
# (logger name, message pattern) of other dependencies' routine lines.
_NOISY_LOGS: tuple[tuple[str, str], ...] = tuple((name, line) for name in _RANK_ZERO_LOGGERS for line in _LIGHTNING_LINES) + (
    ("lightning.pytorch.accelerators.cuda", r"LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES"),
    ("lightning.fabric.utilities.distributed", r"Initializing distributed: GLOBAL_RANK"),
    ("torchao", r"Failed to load .*\.so|Skipping import of cpp extensions"),  # optional kernels of a diffusers dependency
    ("torchao.kernel.intmm", r"Warning: Detected no triton"),
    ("torch.utils._pytree", r"<enum '\w+'> is an Enum subclass and is now natively supported"),
    ("diffusers.quantizers.torchao.torchao_quantizer", r"Unable to import `torchao` Tensor objects"),
    ("transformers.utils.import_utils", r"`\w+` requires torchvision \(not installed\)"),  # CLIP's unused image processor
    ("diffusers.loaders.lora_base", r"No LoRA keys associated to CLIPTextModel"),  # advtune trains the transformer only
    ("mlflow.store.db.utils", r"Creating initial MLflow database tables|Updating database tables"),  # a new local store
)

# (category, message pattern) of warnings that concern a dependency's internals, not the user's run.
_NOISY_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated"),  # lightning calling torch
    # Lightning's advice for automatic optimization; the two-player step checkpoints on generator updates.
    (UserWarning, r".*ModelCheckpoint with manual optimization"),
    # advtune resumes into the same folders on purpose (resume=auto) and keeps metrics.csv itself.
    (UserWarning, r".*Experiment logs directory .* exists and is not empty"),
    (UserWarning, r".*Checkpoint directory .* exists and is not empty"),
    # Frozen parts (a VQ autoencoder under style transfer) are kept in eval mode on purpose.
    (UserWarning, r".*module\(s\) in eval mode"),
    # A small image folder has fewer batches than the logging interval; advtune logs by generator updates.
    (UserWarning, r"The number of training batches \(\d+\) is smaller than the logging interval"),
    (FutureWarning, r"`torch_dtype` is deprecated"),  # diffusers renaming a keyword advtune passes
    (DeprecationWarning, r"The ``noload`` loader strategy is deprecated"),  # SQLAlchemy 2.1 on MLflow's store
)


class _PlainWarnings(logging.Handler):
    """Re-log a dependency's own-handler records at WARNING and above through Python logging, uncoloured."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.WARNING)
        self.source = name

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(f"advtune.{self.source}").log(record.levelno, "%s: %s", self.source, record.getMessage())


def quiet_lycoris() -> None:
    """Send LyCORIS's log through Python logging: its warnings in plain text, not its coloured INFO lines."""
    # LyCORIS logs INFO lines in colour to stdout through its own handler (lycoris/logging.py, added at
    # import unless the logger already has one). Ours, put first, keeps only its warnings, in plain text.
    logger = logging.getLogger("LyCORIS")
    for handler in list(logger.handlers):
        if not isinstance(handler, _PlainWarnings):
            logger.removeHandler(handler)
    if not logger.handlers:
        logger.addHandler(_PlainWarnings("LyCORIS"))


class _DropMessages(logging.Filter):
    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def quiet_dependencies() -> None:
    """Install the filters; call before the dependencies are imported (idempotent)."""
    by_logger: dict[str, list[str]] = {}
    for name, pattern in _NOISY_LOGS:
        by_logger.setdefault(name, []).append(pattern)
    for name, patterns in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(patterns))
    for category, pattern in _NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    quiet_lycoris()


def quiet_model_loading() -> None:
    """Hide diffusers' and transformers' per-component loading bars (imports both; call where they load)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def human_count(n: int) -> str:
    """``1234567`` → ``"1.23M"``; small counts stay exact."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def count_parameters(module: Any) -> tuple[int, int]:
    """``(all, trainable)`` parameter counts of a module (``(0, 0)`` for ``None``)."""
    if module is None:
        return 0, 0
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def header_line(name: str, trainer: Any, module: Any) -> str:
    """``advtune digits_gan | cpu x1 | 32-true | G 12.3k (trainable 12.3k) | D ... | 2000 generator updates``;
    a run with a base-model profile says so: ``advtune style (profile flux1-dev) | ...``."""
    g_all, _ = count_parameters(module.task)
    g_trainable = sum(p.numel() for p in module.task.trainable_parameters())
    d_all, d_trainable = count_parameters(module.discriminator)
    device = trainer.strategy.root_device.type
    nodes = f" x{trainer.num_nodes} nodes" if trainer.num_nodes > 1 else ""
    profile = re.search(r"^profile: ([\w.-]+)$", getattr(module, "run_config", "") or "", re.MULTILINE)
    shown = f" (profile {profile.group(1)})" if profile and profile.group(1) != "null" else ""  # advtune.profiles
    parts = [f"advtune {name}{shown}", f"{device} x{trainer.num_devices}{nodes}", str(trainer.precision),
             f"G {human_count(g_all)} params ({human_count(g_trainable)} trainable)"]
    if module.discriminator is not None:
        parts.append(f"D {human_count(d_all)} params ({human_count(d_trainable)} trainable)")
    steps = trainer.max_steps
    parts.append(f"{steps} generator updates" if steps and steps > 0 else f"{trainer.max_epochs} epochs")
    return " | ".join(parts)


def closing_lines(out: Path, steps: int, module: Any, shipped: list[Path]) -> str:
    """What the run left, naming only what exists."""
    lines = [f"done: {steps} generator updates, {module.discriminator_updates} discriminator updates -> {out}"]
    if shipped:
        lines.append(f"  ships:       {', '.join(p.name for p in shipped)}")
    subdir = out / getattr(module.task, "export_subdir", "export")
    steps_exported = sorted(p.name for p in subdir.glob("step*") if p.is_dir()) if subdir.is_dir() else []
    if steps_exported:
        lines.append(f"  exports:     {subdir.name}/{steps_exported[-1]} (and {len(steps_exported) - 1} earlier)")
    checkpoints = sorted((out / "checkpoints").glob("*.ckpt"))
    if checkpoints:
        lines.append(f"  checkpoints: checkpoints/last.ckpt (resume: re-run the same command with a larger max_steps)")
    samples = sorted((p for p in (out / "samples").glob("*") if p.is_file()), key=lambda p: p.stat().st_mtime)
    if samples:
        lines.append(f"  samples:     samples/{samples[-1].name} (newest of {len(samples)})")
    if (out / "metrics.csv").is_file():
        lines.append("  metrics:     metrics.csv")
    if (out / "health.json").is_file():
        status = json.loads((out / "health.json").read_text()).get("final_status", "?")
        plot = ", health.png" if (out / "health.png").is_file() else ""
        lines.append(f"  health:      health.json{plot} (final status: {status})")
    if (out / "tensorboard").is_dir():
        lines.append(f"  tensorboard --logdir {out / 'tensorboard'}")
    return "\n".join(lines + _tracker_lines(out))


def _tracker_lines(out: Path) -> list[str]:
    """Where the W&B and MLflow runs are (advtune.training.trackers keeps their ids in trackers.json)."""
    try:
        state = json.loads((out / "trackers.json").read_text())
    except (OSError, ValueError):
        return []
    lines = []
    wandb, mlflow = state.get("wandb"), state.get("mlflow")
    if wandb and wandb.get("offline"):
        lines.append(f"  wandb sync {out / 'wandb'}   (W&B run {wandb['run_id']}, offline: uploads it, "
                     "resumed parts in order)")
    elif wandb:
        lines.append(f"  W&B run:     {wandb.get('url') or wandb['run_id']}")
    if mlflow and mlflow.get("local"):
        lines.append(f"  mlflow ui --backend-store-uri {mlflow['tracking_uri']}   (MLflow run {mlflow['run_id']}; "
                     "the UI needs `pip install mlflow`)")
    elif mlflow:
        lines.append(f"  MLflow run:  {mlflow['run_id']} at {mlflow['tracking_uri']}")
    return lines
