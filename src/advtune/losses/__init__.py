from advtune.losses.adaptive import adaptive_weight, last_layer_gradient_norms
from advtune.losses.feature_matching import FEATURE_MATCHING_NORMALIZATIONS, feature_matching_loss
from advtune.losses.gan import (
    GAN_LOSS_TYPES,
    PAIRED_LOSS_TYPES,
    discriminator_accuracy,
    discriminator_loss,
    generator_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    non_saturating_generator_loss,
    real_sign_mean,
    relativistic_discriminator_loss,
    relativistic_generator_loss,
    vanilla_discriminator_loss,
    vanilla_generator_loss,
    wgan_discriminator_loss,
    wgan_generator_loss,
)
from advtune.losses.regularizers import (
    LeCamAnchors,
    critic_values,
    gradient_penalty,
    lazy_regularization_gain,
    lecam_penalty,
    r1_penalty,
    r2_penalty,
)

__all__ = [
    "FEATURE_MATCHING_NORMALIZATIONS",
    "LeCamAnchors",
    "GAN_LOSS_TYPES",
    "PAIRED_LOSS_TYPES",
    "adaptive_weight",
    "critic_values",
    "discriminator_accuracy",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_loss",
    "gradient_penalty",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "last_layer_gradient_norms",
    "lazy_regularization_gain",
    "lecam_penalty",
    "lsgan_discriminator_loss",
    "lsgan_generator_loss",
    "non_saturating_generator_loss",
    "real_sign_mean",
    "relativistic_discriminator_loss",
    "relativistic_generator_loss",
    "r1_penalty",
    "r2_penalty",
    "vanilla_discriminator_loss",
    "vanilla_generator_loss",
    "wgan_discriminator_loss",
    "wgan_generator_loss",
]

from advtune.losses.reconstruction import (  # noqa: E402
    kl_divergence,
    l1_waveform_loss,
    log_stft_magnitude_loss,
    mel_distance,
    mel_filterbank,
    multi_resolution_stft_loss,
    spectral_convergence_loss,
    stft_magnitude,
)

__all__ += [
    "kl_divergence",
    "l1_waveform_loss",
    "log_stft_magnitude_loss",
    "mel_distance",
    "mel_filterbank",
    "multi_resolution_stft_loss",
    "spectral_convergence_loss",
    "stft_magnitude",
]

from advtune.losses.style import channel_statistics, content_loss, identity_loss, style_loss

__all__ += ["channel_statistics", "content_loss", "identity_loss", "style_loss"]
