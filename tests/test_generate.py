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
