"""The shipped speech set (espeak-ng voices, 16 kHz FLAC) as a LightningDataModule.

``src/advtune/data/speech`` holds ``train/`` (16 sentences x 4 voices) and ``heldout/`` (8 other
sentences in a fifth voice); ``scripts/make_speech_data.py`` regenerates them and their README
states the source and licence. Clips are small, so they are decoded once and kept in memory.
Training batches are random crops ``{"audio": (B, 1, sample_rate * segment_seconds)}``;
validation batches are the centred ``val_seconds`` of every held-out clip, and
:meth:`SpeechDataModule.heldout_clips` gives the whole clips (for ``advtune evaluate``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import lightning
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from advtune.checks import check_loader_settings
from advtune.data.audio import AUDIO_EXTENSIONS, resample
from advtune.data.loader import ResumableDataLoader
from advtune.data.scan import scan_files

__all__ = ["SPEECH_DIR", "SpeechClipDataset", "SpeechDataModule", "load_clips"]

SPEECH_DIR = Path(__file__).resolve().parent / "speech"


def load_clips(folder: Path, sample_rate: int, skip_bad: bool = False) -> list[np.ndarray]:
    """Every wav/flac in ``folder`` (sorted by name), mono float32 ``(T,)`` at ``sample_rate``.

    An unreadable file is an error naming it, or with ``skip_bad`` left out with a warning
    (:func:`advtune.data.scan.scan_files`).
    """
    import soundfile

    def read(path: Path) -> np.ndarray:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        return resample(audio.mean(axis=1)[None], rate, sample_rate)[0]

    files = sorted(p for p in Path(folder).glob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise ValueError(f"data: {folder} holds no {'/'.join(AUDIO_EXTENSIONS)} files")
    return [clip for _, clip in scan_files(files, read, skip_bad, str(folder))]


class SpeechClipDataset(Dataset):
    """Fixed-length crops of in-memory clips, ``{"audio": (1, length)}``.

    Args:
        clips: mono ``(T,)`` arrays.
        length: samples per crop; shorter clips are zero-padded on the right.
        random_crop: a random offset per access (torch's RNG, seeded per worker by Lightning) or
            the centred crop.
        repeats: the dataset lists every clip this many times (more crops per epoch).
        channels: 1, or 2 (the mono crop duplicated, for stereo models).
    """

    def __init__(self, clips: Sequence[np.ndarray], length: int, random_crop: bool,
                 repeats: int = 1, channels: int = 1) -> None:
        if not clips or length < 1 or repeats < 1 or channels not in (1, 2):
            raise ValueError(f"SpeechClipDataset: need clips, length >= 1 and repeats >= 1, got "
                             f"{len(clips)} clips, length {length}, repeats {repeats}, "
                             f"channels {channels} (1 or 2)")
        self.clips, self.length = list(clips), int(length)
        self.random_crop, self.repeats, self.channels = bool(random_crop), int(repeats), int(channels)

    def __len__(self) -> int:
        return len(self.clips) * self.repeats

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip = self.clips[index % len(self.clips)]
        spare = clip.shape[0] - self.length
        if spare > 0:
            start = int(torch.randint(0, spare + 1, ())) if self.random_crop else spare // 2
            clip = clip[start: start + self.length]
        crop = np.zeros(self.length, dtype=np.float32)
        crop[: clip.shape[0]] = clip
        return {"audio": torch.from_numpy(crop)[None].expand(self.channels, -1).contiguous()}


class SpeechDataModule(lightning.LightningDataModule):
    """Speech batches ``{"audio": (B, 1, T)}`` from ``root/train`` and ``root/heldout``.

    Args:
        root: folder with ``train/`` and ``heldout/``; ``None``: the shipped espeak-ng set.
        sample_rate: Hz of the batches (the shipped files are 16 kHz; PESQ wide-band needs 16 kHz).
        channels: 1, or 2 (mono duplicated).
        segment_seconds: training crop duration.
        val_seconds: centred crop of every held-out clip at validation.
        batch_size: training clips per batch.
        val_batch_size: held-out clips per validation batch.
        crops_per_clip: training crops per clip and epoch.
        num_workers: DataLoader workers.
        seed: shuffling seed.
        skip_bad_files: leave unreadable files out with a warning (``False``: an error naming them).
    """

    def __init__(self, root: str | None = None, sample_rate: int = 16000, channels: int = 1,
                 segment_seconds: float = 0.5, val_seconds: float = 2.5, batch_size: int = 8,
                 val_batch_size: int = 8, crops_per_clip: int = 8, num_workers: int = 0,
                 seed: int = 0, skip_bad_files: bool = False) -> None:
        super().__init__()
        check_loader_settings("data", batch_size, num_workers, seed)
        if min(sample_rate, segment_seconds, val_seconds, batch_size, val_batch_size,
               crops_per_clip) <= 0:
            raise ValueError("data: sample_rate, segment_seconds, val_seconds, batch_size, "
                             "val_batch_size and crops_per_clip must be positive")
        self.root = SPEECH_DIR if root is None else Path(root)
        for split in ("train", "heldout"):
            if not (self.root / split).is_dir():
                raise ValueError(f"data.root {self.root} has no '{split}' folder")
        self.sample_rate, self.channels = int(sample_rate), int(channels)
        self.length = int(round(segment_seconds * sample_rate))
        self.val_length = int(round(val_seconds * sample_rate))
        self.batch_size, self.val_batch_size = int(batch_size), int(val_batch_size)
        self.crops_per_clip, self.num_workers, self.seed = int(crops_per_clip), int(num_workers), int(seed)
        self.skip_bad_files = bool(skip_bad_files)
        self.train_dataset: SpeechClipDataset | None = None
        self.val_dataset: SpeechClipDataset | None = None

    def heldout_clips(self) -> list[np.ndarray]:
        """The whole held-out clips, mono ``(T,)`` float32 at ``sample_rate``, sorted by file name."""
        return load_clips(self.root / "heldout", self.sample_rate, self.skip_bad_files)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        train = load_clips(self.root / "train", self.sample_rate, self.skip_bad_files)
        self.train_dataset = SpeechClipDataset(train, self.length, True, self.crops_per_clip,
                                               self.channels)
        self.val_dataset = SpeechClipDataset(self.heldout_clips(), self.val_length, False,
                                             channels=self.channels)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return ResumableDataLoader(self.train_dataset, batch_size=self.batch_size, shuffle=True,
                                   seed=self.seed, num_workers=self.num_workers,
                                   drop_last=len(self.train_dataset) >= self.batch_size)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.val_dataset, batch_size=self.val_batch_size, shuffle=False,
                          num_workers=self.num_workers)
