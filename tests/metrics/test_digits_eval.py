"""The digits evaluation on real data: both shipped classifiers, all real images as reference."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from advtune.data.digits import load_digits_images
from advtune.metrics import (DIGITS_EXTRACTORS, DigitsClassifier, DigitsFrechetDistance, evaluate_digits,
                             load_digits_classifier)

NEW = [5, 6, 7, 8, 9]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def real_new() -> torch.Tensor:
    return load_digits_images("all", digits=NEW)[0]


def test_independent_classifier_is_accurate_on_its_own_held_out_split():
    images, labels = load_digits_images("val", seed=1)  # its recipe trains on split seed 1
    classifier = load_digits_classifier(name="independent")
    assert isinstance(classifier, DigitsClassifier) and not classifier.training
    assert classifier.model_config["activation"] == "gelu" and classifier.model_config["stem_kernel"] == 5
    logits, features = classifier(images)
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    assert accuracy > 0.97 and features.shape == (len(images), 32)
    report = resources.files("advtune.metrics").joinpath("weights", "digits_independent.json")
    # Inference of the shipped weights on another CPU may flip a near-tie image: within one of 359.
    assert json.loads(report.read_text())["val_accuracy"] == pytest.approx(accuracy, abs=1.5 / len(images))
    with pytest.raises(ValueError, match="unknown digits classifier"):
        load_digits_classifier(name="inception")


def test_the_reference_itself_scores_perfectly_in_both_feature_spaces(real_new):
    rng_state = torch.get_rng_state()
    scores = evaluate_digits(real_new, digits=NEW, min_samples=100)
    assert torch.equal(torch.get_rng_state(), rng_state)  # scoring must not move a run's noise
    assert scores["num_references"] == len(real_new) == scores["num_samples"]
    for name in DIGITS_EXTRACTORS:
        assert scores[f"{name}/fd"] == pytest.approx(0.0, abs=1e-6)
        assert scores[f"{name}/precision"] == scores[f"{name}/recall"] == 1.0
        assert scores[f"{name}/off_class"] < 0.01  # classifier errors only


def test_dropped_digits_lower_recall_and_wrong_digits_lower_precision(real_new):
    only_fives = load_digits_images("all", digits=[5])[0]
    wrong = load_digits_images("all", digits=[0, 1, 2, 3, 4])[0]
    reference = evaluate_digits(load_digits_images("train", digits=NEW)[0], digits=NEW, min_samples=100)
    dropped = evaluate_digits(only_fives, digits=NEW, min_samples=100)
    off = evaluate_digits(wrong, digits=NEW, min_samples=100)
    for name in DIGITS_EXTRACTORS:
        # measured (independent): train split FD 0.2, recall 0.98; only fives 661 / P 1.00 / R 0.25; wrong digits 785 / P 0.01
        assert reference[f"{name}/fd"] < 0.02 * off[f"{name}/fd"]
        assert dropped[f"{name}/precision"] > 0.95 and dropped[f"{name}/recall"] < 0.4
        assert off[f"{name}/precision"] < 0.1 and off[f"{name}/off_class"] > 0.95
        assert min(dropped[f"{name}/kid"], off[f"{name}/kid"]) > 20 * abs(reference[f"{name}/kid"])


def test_evaluation_pools_16x16_and_refuses_too_few_samples(real_new):
    upscaled = torch.nn.functional.interpolate(real_new, scale_factor=2, mode="nearest")
    scores = evaluate_digits(upscaled, digits=NEW, extractors=["independent"], min_samples=100)
    assert scores["independent/fd"] == pytest.approx(0.0, abs=1e-6) and "validation/fd" not in scores
    with pytest.raises(ValueError, match="at least min_samples=1000"):
        evaluate_digits(real_new[:500], digits=NEW)


def _known_sets(real_new: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sets whose distance to the real 5–9 a digits metric must order the same way, best first."""
    noise = torch.rand(1000, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return {
        "train split": load_digits_images("train", digits=NEW)[0],
        "shifted 1 px": torch.roll(real_new, 1, dims=-1),
        "blurred 3x3": F.avg_pool2d(F.pad(real_new, [1] * 4, mode="replicate"), 3, 1),
        "noise": noise,
        "only fives": load_digits_images("all", digits=[5])[0],
        "wrong digits": load_digits_images("all", digits=[0, 1, 2, 3, 4])[0],
    }


@pytest.mark.slow
def test_independent_classifier_script_rebuilds_an_equivalent_classifier(tmp_path, real_new):
    """Retraining gives the same yardstick, not the same bits.

    Float sums differ between CPUs over 60 epochs, even on one thread (weights differ by up to 0.06
    between two x86 machines), so the test checks what the shipped weights mean: accuracy on the
    recipe's held-out split within 0.01 of the shipped report (~3 of 359 images), the same class for
    at least 98 % of those images, and the Fréchet distances of six known sets to the real 5–9 in the
    same order and each within 10 % of the shipped classifier's (measured: at most 1.5 % apart).
    """
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_digits_classifier.py"), "--model",
                           "independent", "--output-dir", str(tmp_path)], capture_output=True, text=True, timeout=800)
    assert proc.returncode == 0, f"train_digits_classifier.py failed: {proc.stderr.strip().splitlines()[-1:]}"
    with safe_open(str(tmp_path / "digits_independent.safetensors"), "pt") as handle:
        state = {key: handle.get_tensor(key) for key in handle.keys()}
        config = json.loads(handle.metadata()["model_config"])
    retrained = DigitsClassifier(**config)
    retrained.load_state_dict(state)
    retrained.eval()
    shipped = load_digits_classifier(name="independent")
    assert retrained.model_config == shipped.model_config

    report = json.loads(resources.files("advtune.metrics").joinpath("weights", "digits_independent.json").read_text())
    images, labels = load_digits_images("val", seed=1)
    with torch.no_grad():
        new_classes, old_classes = retrained(images)[0].argmax(1), shipped(images)[0].argmax(1)
    accuracy = (new_classes == labels).float().mean().item()
    assert accuracy >= report["val_accuracy"] - 0.01, f"retrained val accuracy {accuracy:.4f} vs shipped {report['val_accuracy']}"
    agreement = (new_classes == old_classes).float().mean().item()
    assert agreement >= 0.98, f"retrained and shipped classifiers agree on {agreement:.3f} of the held-out images"

    distances = {}
    for name, model in (("shipped", shipped), ("retrained", retrained)):
        metric = DigitsFrechetDistance(model)
        reference = metric.reference_statistics(real_new)
        distances[name] = {key: float(metric(samples, reference)) for key, samples in _known_sets(real_new).items()}
    order = {name: sorted(d, key=d.get) for name, d in distances.items()}
    assert order["retrained"] == order["shipped"], f"known sets ranked {order['retrained']} vs shipped {order['shipped']}"
    for key, old in distances["shipped"].items():
        new = distances["retrained"][key]
        if old > 1.0:  # the train split sits at ~0.2, where relative error means nothing
            assert abs(new - old) <= 0.1 * old, f"{key}: FD {new:.1f} retrained vs {old:.1f} shipped"
