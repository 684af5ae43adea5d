"""Steps per second of AdversarialModule vs. a plain PyTorch loop doing the same math.

Same networks (the tutorial MLP generator and discriminator on 8×8 digits), same batches (the same
ResumableDataLoader), same calculator and optimizers. Measured side by side in one process,
alternating rounds, median reported. The module runs with its metric logging on (CSV, every 10 steps)
and the progress bar and checkpointing off: terminal and disk speed are not the engine's overhead.

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
        self.seen = getattr(self, "seen", -1) + 1
        if self.seen == self.skip:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.end = time.perf_counter()


def time_module(steps: int, skip: int, batch_size: int, log_dir: str) -> float:
    generator, discriminator = _nets()
    module = AdversarialModule(DigitsGANTask(generator, LATENT), discriminator,
                               AdversarialLossCalculator(loss_type="non_saturating"),
                               generator_optimizer=_adam, discriminator_optimizer=_adam)
    return _fit_timed(module, steps, skip, batch_size, log_dir, max_steps=steps + skip)


class TutorialGAN(L.LightningModule):
    """The hand-written manual-optimization step of Lightning's GAN tutorial, same math as ours.

    It separates Lightning's own per-step cost (hooks, optimizer wrappers, logging) from advtune's.
    """

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator, self.discriminator = _nets()
        self.calc = AdversarialLossCalculator(loss_type="non_saturating")

    def configure_optimizers(self):
        return [_adam(self.generator.parameters()), _adam(self.discriminator.parameters())]

    def training_step(self, batch, batch_idx):
        opt_g, opt_d = self.optimizers()
        real = batch["image"]
        fake = self.generator(torch.randn(real.shape[0], LATENT))
        self.toggle_optimizer(opt_g)
        g = self.calc.compute_generator_loss(self.discriminator, real, fake, global_step=batch_idx)
        opt_g.zero_grad()
        self.manual_backward(g["loss"])
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self.toggle_optimizer(opt_d)
        d = self.calc.compute_discriminator_loss(self.discriminator, real, fake, global_step=batch_idx)
        opt_d.zero_grad()
        self.manual_backward(d["loss"])
        opt_d.step()
        self.untoggle_optimizer(opt_d)
        self.log_dict({"g/total": g["g/total"], "d/loss": d["d/loss"]}, prog_bar=True)


def _fit_timed(module: L.LightningModule, steps: int, skip: int, batch_size: int, log_dir: str, max_steps: int) -> float:
    timer = _Timer(skip)
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=L.pytorch.loggers.CSVLogger(log_dir),
                        enable_checkpointing=False, enable_model_summary=False, callbacks=[timer],
                        limit_val_batches=0, log_every_n_steps=10, enable_progress_bar=False)
    trainer.fit(module, train_dataloaders=_loader(batch_size))
    return steps / (timer.end - timer.start)


def time_tutorial(steps: int, skip: int, batch_size: int, log_dir: str) -> float:
    # Lightning counts both optimizers' steps in max_steps here: 2 per batch.
    return _fit_timed(TutorialGAN(), steps, skip, batch_size, log_dir, max_steps=2 * (steps + skip))


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
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 512])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    print(f"bench_step: MLP GAN of Lightning's tutorial on digits, {args.steps} timed steps x {args.rounds} rounds "
          f"(alternating), torch {torch.__version__}, {torch.get_num_threads()} threads; steps/s, median")
    print(f"{'batch':>6} {'plain loop':>11} {'tutorial LM':>12} {'advtune':>9} {'ms/step plain':>14} "
          f"{'advtune vs plain':>17} {'advtune vs tutorial':>20}")
    with tempfile.TemporaryDirectory() as log_dir:
        for batch_size in args.batch_sizes:
            runs: dict[str, list[float]] = {"plain": [], "tutorial": [], "ours": []}
            for _ in range(args.rounds):
                runs["plain"].append(time_plain(args.steps, 20, batch_size))
                runs["tutorial"].append(time_tutorial(args.steps, 20, batch_size, log_dir))
                runs["ours"].append(time_module(args.steps, 20, batch_size, log_dir))
            m = {k: statistics.median(v) for k, v in runs.items()}
            print(f"{batch_size:>6} {m['plain']:>11.1f} {m['tutorial']:>12.1f} {m['ours']:>9.1f} {1000 / m['plain']:>14.1f} "
                  f"{100 * (m['plain'] / m['ours'] - 1):>+16.1f}% {100 * (m['tutorial'] / m['ours'] - 1):>+19.1f}%")
    print("overhead = extra time per step (goal: < 5% vs the plain loop); 'tutorial LM' is the hand-written "
          "two-optimizer LightningModule")


if __name__ == "__main__":
    main()
