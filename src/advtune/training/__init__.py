from advtune.training.checkpoint_io import CheckpointError, SafeCheckpointIO
from advtune.training.module import AdversarialModule
from advtune.training.precision import TwoPlayerMixedPrecision

__all__ = ["AdversarialModule", "CheckpointError", "SafeCheckpointIO", "TwoPlayerMixedPrecision"]

from advtune.training.audio_module import AudioVAEModule  # noqa: E402

__all__ += ["AudioVAEModule"]
