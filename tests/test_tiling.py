"""Tiled application of an image network: exact for pointwise maps, seamless for real convnets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advtune.tiling import apply_tiled, edge_ramp, pad_to_multiple, seam_ratio, tile_borders, tile_grid, tile_starts


def _image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth image with detail (a sum of sinusoids plus a little noise), values in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")
    channels = [torch.sin(x / (7 + 3 * c)) * torch.cos(y / (11 + c)) for c in range(3)]
    image = torch.stack(channels)[None] * 0.8 + 0.1 * torch.randn(1, 3, height, width, generator=generator)
    return image.clamp(-1, 1)


def test_tile_starts_cover_the_length_with_at_least_the_overlap_on_the_grid():
    for length, tile, overlap, multiple in [(1000, 256, 64, 4), (744, 256, 128, 4), (260, 256, 32, 4), (64, 64, 0, 8)]:
        starts = tile_starts(length, tile, overlap, multiple)
        assert starts[0] == 0 and starts[-1] + tile == length
        assert all(start % multiple == 0 for start in starts)
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # neighbours share >= overlap
    assert tile_starts(100, 128, 32) == [0]
    # tiles shrink to the fewest that cover: 3 of 768 over 2,048 pixels, not 3 of 1,024 overlapping by 512
    assert tile_grid(2048, 1024, 128, 4) == (768, [0, 640, 1280])
    assert tile_grid(500, 1024, 128, 4) == (500, [0])
    assert tile_borders(2048, 1024, 128, 4) == [640, 768, 1280, 1408]
    with pytest.raises(ValueError, match="overlap < tile"):
        tile_starts(100, 32, 32)
    with pytest.raises(ValueError, match="multiples of 4"):
        tile_starts(102, 32, 8, 4)


def test_edge_ramp_known_values_and_partition_of_unity_over_an_exact_overlap():
    ramp = edge_ramp(16, 8, shared_start=True, shared_end=False)
    # r(d) = clamp((d + 0.5 - 2) / 4, 0, 1): zero in the outer quarter, linear in the middle half
    assert ramp[:2].tolist() == [0.0, 0.0]
    assert ramp[2:6].tolist() == pytest.approx([0.125, 0.375, 0.625, 0.875])
    assert ramp[6:].tolist() == [1.0] * 10
    left = edge_ramp(16, 8, shared_start=False, shared_end=True)
    right = edge_ramp(16, 8, shared_start=True, shared_end=False)
    assert torch.allclose(left[8:] + right[:8], torch.ones(8))  # tiles [0, 16) and [8, 24)
    assert torch.equal(edge_ramp(5, 0, True, True), torch.ones(5))


def test_pointwise_network_gives_the_untiled_result_exactly_at_any_size():
    def network(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(2.0 * x) - 0.3
    for height, width in [(37, 53), (130, 301), (3, 5), (1, 1)]:
        image = _image(height, width)
        tiled = apply_tiled(network, image, tile_size=32, overlap=8, multiple=4)
        assert tiled.shape == image.shape
        assert torch.allclose(tiled, network(image), atol=1e-6)


def test_whole_image_when_it_fits_and_padding_to_the_multiple():
    calls: list[tuple[int, ...]] = []

    def network(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return x
    image = _image(30, 45)
    assert torch.equal(apply_tiled(network, image, tile_size=64, overlap=16, multiple=8), image)
    assert calls == [(1, 3, 32, 48)]  # one call, padded to multiples of 8
    assert pad_to_multiple(torch.zeros(1, 1, 2, 2), 8).shape == (1, 1, 8, 8)  # too small to reflect


def _norm_net() -> nn.Module:
    """A conv net with zero padding and instance norm: per-tile statistics and border effects, like the VQ nets."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.InstanceNorm2d(16), nn.SiLU(),
                         nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.InstanceNorm2d(16), nn.SiLU(),
                         nn.Upsample(scale_factor=2.0), nn.Conv2d(16, 3, 3, padding=1)).eval()


@torch.no_grad()
def test_blended_tiles_have_no_seam_and_stay_close_to_the_untiled_output():
    network = _norm_net()
    image = _image(192, 288, seed=1)
    whole = network(image)
    blended = apply_tiled(network, image, tile_size=96, overlap=32, multiple=4)
    butted = apply_tiled(network, image, tile_size=96, overlap=0, multiple=4)  # tiles side by side: the baseline
    rows, cols = tile_borders(192, 96, 32, 4), tile_borders(288, 96, 32, 4)
    rows0, cols0 = tile_borders(192, 96, 0, 4), tile_borders(288, 96, 0, 4)
    # The metric sees a seam where there is one (tiles butted together, norm statistics per tile)...
    assert seam_ratio(butted[0], rows0, cols0) > 1.5 * seam_ratio(whole[0], rows0, cols0)
    # ...and none in the blended output: across its tile borders it changes as the untiled output does.
    assert seam_ratio(blended[0], rows, cols) < 1.1 * seam_ratio(whole[0], rows, cols)
    # Away from the seams both differ from the untiled output by their tiles' own statistics.
    assert float((blended - whole).abs().mean()) < float((butted - whole).abs().mean())


def test_on_tile_reports_progress_and_bad_arguments_raise():
    seen: list[tuple[int, int]] = []
    apply_tiled(lambda x: x, _image(64, 100), tile_size=48, overlap=16, multiple=4,
                on_tile=lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] == len(seen) > 1
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        apply_tiled(lambda x: x, torch.zeros(2, 3, 8, 8), 8, 0)
    with pytest.raises(ValueError, match="overlap < tile_size"):
        apply_tiled(lambda x: x, _image(64, 64), tile_size=16, overlap=16, multiple=4)
    with pytest.raises(ValueError, match="no border"):
        seam_ratio(torch.zeros(3, 8, 8), [0], [8])
