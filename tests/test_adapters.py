"""peft LoRA and LyCORIS adapters on the tiny Flux transformer: freezing, toggling, counting, export, and
adapter files loaded back (advtune.adapter_files) in both formats, with ComfyUI's reading of the LyCORIS keys."""

from __future__ import annotations

import json

import pytest
import torch

from advtune.adapter_files import adapter_format, load_adapter_file, lycoris_module_key
from advtune.adapters import (
    FLUX_LORA_TARGET_MODULES,
    LORA_WEIGHTS_NAME,
    add_adapter,
    count_parameters,
    export_lora,
    lycoris_network,
    matching_linear_modules,
    set_adapters_enabled,
)
from advtune.models.flux import build_flux_transformer, null_prompt, predict_velocity

X = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
T = torch.tensor([0.3, 0.8])


def _velocity(model):
    prompt, pooled = null_prompt(model, X.shape[0])
    return predict_velocity(model, X, T, prompt, pooled)


def _adapter_params(model, network):
    source = network if network is not None else model
    return [p for p in source.parameters() if p.requires_grad]


def _perturb(params):
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in params:  # B = 0 at init: move every factor so the adapter changes the output
            p.copy_(0.1 * torch.randn(p.shape, generator=generator))


def test_lora_freezes_base_and_counts_exactly():
    model = build_flux_transformer(seed=0)
    total_before = count_parameters(model)["total"]
    # to_q / to_k of the double and the single block, each 32→32: r·(in + out) = 2·64 per layer.
    assert len(matching_linear_modules(model, ["to_q", "to_k"])) == 4
    add_adapter(model, "lora", rank=2, alpha=4.0, target_modules=["to_q", "to_k"])
    counts = count_parameters(model)
    assert counts == {"trainable": 4 * 2 * 64, "total": total_before + 4 * 2 * 64}
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("adapter_type", ["lora", "lycoris_lora", "lokr", "loha"])
def test_adapter_starts_at_base_and_toggles_off_exactly(adapter_type):
    model = build_flux_transformer(seed=0)
    base = _velocity(model)
    network = add_adapter(model, adapter_type, rank=2, alpha=2.0)
    assert (network is None) == (adapter_type == "lora")
    assert torch.allclose(_velocity(model), base, atol=1e-6)  # zero-initialised update
    params = _adapter_params(model, network)
    assert params and count_parameters(model)["trainable"] == sum(p.numel() for p in params)
    _perturb(params)
    adapted = _velocity(model)
    assert not torch.allclose(adapted, base, atol=1e-4)
    with set_adapters_enabled(model, False):
        assert torch.equal(_velocity(model), base)
        assert all(p.requires_grad for p in params)  # the toggle leaves trainability alone
    assert torch.equal(_velocity(model), adapted)
    set_adapters_enabled(model, False)  # as a plain call it stays off
    assert torch.equal(_velocity(model), base)
    set_adapters_enabled(model, True)
    assert torch.equal(_velocity(model), adapted)


def test_disabled_adapters_receive_no_gradient():
    model = build_flux_transformer(seed=0)
    add_adapter(model, "lora", rank=2)
    params = _adapter_params(model, None)
    _perturb(params)
    x = X.clone().requires_grad_(True)  # the base is frozen: only the input carries a graph
    prompt, pooled = null_prompt(model, x.shape[0])
    with set_adapters_enabled(model, False):
        predict_velocity(model, x, T, prompt, pooled).square().mean().backward()
    assert x.grad is not None and all(p.grad is None for p in params)


def test_target_modules_matching_nothing_fail_with_one_line():
    model = build_flux_transformer(seed=0)
    with pytest.raises(ValueError, match=r"target_modules \['to_nothing'\] match no nn.Linear") as error:
        add_adapter(model, "lora", target_modules=["to_nothing"])
    assert "\n" not in str(error.value)
    assert all(p.requires_grad for p in model.parameters())  # nothing was frozen
    with pytest.raises(ValueError, match="adapter_type must be one of"):
        add_adapter(model, "dora")


