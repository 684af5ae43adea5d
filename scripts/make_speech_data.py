"""Regenerate the shipped speech set (``src/advtune/data/speech``) with espeak-ng.

Every clip is one sentence spoken by one espeak-ng voice, resampled to 16 kHz mono and written as
16-bit FLAC. Training clips: the training sentences in the training voices. Held-out clips: other
sentences in another voice, so the evaluation hears neither words nor a speaker seen in training.
espeak-ng is deterministic, so the same espeak-ng version writes the same files.

    apt-get install -y espeak-ng
    python scripts/make_speech_data.py [--out src/advtune/data/speech]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from advtune.data.audio import resample

SAMPLE_RATE = 16000
# (name, espeak voice+variant, words per minute, pitch 0-99): accents, sexes and pitches differ.
TRAIN_VOICES = (("us_m1", "en-us+m1", 165, 45), ("gb_f2", "en-gb+f2", 150, 60),
                ("scot_m3", "en-gb-scotland+m3", 155, 35), ("us_klatt4", "en-us+klatt4", 160, 55))
HELDOUT_VOICES = (("rp_f4", "en-gb-x-rp+f4", 158, 52),)
# Sentences written for this set (no third-party text).
TRAIN_SENTENCES = (
    "The small boat drifted slowly towards the harbour at dawn.",
    "Please put the green cups back on the top shelf.",
    "A sudden gust of wind scattered the papers across the yard.",
    "Seven children waited patiently for the school bus.",
    "He measured the table twice before cutting the wood.",
    "The old clock in the hall stopped at midnight.",
    "Fresh bread and warm soup were served after the long walk.",
    "She painted the fence a bright shade of yellow.",
    "Our train leaves the station at a quarter past nine.",
    "The river rose quickly after three days of heavy rain.",
    "Turn left at the bakery and follow the narrow lane.",
    "A flock of geese flew low over the frozen lake.",
    "The engineer checked every bolt on the bridge.",
    "Dark clouds gathered above the hills before the storm.",
    "Keep the receipt in case the shoes do not fit.",
    "The museum opens its new gallery next Thursday.",
)
HELDOUT_SENTENCES = (
    "The violin case was left on the crowded platform.",
    "Strong coffee kept the night shift awake until morning.",
    "A narrow bridge crossed the stream behind the farm.",
    "The pilot announced a short delay because of the weather.",
    "Ripe apples fell from the branches in the orchard.",
    "Nobody noticed the letter hidden under the carpet.",
    "The choir practised the same song for an hour.",
    "Smoke curled slowly from the chimney of the cottage.",
)


def speak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """One sentence as mono float32 at ``SAMPLE_RATE``, peak-normalised to 0.9, silence trimmed."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path),
                        text], check=True, capture_output=True)
        audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    audio = resample(audio.T, rate, SAMPLE_RATE)[0]
    loud = np.flatnonzero(np.abs(audio) > 0.01 * np.abs(audio).max())
    margin = SAMPLE_RATE // 20  # keep 50 ms of the onset and decay
    audio = audio[max(0, loud[0] - margin): loud[-1] + margin]
    return 0.9 * audio / np.abs(audio).max()


def write_split(out: Path, split: str, voices: tuple, sentences: tuple) -> float:
    """Write ``out/split/<voice>_<index>.flac``; return the seconds written."""
    (out / split).mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    for name, voice, speed, pitch in voices:
        for index, sentence in enumerate(sentences):
            audio = speak(sentence, voice, speed, pitch)
            soundfile.write(out / split / f"{name}_{index:02d}.flac", audio, SAMPLE_RATE,
                            subtype="PCM_16")
            seconds += len(audio) / SAMPLE_RATE
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[1] / "src/advtune/data/speech")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not on PATH (Debian: apt-get install -y espeak-ng)")
    for split in ("train", "heldout"):
        shutil.rmtree(args.out / split, ignore_errors=True)
    train = write_split(args.out, "train", TRAIN_VOICES, TRAIN_SENTENCES)
    heldout = write_split(args.out, "heldout", HELDOUT_VOICES, HELDOUT_SENTENCES)
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"{version}\ntrain: {train:.1f} s, held-out: {heldout:.1f} s, in {args.out}")


if __name__ == "__main__":
    main()
