"""Small digits classifiers and the "digits FID" computed on their features.

The Fréchet Inception Distance (Heusel et al. 2017) compares Gaussians fitted to Inception-v3
features of real and generated images. Inception needs 299×299 RGB inputs and a weight download,
neither of which suits 8×8 digits on a CPU, so advtune computes the same Fréchet distance on the
penultimate features of a :class:`DigitsClassifier` trained by ``scripts/train_digits_classifier.py``.
Two are shipped (:data:`FEATURE_EXTRACTORS`, :func:`load_digits_classifier`):

* ``"validation"`` (``metrics/weights/digits_classifier.safetensors``): 64-d features, 3×3 convolutions,
  ReLU; trained on the training split of split seed 0. Training runs log its ``val/fid_digits`` and
  ``val/fd_*``, so methods get watched and tuned with it.
* ``"independent"`` (``metrics/weights/digits_independent.safetensors``): the yardstick a method is
  not tuned against. It differs in architecture (5×5 stem, GELU, dropout, other widths, 32-d
  features: half the size, so the covariance is better estimated from ~900 images of five digits),
  data (the training split of split seed 1: another 80 % of the images) and training (seed, batch
  size, learning rate, weight decay, length). It keeps max-pooling on purpose: with strided
  convolutions (and label smoothing) 3×3-blurred real digits fell inside the real k-NN manifold of
  :func:`~advtune.metrics.precision_recall.precision_recall` 0.47 of the time, 0.12 with max-pooling
  (validation classifier: 0.02), measured against all ten digits.

A "digits FID" is **not comparable** to Inception FID numbers in papers: the feature space, its
dimension and its scale differ. Compare it only with itself (same weights, same reference set,
same number of samples — the estimate is biased upwards for small sample counts).
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advtune.metrics.frechet import feature_statistics, frechet_distance

__all__ = [
    "DigitsClassifier", "load_digits_classifier", "DigitsFrechetDistance", "WEIGHTS_FILE", "FEATURE_EXTRACTORS",
]

WEIGHTS_FILE = "digits_classifier.safetensors"


_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


class DigitsClassifier(nn.Module):
    """CNN for ``(B, 1, 8, 8)`` digits in [-1, 1]: ``forward`` returns ``(logits, features)``.

    A ``stem_kernel``² convolution, then two 3×3 convolutions each followed by a 2×2 max-pool
    (8→4→2), then ``Linear(4·C, feature_dim)`` whose *pre-activation* output is the feature vector
    (continuous, no dead units, so the feature covariance is well conditioned), then the activation,
    dropout (when ``dropout > 0``) and a 10-way linear head.

    Args:
        conv_channels: widths of the three convolutions.
        feature_dim: size of the feature vector used by the Fréchet distance.
        num_classes: number of classes.
        stem_kernel: kernel size of the first convolution (odd).
        activation: ``"relu"`` or ``"gelu"``.
        dropout: dropout before the head (training only; 0 leaves the layer out).
    """

    def __init__(
        self,
        conv_channels: Sequence[int] = (16, 32, 64),
        feature_dim: int = 64,
        num_classes: int = 10,
        stem_kernel: int = 3,
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS or stem_kernel % 2 == 0:
            raise ValueError(f"DigitsClassifier: activation in {sorted(_ACTIVATIONS)} and an odd stem_kernel "
                             f"required, got {activation!r}, {stem_kernel}")
        c1, c2, c3 = (int(c) for c in conv_channels)
        self.model_config: dict[str, Any] = {
            "conv_channels": [c1, c2, c3],
            "feature_dim": int(feature_dim),
            "num_classes": int(num_classes),
            "stem_kernel": int(stem_kernel),
            "activation": activation,
            "dropout": float(dropout),
        }
        act = _ACTIVATIONS[activation]
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, stem_kernel, padding=stem_kernel // 2), act(),
            nn.Conv2d(c1, c2, 3, padding=1), act(), nn.MaxPool2d(2),  # 8 → 4
            nn.Conv2d(c2, c3, 3, padding=1), act(), nn.MaxPool2d(2),  # 4 → 2
            nn.Flatten(),
            nn.Linear(c3 * 4, int(feature_dim)),
        )
        regularize = [nn.Dropout(float(dropout))] if dropout > 0 else []
        self.head = nn.Sequential(act(), *regularize, nn.Linear(int(feature_dim), int(num_classes)))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, 8, 8)`` → ``(logits (B, 10), features (B, feature_dim))``."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (1, 8, 8):
            raise ValueError(
                f"DigitsClassifier expects (B, 1, 8, 8) images, got {tuple(images.shape)}"
            )
        features = self.body(images)
        return self.head(features), features


# name -> weights file in metrics/weights/ (architecture kwargs in its metadata): the extractors that ship.
FEATURE_EXTRACTORS: dict[str, str] = {"validation": WEIGHTS_FILE, "independent": "digits_independent.safetensors"}


@functools.lru_cache(maxsize=None)
def _shipped_weights(file_name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a shipped safetensors once per process (tensors + architecture kwargs)."""
    from safetensors import safe_open

    path = resources.files("advtune.metrics").joinpath("weights", file_name)
    with resources.as_file(path) as file, safe_open(str(file), framework="pt") as handle:
        state = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = handle.metadata() or {}
    return state, json.loads(metadata.get("model_config", "{}"))