def test_peft_export_reloads_in_diffusers_with_identical_outputs(tmp_path):
    model = build_flux_transformer(seed=0)
    add_adapter(model, "lora", rank=2, alpha=8.0)  # alpha != rank: the metadata must carry it
    _perturb(_adapter_params(model, None))
    expected = _velocity(model)
    path = export_lora(model, tmp_path)
    assert path == tmp_path / LORA_WEIGHTS_NAME
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
    assert keys and all(k.startswith("transformer.") and ".lora_" in k for k in keys)
    fresh = build_flux_transformer(seed=0)
    fresh.load_lora_adapter(str(tmp_path), weight_name=LORA_WEIGHTS_NAME, prefix="transformer")
    assert torch.equal(_velocity(fresh), expected)


@pytest.mark.parametrize("adapter_type", ["lokr", "loha"])
def test_lycoris_export_reloads_with_identical_outputs(tmp_path, adapter_type):
    from lycoris import create_lycoris_from_weights

    model = build_flux_transformer(seed=0)
    network = add_adapter(model, adapter_type, rank=2, alpha=2.0)
    assert lycoris_network(model) is network
    _perturb(_adapter_params(model, network))
    expected = _velocity(model)
    path = export_lora(model, tmp_path, metadata={"advtune_run": "test"})
    assert path == tmp_path / LORA_WEIGHTS_NAME  # SimpleTuner's name for its Flux LyCORIS files
    fresh = build_flux_transformer(seed=0)
    loaded, _ = create_lycoris_from_weights(1.0, str(path), fresh)  # the lycoris package's own loader
    loaded.apply_to()
    assert torch.allclose(_velocity(fresh), expected, atol=1e-6)
    header = safe_open_metadata(path)
    assert header["advtune_run"] == "test" and json.loads(header["lycoris_config"])["algo"] == adapter_type


