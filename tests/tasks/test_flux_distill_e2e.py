"""Distillation from end to end: a tiny FLUX.1 snapshot and a captioned folder -> teacher cache -> student
LoRA that plain diffusers loads (and that changes its images) -> `advtune generate` and `advtune evaluate`."""

from __future__ import annotations

import json

import torch

from advtune.cli import main
from advtune.config import compose_config
from advtune.runner import train


def _overrides(snapshot, folder, out, **extra):
    items = {"experiment": "flux_lora_distill", "pretrained": snapshot, "data@data.source": "image_folder",
             "data.source.image_dir": folder, "output_dir": out, "data.source.resolution": 48,
             "data.source.instance_prompt": "'a photo, sks style'", "data.source.max_sequence_length": 16,
             "data.source.val_fraction": 0.2, "data.num_samples": "null", "data.samples_per_prompt": 2,
             "data.batch_size": 1, "validation_prompts": "[a red cat]", "task.base_dtype": "float32",
             "task.teacher_steps": 3, "task.validation_num_steps": "[1,2]", "task.student_steps": "[1,2]",
             "task.validation_guidance_scale": 3.5, "trainer.max_steps": 3, "disc_warmup_steps": 1,
             "trainer.val_check_interval": 3, "checkpoint_every": 3, "trainer.enable_progress_bar": "false", **extra}
    return [f"{k}={v}" for k, v in items.items()]


def test_captioned_folder_to_student_lora_that_diffusers_loads(tmp_path, tiny_flux_snapshot, captioned_folder, capsys):
    from diffusers import FluxPipeline

    folder = captioned_folder(tmp_path / "images")
    out = tmp_path / "student"
    train(compose_config(_overrides(tiny_flux_snapshot, folder, out)))
    printed = capsys.readouterr().out
    assert "caching 10 of 10 teacher samples (3 steps each)" in printed  # 5 training images x 2 per caption
    lora = out / "pytorch_lora_weights.safetensors"
    assert (out / "samples" / "prompts_0000003.png").is_file()

    pipe = FluxPipeline.from_pretrained(str(tiny_flux_snapshot), local_files_only=True)

    def render():
        return pipe("a red cat", num_inference_steps=2, height=32, width=32, output_type="pt", max_sequence_length=16,
                    guidance_scale=3.5, generator=torch.Generator().manual_seed(0)).images

    base = render()
    pipe.load_lora_weights(str(lora), adapter_name="student")
    assert (render() - base).abs().max() > 0
    pipe.unload_lora_weights()

    generated = tmp_path / "generated"
    assert main(["generate", f"pretrained={tiny_flux_snapshot}", f"lora={lora}", "prompt=a red cat",
                 f"out_dir={generated}", "height=32", "width=32", "max_sequence_length=16"]) == 0
    printed = capsys.readouterr().out
    assert "num_steps=2 (recommended by" in printed and "guidance_scale=3.5 (recommended by" in printed
    assert [p.name for p in generated.iterdir()] == ["000.png"]

    report = tmp_path / "report"
    assert main(["evaluate", f"lora={lora}", f"pretrained={tiny_flux_snapshot}", "prompts=a red cat,a dog",
                 "max_sequence_length=16", "resolution=32", "steps=1,2", f"out_dir={report}"]) == 0
    results = json.loads((report / "flux_evaluation.json").read_text())
    assert results["columns"] == ["teacher, 3 steps", "student, 1 step", "student, 2 steps"]
    assert results["rows"]["teacher, 3 steps"]["rms_to_teacher"] == 0.0
    assert 0 < results["rows"]["student, 1 step"]["rms_to_teacher"] < 2
    assert (report / "teacher_vs_student.png").is_file()


def test_evaluate_a_digits_run_and_its_one_line_errors(tmp_path, capsys):
    from advtune.evaluate_flux import parse

    out = tmp_path / "run"
    train(compose_config(["experiment=flux_lora_distill", f"output_dir={out}", "data.num_samples=32",
                          "data.batch_size=16", "data.source.digits=[0,1]", "task.teacher_steps=2",
                          "task.num_validation_samples=16", "task.validation_num_steps=[1]", "disc_warmup_steps=1",
                          "trainer.max_steps=2", "trainer.val_check_interval=50", "trainer.enable_progress_bar=false"]))
    capsys.readouterr()
    assert main(["evaluate", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", "num_samples=32", "steps=1,2",
                 f"out_dir={tmp_path / 'report'}"]) == 0
    results = json.loads((tmp_path / "report" / "flux_evaluation.json").read_text())
    assert results["digits"] == [0, 1] and set(results["rows"]) == {"teacher, 2 steps", "student, 1 step",
                                                                    "student, 2 steps"}
    assert all(0 <= row["precision"] <= 1 and row["fd"] >= 0 for row in results["rows"].values())
    lora_run = tmp_path / "lora_run"  # a flow-matching LoRA run: its teacher is itself at teacher_steps
    train(compose_config(["experiment=flux_lora_latent_adv", f"output_dir={lora_run}", "use_latent_adv=false",
                          "data.digits=[5,6]", "trainer.max_steps=2", "task.num_validation_samples=16",
                          "trainer.val_check_interval=50", "trainer.enable_progress_bar=false"]))
    assert main(["evaluate", f"ckpt_path={lora_run / 'checkpoints' / 'last.ckpt'}", "num_samples=32", "steps=2",
                 "teacher_steps=4", f"out_dir={tmp_path / 'lora_report'}"]) == 0
    results = json.loads((tmp_path / "lora_report" / "flux_evaluation.json").read_text())
    assert results["columns"] == ["teacher, 4 steps", "student, 2 steps"] and results["digits"] == [5, 6]
    for bad, message in ((["lora=x.safetensors"], "needs its base"), (["ckpt_path=a", "steps=0"], "steps must be"),
                         (["ckpt_path=a", "colour=red"], "unknown argument"), ([], "give ckpt_path")):
        try:
            parse(bad)
        except ValueError as error:
            assert message in str(error) and "\n" not in str(error)
        else:
            raise AssertionError(f"{bad} was accepted")