def load_digits_classifier(device: torch.device | str | None = None, name: str = "validation") -> DigitsClassifier:
    """Build a shipped digits classifier, frozen and in eval mode.

    Args:
        device: where to put it (default: CPU).
        name: ``"validation"`` (the ``val/fd_*`` metric of training runs) or ``"independent"`` (the
            yardstick; see the module docstring).

    The file is read once per process; each call returns a new module, so moving one to a device
    never moves another caller's copy.
    """
    if name not in FEATURE_EXTRACTORS:
        raise ValueError(f"unknown digits classifier {name!r}; choose one of {sorted(FEATURE_EXTRACTORS)}")
    state, config = _shipped_weights(FEATURE_EXTRACTORS[name])
    # Build on the meta device: default layer initialisation would draw from the global RNG, and
    # a metric computed during validation must not change the training run's random stream.
    with torch.device("meta"):
        model = DigitsClassifier(**config)
    model.load_state_dict({key: value.clone() for key, value in state.items()}, assign=True)
    model.requires_grad_(False).eval()
    return model.to(device) if device is not None else model


def _as_digit_images(images: torch.Tensor) -> torch.Tensor:
    """Bring ``(N, 1, H, W)`` (H, W >= 8) or ``(N, 64)`` images to ``(N, 1, 8, 8)`` in [-1, 1]."""
    if images.ndim == 2 and images.shape[1] == 64:
        images = images.reshape(-1, 1, 8, 8)
    if images.ndim != 4 or images.shape[1] != 1 or min(images.shape[2:]) < 8:
        raise ValueError(
            f"digits FID expects (N, 1, H, W) images with H, W >= 8, got {tuple(images.shape)}"
        )
    if tuple(images.shape[2:]) != (8, 8):
        images = F.adaptive_avg_pool2d(images, 8)  # e.g. 16×16 from the Flux demo → 8×8
    # Clip as a saved PNG would: the metric scores what a user would see.
    return images.float().clamp(-1.0, 1.0)


class DigitsFrechetDistance:
    """Digits FID: Fréchet distance between classifier features of two image sets.

    Not an ``nn.Module`` on purpose: a task holding it does not put the classifier's weights in its
    ``state_dict`` or checkpoints.

    Args:
        classifier: a trained :class:`DigitsClassifier` (default: the shipped ``"validation"`` one).
        batch_size: images per classifier forward.
    """

    def __init__(self, classifier: DigitsClassifier | None = None, batch_size: int = 512) -> None:
        self.classifier = classifier if classifier is not None else load_digits_classifier()
        self.batch_size = int(batch_size)

    @torch.no_grad()
    def logits_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Classifier ``(logits (N, 10), features (N, feature_dim))`` (float32, CPU) of ``(N, 1, H, W)`` images."""
        images = _as_digit_images(images)
        self.classifier.to(images.device).eval()
        outputs = [self.classifier(chunk) for chunk in images.split(self.batch_size)]
        return torch.cat([o[0].cpu() for o in outputs]), torch.cat([o[1].cpu() for o in outputs])

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Classifier features ``(N, feature_dim)`` (float32, CPU) of ``(N, 1, H, W)`` images."""
        return self.logits_and_features(images)[1]

    def reference_statistics(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, sigma)`` of the features of ``images`` (cache it for a fixed reference set)."""
        return feature_statistics(self.features(images))

    def __call__(
        self,
        fake_images: torch.Tensor,
        real_images_or_stats: torch.Tensor | tuple[np.ndarray, np.ndarray],
    ) -> float:
        """Digits FID of ``fake_images`` against real images or their cached ``(mu, sigma)``."""
        if isinstance(real_images_or_stats, torch.Tensor):
            real_images_or_stats = self.reference_statistics(real_images_or_stats)
        mu_real, sigma_real = real_images_or_stats
        mu_fake, sigma_fake = self.reference_statistics(fake_images)
        return frechet_distance(mu_fake, sigma_fake, mu_real, sigma_real)
