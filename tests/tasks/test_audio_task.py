"""AudioVAETask and AudioVAEModule: base losses, validation outputs, export, legacy arguments,
a real Lightning fit whose checkpoint converts, and the Hydra presets."""

import warnings

import lightning
import pytest
import soundfile
import torch

from advtune.adversarial import AdversarialLossCalculator
from advtune.discriminators import EnCodecDiscriminator
from advtune.io import load_from_lightning_checkpoint, load_model
from advtune.models.audio_vae import AudioVAE
from advtune.tasks.audio_vae import AudioVAETask
from advtune.training.audio_module import AudioVAEModule


def tiny_task(**kwargs) -> AudioVAETask:
    vae = AudioVAE(in_channels=1, base_channels=4, channel_mults=[1, 2], strides=[2, 4],
                   latent_dim=2, kernel_size=3, dilations=[1])
    return AudioVAETask(vae, sample_rate=8000, stft_fft_sizes=[128, 64], sample_seconds=0.05, **kwargs)


def tiny_disc() -> EnCodecDiscriminator:
    return EnCodecDiscriminator(stft_filters=4, in_channels=1, n_ffts=[128, 64], use_msd=False,
                                mpd_periods=[2], mpd_channels=[4, 8])


def test_generator_predict_weighted_base_losses():
    audio = torch.randn(2, 1, 256)
    task, heavy = tiny_task(kl_weight=1.0), tiny_task(l1_weight=2.0, stft_weight=3.0, kl_weight=0.5)
    heavy.vae.load_state_dict(task.vae.state_dict())
    torch.manual_seed(0)
    out = task.generator_predict({"audio": audio})
    torch.manual_seed(0)
    out_heavy = heavy.generator_predict({"audio": audio})
    assert set(out.base_losses) == {"recon_l1", "recon_stft", "kl"}
    assert out.real is audio and out.fake.shape == audio.shape and out.fake.requires_grad
    assert out.last_layer is task.vae.output_conv.weight
    for name, factor in (("recon_l1", 2.0), ("recon_stft", 3.0), ("kl", 0.5)):
        torch.testing.assert_close(out_heavy.base_losses[name], factor * out.base_losses[name])
    with pytest.raises(ValueError, match=r"\(B, C, T\)"):
        task.generator_predict({"audio": torch.randn(256)})


def test_mel_weight_adds_the_weighted_mel_loss():
    from advtune.losses.reconstruction import mel_distance

    audio = torch.randn(2, 1, 512)
    plain, mel = tiny_task(), tiny_task(mel_weight=10.0, mel_fft_sizes=[128, 256])
    mel.vae.load_state_dict(plain.vae.state_dict())
    assert "recon_mel" not in plain.generator_predict({"audio": audio}).base_losses
    out = mel.generator_predict({"audio": audio})
    torch.testing.assert_close(out.base_losses["recon_mel"],
                               10.0 * mel_distance(out.fake, audio, 8000, n_ffts=(128, 256)))
    out.base_losses["recon_mel"].backward()
    assert mel.vae.output_conv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="task.mel_weight must be >= 0"):
        tiny_task(mel_weight=-1.0)


def test_init_generator_loads_an_exported_vae_into_the_task(tmp_path):
    from advtune.config import compose_config
    from advtune.runner import build

    source = tiny_task()
    exported = source.export(tmp_path)
    sizes = ["experiment=audio_vae_speech", "task.vae.base_channels=4", "task.vae.channel_mults=[1,2]",
             "task.vae.strides=[2,4]", "task.vae.latent_dim=2", "task.vae.kernel_size=3", "task.vae.dilations=[1]"]
    fresh = build(compose_config(sizes), with_data=False).module.task.vae.state_dict()
    assert any(not torch.equal(fresh[name], value) for name, value in source.vae.state_dict().items())
    module = build(compose_config([*sizes, f"init_generator={exported}"]), with_data=False).module
    assert module.task.generator is module.task.vae
    for name, value in source.vae.state_dict().items():  # build itself loaded the exported VAE
        torch.testing.assert_close(module.task.vae.state_dict()[name], value)


