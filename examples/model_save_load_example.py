"""Save, load and resume an audio VAE with ``advtune.io`` (runs in seconds on a CPU).

1. train a tiny :class:`~advtune.models.AudioVAE` for a few steps on synthetic audio;
2. ``save_model`` it with its optimizer and scheduler state;
3. ``load_model`` rebuilds it from the file alone (class from the allow-list, config from the file)
   and gives identical outputs; ``load_training_state`` resumes the optimizer and scheduler;
4. an old-style file (a bare state dict) is refused with the fix in the message;
5. your own model class becomes loadable with ``@register_model``.

    python examples/model_save_load_example.py [--out /tmp/advtune_save_load]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

from advtune.data.audio_synthetic import SyntheticAudioDataset
from advtune.io import load_model, load_training_state, register_model, save_model
from advtune.losses import l1_waveform_loss, multi_resolution_stft_loss
from advtune.models import AudioVAE


def train(vae: AudioVAE, optimizer, scheduler, audio: torch.Tensor, steps: int) -> float:
    vae.train()
    for _ in range(steps):
        recon, *_ = vae(audio)
        loss = l1_waveform_loss(recon, audio) + multi_resolution_stft_loss(
            recon, audio, [256, 128], [64, 32], [256, 128])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return loss.item()


@register_model
class TinyDecoder(nn.Module):
    """A user's own model: keep the constructor kwargs in ``model_config`` and register it."""

    def __init__(self, latent_dim: int = 4, out_channels: int = 1) -> None:
        super().__init__()
        self.model_config = {"latent_dim": latent_dim, "out_channels": out_channels}
        self.net = nn.Conv1d(latent_dim, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for the files (default: a temp dir)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="advtune_save_load_"))
    torch.manual_seed(0)
    data = SyntheticAudioDataset(num_clips=8, length=1024, sample_rate=8000, include_speech=False)
    audio = torch.stack([data[i]["audio"] for i in range(len(data))])  # (8, 1, 1024)

    vae = AudioVAE.tiny(in_channels=1)
    optimizer = torch.optim.Adam(vae.parameters(), lr=2e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
    loss = train(vae, optimizer, scheduler, audio, steps=10)
    print(f"trained 10 steps, loss {loss:.4f}; latent_mean[:3] {vae.latent_mean[:3].tolist()}")

    path = save_model(vae, out / "audio_vae.pt", optimizer.state_dict(), scheduler.state_dict(),
                      epoch=0, global_step=10, metadata={"sample_rate": 8000})
    print(f"saved {path} ({path.stat().st_size / 1024:.0f} kB); keys:",
          sorted(torch.load(path, weights_only=True)))

    loaded = load_model(path)
    vae.eval()
    same = torch.equal(loaded(audio)[0], vae(audio)[0])
    print(f"loaded {type(loaded).__name__}{loaded.model_config}; identical outputs: {same}")
    if not same:
        raise SystemExit("load_model did not reproduce the saved model")

    new_optimizer = torch.optim.Adam(loaded.parameters(), lr=2e-3)
    new_scheduler = torch.optim.lr_scheduler.StepLR(new_optimizer, step_size=5, gamma=0.5)
    state = load_training_state(path, new_optimizer, new_scheduler)
    print(f"resumed at global_step {state['global_step']}, lr {new_optimizer.param_groups[0]['lr']}")
    loss = train(loaded, new_optimizer, new_scheduler, audio, steps=5)
    print(f"5 more steps, loss {loss:.4f}")

    torch.save(vae.state_dict(), out / "old_style.pt")
    try:
        load_model(out / "old_style.pt")
    except ValueError as error:
        print(f"old-style file refused: {str(error)[:90]}...")

    decoder = TinyDecoder(latent_dim=4)
    reloaded = load_model(save_model(decoder, out / "tiny_decoder.pt"))
    z = torch.randn(1, 4, 10)
    print(f"user model {type(reloaded).__name__} round trip identical: "
          f"{torch.equal(reloaded(z), decoder(z))}")


if __name__ == "__main__":
    main()
