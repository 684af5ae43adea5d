"""Shipped speech set: files, licence, a split with unseen voice and sentences, the DataModule."""

import numpy as np
import pytest
import soundfile
import torch

from advtune.data.speech import SPEECH_DIR, SpeechClipDataset, SpeechDataModule


def test_shipped_files_licence_and_disjoint_split():
    assert "CC0" in (SPEECH_DIR / "LICENSE").read_text() and "espeak-ng" in (SPEECH_DIR / "README.md").read_text()
    train, heldout = (sorted(p.name for p in (SPEECH_DIR / split).glob("*.flac")) for split in ("train", "heldout"))
    assert (len(train), len(heldout)) == (64, 8)
    voices = {split: {name.rsplit("_", 1)[0] for name in names} for split, names in (("train", train), ("heldout", heldout))}
    assert len(voices["train"]) == 4 and not voices["train"] & voices["heldout"]  # held-out voice never trained on
    info = soundfile.info(str(SPEECH_DIR / "heldout" / heldout[0]))
    assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
    assert sum(p.stat().st_size for p in SPEECH_DIR.rglob("*.flac")) < 6e6  # a few MB in the wheel


def test_datamodule_batches_and_heldout_clips():
    data = SpeechDataModule(segment_seconds=0.25, val_seconds=2.0, batch_size=4, crops_per_clip=2, seed=3)
    data.setup()
    assert len(data.train_dataset) == 128
    torch.manual_seed(0)
    batch = next(iter(data.train_dataloader()))["audio"]
    assert batch.shape == (4, 1, 4000) and batch.dtype == torch.float32 and batch.abs().max() <= 1.0
    val = next(iter(data.val_dataloader()))["audio"]
    assert val.shape == (8, 1, 32000)
    whole = data.heldout_clips()
    assert len(whole) == 8 and all(clip.shape[0] > 32000 for clip in whole)
    spare = whole[0].shape[0] - 32000  # validation shows the centred window, every time
    np.testing.assert_array_equal(val[0, 0].numpy(), whole[0][spare // 2: spare // 2 + 32000])
    assert torch.equal(val, next(iter(data.val_dataloader()))["audio"])


def test_clip_dataset_pads_short_clips_and_duplicates_channels():
    clips = [np.linspace(-0.5, 0.5, 100, dtype=np.float32)]
    item = SpeechClipDataset(clips, 150, random_crop=True, channels=2)[0]["audio"]
    assert item.shape == (2, 150) and torch.equal(item[0], item[1])
    assert torch.all(item[:, 100:] == 0) and torch.equal(item[0, :100], torch.from_numpy(clips[0]))
    with pytest.raises(ValueError, match="channels 3"):
        SpeechClipDataset(clips, 10, random_crop=False, channels=3)


def test_bad_root_and_unreadable_file_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="has no 'train' folder"):
        SpeechDataModule(root=str(tmp_path))
    for split in ("train", "heldout"):
        (tmp_path / split).mkdir()
    (tmp_path / "train" / "broken.flac").write_bytes(b"not audio")
    with pytest.raises(ValueError, match=r"1 of 1 files in .*train cannot be read: .*broken\.flac"):
        SpeechDataModule(root=str(tmp_path)).setup()
    soundfile.write(tmp_path / "train" / "good.flac", np.zeros(800, np.float32), 16000)
    soundfile.write(tmp_path / "heldout" / "good.flac", np.zeros(800, np.float32), 16000)
    data = SpeechDataModule(root=str(tmp_path), skip_bad_files=True)
    data.setup()
    assert len(data.train_dataset.clips) == 1
