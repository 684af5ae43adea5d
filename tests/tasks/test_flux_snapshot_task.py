"""FluxLoRATask on a FLUX.1 snapshot: bf16 / 8-bit bases under float32 LoRA, the output layer as last
layer, a LoRA file plain diffusers loads, and validation prompts rendered as a prompt × steps grid."""

from __future__ import annotations

import math

import pytest
import torch

from advtune.tasks.flux_lora import FluxLoRATask

BATCH = {"latents": torch.randn(2, 16, 4, 6, generator=torch.Generator().manual_seed(0)),
         "prompt_embeds": torch.randn(2, 7, 32), "pooled_prompt_embeds": torch.randn(2, 32)}


def _dequantized(tensor):
    return tensor.dequantize() if hasattr(tensor, "dequantize") else tensor


@pytest.mark.parametrize("base", [{"base_dtype": "bfloat16"}, {"base_dtype": "float32", "quantize": "int8"},
                                  {"base_dtype": "bfloat16", "quantize": "fp8", "gradient_checkpointing": True}])
def test_lora_trains_in_float32_over_a_bf16_or_8bit_base(tiny_flux_snapshot, base):
    task = FluxLoRATask(snapshot=str(tiny_flux_snapshot), rank=2, validation_resolution=32, **base)
    blocks = task.transformer.transformer_blocks[0]
    expected = {"int8": "Int8Tensor", "fp8": "Float8Tensor", None: "Parameter"}[base.get("quantize")]
    assert type(blocks.attn.to_q.base_layer.weight).__name__ == expected
    assert task.transformer.proj_out.base_layer.weight.dtype == getattr(torch, base["base_dtype"])
    assert task.transformer.is_gradient_checkpointing == base.get("gradient_checkpointing", False)
    adapters = task.trainable_parameters()
    assert adapters and all(p.dtype == torch.float32 for p in adapters)
    frozen = {n: _dequantized(p.detach()).clone() for n, p in task.transformer.named_parameters() if not p.requires_grad}
    before = [p.detach().clone() for p in adapters]
    optimizer = torch.optim.Adam(adapters, lr=1e-2)
    for _ in range(2):  # the second step moves the LoRA A factors too (B starts at zero)
        out = task.generator_predict(BATCH)
        loss = out.base_loss + out.fake.square().mean()
        assert torch.isfinite(loss) and out.fake.dtype == torch.float32
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, adapters))
    for name, param in task.transformer.named_parameters():
        if name in frozen:
            assert torch.equal(_dequantized(param.detach()), frozen[name]), name
    assert task.sample(1, torch.Generator().manual_seed(0), num_steps=1).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("adapter_type", ["lora", "lokr", "none"])
def test_last_layer_is_the_output_layer(adapter_type):
    task = FluxLoRATask(adapter_type=adapter_type, rank=2)
    last = task.generator_predict({"latents": torch.zeros(2, 1, 8, 8)}).last_layer
    proj_out = task.transformer.proj_out
    if adapter_type == "lora":
        assert last is proj_out.lora_B["default"].weight  # the factor next to the output
    elif adapter_type == "none":
        assert last is proj_out.weight
    else:
        owner = [m for m in task.lycoris.loras if m.org_module[0] is proj_out]
        assert len(owner) == 1 and any(last is p for p in owner[0].parameters())
    assert last.requires_grad and not any(last is p for p in task.transformer.transformer_blocks[0].attn.parameters())


def test_exported_lora_loads_in_plain_diffusers_and_changes_the_images(tmp_path, tiny_flux_snapshot):
    from diffusers import FluxPipeline

    task = FluxLoRATask(snapshot=str(tiny_flux_snapshot), base_dtype="float32", rank=2, validation_resolution=32)
    with torch.no_grad():
        for p in task.trainable_parameters():
            p.normal_(0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
    assert task.export_subdir == "lora"
    path = task.export(tmp_path)
    pipe = FluxPipeline.from_pretrained(str(tiny_flux_snapshot), local_files_only=True)

    def render():
        return pipe("a cat", num_inference_steps=2, height=32, width=32, output_type="pt", max_sequence_length=16,
                    generator=torch.Generator().manual_seed(0)).images

    base = render()
    pipe.load_lora_weights(str(path))
    adapted = render()
    assert (adapted - base).abs().mean() > 1e-3


def test_validation_prompts_render_as_one_grid_per_validation(tmp_path, tiny_flux_snapshot):
    task = FluxLoRATask(snapshot=str(tiny_flux_snapshot), base_dtype="float32", rank=2, validation_resolution=32,
                        validation_num_steps=(1, 2, 4), validation_batch_size=2)
    prompts = {"validation_prompts": ["a cat", "a dog"], "validation_prompt_embeds": torch.randn(2, 5, 32),
               "validation_pooled_prompt_embeds": torch.randn(2, 32)}
    assert task.validation_step(prompts) == {}
    mse = task.validation_step(BATCH)["val/diffusion_mse"]
    assert mse > 0
    assert task.validation_epoch_end(tmp_path, step=12) == {}
    grid = task.validation_images["validation/prompts_x_steps"]
    tile = 32 + 1  # 32-pixel tiles with a 1-pixel gap, the whole grid enlarged ×2: rows prompts, columns steps
    assert grid.shape == (3, 2 * (2 * tile + 1), 2 * (3 * tile + 1)) and 0 <= grid.min() and grid.max() <= 1
    assert (tmp_path / "prompts_0000012.png").is_file()
    # Sampling in chunks changes memory, not samples; the shift is FluxPipeline's (exp(mu) at 16 tokens).
    chunked = task.sample(3, torch.Generator().manual_seed(1), num_steps=2)
    task.validation_batch_size = 64
    assert torch.allclose(task.sample(3, torch.Generator().manual_seed(1), num_steps=2), chunked, atol=1e-5)
    assert task._shift(4, 4) == pytest.approx(math.exp(0.5 + (1.15 - 0.5) / (4096 - 256) * (4 - 256)))
