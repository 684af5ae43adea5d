"""Where the time of one adversarial audio VAE step goes, against a reconstruction-only step.

Sizes of ``experiment=audio_vae_speech`` by default (tiny VAE, batch 8 of 0.25 s at 16 kHz, the
CPU-sized lightweight discriminator). Each part is timed on its own, in alternating rounds in one
process, and the medians are reported with their ratio to the reconstruction step:

* ``recon``: VAE forward, L1 + multi-resolution STFT + KL, backward, Adam (the warm-up step);
* ``G adv``: ``recon`` plus D on the fake and the generator's backward through D;
* ``G adv + FM``: plus feature matching (one more D forward, on the real audio, without graph);
* ``D step``: D on real and on the detached fake, its backward and Adam;
* ``full step``: ``G adv + FM`` then ``D step``: one batch of the adversarial stage.

Variants, each a config line: the D sees a shorter random window (``task.discriminator_crop_seconds``),
channels-last MS-STFT convolutions (``--channels-last`` rows, ``discriminator.stft_channels_last``) and
``torch.compile`` of the discriminator (``--compile``, slow to build on a CPU). ``full step, D every k`` is computed from the measured parts.

    python benchmarks/bench_audio_step.py [--rounds 5] [--full-encodec] [--channels-last] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Callable

import torch
from torch import nn

from advtune.adversarial import AdversarialLossCalculator
from advtune.discriminators import EnCodecDiscriminator
from advtune.models.audio_vae import AudioVAE
from advtune.tasks.audio_vae import AudioVAETask


def parts(task: AudioVAETask, disc: nn.Module, audio: torch.Tensor,
          fm_weight: float = 2.0) -> dict[str, Callable[[], None]]:
    """One closure per part of the step (each runs it once, optimizers included). The D sees
    what the task hands it (``task.discriminator_crop``: a random window of real and fake)."""
    opt_g = torch.optim.Adam(task.vae.parameters(), lr=1e-4)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-4)
    no_fm = AdversarialLossCalculator(feature_matching_weight=0.0)
    with_fm = AdversarialLossCalculator(feature_matching_weight=fm_weight)

    def generator(calc: AdversarialLossCalculator | None) -> tuple[torch.Tensor, torch.Tensor]:
        out = task.generator_predict({"audio": audio})
        loss = out.base_loss
        if calc is not None:
            disc.requires_grad_(False)
            loss = calc.compute_generator_loss(disc, out.real, out.fake, 0, base_loss=loss)["loss"]
            disc.requires_grad_(True)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        return out.real, out.fake.detach()

    def discriminator(real_fake: tuple[torch.Tensor, torch.Tensor]) -> None:
        loss = with_fm.compute_discriminator_loss(disc, *real_fake, 0)["loss"]
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()

    with torch.no_grad():
        out = task.generator_predict({"audio": audio})
    pair = (out.real, out.fake)
    return {"recon": lambda: generator(None), "G adv": lambda: generator(no_fm),
            "G adv + FM": lambda: generator(with_fm), "D step": lambda: discriminator(pair),
            "full step": lambda: discriminator(generator(with_fm))}


def median_times(runs: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds of each closure; the closures alternate within every round."""
    for run in runs.values():  # warm-up: allocator, weight-norm caches, compilation
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=0.25)
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--crop-seconds", type=float, default=0.125, help="D window of the crop rows")
    parser.add_argument("--full-encodec", action="store_true", help="the full-width EnCodec D (MS-STFT+MSD+MPD)")
    parser.add_argument("--channels-last", action="store_true", help="add rows with channels-last 2-D convs")
    parser.add_argument("--compile", action="store_true", help="add rows with torch.compile(discriminator)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    audio = 0.1 * torch.randn(args.batch, 1, int(args.seconds * args.sample_rate), device=device)
    task = AudioVAETask(AudioVAE.tiny(1), args.sample_rate, stft_fft_sizes=[1024, 512, 256, 128]).to(device)
    if args.full_encodec:
        disc = EnCodecDiscriminator(in_channels=1)
    else:  # experiment=audio_vae_speech's discriminator
        disc = EnCodecDiscriminator(stft_filters=8, in_channels=1, n_ffts=[512, 256, 128], use_msd=False,
                                    mpd_periods=[2, 3, 5], mpd_channels=[8, 16, 32, 32])
    disc = disc.to(device)
    crop = round(args.crop_seconds * args.sample_rate)
    variants: dict[str, tuple[nn.Module, int | None]] = {"whole clip": (disc, None), "D crop": (disc, crop)}
    if args.channels_last:  # what discriminator.stft_channels_last=true does
        fast = copy.deepcopy(disc)
        fast.stft.to(memory_format=torch.channels_last)
        variants["D crop, channels-last"] = (fast, crop)
    if args.compile:
        variants["D crop, compiled"] = (torch.compile(disc), crop)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {device}, audio {tuple(audio.shape)} "
          f"({args.seconds} s at {args.sample_rate} Hz), D crop {args.crop_seconds} s, D "
          f"{sum(p.numel() for p in disc.parameters()):,} parameters, median of {args.rounds} alternating rounds")
    print(f"{'variant':<24} {'part':<22} {'seconds':>8} {'x recon':>8}")
    for variant, (model, window) in variants.items():
        task.discriminator_crop = window
        times = median_times(parts(task, model, audio), args.rounds)
        times["full step, D every 2"] = times["G adv + FM"] + times["D step"] / 2
        for name, seconds in times.items():
            print(f"{variant:<24} {name:<22} {seconds:>8.3f} {seconds / times['recon']:>8.2f}")


if __name__ == "__main__":
    main()
