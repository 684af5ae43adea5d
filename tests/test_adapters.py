"""peft LoRA and LyCORIS adapters on the tiny Flux transformer: freezing, toggling, counting, export."""

from __future__ import annotations

import pytest
import torch

from advtune.adapters import (
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
    path = export_lora(model, tmp_path)
    fresh = build_flux_transformer(seed=0)
    loaded, _ = create_lycoris_from_weights(1.0, str(path), fresh)
    loaded.apply_to()
    assert torch.allclose(_velocity(fresh), expected, atol=1e-6)


def test_export_without_adapter_fails(tmp_path):
    with pytest.raises(ValueError, match="has no adapter to export"):
        export_lora(build_flux_transformer(seed=0), tmp_path)
