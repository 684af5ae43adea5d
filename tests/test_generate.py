"""`advtune generate`: FluxPipeline + load_lora_weights writes PNGs; bad arguments fail in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advtune.config import ConfigError
from advtune.generate import HELP, DEFAULTS, main, parse_arguments


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory, tiny_flux_snapshot):
    from advtune.tasks.flux_lora import FluxLoRATask

    task = FluxLoRATask(snapshot=str(tiny_flux_snapshot), base_dtype="float32", rank=2, validation_resolution=32)
    with torch.no_grad():
        for p in task.trainable_parameters():
            p.normal_(0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
    return task.export(tmp_path_factory.mktemp("lora"))


def _png(path):
    from PIL import Image

    return np.asarray(Image.open(path), dtype=np.float64)


def test_generate_writes_pngs_that_the_lora_changes(tmp_path, tiny_flux_snapshot, lora_file, capsys):
    common = [f"pretrained={tiny_flux_snapshot}", "prompt=a cat, sks style", "num_steps=2", "height=32", "width=48",
              "max_sequence_length=16"]
    main(common + [f"lora={lora_file}", f"out_dir={tmp_path / 'lora'}", "num_images=2", "seed=3"])
    main(common + ["lora=none", f"out_dir={tmp_path / 'base'}", "seed=3"])
    main(common + [f"lora={lora_file}", f"out_dir={tmp_path / 'off'}", "seed=3", "lora_scale=0"])
    assert sorted(p.name for p in (tmp_path / "lora").iterdir()) == ["000.png", "001.png"]
    assert "wrote 2 image(s)" in capsys.readouterr().out
    adapted, base, off = (_png(tmp_path / d / "000.png") for d in ("lora", "base", "off"))
    assert adapted.shape == (32, 48, 3)
    assert np.abs(adapted - base).mean() > 1.0 and np.array_equal(off, base)  # lora_scale=0 is the base
    assert not np.array_equal(adapted, _png(tmp_path / "lora" / "001.png"))  # image i uses seed + i


def test_bad_arguments_are_one_line_errors(tmp_path, tiny_flux_snapshot, lora_file):
    required = [f"pretrained={tiny_flux_snapshot}", f"lora={lora_file}", "prompt=a cat"]
    assert parse_arguments(required + ["num_steps=8"])["num_steps"] == 8
    cases = {
        "unknown argument 'steps=4'": required + ["steps=4"],
        "prompt=... is required": required[:2],
        "LoRA file not found": [required[0], f"lora={tmp_path / 'none.safetensors'}", "prompt=x"],
        "num_steps='four' is not an integer": required + ["num_steps=four"],
        "height must be a positive multiple of 16": required + ["height=30"],
        "num_images must be >= 1": required + ["num_images=0"],
        "dtype must be one of auto, float32, bfloat16, float16, got 'bf16'": required + ["dtype=bf16"],
    }
    for message, overrides in cases.items():
        with pytest.raises(ConfigError, match=message):
            parse_arguments(overrides)
    with pytest.raises(ConfigError, match="no model_index.json"):
        main([f"pretrained={tmp_path}", f"lora={lora_file}", "prompt=a cat"])
    assert all(key + "=" in HELP for key in DEFAULTS)


def _lycoris_run(out, snapshot, folder, adapter_type):
    from advtune.config import compose_config
    from advtune.runner import train

    items = {"experiment": "flux_lora_latent_adv", "pretrained": snapshot, "data": "image_folder",
             "data.image_dir": folder, "output_dir": out, "data.resolution": 48, "data.max_sequence_length": 16,
             "data.instance_prompt": "'a photo, sks style'", "data.val_fraction": 0.2, "task.base_dtype": "float32",
             "task.adapter_type": adapter_type, "task.rank": 4, "task.validation_num_steps": "[1]",
             "module.generator_optimizer.lr": 0.05, "module.ema_decay": "null", "trainer.max_steps": 3,
             "latent_adv_start_step": 1, "disc_warmup_steps": 1, "trainer.val_check_interval": 3,
             "trainer.enable_progress_bar": "false"}
    train(compose_config([f"{k}={v}" for k, v in items.items()]))
    return out / "pytorch_lora_weights.safetensors"


# ComfyUI's tensor names per LyCORIS algorithm (comfy/lora.py, weight_adapter/): what its Flux loader reads.
_COMFY_TENSORS = {"lokr": {"lokr_w1", "lokr_w2", "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b", "alpha"},
                  "loha": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"}}


@pytest.mark.parametrize("adapter_type", ["lokr", "loha"])
def test_lycoris_run_generates_the_trained_transformers_images(tmp_path, tiny_flux_snapshot, captioned_folder,
                                                               adapter_type):
    """Train LoKr / LoHa on the tiny snapshot; `advtune generate` renders what the trained transformer renders
    (to 1/255 per pixel; measured identical), lora_scale=0 the base, and the keys are ComfyUI's Flux names."""
    from diffusers import FluxPipeline
    from safetensors import safe_open

    from advtune.adapter_files import lycoris_module_key
    from advtune.adapters import FLUX_LORA_TARGET_MODULES, matching_linear_modules
    from advtune.runner import load_run

    path = _lycoris_run(tmp_path / "run", tiny_flux_snapshot, captioned_folder(tmp_path / "images"), adapter_type)
    assert path.is_file() and not (tmp_path / "run" / "lycoris_weights.safetensors").exists()
    with safe_open(str(path), framework="pt") as handle:
        keys, metadata = set(handle.keys()), handle.metadata()
    module, _ = load_run(tmp_path / "run" / "checkpoints" / "last.ckpt")
    transformer = module.task.transformer
    targets = matching_linear_modules(transformer, FLUX_LORA_TARGET_MODULES)
    assert {key.split(".", 1)[0] for key in keys} == {lycoris_module_key(name) for name in targets}
    assert {key.split(".", 1)[1] for key in keys} <= _COMFY_TENSORS[adapter_type]
    assert '"algo": "%s"' % adapter_type in metadata["lycoris_config"]

    common = [f"pretrained={tiny_flux_snapshot}", "prompt=a cat, sks style", "num_steps=2", "height=32", "width=32",
              "max_sequence_length=16", "seed=5"]
    for name, extra in {"lora": [f"lora={path}"], "off": [f"lora={path}", "lora_scale=0"], "base": ["lora=none"]}.items():
        main(common + extra + [f"out_dir={tmp_path / name}"])
    adapted, off, base = (_png(tmp_path / name / "000.png") for name in ("lora", "off", "base"))
    pipe = FluxPipeline.from_pretrained(str(tiny_flux_snapshot), transformer=transformer, local_files_only=True)
    with torch.no_grad(), module.generator_weights():
        trained = np.asarray(pipe("a cat, sks style", num_inference_steps=2, height=32, width=32, max_sequence_length=16,
                                  generator=[torch.Generator().manual_seed(5)]).images[0], dtype=np.float64)
    assert np.abs(adapted - base).mean() > 1.0  # the adapter changes the image, so the comparison means something
    assert np.abs(adapted - trained).max() <= 1.0
    assert np.array_equal(off, base)


def test_a_lycoris_file_of_another_model_is_a_one_line_error(tmp_path, tiny_flux_snapshot):
    from safetensors.torch import save_file

    foreign = tmp_path / "pytorch_lora_weights.safetensors"
    save_file({"lycoris_down_blocks_0_attn1_to_q.lokr_w1": torch.zeros(2, 2),
               "lycoris_down_blocks_0_attn1_to_q.lokr_w2": torch.zeros(2, 2)}, str(foreign),
              metadata={"lycoris_config": '{"algo": "lokr"}'})
    with pytest.raises(ConfigError, match=r"does not fit the snapshot .*LyCORIS modules match no layer .*"
                                          r"lycoris_down_blocks_0_attn1_to_q") as error:
        main([f"pretrained={tiny_flux_snapshot}", f"lora={foreign}", "prompt=a cat", "max_sequence_length=16",
              "height=32", "width=32", f"out_dir={tmp_path / 'out'}"])
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()
