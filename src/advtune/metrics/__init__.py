__all__: list[str] = []

from advtune.metrics.digits_classifier import (
    DigitsClassifier,
    DigitsFrechetDistance,
    load_digits_classifier,
)
from advtune.metrics.frechet import feature_statistics, frechet_distance

__all__ += [
    "DigitsClassifier",
    "DigitsFrechetDistance",
    "feature_statistics",
    "frechet_distance",
    "load_digits_classifier",
]

from advtune.metrics.audio import audio_metrics, save_spectrogram_comparison, si_sdr, stft_distance  # noqa: E402

__all__ += ["audio_metrics", "save_spectrogram_comparison", "si_sdr", "stft_distance"]
