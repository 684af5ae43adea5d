"""``advtune evaluate``: score a trained checkpoint on held-out data and write the table.

Audio VAE checkpoints: every held-out clip is reconstructed whole (posterior mean, under
``module.generator_weights()``, so the generator EMA is scored when the run kept one) and scored
with the metrics of :mod:`advtune.metrics.audio`: mel distance, multi-resolution STFT distance,
SI-SDR, and PESQ and STOI at 16 kHz (wide-band) or 8 kHz (narrow-band PESQ). Written to
``out_dir``: ``evaluation.json`` (per clip and mean), ``evaluation.md`` (the table, also
printed), the reconstructions as WAV and a spectrogram comparison PNG.

Flux runs and LoRA files (``lora=``) go to :mod:`advtune.evaluate_flux`: the student beside its
teacher from the same noise (digits: FD/precision/recall; a snapshot: per-image distances).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from advtune.commands import key_values
from advtune.config import ConfigError
from advtune.evaluate_flux import HELP as FLUX_HELP

__all__ = ["HELP", "main", "evaluate_audio"]

HELP = """usage: advtune evaluate ckpt_path=PATH [data=run] [out_dir=evaluation] [max_clips=0]
                        [allowed_target_prefixes=a.,b.]
       advtune evaluate ckpt_path=FLUX_RUN.ckpt | lora=FILE pretrained=SNAPSHOT ...   (Flux: see below)

Score a checkpoint written by `advtune train` on held-out data; write evaluation.json and
evaluation.md (the table, also printed) to out_dir.

  ckpt_path   Lightning checkpoint of an audio VAE run (e.g. outputs/<run>/checkpoints/last.ckpt)
  data        run: the run's own data config; or a data config name (speech: the shipped
              held-out espeak-ng clips, whole)
  out_dir     where the tables, reconstructions (WAV) and spectrogram PNG go
  max_clips   score only the first N held-out clips (0: all)
  allowed_target_prefixes   extra `_target_` prefixes the run's config may name

Flux (a distillation or LoRA run, or a LoRA file): the student beside its teacher.

