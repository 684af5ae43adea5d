"""Train the digits classifiers whose features define advtune's digits metrics.

Deterministic (fixed seed, one CPU thread, deterministic algorithms) and takes seconds on a CPU.
Two recipes, one per shipped feature extractor (``--model``):

* ``validation`` (default): 3×3 stem, ReLU, 64-d features, trained on the training split of split
  seed 0 (the ``val/fd_*`` metric of training runs) → ``metrics/weights/digits_classifier.*``;
* ``independent``: 5×5 stem, GELU, dropout, other widths, 32-d features, trained on the training split
  of split seed 1 with another seed, batch size, learning rate, weight decay and length
  → ``metrics/weights/digits_independent.*`` (why: :mod:`advtune.metrics.digits_classifier`).

Each reports accuracy on its own validation split and on the other recipe's, and writes the weights
(with the architecture kwargs as metadata) and a JSON report (accuracy, seed, date, recipe).

Usage: ``python scripts/train_digits_classifier.py [--model independent] [--output-dir DIR]``.
Training augments with random ±1-pixel shifts so features stay stable on slightly misplaced
generated digits.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from advtune.data.digits import load_digits_images
from advtune.metrics.digits_classifier import FEATURE_EXTRACTORS, DigitsClassifier

# Architecture (DigitsClassifier kwargs) and training recipe per shipped extractor; ``split_seed``
# picks the stratified train/validation split of the digits.
ARCHITECTURES = {
    "validation": dict(),
    "independent": dict(conv_channels=(24, 48, 96), feature_dim=32, stem_kernel=5, activation="gelu", dropout=0.1),
}
RECIPES = {
    "validation": dict(seed=0, split_seed=0, epochs=40, batch_size=64, lr=2e-3, weight_decay=1e-4),
    "independent": dict(seed=1, split_seed=1, epochs=60, batch_size=32, lr=1e-3, weight_decay=5e-4),
}

DEFAULT_OUTPUT_DIR = Path(__file__).resolve().parents[1] / "src" / "advtune" / "metrics" / "weights"


def random_shift(
    images: torch.Tensor, generator: torch.Generator, max_shift: int = 1
) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels in x and y, filling with background (-1)."""
    size = images.shape[-1]
    padded = F.pad(images, [max_shift] * 4, value=-1.0)
    offsets = torch.randint(0, 2 * max_shift + 1, (len(images), 2), generator=generator)
    crops = [
        padded[i, :, dy : dy + size, dx : dx + size] for i, (dy, dx) in enumerate(offsets.tolist())
    ]
    return torch.stack(crops)


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    logits, _ = model(images)
    return (logits.argmax(dim=1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(RECIPES), default="validation")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR)
    args = parser.parse_args()
    recipe = RECIPES[args.model]
    weights_file = FEATURE_EXTRACTORS[args.model]

    torch.manual_seed(recipe["seed"])
    torch.set_num_threads(1)  # reductions split across threads may change float sums
    torch.use_deterministic_algorithms(True)
    generator = torch.Generator().manual_seed(recipe["seed"])

    train_images, train_labels = load_digits_images("train", seed=recipe["split_seed"])
    val_images, val_labels = load_digits_images("val", seed=recipe["split_seed"])
    other_split = 1 - recipe["split_seed"]
    other_val_images, other_val_labels = load_digits_images("val", seed=other_split)
    model = DigitsClassifier(**ARCHITECTURES[args.model])
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=recipe["epochs"])

    for epoch in range(recipe["epochs"]):
        model.train()
        order = torch.randperm(len(train_images), generator=generator)
        for batch in order.split(recipe["batch_size"]):
            inputs = random_shift(train_images[batch], generator)
            logits, _ = model(inputs)
            loss = F.cross_entropy(logits, train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
        if (epoch + 1) % 10 == 0 or epoch + 1 == recipe["epochs"]:
            print(f"epoch {epoch + 1:3d}  loss {loss.item():.4f}  "
                  f"val acc {accuracy(model, val_images, val_labels):.4f}")

    val_accuracy = accuracy(model, val_images, val_labels)
    train_accuracy = accuracy(model, train_images, train_labels)
    # Part of the other split's validation images were training images here: not a held-out score.
    other_accuracy = accuracy(model, other_val_images, other_val_labels)
    print(f"train accuracy {train_accuracy:.4f}  val accuracy {val_accuracy:.4f}  "
          f"(split seed {other_split} val: {other_accuracy:.4f})")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    metadata = {"model_config": json.dumps(model.model_config)}
    save_file(state, str(args.output_dir / weights_file), metadata=metadata)
    (args.output_dir / weights_file).chmod(0o644)  # safetensors writes 0600; package data is public
    report = {
        "val_accuracy": round(val_accuracy, 6),
        "train_accuracy": round(train_accuracy, 6),
        f"split{other_split}_val_accuracy": round(other_accuracy, 6),
        "num_val_images": len(val_images),
        "model": args.model,
        **recipe,
        "model_config": model.model_config,
        "torch_version": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }
    (args.output_dir / weights_file.replace(".safetensors", ".json")).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output_dir / weights_file}")


if __name__ == "__main__":
    main()
