"""The digits GAN with advtune's losses, discriminator and calculator — and no Lightning.

For users of another trainer (Accelerate, a custom loop): the calculator computes, your loop owns
``zero_grad → backward → step`` for both players. This is also the performance reference of
``benchmarks/bench_step.py``.

    python examples/plain_pytorch_loop.py --steps 1500
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

import torch
from torch import nn

from advtune import AdversarialLossCalculator
from advtune.data.digits import load_digits_images
from advtune.discriminators import MLPDiscriminator
from advtune.metrics.digits_classifier import DigitsFrechetDistance
from advtune.models.gan import MLPGenerator


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def train_steps(generator: nn.Module, discriminator: nn.Module, calculator: AdversarialLossCalculator,
                opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, batches: Iterable[torch.Tensor],
                latent_dim: int, regenerate_fake: bool = True) -> dict[str, float]:
    """One pass over ``batches``: G then D on every batch.

    ``regenerate_fake``: the D step scores ``G(z)`` made again *after* the G update (the order of
    Lightning's GAN tutorial: alternating updates); ``False`` reuses the fake the G step made (one
    generator forward per batch, but D then trains against the previous generator).
    """
    g = d = None
    for step, real in enumerate(batches):
        z = torch.randn(real.shape[0], latent_dim)
        fake = generator(z)

        set_requires_grad(discriminator, False)  # G phase: gradient flows through D, not into it
        g = calculator.compute_generator_loss(discriminator, real, fake, global_step=step, with_metrics=False)
        opt_g.zero_grad(set_to_none=True)
        g["loss"].backward()
        opt_g.step()
        set_requires_grad(discriminator, True)

        if regenerate_fake:
            with torch.no_grad():
                fake = generator(z)
        d = calculator.compute_discriminator_loss(discriminator, real, fake.detach(), global_step=step, with_metrics=False)
        opt_d.zero_grad(set_to_none=True)
        d["loss"].backward()
        opt_d.step()
    return {} if g is None else {"g/total": float(g["g/total"]), "d/loss": float(d["d/loss"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500, help="generator updates")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    torch.manual_seed(0)
    images, _ = load_digits_images("train")
    val, _ = load_digits_images("val")
    latent_dim = 100
    generator, discriminator = MLPGenerator(latent_dim=latent_dim), MLPDiscriminator(input_shape=(1, 8, 8))
    calculator = AdversarialLossCalculator(loss_type="non_saturating")
    opt_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True)
    fid = DigitsFrechetDistance()
    done = 0
    while done < args.steps:
        order = torch.randperm(len(images))
        batches = [images[order[i:i + args.batch_size]] for i in range(0, len(images) - args.batch_size + 1, args.batch_size)]
        batches = batches[: args.steps - done]
        metrics = train_steps(generator, discriminator, calculator, opt_g, opt_d, batches, latent_dim)
        done += len(batches)
        generator.eval()
        with torch.no_grad():
            score = fid(generator(torch.randn(500, latent_dim, generator=torch.Generator().manual_seed(0))), val)
        generator.train()
        print(f"step {done:5d}  g/total {metrics['g/total']:.3f}  d/loss {metrics['d/loss']:.3f}  "
              f"val/fid_digits {score:.2f}")


if __name__ == "__main__":
    main()
