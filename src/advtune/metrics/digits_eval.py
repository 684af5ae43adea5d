"""The digits evaluation: distance, KID and precision/recall against ALL real images of the classes.

One call scores a set of generated digits the way a quality claim must be checked (DESIGN.md,
"Measuring quality"): against every real image of the chosen classes in scikit-learn's digits (about
180 per class: 1,797 for all ten, ~900 for five), not a small held-out subset, with at least
``min_samples`` samples (1,000 by default), in the feature spaces of two classifiers trained
independently (:func:`~advtune.metrics.digits_classifier.load_digits_classifier`):

* ``fd``: Fréchet distance (Heusel et al. 2017), biased upwards for small sample counts, so compare
  models only at equal ``N``;
* ``kid`` ± ``kid_std``: unbiased KID (Bińkowski et al. 2018) over random subsets;
* ``precision`` / ``recall``: Kynkäänniemi et al. 2019 k-NN manifolds (``k = 3``); recall falls when
  digits are dropped, precision when samples are junk;
* ``off_class``: fraction of samples the classifier puts in a class outside ``digits`` (0 for all ten).

    from advtune.metrics import evaluate_digits
    scores = evaluate_digits(samples, digits=[5, 6, 7, 8, 9])   # samples (N, 1, H, W) in [-1, 1]
    scores["independent/fd"], scores["independent/recall"], scores["validation/kid"]
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch

from advtune.metrics.digits_classifier import DigitsFrechetDistance, load_digits_classifier
from advtune.metrics.frechet import feature_statistics, frechet_distance
from advtune.metrics.kid import kernel_inception_distance
from advtune.metrics.precision_recall import precision_recall

__all__ = ["DIGITS_EXTRACTORS", "evaluate_digits", "digits_reference_features"]

# The yardstick first: the extractor nobody watches during training.
DIGITS_EXTRACTORS: tuple[str, ...] = ("independent", "validation")


@functools.lru_cache(maxsize=None)
def _metric(extractor: str) -> DigitsFrechetDistance:
    return DigitsFrechetDistance(load_digits_classifier(name=extractor))


@functools.lru_cache(maxsize=None)
def digits_reference_features(extractor: str, digits: tuple[int, ...] | None) -> np.ndarray:
    """Features ``(N_real, D)`` of every real digit of the classes ``digits`` (all ten for ``None``)."""
    from advtune.data.digits import load_digits_images

    images, _ = load_digits_images("all", digits=digits)
    return _metric(extractor).features(images).double().numpy()


@torch.no_grad()
def evaluate_digits(
    samples: torch.Tensor,
    digits: Sequence[int] | None = None,
    extractors: Sequence[str] = DIGITS_EXTRACTORS,
    k: int = 3,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    min_samples: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Score generated digits against all real images of ``digits`` (see the module docstring).

    Args:
        samples: ``(N, 1, H, W)`` (``H, W >= 8``, pooled to 8×8) or ``(N, 64)`` images in [-1, 1]
            (clipped to it, as a saved image would be).
        digits: the classes the model should draw (``None``: all ten).
        extractors: feature spaces to score in: ``"independent"`` and/or ``"validation"``.
        k: neighbour of the precision/recall radii.
        kid_subsets, kid_subset_size: KID subsets (size capped by both set sizes).
        min_samples: refuse fewer samples (the estimators' bias and noise grow as ``N`` shrinks).
        seed: seed of the KID subset draws.

    Returns:
        Flat dict of floats: ``"{extractor}/{fd,kid,kid_std,precision,recall,off_class}"`` per
        extractor, plus ``"num_samples"`` and ``"num_references"``.
    """
    if len(samples) < min_samples:
        raise ValueError(f"evaluate_digits: {len(samples)} samples, at least min_samples={min_samples} needed")
    digits_key = None if digits is None else tuple(sorted(int(d) for d in digits))
    results: dict[str, float] = {"num_samples": float(len(samples))}
    for extractor in extractors:
        metric = _metric(extractor)
        real = digits_reference_features(extractor, digits_key)
        logits, features = metric.logits_and_features(samples.detach().float().cpu())
        fake, predicted = features.double().numpy(), logits.argmax(1).numpy()
        kid, kid_std = kernel_inception_distance(fake, real, kid_subsets, kid_subset_size, seed)
        precision, recall = precision_recall(real, fake, k)
        results.update({
            f"{extractor}/fd": frechet_distance(*feature_statistics(fake), *feature_statistics(real)),
            f"{extractor}/kid": kid,
            f"{extractor}/kid_std": kid_std,
            f"{extractor}/precision": precision,
            f"{extractor}/recall": recall,
            f"{extractor}/off_class": float(0.0 if digits_key is None else (~np.isin(predicted, digits_key)).mean()),
        })
        results["num_references"] = float(len(real))
    return results