def test_validation_logs_metrics_and_writes_wavs_and_png(tmp_path):
    task = tiny_task(num_val_examples=2).eval()
    metrics = task.validation_step({"audio": torch.randn(3, 1, 400)})
    assert set(metrics) == {"val/stft_distance", "val/mel_distance", "val/si_sdr", "val/recon_l1"}
    assert all(torch.isfinite(v) for v in metrics.values())
    task.validation_epoch_end(tmp_path, step=7)
    wavs = sorted(p.name for p in tmp_path.glob("*.wav"))
    assert wavs == ["audio_step000007_0_real.wav", "audio_step000007_0_recon.wav",
                    "audio_step000007_1_real.wav", "audio_step000007_1_recon.wav"]
    audio, rate = soundfile.read(tmp_path / wavs[0])
    assert rate == 8000 and audio.shape == (400,)
    assert (tmp_path / "spectrogram_step000007.png").stat().st_size > 1000


def test_sample_and_export_roundtrip(tmp_path):
    task = tiny_task()
    samples = task.sample(3, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (3, 1, 400) and samples.abs().max() <= 1.0
    loaded = load_model(task.export(tmp_path))
    audio = torch.randn(1, 1, 64)
    torch.testing.assert_close(loaded(audio)[0], task.vae.eval()(audio)[0])


def test_legacy_flat_parameters_warn_and_configure_calculator():
    with pytest.warns(DeprecationWarning, match=r"adversarial\.warmup_steps.*adversarial_loss\.yaml"):
        module = AudioVAEModule(tiny_task(), tiny_disc(), adversarial_warmup_steps=50,
                                adversarial_weight=0.5, feature_matching_weight=15.0)
    calc = module.calculator
    assert (calc.warmup_steps, calc.adversarial_weight, calc.feature_matching_weight) == (50, 0.5, 15.0)
    given = AdversarialLossCalculator(loss_type="lsgan", feature_matching_weight=3.0)
    with pytest.warns(DeprecationWarning):
        module = AudioVAEModule(tiny_task(), tiny_disc(), calculator=given, adversarial_weight=2.0)
    assert module.calculator.loss_type == "lsgan" and module.calculator.adversarial_weight == 2.0
    assert module.calculator.feature_matching_weight == 3.0 and given.adversarial_weight == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        module = AudioVAEModule(tiny_task(), tiny_disc())
    assert module.calculator.feature_matching_weight == 10.0


def test_missing_discriminator_message():
    with pytest.raises(ValueError, match=r"^discriminator must be provided when use_adversarial=True$"):
        AudioVAEModule(tiny_task(), None)
    assert AudioVAEModule(tiny_task(), None, use_adversarial=False).discriminator is None


def test_standalone_calculator_with_encodec_discriminator():
    task, disc = tiny_task(), tiny_disc()
    out = task.generator_predict(torch.randn(2, 1, 256))
    loss_calc = AdversarialLossCalculator(feature_matching_weight=10.0)
    result = loss_calc.compute_generator_loss(discriminator=disc, real=out.real, fake=out.fake, global_step=0)
    result["loss"].backward()
    assert result["g/feat"] > 0 and task.vae.output_conv.weight.grad.abs().sum() > 0


def test_lightning_fit_trains_both_players_and_checkpoint_converts(tmp_path):
    from advtune.schedule import PhaseSchedule

    torch.manual_seed(0)
    task, disc = tiny_task(), tiny_disc()
    module = AudioVAEModule(task, disc, schedule=PhaseSchedule(discriminator_every=2))
    g_before = [p.detach().clone() for p in task.vae.parameters()]
    d_before = [p.detach().clone() for p in disc.parameters()]
    data = torch.utils.data.DataLoader([{"audio": torch.randn(1, 256)} for _ in range(4)], batch_size=2)
    trainer = lightning.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False,
                                default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(module, data)
    assert all(not torch.equal(a, b) for a, b in zip(g_before, task.vae.parameters()) if b.requires_grad)
    assert any(not torch.equal(a, b) for a, b in zip(d_before, disc.parameters()))
    assert (trainer.global_step, module.discriminator_updates) == (2, 1)  # D on every 2nd batch
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    vae = load_from_lightning_checkpoint(tmp_path / "run.ckpt")
    audio = torch.randn(1, 1, 256)
    torch.testing.assert_close(vae(audio)[0], task.vae.eval()(audio)[0])
    torch.testing.assert_close(vae.latent_mean, task.vae.latent_mean)


def test_hydra_presets_compose_and_build():
    from advtune.config import compose_config
    from advtune.runner import build

    cfg = compose_config(["experiment=audio_vae", "discriminator=lightweight", "adversarial=staged"])
    built = build(cfg, with_data=False).module
    assert isinstance(built, AudioVAEModule) and isinstance(built.task, AudioVAETask)
    calc = built.calculator
    assert (calc.warmup_steps, calc.adversarial_weight, calc.feature_matching_weight) == (20000, 0.5, 15.0)
    disc = built.discriminator
    assert disc.msd is None and len(disc.mpd.discriminators) == 3
    assert disc.stft.discriminators[0].convs[0].out_channels == 16
    default = compose_config(["experiment=audio_vae"])
    assert default.discriminator.use_msd and default.adversarial.warmup_steps == 0
    assert default.adversarial.feature_matching_weight == 10.0


def test_discriminator_crop_is_one_window_of_real_and_fake_with_full_base_losses():
    audio = torch.randn(3, 1, 400)
    full, cropped = tiny_task(), tiny_task(discriminator_crop_seconds=0.01)  # 80 samples at 8 kHz
    cropped.vae.load_state_dict(full.vae.state_dict())
    torch.manual_seed(0)
    out_full = full.generator_predict({"audio": audio})
    torch.manual_seed(0)
    out = cropped.generator_predict({"audio": audio})
    assert out.real.shape == out.fake.shape == (3, 1, 80)
    for name in out.base_losses:  # the reconstruction losses still see the whole clip
        torch.testing.assert_close(out.base_losses[name], out_full.base_losses[name])
    offsets = set()
    for i in range(3):  # real and fake are the same window of each clip
        start = next(s for s in range(321) if torch.equal(audio[i, :, s:s + 80], out.real[i]))
        torch.testing.assert_close(out.fake[i], out_full.fake[i, :, start:start + 80])
        offsets.add(start)
    assert len(offsets) > 1  # one offset per clip
    out.fake.sum().backward()
    assert cropped.vae.output_conv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="discriminator_crop_seconds"):
        tiny_task(discriminator_crop_seconds=0.0)


