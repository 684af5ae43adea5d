"""The digits evaluation on real data: both shipped classifiers, all real images as reference."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch

from advtune.data.digits import load_digits_images
from advtune.metrics import DIGITS_EXTRACTORS, DigitsClassifier, evaluate_digits, load_digits_classifier

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
    assert json.loads(report.read_text())["val_accuracy"] == pytest.approx(accuracy, abs=1e-6)
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


@pytest.mark.slow
def test_independent_classifier_script_rebuilds_the_shipped_weights(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "train_digits_classifier.py"), "--model", "independent",
                    "--output-dir", str(tmp_path)], check=True, capture_output=True, timeout=600)
    shipped = resources.files("advtune.metrics").joinpath("weights", "digits_independent.safetensors").read_bytes()
    assert (tmp_path / "digits_independent.safetensors").read_bytes() == shipped
