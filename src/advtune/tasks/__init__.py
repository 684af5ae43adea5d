from advtune.tasks.base import AdversarialTask, TaskOutput

__all__ = ["AdversarialTask", "TaskOutput"]

from advtune.tasks.gan import DigitsGANTask

__all__ += ["DigitsGANTask"]

from advtune.tasks.style_transfer import StyleTransferTask
from advtune.tasks.vqgan import VQGANTask, scaled_learning_rate

__all__ += ["StyleTransferTask", "VQGANTask", "scaled_learning_rate"]

from advtune.tasks.flux_lora import FluxLoRATask  # noqa: E402
from advtune.tasks.flux_distill import FluxDistillTask  # noqa: E402

__all__ += ["FluxLoRATask", "FluxDistillTask"]

from advtune.tasks.audio_vae import AudioVAETask  # noqa: E402

__all__ += ["AudioVAETask"]
