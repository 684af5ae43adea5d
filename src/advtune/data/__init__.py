__all__: list[str] = []

from advtune.data.digits import DigitsDataModule, DigitsDataset, load_digits_images

__all__ += ["DigitsDataModule", "DigitsDataset", "load_digits_images"]

from advtune.data.bundled_images import BUNDLED_IMAGES, CONTENT_IMAGES, STYLE_IMAGES, load_bundled_image
from advtune.data.images import ImagePatchDataModule, StyleTransferDataModule

__all__ += [
    "BUNDLED_IMAGES",
    "CONTENT_IMAGES",
    "STYLE_IMAGES",
    "ImagePatchDataModule",
    "StyleTransferDataModule",
    "load_bundled_image",
]

from advtune.data.audio import AudioDataModule, AudioFolderDataset, resample  # noqa: E402
from advtune.data.audio_synthetic import SyntheticAudioDataset, synthesize_clip  # noqa: E402

__all__ += ["AudioDataModule", "AudioFolderDataset", "SyntheticAudioDataset", "resample", "synthesize_clip"]

from advtune.data.speech import SPEECH_DIR, SpeechDataModule  # noqa: E402

__all__ += ["SPEECH_DIR", "SpeechDataModule"]

from advtune.data.latents import (  # noqa: E402
    AutoencoderKLCodec,
    DigitsLatentDataModule,
    IdentityCodec,
    ImageFolderLatentDataModule,
)

__all__ += ["AutoencoderKLCodec", "DigitsLatentDataModule", "IdentityCodec", "ImageFolderLatentDataModule"]

from advtune.data.teacher_samples import TeacherSampleDataModule  # noqa: E402

__all__ += ["TeacherSampleDataModule"]
