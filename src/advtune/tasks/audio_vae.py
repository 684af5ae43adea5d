"""Audio VAE job: the generator is an encoder + decoder, real is audio, fake its reconstruction.

Base losses (each multiplied by its weight here, per the task contract): L1 on waveforms,
multi-resolution STFT loss (Yamamoto et al. 2020), KL (Kingma & Welling 2014) and, with
``mel_weight > 0``, the L1 distance of log-mel spectrograms (HiFi-GAN's mel loss). The adversarial
part (an :class:`~advtune.discriminators.EnCodecDiscriminator` with feature matching) is added by
the engine. Validation logs STFT distance, mel distance and SI-SDR (plus PESQ and STOI with
``perceptual_metrics``), and writes a few reconstructions as WAV plus a spectrogram comparison PNG.

``discriminator_crop_seconds`` shows the discriminator a shorter random window of each clip than
the reconstruction losses see (real and fake cropped at the same offset), as codec trainers do to
make the discriminator affordable: its cost grows with the samples it sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from advtune.checks import check_integer, check_number
from advtune.losses.reconstruction import (
    kl_divergence,
    l1_waveform_loss,
    mel_distance,
    multi_resolution_stft_loss,
)
from advtune.metrics.audio import audio_metrics, save_spectrogram_comparison
from advtune.models.audio_vae import AudioVAE
from advtune.tasks.base import AdversarialTask, TaskOutput

__all__ = ["AudioVAETask", "random_crop_pair"]


def _audio(batch: Any) -> Tensor:
    audio = batch["audio"] if isinstance(batch, dict) else batch
    if not isinstance(audio, Tensor) or audio.dim() != 3:
        raise ValueError("AudioVAETask: a batch must be a (B, C, T) tensor or a dict with an "
                         f"'audio' tensor, got {type(audio).__name__} "
                         f"{tuple(getattr(audio, 'shape', ()))}")
    return audio


def random_crop_pair(real: Tensor, fake: Tensor, length: int | None) -> tuple[Tensor, Tensor]:
    """The same random ``length``-sample window of ``real`` and ``fake`` ``(B, C, T)``, one offset
    per clip (torch's RNG); both unchanged when ``length`` is ``None`` or ``>= T``."""
    total = real.shape[-1]
    if length is None or length >= total:
        return real, fake
    offsets = torch.randint(0, total - length + 1, (real.shape[0], 1, 1), device=real.device)
    index = (offsets + torch.arange(length, device=real.device)).expand(-1, real.shape[1], -1)
    return real.gather(-1, index), fake.gather(-1, index)


class AudioVAETask(AdversarialTask):
    """Generator side of the audio VAE.

    Args:
        vae: the :class:`~advtune.models.AudioVAE` to train.
        sample_rate: Hz of the data (for mel metrics, WAVs and plots).
        l1_weight: weight of ``recon_l1``.
        stft_weight: weight of ``recon_stft``.
        kl_weight: weight of ``kl`` (per latent element; see ``kl_divergence``).
        mel_weight: weight of ``recon_mel``, the ``log10`` mel L1 of
            :func:`~advtune.losses.reconstruction.mel_distance` (0: not computed). HiFi-GAN's 45 on
            a natural-log mel is about 100 here (``ln 10`` = 2.30).
        mel_fft_sizes: FFT sizes of ``recon_mel`` (64 mel bands, hop ``n_fft/4``).
        stft_fft_sizes: FFT sizes of the STFT loss.
        stft_hop_sizes: hops (default ``n_fft // 4``).
        stft_win_lengths: windows (default ``n_fft``).
        encoder_frozen: train the decoder only (e.g. to fine-tune it adversarially).
        num_val_examples: reconstructions written as WAV at each validation.
        sample_seconds: duration of :meth:`sample` outputs.
        perceptual_metrics: also log ``val/pesq`` and ``val/stoi`` (speech at 16 or 8 kHz).
        discriminator_crop_seconds: the discriminator sees this long a random window of each clip
            (same offset for real and fake); ``None``: the whole clip.
    """

    def __init__(self, vae: AudioVAE, sample_rate: int, l1_weight: float = 1.0,
                 stft_weight: float = 1.0, kl_weight: float = 1e-4, mel_weight: float = 0.0,
                 mel_fft_sizes: Sequence[int] = (512,),
                 stft_fft_sizes: Sequence[int] = (512, 256, 128),
                 stft_hop_sizes: Sequence[int] | None = None,
                 stft_win_lengths: Sequence[int] | None = None, encoder_frozen: bool = False,
                 num_val_examples: int = 3, sample_seconds: float = 0.5,
                 perceptual_metrics: bool = False,
                 discriminator_crop_seconds: float | None = None) -> None:
        super().__init__()
        if not isinstance(vae, AudioVAE):
            raise TypeError(f"AudioVAETask: vae must be an AudioVAE, got {type(vae).__name__}")
        for name, weight in (("l1_weight", l1_weight), ("stft_weight", stft_weight),
                             ("kl_weight", kl_weight), ("mel_weight", mel_weight)):
            if weight < 0:
                raise ValueError(f"task.{name} must be >= 0, got {weight}")
        check_integer("task.sample_rate", sample_rate, minimum=1)
        check_number("task.sample_seconds", sample_seconds, above=0.0)
        self.vae = vae
        self.vae.encoder_frozen = bool(encoder_frozen) or vae.encoder_frozen
        self.sample_rate = int(sample_rate)
        self.weights = {"recon_l1": float(l1_weight), "recon_stft": float(stft_weight),
                        "kl": float(kl_weight)}
        if mel_weight > 0:
            self.weights["recon_mel"] = float(mel_weight)
        self.mel_fft_sizes = [int(n) for n in mel_fft_sizes]
        self.fft_sizes = [int(n) for n in stft_fft_sizes]
        self.hop_sizes = ([n // 4 for n in self.fft_sizes] if stft_hop_sizes is None
                          else [int(h) for h in stft_hop_sizes])
        self.win_lengths = (list(self.fft_sizes) if stft_win_lengths is None
                            else [int(w) for w in stft_win_lengths])
        self.num_val_examples = int(num_val_examples)
        self.sample_seconds = float(sample_seconds)
        self.perceptual_metrics = bool(perceptual_metrics)
        if discriminator_crop_seconds is not None and discriminator_crop_seconds <= 0:
            raise ValueError("task.discriminator_crop_seconds must be > 0 or null, got "
                             f"{discriminator_crop_seconds}")
        self.discriminator_crop = (None if discriminator_crop_seconds is None
                                   else max(1, round(discriminator_crop_seconds * self.sample_rate)))
        self._val_examples: tuple[Tensor, Tensor] | None = None

    @property
    def generator(self) -> AudioVAE:
        """The VAE: what ``init_generator`` loads (a file written by :func:`advtune.io.save_model`)."""
        return self.vae

    def generator_predict(self, batch: Any) -> TaskOutput:
        """Reconstruct the batch; base losses ``recon_l1``, ``recon_stft``, ``kl`` (and
        ``recon_mel``), weighted."""
        audio = _audio(batch)
        recon, z, mean, logvar = self.vae(audio)
        losses = {
            "recon_l1": l1_waveform_loss(recon, audio),
            "recon_stft": multi_resolution_stft_loss(recon, audio, self.fft_sizes, self.hop_sizes,
                                                     self.win_lengths),
            "kl": kl_divergence(mean, logvar),
        }
        if "recon_mel" in self.weights:
            losses["recon_mel"] = mel_distance(recon, audio, self.sample_rate, self.mel_fft_sizes)
        weighted = {name: self.weights[name] * loss for name, loss in losses.items()}
        posterior_std = (0.5 * logvar.detach()).exp().mean()
        logs = {"g/latent_std": z.detach().std(), "g/posterior_std": posterior_std}
        real, fake = random_crop_pair(audio, recon, self.discriminator_crop)
        return TaskOutput(real=real, fake=fake, base_losses=weighted,
                          last_layer=self.vae.last_layer, logs=logs)

    @torch.no_grad()
    def validation_step(self, batch: Any) -> dict[str, Tensor]:
        """``val/stft_distance``, ``val/mel_distance``, ``val/si_sdr``, ``val/recon_l1`` (and
        ``val/pesq``, ``val/stoi`` with ``perceptual_metrics``)."""
        audio = _audio(batch)
        recon = self.vae(audio, sample_posterior=False)[0]
        metrics = audio_metrics(recon, audio, self.sample_rate, perceptual=self.perceptual_metrics)
        metrics["val/recon_l1"] = l1_waveform_loss(recon, audio)
        if self._val_examples is None and self.num_val_examples > 0:
            keep = slice(0, self.num_val_examples)
            self._val_examples = (audio[keep].detach().cpu(), recon[keep].detach().cpu())
        return metrics

    @torch.no_grad()
    def validation_epoch_end(self, output_dir: Path | None, step: int) -> dict[str, float]:
        """Write ``audio_step{step}_{i}_{real,recon}.wav`` and ``spectrogram_step{step}.png``."""
        examples, self._val_examples = self._val_examples, None
        if output_dir is None or examples is None:
            return {}
        import soundfile

        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        real, recon = examples
        for index in range(real.shape[0]):
            for name, audio in (("real", real[index]), ("recon", recon[index])):
                data = np.clip(audio.float().numpy().T, -1.0, 1.0)  # soundfile wants (T, C)
                soundfile.write(output_dir / f"audio_step{step:06d}_{index}_{name}.wav", data,
                                self.sample_rate)
        save_spectrogram_comparison(output_dir / f"spectrogram_step{step:06d}.png", real, recon,
                                    self.sample_rate)
        return {}

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Decode ``z ~ N(0, I)`` (the KL prior): ``(N, C, T)`` audio of ``sample_seconds``."""
        frames = max(1, round(self.sample_seconds * self.sample_rate / self.vae.hop_length))
        device = self.vae.latent_mean.device
        noise_device = generator.device if generator is not None else device
        z = torch.randn(num_samples, self.vae.latent_dim, frames, generator=generator,
                        device=noise_device)
        was_training = self.vae.training
        self.vae.eval()
        try:
            return self.vae.decode(z.to(device)).clamp(-1.0, 1.0)
        finally:
            self.vae.train(was_training)

    def export(self, directory: str | Path) -> Path:
        """Write the VAE alone (``audio_vae.pt``, :func:`advtune.io.save_model`)."""
        from advtune.io import save_model

        metadata = {"task": type(self).__name__, "sample_rate": self.sample_rate}
        return save_model(self.vae, Path(directory) / "audio_vae.pt", metadata=metadata)
