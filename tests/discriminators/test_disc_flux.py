"""FluxTransformer2DDiscriminator: heads only, shared base weights, adapters off, gradient routing."""

from __future__ import annotations

import pytest
import torch

from advtune.adapters import add_adapter
from advtune.discriminators.flux import FluxTransformer2DDiscriminator, head_parameter_count
from advtune.models.flux import build_flux_transformer


def _adapted(adapter_type="lora"):
    model = build_flux_transformer(seed=0)
    network = add_adapter(model, adapter_type, rank=2, alpha=2.0)
    adapters = [p for p in (network if network is not None else model).parameters() if p.requires_grad]
    with torch.no_grad():
        for p in adapters:
            p.normal_(0.0, 0.1)
    return model, network, adapters


def _disc(model, **kwargs):
    torch.manual_seed(0)
    return FluxTransformer2DDiscriminator(model, head_dim=8, embedding_dim=8, **kwargs)


def test_contract_shapes_one_logit_map_per_block():
    model, _, _ = _adapted()
    disc = _disc(model)
    logits, features = disc(torch.randn(3, 1, 8, 8), sigma=torch.rand(3), label=torch.zeros(3))
    assert disc.block_indices == [0, 1] and len(logits) == 2 and len(features) == 2
    assert all(l.shape == (3, 1, 4, 4) for l in logits)
    assert features[0][0].shape == (3, 16, 8) and features[0][1].shape == (3, 8, 4, 4)
    assert _disc(model)(torch.randn(2, 1, 16, 16))[0][0].shape == (2, 1, 8, 8)  # σ drawn internally


def test_owns_only_heads_and_shares_base_weights():
    model, _, _ = _adapted()
    pointers = {n: p.data_ptr() for n, p in model.named_parameters()}
    disc = _disc(model)
    disc(torch.randn(2, 1, 8, 8))
    own = list(disc.parameters())
    assert sum(p.numel() for p in own) == sum(p.numel() for p in disc.heads.parameters())
    assert all(k.startswith("heads.") for k in disc.state_dict())
    assert not {id(p) for p in own} & {id(p) for p in model.parameters()}
    assert all(m is not model for m in disc.modules())
    # No copy: the base tensors are the very same storage before and after building and running D.
    assert {n: p.data_ptr() for n, p in model.named_parameters()} == pointers
    assert disc.transformer is model
    base_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    head_bytes = sum(p.numel() * p.element_size() for p in own) + sum(b.numel() * b.element_size() for b in disc.buffers())
    assert head_bytes < 0.15 * base_bytes


@pytest.mark.parametrize("adapter_type", ["lora", "lokr"])
def test_features_come_from_the_bare_base(adapter_type):
    model, _, _ = _adapted(adapter_type)
    bare = build_flux_transformer(seed=0).requires_grad_(False)
    x, sigma = torch.randn(2, 1, 8, 8), torch.rand(2)
    disc, reference = _disc(model), _disc(bare)
    reference.heads.load_state_dict(disc.heads.state_dict())
    torch.manual_seed(5)
    out = disc(x, sigma=sigma)[0]
    torch.manual_seed(5)
    expected = reference(x, sigma=sigma)[0]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(out, expected))


def test_d_phase_trains_heads_only_and_g_phase_reaches_the_adapters():
    model, _, adapters = _adapted()
    disc = _disc(model)
    real = torch.randn(2, 1, 8, 8)
    sum(l.mean() for l in disc(real)[0]).backward()  # D phase: adapters still require grad
    assert all(p.grad is None for p in adapters)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is not None for p in disc.parameters())
    disc.zero_grad(set_to_none=True)
    from advtune.models.flux import null_prompt, predict_velocity

    prompt, pooled = null_prompt(model, 2)
    fake = predict_velocity(model, real, torch.rand(2), prompt, pooled)  # stands in for x̂0
    sum(l.mean() for l in disc(fake)[0]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapters)


def test_stops_after_the_last_chosen_block_and_restores_state():
    model, _, _ = _adapted()
    model.gradient_checkpointing = True
    calls = []
    model.single_transformer_blocks[0].register_forward_hook(lambda *_: calls.append(1))
    disc = _disc(model, block_indices=[0])
    assert len(disc(torch.randn(2, 1, 8, 8))[0]) == 1
    assert calls == [] and model.gradient_checkpointing is True
    assert len(model.transformer_blocks[0]._forward_hooks) == 0  # feature hooks removed after each forward


