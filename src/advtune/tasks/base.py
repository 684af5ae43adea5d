"""The generator side of a job: what is real, what is fake, and what the base loss is.

A task is a small :class:`torch.nn.Module`. It never touches optimizers: the
:class:`~advtune.training.AdversarialModule` owns the two-player step and only asks the task for
a :class:`TaskOutput` per batch.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

__all__ = ["TaskOutput", "AdversarialTask"]


@dataclass
class TaskOutput:
    """What one generator forward produces for one batch.

    Attributes:
        real: data the discriminator must call real, ``(B, ...)``.
        fake: generator output the discriminator must call fake, same shape as ``real``;
            it carries the generator's autograd graph.
        base_losses: named, *weighted* scalar losses of the generator that do not involve the
            discriminator (reconstruction, KL, flow matching...). Their sum is ``g/base``.
            Weights are applied by the task; the module may anneal the sum as a whole.
        cond: keyword arguments passed to the discriminator for both ``real`` and ``fake``
            (e.g. ``{"sigma": t}`` for a noise-conditioned latent discriminator).
        last_layer: the generator's last weight, for the adaptive weight of
            taming-transformers; ``None`` when the job does not use it.
        logs: extra detached scalars to log (namespaced keys, e.g. ``"g/perplexity"``).
    """

    real: torch.Tensor
    fake: torch.Tensor
    base_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    cond: dict[str, Any] = field(default_factory=dict)
    last_layer: torch.Tensor | None = None
    logs: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def base_loss(self) -> torch.Tensor | None:
        """Sum of ``base_losses``, or ``None`` when the job has no base loss (classic GAN)."""
        if not self.base_losses:
            return None
        return torch.stack([v for v in self.base_losses.values()]).sum()


class AdversarialTask(nn.Module, abc.ABC):
    """Base class of every job's generator side.

    Subclasses implement :meth:`generator_predict`, :meth:`sample` and :meth:`export`; the
    defaults of the other hooks suit most jobs.

    Attributes:
        export_subdir: folder of ``output_dir`` that receives the periodic exports
            (``<export_subdir>/stepNNNNNN/``); the final export goes to ``output_dir`` itself.
        validation_images: a task may fill this dict (name -> ``(C, H, W)`` float in [0, 1],
            C = 1 or 3) in :meth:`validation_epoch_end`; the run sends them to TensorBoard, then
            empties it.
    """

    export_subdir: str = "export"

    @abc.abstractmethod
    def generator_predict(self, batch: Any) -> TaskOutput:
        """Run the generator once on ``batch`` and say what is real and what is fake."""

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """Parameters the generator optimizer updates (default: all that require grad)."""
        return [p for p in self.parameters() if p.requires_grad]

    def discriminator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that complete a ``_partial_`` discriminator config.

        A discriminator that reuses part of the generator (the frozen Flux transformer) is
        configured with ``_partial_: true``; the CLI calls it with these arguments, so the
        discriminator never imports the task (imports point downwards only).
        """
        return {}

    def attach_discriminator(self, discriminator: nn.Module | None) -> None:
        """Called once by the module with the discriminator, for validation views (default: ignored).

        A task that keeps it must store it outside its submodules, so it stays out of the
        generator's parameters and state dict.
        """

    def discriminator_inputs(self, output: TaskOutput) -> TaskOutput:
        """Hook to transform real/fake before the D phase (default: unchanged).

        ``output.fake`` is already detached when this is called for the D phase.
        """
        return output

    @torch.no_grad()
    def validation_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """Metrics of the generator alone on one validation batch (namespaced ``val/...``)."""
        return {}

    @torch.no_grad()
    def validation_epoch_end(self, output_dir: Path | None, step: int) -> dict[str, float]:
        """Called once after validation: aggregate metrics, write sample grids to ``output_dir``."""
        return {}

    @abc.abstractmethod
    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``num_samples`` outputs of the generator (for grids and ``advtune sample``)."""

    @abc.abstractmethod
    def export(self, directory: str | Path) -> Path:
        """Write what ships (the generator or the adapter only) to ``directory``; return the file."""
