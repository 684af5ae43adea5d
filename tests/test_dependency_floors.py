"""The declared diffusers floor: the installed version satisfies it, and the transformer blocks return what
`discriminator=flux_features` reads (both block types: a ``(context tokens, image tokens)`` tuple, from 0.35)."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import torch
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_installed_diffusers_satisfies_the_declared_floor():
    floor = re.search(r'"diffusers>=([\d.]+)"', PYPROJECT.read_text())
    assert floor is not None, "pyproject.toml declares no diffusers floor"
    assert Version(floor.group(1)) >= Version("0.35"), "flux_features needs the block layout of diffusers 0.35"
    assert Version(version("diffusers")) >= Version(floor.group(1))


def test_both_block_types_return_context_and_image_tokens_as_the_feature_discriminator_reads():
    from advtune.models.flux import build_flux_transformer

    transformer = build_flux_transformer(num_layers=1, num_single_layers=1, seed=0)
    width = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    image, context = torch.randn(2, 16, width), torch.randn(2, 5, width)
    temb = torch.randn(2, width)
    rotary = transformer.pos_embed(torch.zeros(21, 3))
    for block in (transformer.transformer_blocks[0], transformer.single_transformer_blocks[0]):
        with torch.no_grad():
            output = block(hidden_states=image, encoder_hidden_states=context, temb=temb, image_rotary_emb=rotary)
        assert isinstance(output, tuple) and len(output) == 2, type(block).__name__
        assert output[0].shape == context.shape and output[1].shape == image.shape, type(block).__name__