""" + FLUX_HELP

_ARGS = {"ckpt_path": None, "data": "run", "out_dir": "evaluation", "max_clips": "0",
         "allowed_target_prefixes": ""}


def _parse(overrides: list[str]) -> dict[str, str]:
    args = dict(_ARGS)
    for key, value in key_values(overrides, _ARGS, "evaluate: "):
        args[key] = value
    if not args["ckpt_path"]:
        raise ConfigError("evaluate: ckpt_path=... is required")
    if not args["max_clips"].isdigit():
        raise ConfigError(f"evaluate: max_clips must be an integer >= 0, got {args['max_clips']!r}")
    return args


def _heldout_clips(data_cfg: Any, sample_rate: int) -> list:
    """Held-out clips, mono ``(T,)`` arrays: whole clips when the data module can give them, else
    its validation crops."""
    from hydra.utils import instantiate

    datamodule = instantiate(data_cfg)
    if int(getattr(datamodule, "sample_rate", sample_rate)) != sample_rate:
        raise ConfigError(f"evaluate: data at {datamodule.sample_rate} Hz, but the model was "
                          f"trained at {sample_rate} Hz")
    if hasattr(datamodule, "heldout_clips"):
        return datamodule.heldout_clips()
    datamodule.setup("validate")
    return [item["audio"][0].numpy() for item in datamodule.val_dataset]


def evaluate_audio(task: Any, clips: list, out_dir: Path) -> dict[str, Any]:
    """Reconstruct and score every clip; write WAVs and a spectrogram PNG; return the results."""
    import numpy as np
    import soundfile
    import torch

    from advtune.losses.reconstruction import l1_waveform_loss
    from advtune.metrics.audio import audio_metrics, save_spectrogram_comparison

    rate = task.sample_rate
    perceptual = rate in (8000, 16000)
    per_clip, pairs = [], []
    for index, clip in enumerate(clips):
        real = torch.as_tensor(np.asarray(clip, dtype=np.float32))[None, None]
        real = real.expand(-1, task.vae.model_config["in_channels"], -1)
        with torch.no_grad():
            recon = task.vae(real, sample_posterior=False)[0].clamp(-1.0, 1.0)
        scores = audio_metrics(recon, real, rate, prefix="", perceptual=perceptual)
        scores["recon_l1"] = l1_waveform_loss(recon, real)
        per_clip.append({name: float(value) for name, value in scores.items()})
        soundfile.write(out_dir / f"recon_{index:02d}.wav", recon[0].T.numpy(), rate)
        pairs.append((real, recon))
    shortest = min(real.shape[-1] for real, _ in pairs[:3])
    save_spectrogram_comparison(out_dir / "spectrogram.png",
                                torch.cat([r[..., :shortest] for r, _ in pairs[:3]]),
                                torch.cat([f[..., :shortest] for _, f in pairs[:3]]), rate)
    mean = {name: float(np.nanmean([row[name] for row in per_clip])) for name in per_clip[0]}
    return {"num_clips": len(clips), "sample_rate": rate, "mean": mean, "per_clip": per_clip}


def _markdown(results: dict[str, Any], checkpoint: str) -> str:
    better = {"pesq": "↑", "stoi": "↑", "si_sdr": "↑ dB"}
    names = list(results["mean"])
    head = " | ".join(f"{name} {better.get(name, '↓')}" for name in names)
    row = " | ".join(f"{results['mean'][name]:.4f}" for name in names)
    return (f"{checkpoint}: {results['num_clips']} held-out clips at {results['sample_rate']} Hz (mean)\n\n"
            f"| {head} |\n|{'---|' * len(names)}\n| {row} |\n")


def _is_flux(overrides: list[str]) -> bool:
    """A LoRA file, or a checkpoint whose run config names a Flux task."""
    if any(item.startswith("lora=") for item in overrides):
        return True
    ckpt = next((item.partition("=")[2] for item in overrides if item.startswith("ckpt_path=")), "")
    if not ckpt or not Path(ckpt).is_file():
        return False
    from omegaconf import OmegaConf

    from advtune.training.checkpoint_io import load_checkpoint_file

    text = (load_checkpoint_file(ckpt).get("advtune") or {}).get("config") or ""
    return text != "" and str(OmegaConf.create(text).get("task", {}).get("_target_", "")).startswith("advtune.tasks.flux")


def main(overrides: list[str]) -> None:
    """Entry point of ``advtune evaluate`` (see :data:`HELP`)."""
    from omegaconf import OmegaConf

    if _is_flux(overrides):
        from advtune import evaluate_flux

        return evaluate_flux.main(overrides)

    from advtune.config import compose_config
    from advtune.runner import load_run
    from advtune.tasks.audio_vae import AudioVAETask

    args = _parse(overrides)
    prefixes = tuple(p for p in args["allowed_target_prefixes"].split(",") if p)
    module, cfg = load_run(args["ckpt_path"], prefixes)
    if not isinstance(module.task, AudioVAETask):
        raise ConfigError(f"evaluate: supports audio VAE checkpoints; {args['ckpt_path']} holds a "
                          f"{type(module.task).__name__}")
    data_cfg = cfg.data if args["data"] == "run" else compose_config([f"data={args['data']}"]).data
    OmegaConf.set_struct(data_cfg, False)
    clips = _heldout_clips(data_cfg, module.task.sample_rate)
    if int(args["max_clips"]):
        clips = clips[: int(args["max_clips"])]
    if not clips:
        raise ConfigError(f"evaluate: data={args['data']} has no held-out clips")
    out_dir = Path(args["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    with module.generator_weights():
        results = evaluate_audio(module.task, clips, out_dir)
    results.update({"checkpoint": str(args["ckpt_path"]), "data": args["data"]})
    (out_dir / "evaluation.json").write_text(json.dumps(results, indent=2))
    table = _markdown(results, str(args["ckpt_path"]))
    (out_dir / "evaluation.md").write_text(table)
    print(table + f"\nwrote {out_dir / 'evaluation.json'}, {out_dir / 'evaluation.md'}, WAVs and "
          f"{out_dir / 'spectrogram.png'}")


if __name__ == "__main__":  # python -m advtune.evaluate ... == advtune evaluate ...
    import sys

    from advtune.cli import main as cli_main

    sys.exit(cli_main(["evaluate", *sys.argv[1:]]))
