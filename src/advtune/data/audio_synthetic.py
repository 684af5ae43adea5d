"""A built-in synthetic audio set: harmonic tones, chords, chirps, noise bursts, optional speech.

Every clip is a pure function of ``(seed, index)`` so a run and its resume see the same data,
and nothing is downloaded. Speech clips come from Debian's ``espeak-ng`` when the binary is on
``PATH`` (skipped silently otherwise: the set stays usable on any machine).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from advtune.data.resampling import resample

__all__ = ["synthesize_clip", "espeak_available", "espeak_clip", "SyntheticAudioDataset"]

_KINDS = ("tone", "chord", "chirp", "noise_burst")
_SENTENCES = ("the quick brown fox jumps over the lazy dog", "adversarial training of audio models",
              "one two three four five six seven", "she sells sea shells by the sea shore")


def _envelope(length: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Attack-decay-sustain-release envelope with random times, ``(length,)`` in [0, 1]."""
    attack = max(1, int(rng.uniform(0.005, 0.05) * sample_rate))
    release = max(1, int(rng.uniform(0.02, 0.1) * sample_rate))
    sustain = rng.uniform(0.4, 0.9)
    env = np.full(length, sustain)
    env[:attack] = np.linspace(0.0, 1.0, attack)[: length]
    decay_end = min(length, attack * 3)
    env[attack:decay_end] = np.linspace(1.0, sustain, max(decay_end - attack, 0))
    env[-release:] *= np.linspace(1.0, 0.0, min(release, length))
    return env


def _harmonic(f0: float, t: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of harmonics ``k f0`` with ``1/k`` amplitudes below Nyquist, random phases."""
    out = np.zeros_like(t)
    for k in range(1, 9):
        if k * f0 >= sample_rate / 2:
            break
        out += np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k
    return out


def synthesize_clip(index: int, length: int, sample_rate: int, channels: int = 1,
                    seed: int = 0, noise_floor_db: float = -50.0) -> np.ndarray:
    """Clip ``index`` of the synthetic set, ``(channels, length)`` float32, peak about [0.3, 0.9].

    The kind cycles through tone, chord, chirp and noise burst with ``index``. White noise at
    ``noise_floor_db`` below the peak is added, as every recording has: pure synthetic tones have
    spectra that are exactly zero almost everywhere, and a log-magnitude STFT loss then spends
    its effort on matching ``log(0)`` bins no decoder reproduces.
    """
    rng = np.random.default_rng([seed, index])
    t = np.arange(length) / sample_rate
    nyquist = sample_rate / 2
    kind = _KINDS[index % len(_KINDS)]
    if kind == "tone":
        signal = _harmonic(rng.uniform(80, min(880, nyquist / 2)), t, sample_rate, rng)
    elif kind == "chord":
        root = rng.uniform(110, min(440, nyquist / 4))
        third = 4 if rng.random() < 0.5 else 3  # major or minor triad, in semitones
        signal = sum(_harmonic(root * 2 ** (s / 12), t, sample_rate, rng) for s in (0, third, 7))
    elif kind == "chirp":
        f_start, f_end = rng.uniform(50, 300), rng.uniform(0.3, 0.9) * nyquist
        duration = max(t[-1], 1e-3)
        rate = np.log(f_end / f_start) / duration  # exponential sweep
        signal = np.sin(2 * np.pi * f_start * (np.exp(rate * t) - 1) / rate)
    else:
        noise = rng.standard_normal(length)
        smooth = int(rng.integers(1, 8))  # moving average: random low-pass colour
        signal = np.convolve(noise, np.ones(smooth) / smooth, mode="same")
        signal *= np.exp(-t * rng.uniform(3, 20))
    signal = signal * _envelope(length, sample_rate, rng)
    peak = rng.uniform(0.3, 0.9)
    signal = signal / (np.abs(signal).max() + 1e-8) * peak
    signal = signal + rng.standard_normal(length) * peak * 10.0 ** (noise_floor_db / 20.0)
    if channels == 1:
        return signal[None].astype(np.float32)
    pan = rng.uniform(0.2, 0.8, size=channels)  # per-channel gain: stereo image differs per clip
    return (signal[None] * (pan[:, None] / pan.max())).astype(np.float32)


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` binary is on ``PATH``."""
    return shutil.which("espeak-ng") is not None


def espeak_clip(text: str, sample_rate: int) -> np.ndarray:
    """Speak ``text`` with ``espeak-ng``; mono float32 ``(1, T)`` at ``sample_rate``."""
    import soundfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
        audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    return resample(audio.T, rate, sample_rate)[:1]


class SyntheticAudioDataset(Dataset):
    """``num_clips`` synthetic clips as ``{"audio": (channels, length)}``.

    Args:
        num_clips: clips in the set.
        length: samples per clip.
        sample_rate: Hz.
        channels: 1 or 2.
        seed: offset of the per-clip seeds (use different seeds for train and validation).
        include_speech: append espeak-ng sentences (cropped / padded to ``length``) when the
            binary exists.
    """

    def __init__(self, num_clips: int, length: int, sample_rate: int, channels: int = 1,
                 seed: int = 0, include_speech: bool = False) -> None:
        if num_clips < 1 or length < 1:
            raise ValueError(f"SyntheticAudioDataset: num_clips ({num_clips}) and length "
                             f"({length}) must be >= 1")
        self.num_clips, self.length, self.sample_rate = int(num_clips), int(length), int(sample_rate)
        self.channels, self.seed = int(channels), int(seed)
        self.speech: list[np.ndarray] = []
        if include_speech and espeak_available():
            for sentence in _SENTENCES:
                clip = espeak_clip(sentence, self.sample_rate)[:, : self.length]
                clip = np.pad(clip, ((0, 0), (0, self.length - clip.shape[1])))
                self.speech.append(np.repeat(clip, self.channels, axis=0))

    def __len__(self) -> int:
        return self.num_clips + len(self.speech)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index >= self.num_clips:
            return {"audio": torch.from_numpy(self.speech[index - self.num_clips].copy())}
        clip = synthesize_clip(index, self.length, self.sample_rate, self.channels, self.seed)
        return {"audio": torch.from_numpy(clip)}