def test_head_parameter_count_at_flux_dev_width():
    # Linear 3072→256, conv3×3 256→256, FiLM 256→512, conv1×1 256→1, all with bias.
    per_head = (3072 * 256 + 256) + (256 * 256 * 9 + 256) + (256 * 512 + 512) + (256 + 1)
    assert per_head == 1_508_609
    assert head_parameter_count(3072, 8, 256, 256) == 8 * per_head


def test_bad_configurations_fail_with_one_line():
    model, _, _ = _adapted()
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        FluxTransformer2DDiscriminator(model, block_indices=[2])
    with pytest.raises(ValueError, match="needs a frozen base transformer"):
        FluxTransformer2DDiscriminator(build_flux_transformer(seed=0))
    with pytest.raises(ValueError, match="2-channel latents"):
        _disc(model)(torch.randn(1, 2, 8, 8))


def test_penalties_through_the_transformer_use_the_math_attention_kernel():
    """Issue 9, fix 2: R1/R2/GP on the feature D used to crash (no double backward through fused attention)."""
    from advtune import AdversarialLossCalculator

    model, _, _ = _adapted()
    disc = _disc(model)
    calc = AdversarialLossCalculator(r1_weight=1.0, r2_weight=1.0, gp_weight=1.0)
    torch.manual_seed(0)
    out = calc.compute_discriminator_loss(disc, torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8), 0,
                                          sigma=torch.tensor([0.3, 0.7]))
    out["loss"].backward()
    assert all(torch.isfinite(out[k]) and out[k] > 0 for k in ("d/r1", "d/r2", "d/gp"))
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in disc.parameters() if p.requires_grad)
    assert not any(p.grad is not None for p in model.parameters())  # nothing of the generator side


def test_prepare_input_renoises_once_and_forward_takes_it_as_is():
    model, _, _ = _adapted()
    disc = _disc(model)
    x, sigma = torch.randn(2, 1, 8, 8), torch.tensor([0.25, 0.5])
    torch.manual_seed(3)
    direct = disc(x, sigma=sigma)[0]
    torch.manual_seed(3)
    noisy, cond = disc.prepare_input(x, sigma=sigma)
    assert cond["prepared"] and torch.equal(cond["sigma"], sigma)
    split = disc(noisy, **cond)[0]
    assert all(torch.equal(a, b) for a, b in zip(direct, split))


@pytest.mark.parametrize("adapter_type", ["lora", "lokr"])
def test_checkpointed_teacher_recomputes_with_the_adapters_off(adapter_type, monkeypatch):
    from advtune.discriminators import flux as flux_disc
    from advtune.models.flux import null_prompt, predict_velocity

    model, _, adapters = _adapted(adapter_type)
    x_src = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))

    def adapter_gradients(disc) -> torch.Tensor:
        fake = predict_velocity(model, x_src, torch.full((2,), 0.7), *null_prompt(model, 2))  # on the adapters' graph
        logits, _ = disc(fake, sigma=torch.full((2,), 0.5), prepared=True)
        return torch.cat([g.flatten() for g in torch.autograd.grad(sum(l.sum() for l in logits), adapters)])

    plain = adapter_gradients(_disc(model, gradient_checkpointing=False))
    checkpointed = adapter_gradients(_disc(model, gradient_checkpointing=True))
    torch.testing.assert_close(checkpointed, plain, rtol=1e-5, atol=1e-7)
    assert plain.abs().max() > 0
    assert not model.gradient_checkpointing and model._gradient_checkpointing_func is None  # restored
    # A checkpoint that does not enter the context itself recomputes the blocks with the adapters on:
    monkeypatch.setattr(flux_disc, "_checkpoint_in", lambda context, block, *args: torch.utils.checkpoint.checkpoint(
        block, *args, use_reentrant=False))
    try:
        naive = adapter_gradients(_disc(model, gradient_checkpointing=True))
    except torch.utils.checkpoint.CheckpointError:  # the recomputation ran other ops (the adapters'): torch noticed
        return
    assert (naive - plain).abs().max() > 1e-4


def test_teacher_context_replaces_adapters_off():
    model, _, _ = _adapted()
    entered = []

    class Teacher:
        def __enter__(self):
            entered.append(True)

        def __exit__(self, *exc):
            return None

    disc = _disc(model, teacher_context=Teacher, gradient_checkpointing=False)
    with_context = disc.block_features(torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
                                       torch.full((2,), 0.5))
    off = _disc(model).block_features(torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
                                      torch.full((2,), 0.5))
    assert entered and not torch.allclose(with_context[-1], off[-1])  # here the context left the adapters on
