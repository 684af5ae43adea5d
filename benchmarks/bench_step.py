"""Steps per second of AdversarialModule vs. a plain PyTorch loop doing the same math.

Same networks (the tutorial MLP generator and discriminator on 8×8 digits), same batches (the same
ResumableDataLoader), same calculator and optimizers. Measured side by side in one process,
alternating rounds, median reported. The module runs with logging and the progress bar on, as users
run it (checkpointing off: disk speed is not the engine's overhead).

    python benchmarks/bench_step.py [--steps 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from plain_pytorch_loop import train_steps  # noqa: E402

from advtune import AdversarialLossCalculator, AdversarialModule  # noqa: E402
from advtune.data.digits import DigitsDataset, load_digits_images  # noqa: E402
from advtune.data.loader import ResumableDataLoader  # noqa: E402
from advtune.discriminators import MLPDiscriminator  # noqa: E402
from advtune.models.gan import MLPGenerator  # noqa: E402
from advtune.tasks.gan import DigitsGANTask  # noqa: E402

LATENT = 100


def _loader(batch_size: int) -> ResumableDataLoader:
    images, labels = load_digits_images("train")
    return ResumableDataLoader(DigitsDataset(images, labels), batch_size=batch_size, seed=0)


def _nets() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    return MLPGenerator(latent_dim=LATENT), MLPDiscriminator(input_shape=(1, 8, 8))


def _adam(params):
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))


class _Timer(L.Callback):
    """Times steps after the first ``skip`` (warm-up: allocations, first logging)."""

    def __init__(self, skip: int) -> None:
        self.skip, self.start, self.end = skip, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.batch_step == self.skip:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.end = time.perf_counter()


def time_module(steps: int, skip: int, batch_size: int, log_dir: str) -> float:
    generator, discriminator = _nets()
    module = AdversarialModule(DigitsGANTask(generator, LATENT), discriminator,
                               AdversarialLossCalculator(loss_type="non_saturating"),
                               generator_optimizer=_adam, discriminator_optimizer=_adam)
    timer = _Timer(skip)
    trainer = L.Trainer(max_steps=steps + skip, accelerator="cpu", logger=L.pytorch.loggers.CSVLogger(log_dir),
                        enable_checkpointing=False, enable_model_summary=False, callbacks=[timer],
                        limit_val_batches=0, log_every_n_steps=10, enable_progress_bar=True)
    trainer.fit(module, train_dataloaders=_loader(batch_size))
    return steps / (timer.end - timer.start)


def time_plain(steps: int, skip: int, batch_size: int) -> float:
    generator, discriminator = _nets()
    calc = AdversarialLossCalculator(loss_type="non_saturating")
    opt_g, opt_d = _adam(generator.parameters()), _adam(discriminator.parameters())
    loader = _loader(batch_size)

    def batches(n):
        seen = 0
        while True:
            for batch in loader:
                if seen == n:
                    return
                seen += 1
                yield batch["image"]

    train_steps(generator, discriminator, calc, opt_g, opt_d, batches(skip), LATENT)
    start = time.perf_counter()
    train_steps(generator, discriminator, calc, opt_g, opt_d, batches(steps), LATENT)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    ours, plain = [], []
    with tempfile.TemporaryDirectory() as log_dir:
        for _ in range(args.rounds):
            plain.append(time_plain(args.steps, 20, args.batch_size))
            ours.append(time_module(args.steps, 20, args.batch_size, log_dir))
    m_ours, m_plain = statistics.median(ours), statistics.median(plain)
    print(f"\nbench_step: MLP GAN on digits, batch {args.batch_size}, {args.steps} timed steps x {args.rounds} rounds, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'':28s}{'steps/s (median)':>18s}{'all rounds':>32s}")
    print(f"{'plain PyTorch loop':28s}{m_plain:18.1f}{'  '.join(f'{v:.1f}' for v in plain):>32s}")
    print(f"{'AdversarialModule':28s}{m_ours:18.1f}{'  '.join(f'{v:.1f}' for v in ours):>32s}")
    print(f"overhead of AdversarialModule: {100 * (m_plain / m_ours - 1):+.1f}% time per step (goal: < 5%)")


if __name__ == "__main__":
    main()