def safe_open_metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def _comfy_patched_weights(path, model):
    """Each targeted weight plus the update ComfyUI computes from the file (comfy/lora.py key map for Flux:
    ``lycoris_`` + diffusers module name; LoKr ``kron(w1, w2)``, LoHa ``(w1a w1b) * (w2a w2b)``, both times
    ``alpha / rank`` when a factor is low-rank, else 1), written independently of LyCORIS's code."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    patched = {}
    for name, module in model.named_modules():
        prefix = lycoris_module_key(name) + "."
        part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not part:
            continue
        rank = None
        if "lokr_w1" in part or "lokr_w1_a" in part:
            w1 = part.get("lokr_w1")
            if w1 is None:
                w1, rank = part["lokr_w1_a"] @ part["lokr_w1_b"], part["lokr_w1_b"].shape[0]
            w2 = part.get("lokr_w2")
            if w2 is None:
                w2, rank = part["lokr_w2_a"] @ part["lokr_w2_b"], part["lokr_w2_b"].shape[0]
            update = torch.kron(w1, w2)
        else:
            rank = part["hada_w1_b"].shape[0]
            update = (part["hada_w1_a"] @ part["hada_w1_b"]) * (part["hada_w2_a"] @ part["hada_w2_b"])
        scale = float(part["alpha"]) / rank if rank is not None else 1.0
        patched[name + ".weight"] = module.weight.detach() + scale * update.reshape(module.weight.shape)
    return patched


@pytest.mark.parametrize("adapter_type", ["lokr", "loha"])
def test_lycoris_file_as_comfyui_reads_it_gives_the_trained_outputs(tmp_path, adapter_type):
    model = build_flux_transformer(seed=0)
    network = add_adapter(model, adapter_type, rank=2, alpha=3.0)  # alpha != rank: the scale must survive
    _perturb(_adapter_params(model, network))
    expected = _velocity(model)
    path = export_lora(model, tmp_path)
    plain = build_flux_transformer(seed=0)
    patched = _comfy_patched_weights(path, plain)
    assert len(patched) == len(matching_linear_modules(plain, FLUX_LORA_TARGET_MODULES))
    plain.load_state_dict(patched, strict=False)
    assert torch.allclose(_velocity(plain), expected, atol=1e-5)


@pytest.mark.parametrize("adapter_type", ["lora", "lycoris_lora", "lokr", "loha"])
def test_load_adapter_file_reproduces_the_adapter_and_scales_it(tmp_path, adapter_type):
    model = build_flux_transformer(seed=0)
    network = add_adapter(model, adapter_type, rank=2, alpha=4.0)
    _perturb(_adapter_params(model, network))
    expected = _velocity(model)
    path = export_lora(model, tmp_path)
    assert adapter_format(path) == ("lora" if adapter_type == "lora" else "lycoris")
    fresh = build_flux_transformer(seed=0)
    base = _velocity(fresh)
    loaded = load_adapter_file(fresh, path, scale=0.0)
    assert torch.equal(_velocity(fresh), base)  # scale 0: the base exactly
    loaded.set_scale(1.0)
    assert torch.equal(_velocity(fresh), expected)  # the same computation as in training
    loaded.set_scale(0.5)
    half = _velocity(fresh)
    assert not torch.allclose(half, expected, atol=1e-4) and not torch.allclose(half, base, atol=1e-4)
    with set_adapters_enabled(fresh, False):
        assert torch.equal(_velocity(fresh), base)
    if loaded.network is not None:  # loaded to render (generate) or to teach (a frozen teacher): nothing trains
        assert not any(p.requires_grad for p in loaded.network.parameters())


def test_adapter_files_that_do_not_fit_fail_in_one_line(tmp_path):
    from safetensors.torch import save_file

    model = build_flux_transformer(seed=0)
    add_adapter(model, "lokr", rank=2)
    path = export_lora(model, tmp_path / "lokr")
    other = build_flux_transformer(seed=0, num_layers=2)  # a second double block the file does not know is fine
    load_adapter_file(other, path)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"lycoris_no_such_layer.lokr_w1": torch.zeros(2, 2), "lycoris_no_such_layer.lokr_w2": torch.zeros(2, 2)},
              str(wrong))
    kohya = tmp_path / "kohya.safetensors"
    save_file({"lora_unet_double_blocks_0_img_attn_qkv.lokr_w1": torch.zeros(2, 2)}, str(kohya))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    cases = {wrong: r"1 of 1 LyCORIS modules match no layer of FluxTransformer2DModel \(first: lycoris_no_such_layer\)",
             kohya: r"LoKr/LoHa tensors named 'lora_unet_double_blocks_0_img_attn_qkv'",
             garbage: "is not a readable safetensors file"}
    for file, message in cases.items():
        with pytest.raises(ValueError, match=message) as error:
            load_adapter_file(build_flux_transformer(seed=0), file)
        assert "\n" not in str(error.value)


def test_lycoris_prints_nothing_on_stdout(capsys):
    model = build_flux_transformer(seed=0)
    add_adapter(model, "lokr", rank=2)
    assert "LyCORIS" not in capsys.readouterr().out  # its coloured INFO lines are routed away


def test_export_without_adapter_fails(tmp_path):
    with pytest.raises(ValueError, match="has no adapter to export"):
        export_lora(build_flux_transformer(seed=0), tmp_path)


def test_lycoris_merge_to_takes_its_own_strength(tmp_path):
    """The FLUX.md recipe: merge_to(s) merges at strength s whatever multiplier the network was created with,
    and gives what apply_to + set_multiplier(s) computes."""
    from lycoris import create_lycoris_from_weights

    model = build_flux_transformer(seed=0)
    _perturb(_adapter_params(model, add_adapter(model, "lokr", rank=2, alpha=2.0)))
    path = export_lora(model, tmp_path)
    switchable = build_flux_transformer(seed=0)
    load_adapter_file(switchable, path, scale=0.5)
    expected = _velocity(switchable)
    for created_with in (1.0, 0.3):
        merged = build_flux_transformer(seed=0)
        network, _ = create_lycoris_from_weights(created_with, str(path), merged)
        network.merge_to(0.5)
        assert torch.allclose(_velocity(merged), expected, atol=1e-5)
