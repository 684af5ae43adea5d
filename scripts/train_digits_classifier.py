"""Train the digits classifier whose features define advtune's "digits FID".

Deterministic (fixed seed, one CPU thread, deterministic algorithms) and takes seconds on a CPU.
It trains on the fixed *training* split of scikit-learn's digits, reports accuracy on the
validation split, and writes

    src/advtune/metrics/weights/digits_classifier.safetensors   (weights + architecture kwargs)
    src/advtune/metrics/weights/digits_classifier.json          (accuracy, seed, date, recipe)

Usage: ``python scripts/train_digits_classifier.py [--epochs 40] [--seed 0] [--output-dir DIR]``.
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
from advtune.metrics.digits_classifier import WEIGHTS_FILE, DigitsClassifier

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
def accuracy(model: DigitsClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    logits, _ = model(images)
    return (logits.argmax(dim=1) == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # reductions split across threads may change float sums
    torch.use_deterministic_algorithms(True)
    generator = torch.Generator().manual_seed(args.seed)

    train_images, train_labels = load_digits_images("train")
    val_images, val_labels = load_digits_images("val")
    model = DigitsClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)

    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_images), generator=generator)
        for batch in order.split(args.batch_size):
            inputs = random_shift(train_images[batch], generator)
            logits, _ = model(inputs)
            loss = F.cross_entropy(logits, train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
        if (epoch + 1) % 10 == 0 or epoch + 1 == args.epochs:
            print(f"epoch {epoch + 1:3d}  loss {loss.item():.4f}  "
                  f"val acc {accuracy(model, val_images, val_labels):.4f}")

    val_accuracy = accuracy(model, val_images, val_labels)
    train_accuracy = accuracy(model, train_images, train_labels)
    print(f"train accuracy {train_accuracy:.4f}  val accuracy {val_accuracy:.4f}")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    metadata = {"model_config": json.dumps(model.model_config)}
    save_file(state, str(args.output_dir / WEIGHTS_FILE), metadata=metadata)
    (args.output_dir / WEIGHTS_FILE).chmod(0o644)  # safetensors writes 0600; package data is public
    report = {
        "val_accuracy": round(val_accuracy, 6),
        "train_accuracy": round(train_accuracy, 6),
        "num_val_images": len(val_images),
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "model_config": model.model_config,
        "torch_version": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }
    (args.output_dir / WEIGHTS_FILE.replace(".safetensors", ".json")).write_text(
        json.dumps(report, indent=2) + "\n"
    )
    print(f"wrote {args.output_dir / WEIGHTS_FILE}")


if __name__ == "__main__":
    main()
