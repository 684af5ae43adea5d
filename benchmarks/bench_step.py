"""Time per step of advtune vs. a plain PyTorch loop and Lightning's hand-written tutorial step.

Same networks (the tutorial MLP generator and discriminator on 8×8 digits), same batches (the
digits data module's loader), same calculator, fused Adam for every contender; the D step scores
the fake made after the G update (``regenerate_fake``, as ``experiment=digits_gan``). Two modes:

* in-process (default): the three loops side by side in one process, alternating rounds, median
  steps/s; the module runs with its metric logging on (CSV, every 10 steps), no progress bar.
* ``--cli``: whole processes, as a user runs them — ``advtune train experiment=digits_gan`` with
  validation off (its progress bar, monitor, checkpoints and exports on; also once with the bar
  off), a plain-loop process and a tutorial-LightningModule process — each at ``--short`` and
  ``--long`` generator updates; the marginal time per step is ``(T_long − T_short) / (long − short)``,
  so start-up, imports and end-of-run work cancel out. Median over ``--rounds`` alternating rounds.

    python benchmarks/bench_step.py [--steps 300] [--rounds 3]
    python benchmarks/bench_step.py --cli [--short 300] [--long 1300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from plain_pytorch_loop import train_steps  # noqa: E402

from advtune import AdversarialLossCalculator, AdversarialModule  # noqa: E402
from advtune.data.digits import DigitsDataModule  # noqa: E402
from advtune.discriminators import MLPDiscriminator  # noqa: E402
from advtune.models.gan import MLPGenerator  # noqa: E402
from advtune.tasks.gan import DigitsGANTask  # noqa: E402

LATENT = 100


def _loader(batch_size: int):
    return DigitsDataModule(batch_size=batch_size, seed=0).train_dataloader()


def _nets() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    return MLPGenerator(latent_dim=LATENT), MLPDiscriminator(input_shape=(1, 8, 8))


def _adam(params):
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999), fused=True)


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
        z = torch.randn(real.shape[0], LATENT)
        self.toggle_optimizer(opt_g)
        g = self.calc.compute_generator_loss(self.discriminator, real, self.generator(z), global_step=batch_idx)
        opt_g.zero_grad()
        self.manual_backward(g["loss"])
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self.toggle_optimizer(opt_d)
        with torch.no_grad():
            fake = self.generator(z)
        d = self.calc.compute_discriminator_loss(self.discriminator, real, fake, global_step=batch_idx)
        opt_d.zero_grad()
        self.manual_backward(d["loss"])
        opt_d.step()
        self.untoggle_optimizer(opt_d)
        self.log_dict({"g/total": g["g/total"], "d/loss": d["d/loss"]}, prog_bar=True)


class _Timer(L.Callback):
    """Times steps after the first ``skip`` (warm-up: allocations, first logging)."""

    def __init__(self, skip: int) -> None:
        self.skip, self.seen, self.start, self.end = skip, -1, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen += 1
        if self.seen == self.skip:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.end = time.perf_counter()


def _trainer(max_steps: int, log_dir: str | None, callbacks: list, progress_bar: bool = False) -> L.Trainer:
    logger = L.pytorch.loggers.CSVLogger(log_dir) if log_dir else False
    return L.Trainer(max_steps=max_steps, accelerator="cpu", logger=logger, enable_checkpointing=False,
                     enable_model_summary=False, callbacks=callbacks, limit_val_batches=0, log_every_n_steps=10,
                     enable_progress_bar=progress_bar)


def time_module(steps: int, skip: int, batch_size: int, log_dir: str) -> float:
    generator, discriminator = _nets()
    module = AdversarialModule(DigitsGANTask(generator, LATENT), discriminator,
                               AdversarialLossCalculator(loss_type="non_saturating"), regenerate_fake=True,
                               generator_optimizer=_adam, discriminator_optimizer=_adam)
    timer = _Timer(skip)
    _trainer(steps + skip, log_dir, [timer]).fit(module, train_dataloaders=_loader(batch_size))
    return steps / (timer.end - timer.start)


def time_tutorial(steps: int, skip: int, batch_size: int, log_dir: str) -> float:
    timer = _Timer(skip)
    # Lightning counts both optimizers' steps in max_steps here: 2 per batch.
    _trainer(2 * (steps + skip), log_dir, [timer]).fit(TutorialGAN(), train_dataloaders=_loader(batch_size))
    return steps / (timer.end - timer.start)


def _batches(loader, n: int):
    seen = 0
    while True:
        for batch in loader:  # one loader, built before timing: each pass is its next epoch
            if seen == n:
                return
            seen += 1
            yield batch["image"]


def time_plain(steps: int, skip: int, batch_size: int) -> float:
    generator, discriminator = _nets()
    calc = AdversarialLossCalculator(loss_type="non_saturating")
    opt_g, opt_d = _adam(generator.parameters()), _adam(discriminator.parameters())
    loader = _loader(batch_size)
    train_steps(generator, discriminator, calc, opt_g, opt_d, _batches(loader, skip), LATENT)
    start = time.perf_counter()
    train_steps(generator, discriminator, calc, opt_g, opt_d, _batches(loader, steps), LATENT)
    return steps / (time.perf_counter() - start)


def run_child(kind: str, steps: int) -> None:
    """One whole-process contender (``--child``): ``steps`` generator updates, then exit."""
    if kind == "plain":
        time_plain(steps, 0, 64)
    else:
        with tempfile.TemporaryDirectory() as log_dir:
            _trainer(2 * steps, log_dir, [], progress_bar=True).fit(TutorialGAN(), train_dataloaders=_loader(64))


def _process_seconds(kind: str, steps: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as out:
        if kind.startswith("advtune"):
            command = [sys.executable, "-m", "advtune.cli", "train", "experiment=digits_gan", f"output_dir={out}",
                       f"trainer.max_steps={steps}", "trainer.limit_val_batches=0"]
            if kind == "advtune_no_bar":
                command.append("trainer.enable_progress_bar=false")
        else:
            command = [sys.executable, __file__, "--child", kind, "--steps", str(steps)]
        start = time.perf_counter()
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - start


def main_cli(args: argparse.Namespace) -> None:
    kinds = ("plain", "tutorial", "advtune", "advtune_no_bar")
    marginal: dict[str, list[float]] = {k: [] for k in kinds}
    for round_index in range(args.rounds):
        order = kinds if round_index % 2 == 0 else kinds[::-1]
        for kind in order:
            short, long = _process_seconds(kind, args.short), _process_seconds(kind, args.long)
            marginal[kind].append(1000 * (long - short) / (args.long - args.short))
            print(f"  round {round_index}: {kind:>15} {marginal[kind][-1]:.2f} ms/step", flush=True)
    m = {k: statistics.median(v) for k, v in marginal.items()}
    print(f"whole processes, marginal ms/step between {args.short} and {args.long} generator updates, "
          f"median of {args.rounds} rounds, 1 thread:")
    for kind in kinds:
        print(f"{kind:>15} {m[kind]:8.2f} ms/step   {m[kind] / m['plain']:.3f}x plain   "
              f"{m[kind] / m['tutorial']:.3f}x tutorial LM   (rounds: {', '.join(f'{v:.2f}' for v in marginal[kind])})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--cli", action="store_true", help="whole processes, marginal time per step")
    parser.add_argument("--short", type=int, default=300)
    parser.add_argument("--long", type=int, default=1300)
    parser.add_argument("--child", choices=("plain", "tutorial"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    if args.child:
        return run_child(args.child, args.steps)
    if args.cli:
        return main_cli(args)
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
    print("overhead = extra time per step vs the plain loop; 'tutorial LM' is the hand-written two-optimizer "
          "LightningModule (Lightning's own per-step cost)")


if __name__ == "__main__":
    main()
