"""Audio data: resampling, folder dataset (crops, channels, errors), synthetic set, DataModule."""

import numpy as np
import pytest
import soundfile
import torch

from advtune.data.audio import AudioDataModule, AudioFolderDataset, resample
from advtune.data.audio_synthetic import SyntheticAudioDataset, espeak_available, synthesize_clip


def tone(freq: float, rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.repeat((0.5 * np.sin(2 * np.pi * freq * t))[None], channels, axis=0).astype(np.float32)


def peak_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio[0]))
    return float(np.argmax(spectrum) * rate / len(audio[0]))


@pytest.mark.parametrize("orig, target", [(8000, 16000), (48000, 8000), (22050, 8000)])
def test_resample_keeps_duration_and_pitch(orig, target):
    audio = tone(440.0, orig, 0.5)
    out = resample(audio, orig, target)
    assert out.dtype == np.float32
    assert out.shape == (1, int(np.ceil(audio.shape[1] * target / orig)))
    assert peak_hz(out, target) == pytest.approx(440.0, abs=3.0)


def test_resample_identity_and_errors():
    audio = tone(100.0, 8000, 0.1)
    np.testing.assert_array_equal(resample(audio, 8000, 8000), audio)
    with pytest.raises(ValueError, match="positive"):
        resample(audio, 0, 8000)


def write(path, audio: np.ndarray, rate: int) -> None:
    soundfile.write(str(path), audio.T, rate)


def test_folder_dataset_crops_resamples_and_mixes(tmp_path):
    write(tmp_path / "stereo.wav", tone(300.0, 16000, 0.5, channels=2), 16000)
    write(tmp_path / "short.flac", tone(200.0, 8000, 0.05), 8000)
    files = sorted(tmp_path.iterdir())
    dataset = AudioFolderDataset(files, sample_rate=8000, length=1000, channels=1, random_crop=False)
    short, stereo = dataset[0]["audio"], dataset[1]["audio"]
    assert short.shape == stereo.shape == (1, 1000)
    assert short[0, 400:].abs().max() == 0 and short[0, :300].abs().max() > 0.4  # zero-padded
    assert peak_hz(stereo.numpy(), 8000) == pytest.approx(300.0, abs=8.1)
    torch.testing.assert_close(dataset[1]["audio"], stereo)  # validation crops are fixed
    to_stereo = AudioFolderDataset(files, 8000, 1000, channels=2, random_crop=True)
    assert to_stereo[0]["audio"].shape == (2, 1000)
    torch.testing.assert_close(to_stereo[0]["audio"][0], to_stereo[0]["audio"][1])


def test_random_crops_differ(tmp_path):
    rng = np.random.default_rng(0)
    write(tmp_path / "noise.wav", (0.1 * rng.standard_normal((1, 8000))).astype(np.float32), 8000)
    dataset = AudioFolderDataset([tmp_path / "noise.wav"], 8000, 500, random_crop=True)
    assert not torch.equal(dataset[0]["audio"], dataset[0]["audio"])


def test_unreadable_file_error_names_it(tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"this is not audio")
    dataset = AudioFolderDataset([tmp_path / "broken.wav"], 8000, 100)
    with pytest.raises(RuntimeError, match="could not read audio file .*broken.wav"):
        dataset[0]


def test_datamodule_on_folder_splits_and_batches(tmp_path):
    (tmp_path / "nested").mkdir()
    for index in range(5):
        write(tmp_path / "nested" / f"clip{index}.wav", tone(100.0 + 50 * index, 8000, 0.3), 8000)
    (tmp_path / "notes.txt").write_text("ignored")
    module = AudioDataModule(root=str(tmp_path), sample_rate=8000, segment_seconds=0.1,
                             batch_size=2, val_fraction=0.2)
    module.setup()
    assert (len(module.train_dataset), len(module.val_dataset)) == (4, 1)
    assert not set(module.train_dataset.files) & set(module.val_dataset.files)
    batch = next(iter(module.train_dataloader()))
    assert batch["audio"].shape == (2, 1, 800)
    with pytest.raises(ValueError, match="missing is not a directory"):
        AudioDataModule(root=str(tmp_path / "missing")).setup()


def test_empty_folder_rejected(tmp_path):
    with pytest.raises(ValueError, match="holds no .wav/.flac files"):
        AudioDataModule(root=str(tmp_path)).setup()


def test_synthetic_clips_are_deterministic_varied_and_bounded():
    clips = [synthesize_clip(i, 2000, 8000, channels=1, seed=3) for i in range(8)]
    np.testing.assert_array_equal(clips[0], synthesize_clip(0, 2000, 8000, channels=1, seed=3))
    assert not np.allclose(clips[0], synthesize_clip(0, 2000, 8000, channels=1, seed=4))
    peaks = [np.abs(c).max() for c in clips]
    assert all(0.29 < p < 0.95 for p in peaks)  # peak 0.3..0.9 plus a -50 dB noise floor
    # tone, chord, chirp, noise: the noise burst is the least tonal (flattest spectrum)
    flatness = [np.exp(np.mean(np.log(np.abs(np.fft.rfft(c[0])) + 1e-9))) / np.mean(np.abs(np.fft.rfft(c[0])))
                for c in clips[:4]]
    assert int(np.argmax(flatness)) == 3
    stereo = synthesize_clip(1, 500, 8000, channels=2)
    assert stereo.shape == (2, 500)


def test_synthetic_datamodule_batches():
    module = AudioDataModule(sample_rate=8000, segment_seconds=0.25, batch_size=4,
                             num_train_clips=8, num_val_clips=4, include_speech=False)
    train = next(iter(module.train_dataloader()))["audio"]
    val = next(iter(module.val_dataloader()))["audio"]
    assert train.shape == val.shape == (4, 1, 2000) and train.dtype == torch.float32
    assert not torch.equal(module.val_dataset[0]["audio"], module.train_dataset[0]["audio"])


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_espeak_speech_is_added_when_available():
    dataset = SyntheticAudioDataset(2, 4000, 8000, include_speech=True)
    assert len(dataset) > 2 and dataset[2]["audio"].abs().max() > 0
