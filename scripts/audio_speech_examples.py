"""Spectrograms and WAVs of held-out speech for docs/AUDIO.md, from ``audio_speech_study.py`` runs.

    python scripts/audio_speech_examples.py --out STUDY_DIR --seed 0 --arm staged --docs docs

Writes ``DOCS/images/audio_speech_spectrograms.png`` (rows: held-out clips; columns: original,
reconstruction only, staged) and ``DOCS/audio/speech_heldout{i}_{original,recon_only,staged}.wav``
(the first seconds of each, 16 kHz), from the reconstructions ``advtune evaluate`` wrote.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def write_examples(out: Path, seed: int, arm: str, docs: Path, clips: tuple[int, ...] = (0, 3),
                   seconds: float = 2.0) -> None:
    """Spectrogram PNG and WAVs of ``clips`` for the original, the reconstruction arm and ``arm``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import soundfile
    import torch

    from advtune.data.speech import SpeechDataModule
    from advtune.losses.reconstruction import stft_magnitude

    originals = SpeechDataModule().heldout_clips()
    length = int(seconds * 16000)
    (docs / "audio").mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(len(clips), 3, figsize=(10, 2.4 * len(clips)), squeeze=False)
    for row, index in enumerate(clips):
        versions = {("original", "original"): originals[index]}
        for run, tag, label in (("recon", "recon_only", "reconstruction only"), (arm, "staged", "staged (adversarial)")):
            wav = out / f"{run}_seed{seed}" / "evaluation" / f"recon_{index:02d}.wav"
            versions[(tag, label)] = soundfile.read(wav, dtype="float32")[0]
        for col, ((tag, label), audio) in enumerate(versions.items()):
            audio = audio[:length]
            soundfile.write(docs / "audio" / f"speech_heldout{index}_{tag}.wav", audio, 16000, subtype="PCM_16")
            magnitude = stft_magnitude(torch.from_numpy(audio), 512, 128, 512)[0]
            axes[row][col].imshow(20 * np.log10(magnitude.T.numpy() + 1e-5), origin="lower", aspect="auto",
                                  cmap="magma", vmin=-80, extent=(0.0, seconds, 0.0, 8.0))
            axes[row][col].set_title(f"held-out clip {index}: {label}", fontsize=8)
            axes[row][col].set_ylabel("kHz", fontsize=7)
    figure.tight_layout()
    (docs / "images").mkdir(parents=True, exist_ok=True)
    figure.savefig(docs / "images" / "audio_speech_spectrograms.png", dpi=80)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the study's output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arm", default="staged", help="the staged arm shown beside reconstruction only")
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    args = parser.parse_args()
    write_examples(args.out, args.seed, args.arm, args.docs)


if __name__ == "__main__":
    main()
