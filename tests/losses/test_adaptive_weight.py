"""Adaptive weight (VQGAN) on a one-layer module with gradients computed by hand."""

import pytest
import torch
from torch import nn

from advtune.losses import adaptive_weight


def last_layer_and_output():
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0]]))
    x = torch.tensor([[3.0, 4.0]])
    return layer, layer(x)  # y = 1*3 + 2*4 = 11


def test_known_value_and_detached():
    layer, y = last_layer_and_output()
    base = (y - 10.0).square().sum()  # d/dw = 2 (y - 10) x = 2 * 1 * [3, 4] = [6, 8], norm 10
    adversarial = -y.sum()  # d/dw = -x = [-3, -4], norm 5
    weight = adaptive_weight(base, adversarial, layer.weight)
    assert weight.item() == pytest.approx(10.0 / (5.0 + 1e-4))  # 1.99996
    assert not weight.requires_grad
    # retain_graph=True: the caller can still backpropagate the weighted total
    (base + weight * adversarial).backward()
    # d/dw = [6, 8] + 1.99996 * [-3, -4]
    assert torch.allclose(layer.weight.grad, torch.tensor([[6 - 3 * 1.99996, 8 - 4 * 1.99996]]), atol=1e-4)


def test_clamped_to_max_weight():
    layer, y = last_layer_and_output()
    base = (y - 10.0).square().sum()  # gradient norm 10
    adversarial = 0.0 * y.sum()  # gradient 0 -> 10 / 1e-4 = 1e5, clamped
    assert adaptive_weight(base, adversarial, layer.weight).item() == pytest.approx(1e4)
    assert adaptive_weight(base, adversarial, layer.weight, max_weight=50.0).item() == pytest.approx(50.0)


def test_bad_input():
    layer, y = last_layer_and_output()
    other = nn.Parameter(torch.ones(1))
    with pytest.raises(ValueError, match="base_loss does not depend on last_layer"):
        adaptive_weight(other.sum(), y.sum(), layer.weight)
    with pytest.raises(ValueError, match="does not require grad"):
        adaptive_weight(y.sum().detach(), y.sum(), layer.weight)
    with pytest.raises(ValueError, match="last_layer must be a tensor"):
        adaptive_weight(y.sum(), y.sum(), layer.weight.detach())
