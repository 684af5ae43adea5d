from advtune.discriminators.base import DiscriminatorOutput

__all__ = ["DiscriminatorOutput"]

from advtune.discriminators.mlp import MLPDiscriminator  # noqa: E402
from advtune.discriminators.multi import MultiDiscriminator  # noqa: E402
from advtune.discriminators.patchgan import NLayerDiscriminator, patchgan_weights_init  # noqa: E402

__all__ += ["MLPDiscriminator", "MultiDiscriminator", "NLayerDiscriminator", "patchgan_weights_init"]

from advtune.discriminators.audio_mpd import MultiPeriodDiscriminator, PeriodSubDiscriminator  # noqa: E402
from advtune.discriminators.audio_msd import MultiScaleDiscriminator, ScaleSubDiscriminator  # noqa: E402
from advtune.discriminators.audio_stft import MultiScaleSTFTDiscriminator, STFTSubDiscriminator  # noqa: E402
from advtune.discriminators.encodec import EnCodecDiscriminator  # noqa: E402

__all__ += ["EnCodecDiscriminator", "MultiPeriodDiscriminator", "MultiScaleDiscriminator",
            "MultiScaleSTFTDiscriminator", "PeriodSubDiscriminator", "STFTSubDiscriminator",
            "ScaleSubDiscriminator"]

from advtune.discriminators.flux import FluxTransformer2DDiscriminator, head_parameter_count  # noqa: E402
from advtune.discriminators.latent import LatentDiscriminator  # noqa: E402

__all__ += ["FluxTransformer2DDiscriminator", "LatentDiscriminator", "head_parameter_count"]