def test_validation_logs_pesq_and_stoi_when_asked():
    from advtune.data.speech import SpeechDataModule

    vae = AudioVAE(in_channels=1, base_channels=4, channel_mults=[1, 2], strides=[2, 4], latent_dim=2,
                   kernel_size=3, dilations=[1])
    task = AudioVAETask(vae, sample_rate=16000, stft_fft_sizes=[128], perceptual_metrics=True).eval()
    data = SpeechDataModule(val_seconds=1.0, val_batch_size=2)
    metrics = task.validation_step(next(iter(data.val_dataloader())))
    assert {"val/pesq", "val/stoi"} <= set(metrics)
    assert 1.0 <= metrics["val/pesq"] <= 4.65 and 0.0 <= metrics["val/stoi"] <= 1.0


def test_speech_experiment_trains_then_evaluate_writes_the_table(tmp_path, capsys):
    import json
    import math

    from advtune import evaluate
    from advtune.config import ConfigError, compose_config
    from advtune.runner import train

    cfg = compose_config(["experiment=audio_vae_speech", f"output_dir={tmp_path / 'run'}", "trainer.max_steps=2",
                          "schedule.adversarial_start_step=1", "schedule.discriminator_warmup_steps=0",
                          "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
                          "data.val_seconds=1.0", "data.crops_per_clip=1"])
    assert cfg.task.perceptual_metrics and cfg.data._target_.endswith("SpeechDataModule")
    train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    evaluate.main([f"ckpt_path={ckpt}", "data=speech", "max_clips=2", f"out_dir={tmp_path / 'eval'}"])
    results = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert results["num_clips"] == 2 and results["sample_rate"] == 16000
    assert set(results["mean"]) == {"stft_distance", "mel_distance", "si_sdr", "pesq", "stoi", "recon_l1"}
    assert len(results["per_clip"]) == 2 and all(math.isfinite(v) for v in results["mean"].values())
    assert 1.0 <= results["mean"]["pesq"] <= 4.65 and 0.0 <= results["mean"]["stoi"] <= 1.0
    assert "| stft_distance ↓ |" in capsys.readouterr().out
    assert (tmp_path / "eval" / "recon_01.wav").exists() and (tmp_path / "eval" / "spectrogram.png").exists()
    with pytest.raises(ConfigError, match="unknown argument 'clips=2'"):
        evaluate.main([f"ckpt_path={ckpt}", "clips=2"])
    with pytest.raises(ConfigError, match="ckpt_path=... is required"):
        evaluate.main([])
