"""Forward+backward time of each audio discriminator, and of one full adversarial step.

Input: ``--seconds`` of audio at ``--sample-rate`` (default 1 s at 24 kHz), batch ``--batch``
(default 4), mono. Each row is the median of ``--repeats`` timed runs after one warm-up run.
"The full step" is what one training batch costs with the EnCodec discriminator: the VAE forward,
the generator loss (reconstruction + adversarial + feature matching) and its backward, the
discriminator loss and its backward, and both Adam steps — written as a plain loop with
:class:`~advtune.AdversarialLossCalculator`, the math ``AdversarialModule`` runs.

    python benchmarks/bench_audio_disc.py [--repeats 3] [--threads 2] [--skip-full-size]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch import nn

from advtune.adversarial import AdversarialLossCalculator
from advtune.discriminators import (
    EnCodecDiscriminator,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    MultiScaleSTFTDiscriminator,
)
from advtune.losses.reconstruction import kl_divergence, l1_waveform_loss, multi_resolution_stft_loss
from advtune.models.audio_vae import AudioVAE


def median_seconds(run: Callable[[], None], repeats: int) -> float:
    run()  # warm-up: allocator, weight-norm caches, lazy init
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_backward(disc: nn.Module, audio: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        disc.zero_grad(set_to_none=True)
        logits, features = disc(audio)
        (sum(x.mean() for x in logits) + sum(f.mean() for maps in features for f in maps)).backward()
    return run


def full_step(vae: AudioVAE, disc: nn.Module, audio: torch.Tensor) -> Callable[[], None]:
    calc = AdversarialLossCalculator(adversarial_weight=1.0, feature_matching_weight=10.0)
    opt_g = torch.optim.Adam(vae.parameters(), lr=1e-4)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-4)

    def run() -> None:
        recon, _, mean, logvar = vae(audio)
        base = (l1_waveform_loss(recon, audio) + multi_resolution_stft_loss(recon, audio)
                + 1e-4 * kl_divergence(mean, logvar))
        disc.requires_grad_(False)
        g = calc.compute_generator_loss(disc, audio, recon, global_step=0, base_loss=base)
        opt_g.zero_grad(set_to_none=True)
        g["loss"].backward()
        opt_g.step()
        disc.requires_grad_(True)
        d = calc.compute_discriminator_loss(disc, audio, recon.detach(), global_step=0)
        opt_d.zero_grad(set_to_none=True)
        d["loss"].backward()
        opt_d.step()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--sample-rate", type=int, default=24000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--skip-full-size", action="store_true",
                        help="skip MSD/MPD/EnCodec at full width (the slow rows on a CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    audio = torch.randn(args.batch, 1, int(args.seconds * args.sample_rate)) * 0.1

    lightweight = EnCodecDiscriminator(stft_filters=16, in_channels=1, use_msd=False,
                                       mpd_periods=[2, 3, 5])
    discs: dict[str, nn.Module] = {
        "MS-STFT (32 filters, 5 scales)": MultiScaleSTFTDiscriminator(32, 1, [2048, 1024, 512, 256, 128]),
        "EnCodec lightweight (STFT16 + MPD[2,3,5])": lightweight,
    }
    if not args.skip_full_size:
        discs.update({
            "MSD (HiFi-GAN, scales 1,2,4)": MultiScaleDiscriminator([1, 2, 4]),
            "MPD (HiFi-GAN, periods 2..11)": MultiPeriodDiscriminator(),
            "EnCodec full (STFT + MSD + MPD)": EnCodecDiscriminator(in_channels=1),
        })
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input "
          f"{tuple(audio.shape)} ({args.seconds} s at {args.sample_rate} Hz), median of {args.repeats}")
    print(f"{'what':<46} {'params':>12} {'fwd+bwd s':>10}")
    for name, disc in discs.items():
        params = sum(p.numel() for p in disc.parameters())
        print(f"{name:<46} {params:>12,} {median_seconds(forward_backward(disc, audio), args.repeats):>10.3f}")
    vae = AudioVAE.tiny(in_channels=1)
    for name, disc in (("full step: tiny VAE + EnCodec lightweight", lightweight),
                       ("full step: tiny VAE + EnCodec full", discs.get("EnCodec full (STFT + MSD + MPD)"))):
        if disc is not None:
            params = sum(p.numel() for p in disc.parameters()) + sum(p.numel() for p in vae.parameters())
            print(f"{name:<46} {params:>12,} {median_seconds(full_step(vae, disc, audio), args.repeats):>10.3f}")


if __name__ == "__main__":
    main()
