"""PatchGAN discriminator of pix2pix (Isola et al. 2017), as used by taming-transformers (VQGAN)."""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from advtune.discriminators.base import DiscriminatorOutput

__all__ = ["NLayerDiscriminator", "PATCHGAN_NORMS", "patchgan_weights_init"]

PATCHGAN_NORMS: tuple[str, ...] = ("batch", "instance", "none")


def patchgan_weights_init(module: nn.Module) -> None:
    """DCGAN / pix2pix / taming initialisation, for use with ``model.apply``.

    Conv weights ~ N(0, 0.02); BatchNorm weight ~ N(1, 0.02) and bias = 0 (Radford et al. 2016).
    Conv biases keep PyTorch's default, as in taming-transformers' ``weights_init``.
    """
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d)) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class NLayerDiscriminator(nn.Module):
    """PatchGAN: strided 4×4 convs that score overlapping patches (70×70 at ``n_layers=3``).

    Blocks: ``conv(s2) → LeakyReLU``; ``n_layers - 1`` × ``conv(s2) → norm → LeakyReLU``;
    ``conv(s1) → norm → LeakyReLU``; then a 4×4 stride-1 conv to one channel of logits. Channels
    are ``ndf · min(2^i, 8)``. With ``input_nc=3, ndf=64, n_layers=3`` and BatchNorm this is the
    taming-transformers discriminator, 2,765,633 parameters.

    Args:
        input_nc: input channels.
        ndf: channels of the first conv.
        n_layers: number of stride-2 convs.
        norm: ``"batch"`` (convs before it have no bias, as the norm has its own shift),
            ``"instance"`` (non-affine, as pix2pix; convs get a bias) or ``"none"`` (convs get a bias).
        spectral_norm: wrap every conv in spectral normalization (Miyato et al. 2018); often
            combined with ``norm="none"``.

    Forward:
        ``x`` ``(B, input_nc, H, W)`` → ``([logits (B, 1, H', W')], [[block_1, ..., block_{n+1}]])``,
        the features being the activation after each block. At ``n_layers=3``, ``H' = H/8 - 2``.
    """

    def __init__(
        self,
        input_nc: int = 3,
        ndf: int = 64,
        n_layers: int = 3,
        norm: str = "batch",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if norm not in PATCHGAN_NORMS:
            raise ValueError(f"NLayerDiscriminator: unknown norm {norm!r}; valid: {', '.join(PATCHGAN_NORMS)}")
        if n_layers < 1 or input_nc < 1 or ndf < 1:
            raise ValueError(
                f"NLayerDiscriminator: input_nc, ndf, n_layers must be >= 1, got {input_nc}, {ndf}, {n_layers}"
            )
        conv_bias = norm != "batch"

        def norm_layer(channels: int) -> nn.Module:
            if norm == "batch":
                return nn.BatchNorm2d(channels)
            if norm == "instance":
                return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
            return nn.Identity()

        def block(in_ch: int, out_ch: int, stride: int, normalized: bool) -> nn.Sequential:
            conv = nn.Conv2d(in_ch, out_ch, kernel_size=4, stride=stride, padding=1, bias=conv_bias or not normalized)
            layers = [conv, norm_layer(out_ch)] if normalized else [conv]
            return nn.Sequential(*layers, nn.LeakyReLU(0.2))

        channels = [ndf * min(2**i, 8) for i in range(n_layers + 1)]
        blocks = [block(input_nc, channels[0], stride=2, normalized=False)]
        blocks += [block(channels[i - 1], channels[i], stride=2, normalized=True) for i in range(1, n_layers)]
        blocks.append(block(channels[n_layers - 1], channels[n_layers], stride=1, normalized=True))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(channels[n_layers], 1, kernel_size=4, stride=1, padding=1)
        self.apply(patchgan_weights_init)
        if spectral_norm:
            # After init: spectral norm then divides the initialised weight by its top singular value.
            for module in list(self.modules()):
                if isinstance(module, nn.Conv2d):
                    apply_spectral_norm(module)

    def forward(self, x: Tensor, **cond: object) -> DiscriminatorOutput:
        """Score every patch; ``cond`` is accepted and ignored (unconditional discriminator)."""
        if x.dim() != 4:
            raise ValueError(f"NLayerDiscriminator: expected input (B, C, H, W), got {tuple(x.shape)}")
        features = []
        h = x
        for block in self.blocks:
            h = block(h)
            features.append(h)
        return [self.head(h)], [features]
