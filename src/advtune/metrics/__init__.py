__all__: list[str] = []

from advtune.metrics.digits_classifier import (
    DigitsClassifier,
    DigitsFrechetDistance,
    load_digits_classifier,
)
from advtune.metrics.digits_eval import DIGITS_EXTRACTORS, digits_reference_features, evaluate_digits
from advtune.metrics.frechet import feature_statistics, frechet_distance
from advtune.metrics.kid import kernel_inception_distance, mmd2_unbiased, polynomial_kernel
from advtune.metrics.precision_recall import knn_radii, manifold_coverage, precision_recall

__all__ += [
    "DIGITS_EXTRACTORS",
    "DigitsClassifier",
    "DigitsFrechetDistance",
    "digits_reference_features",
    "evaluate_digits",
    "feature_statistics",
    "frechet_distance",
    "kernel_inception_distance",
    "knn_radii",
    "load_digits_classifier",
    "manifold_coverage",
    "mmd2_unbiased",
    "polynomial_kernel",
    "precision_recall",
]

from advtune.metrics.audio import (  # noqa: E402
    audio_metrics,
    pesq_score,
    save_spectrogram_comparison,
    si_sdr,
    stft_distance,
    stoi_score,
)

__all__ += ["audio_metrics", "pesq_score", "save_spectrogram_comparison", "si_sdr", "stft_distance", "stoi_score"]
