from advtune.models.audio_vae import AudioVAE
from advtune.models.style_transfer import StyleTransferModule
from advtune.models.vector_quantizer import VectorQuantizer, codebook_perplexity, dead_code_count
from advtune.models.vqgan import VQAutoencoder, tiny_vq_autoencoder

__all__: list[str] = ["AudioVAE"]
__all__ += [
    "StyleTransferModule",
    "VQAutoencoder",
    "VectorQuantizer",
    "codebook_perplexity",
    "dead_code_count",
    "tiny_vq_autoencoder",
]

from advtune.models.gan import DCGANDiscriminator, DCGANGenerator, MLPGenerator

__all__ += ["DCGANDiscriminator", "DCGANGenerator", "MLPGenerator"]

from advtune.models.flux import build_flux_transformer, load_flux_transformer  # noqa: E402

__all__ += ["build_flux_transformer", "load_flux_transformer"]
