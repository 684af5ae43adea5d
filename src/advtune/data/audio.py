"""Audio data: a folder of wav/flac files or the built-in synthetic set, as a LightningDataModule.

Batches are ``{"audio": (B, C, T)}`` float32 in [-1, 1]. Files are read with ``soundfile``, mixed
down (or duplicated) to the configured channels, resampled with a polyphase filter
(``scipy.signal.resample_poly``: exact rational ratio, anti-aliased), and cut to fixed-length crops
(random for training, centred for validation; short files are zero-padded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import lightning
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from advtune.checks import check_loader_settings
from advtune.data.audio_synthetic import SyntheticAudioDataset
from advtune.data.loader import ResumableDataLoader
from advtune.data.resampling import resample
from advtune.data.scan import scan_files

__all__ = ["resample", "AudioFolderDataset", "AudioDataModule", "AUDIO_EXTENSIONS", "check_audio_file"]

AUDIO_EXTENSIONS = (".wav", ".flac")


def _match_channels(audio: np.ndarray, channels: int, path: Path) -> np.ndarray:
    if audio.shape[0] == channels:
        return audio
    if channels == 1:
        return audio.mean(axis=0, keepdims=True)  # mix down
    if audio.shape[0] == 1:
        return np.repeat(audio, channels, axis=0)  # mono to every channel
    raise ValueError(f"{path} has {audio.shape[0]} channels; cannot map them to {channels}")


class AudioFolderDataset(Dataset):
    """Fixed-length crops of the audio files in a list, as ``{"audio": (channels, length)}``.

    Args:
        files: wav/flac paths.
        sample_rate: rate of the crops (files are resampled to it).
        length: samples per crop (at ``sample_rate``).
        channels: 1 (files are mixed down) or 2 (mono files duplicated).
        random_crop: random offset per access (training) or the centred crop (validation).
            Offsets come from torch's RNG, which DataLoader seeds differently in every worker
            (and Lightning's ``seed_everything(workers=True)`` makes reproducible).
    """

    def __init__(self, files: Sequence[str | Path], sample_rate: int, length: int,
                 channels: int = 1, random_crop: bool = True) -> None:
        if not files:
            raise ValueError("AudioFolderDataset: no files given")
        self.files = [Path(f) for f in files]
        self.sample_rate, self.length, self.channels = int(sample_rate), int(length), int(channels)
        self.random_crop = bool(random_crop)

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, path: Path) -> np.ndarray:
        """The crop of ``path`` as ``(channels, length)`` at ``sample_rate``."""
        import soundfile

        try:
            info = soundfile.info(str(path))
            # Read only the needed window (plus margin for the resampling filter), not the file.
            needed = int(np.ceil(self.length * info.samplerate / self.sample_rate)) + 64
            start = 0
            if info.frames > needed:
                start = (int(torch.randint(0, info.frames - needed + 1, ())) if self.random_crop
                         else (info.frames - needed) // 2)
            audio, rate = soundfile.read(str(path), start=start, frames=needed, dtype="float32",
                                         always_2d=True)
        except Exception as error:  # soundfile raises several types; name the file in one line
            raise RuntimeError(f"could not read audio file {path}: {error}") from error
        audio = resample(_match_channels(audio.T, self.channels, path), rate, self.sample_rate)
        audio = audio[:, : self.length]
        return np.pad(audio, ((0, 0), (0, self.length - audio.shape[1])))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"audio": torch.from_numpy(np.ascontiguousarray(self._read(self.files[index])))}


def check_audio_file(path: Path, channels: int) -> int:
    """Open ``path`` as training will (header, channel mapping, first samples); return its frames."""
    import soundfile

    info = soundfile.info(str(path))
    if info.frames <= 0:
        raise ValueError("no audio frames")
    audio, _ = soundfile.read(str(path), frames=1024, dtype="float32", always_2d=True)
    _match_channels(audio.T, channels, path)
    return int(info.frames)


def _list_audio(root: Path) -> list[Path]:
    if not root.is_dir():
        raise ValueError(f"data.root {root} is not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise ValueError(f"data.root {root} holds no {'/'.join(AUDIO_EXTENSIONS)} files")
    return files


class AudioDataModule(lightning.LightningDataModule):
    """Audio batches ``{"audio": (B, C, T)}`` from a folder or, when ``root`` is None, synthesised.

    Args:
        root: folder searched recursively for wav/flac; ``None`` uses the synthetic set.
        sample_rate: Hz of the batches.
        segment_seconds: crop duration.
        channels: 1 or 2.
        batch_size: clips per batch.
        num_workers: DataLoader workers.
        val_fraction: fraction of the folder's files held out (at least one when there are two).
        num_train_clips: synthetic training clips.
        num_val_clips: synthetic validation clips.
        include_speech: add espeak-ng speech to the synthetic set when the binary exists.
        seed: split and shuffle seed, and the synthetic clips' seed.
        skip_bad_files: every file of ``root`` is opened before training; an unreadable one is an
            error naming it (``False``), or left out with a warning and a count (``True``).
    """

    def __init__(self, root: str | None = None, sample_rate: int = 8000,
                 segment_seconds: float = 0.25, channels: int = 1, batch_size: int = 8,
                 num_workers: int = 0, val_fraction: float = 0.1, num_train_clips: int = 256,
                 num_val_clips: int = 16, include_speech: bool = True, seed: int = 0,
                 skip_bad_files: bool = False) -> None:
        super().__init__()
        check_loader_settings("data", batch_size, num_workers, seed)
        if channels not in (1, 2):
            raise ValueError(f"data.channels must be 1 or 2, got {channels}")
        if segment_seconds <= 0 or sample_rate <= 0 or batch_size < 1:
            raise ValueError(f"data: segment_seconds ({segment_seconds}), sample_rate "
                             f"({sample_rate}) and batch_size ({batch_size}) must be positive")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        self.root = None if root is None else Path(root)
        self.sample_rate, self.channels = int(sample_rate), int(channels)
        self.length = max(1, int(round(segment_seconds * sample_rate)))
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        self.val_fraction = float(val_fraction)
        self.num_train_clips, self.num_val_clips = int(num_train_clips), int(num_val_clips)
        self.include_speech = bool(include_speech)
        self.skip_bad_files = bool(skip_bad_files)
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        if self.root is None:
            self.train_dataset = SyntheticAudioDataset(
                self.num_train_clips, self.length, self.sample_rate, self.channels, self.seed,
                self.include_speech)
            # A distinct seed: validation clips are never training clips.
            self.val_dataset = SyntheticAudioDataset(
                self.num_val_clips, self.length, self.sample_rate, self.channels,
                self.seed + 1_000_003)
            return
        files = [path for path, _ in scan_files(_list_audio(self.root), lambda p: check_audio_file(p, self.channels),
                                                self.skip_bad_files, where=f"data.root {self.root}")]
        order = np.random.default_rng(self.seed).permutation(len(files))
        num_val = int(round(self.val_fraction * len(files)))
        if self.val_fraction > 0 and len(files) > 1:
            num_val = max(num_val, 1)
        val = [files[i] for i in sorted(order[:num_val])] or files  # one file: validate on it
        train = [files[i] for i in sorted(order[num_val:])]
        self.train_dataset = AudioFolderDataset(train, self.sample_rate, self.length,
                                                self.channels, random_crop=True)
        self.val_dataset = AudioFolderDataset(val, self.sample_rate, self.length, self.channels,
                                              random_crop=False)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return ResumableDataLoader(self.train_dataset, batch_size=self.batch_size, shuffle=True,
                                   seed=self.seed, drop_last=len(self.train_dataset)
                                   >= self.batch_size, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return DataLoader(self.val_dataset, batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers)
