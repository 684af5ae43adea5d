"""FLUX.1 pipeline snapshots: check a local one, or write a tiny random one for tests.

A FLUX.1 snapshot (``black-forest-labs/FLUX.1-dev`` as ``diffusers.FluxPipeline`` saves it) is a
directory with ``model_index.json`` and one sub-directory per component: ``transformer/``
(``FluxTransformer2DModel``), ``vae/`` (``AutoencoderKL``, 16 latent channels, 8× downsampling),
``text_encoder/`` (CLIP-L, pooled 768-d), ``text_encoder_2/`` (T5-XXL, 4096-d tokens),
``tokenizer/``, ``tokenizer_2/`` and ``scheduler/`` (``FlowMatchEulerDiscreteScheduler``).

:func:`write_tiny_flux_snapshot` writes the same layout with tiny random weights and tokenizers
built offline with the ``tokenizers`` library (a byte-level BPE for CLIP, a Unigram model for T5),
so ``FluxPipeline.from_pretrained(dir)`` loads and runs it in about a second on a CPU. The
transformer, the VAE and the scheduler keep FLUX.1-dev's layout (16 latent channels, 8×
downsampling, packed ``in_channels=64``, guidance embedding, dynamic shifting); only widths shrink.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = ["SNAPSHOT_COMPONENTS", "check_flux_snapshot", "component_fingerprint", "write_tiny_flux_snapshot"]

#: Sub-directory -> the file that must be in it (weights are checked by the loaders).
SNAPSHOT_COMPONENTS: dict[str, str] = {
    "transformer": "config.json", "vae": "config.json", "text_encoder": "config.json",
    "text_encoder_2": "config.json", "tokenizer": "tokenizer_config.json",
    "tokenizer_2": "tokenizer_config.json", "scheduler": "scheduler_config.json",
}
_WIDTH = 32  # tiny text width: CLIP hidden size = pooled width, T5 d_model = joint attention width
_CORPUS = ("a photo of a cat in the style of sks, a painting of a dog on the grass, digits drawn "
           "with a pen, an image with bright red and blue colors, the quick brown fox jumps over a lazy dog")


def check_flux_snapshot(root: str | Path | None, needed: tuple[str, ...] = tuple(SNAPSHOT_COMPONENTS)) -> Path:
    """Return ``root`` after checking it is a FLUX.1 snapshot with the ``needed`` components.

    Raises:
        FileNotFoundError: one line naming the missing directory, ``model_index.json`` or component.
    """
    if not root:
        raise FileNotFoundError("no FLUX.1 snapshot given (set pretrained=/path/to/FLUX.1-dev)")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"FLUX.1 snapshot directory not found: {path}")
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"{path} is not a FLUX.1 snapshot: no model_index.json")
    missing = [f"{name}/{SNAPSHOT_COMPONENTS[name]}" for name in needed
               if not (path / name / SNAPSHOT_COMPONENTS[name]).is_file()]
    if missing:
        raise FileNotFoundError(f"incomplete FLUX.1 snapshot {path}: missing {', '.join(missing)}")
    return path


def component_fingerprint(root: Path, components: tuple[str, ...]) -> bytes:
    """Name, size and modification time of every file in the snapshot's ``components``, for cache keys.

    Configs alone do not tell two checkpoints of one architecture apart (a fine-tuned VAE or text
    encoder, a tiny snapshot written with another seed); replaced weight files change this.
    """
    parts = []
    for name in components:
        directory = root / name
        for path in sorted(directory.rglob("*")) if directory.is_dir() else []:
            if path.is_file():
                stat = path.stat()
                parts.append(f"{path.relative_to(root).as_posix()}|{stat.st_size}|{stat.st_mtime_ns}")
    return "\n".join(parts).encode()


def _clip_tokenizer(directory: Path):
    """CLIP's byte-level BPE (lower-cased words, ``</w>`` end-of-word suffix), trained on a tiny corpus."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    specials = ["<|startoftext|>", "<|endoftext|>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, initial_alphabet=alphabet,
                                  end_of_word_suffix="</w>", show_progress=False)
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator([_CORPUS.lower()], trainer)
    learned = json.loads(bpe.to_str())["model"]
    vocab = dict(learned["vocab"])
    for char in sorted(alphabet):  # every byte may end a word: keep CLIP's "x</w>" for all of them
        vocab.setdefault(char + "</w>", len(vocab))
    merges = [tuple(pair) if isinstance(pair, list) else tuple(pair.split(" ")) for pair in learned["merges"]]
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    tokenizer.save_pretrained(str(directory))
    return len(vocab)


def _t5_tokenizer(directory: Path) -> int:
    """T5's Unigram tokenizer (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, ``▁``-prefixed pieces, 100 sentinels)."""
    from transformers import T5Tokenizer

    words = sorted(set(_CORPUS.replace(",", " ,").split()))
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + word, -3.0) for word in words]
    pieces += [(char, -8.0) for char in sorted(set("".join(words)) | set("abcdefghijklmnopqrstuvwxyz0123456789"))]
    pieces += [(f"<extra_id_{i}>", 0.0) for i in range(99, -1, -1)]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=100, model_max_length=512)
    tokenizer.save_pretrained(str(directory))
    return len(pieces)


def write_tiny_flux_snapshot(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a FLUX.1-layout snapshot with tiny random weights to ``out_dir``; return it.

    ``FluxPipeline.from_pretrained(out_dir)`` loads it offline. Weights are seeded, so the same
    ``seed`` writes bit-identical weights.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clip_vocab = _clip_tokenizer(out / "tokenizer")
    t5_vocab = _t5_tokenizer(out / "tokenizer_2")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
            num_attention_heads=2, joint_attention_dim=_WIDTH, pooled_projection_dim=_WIDTH,
            guidance_embeds=True, axes_dims_rope=(4, 6, 6))
        vae = AutoencoderKL(  # FLUX.1's VAE layout: 4 levels (8× down), 16 channels, no quant convs
            in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 8, 8, 8),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=1, norm_num_groups=8, sample_size=32, scaling_factor=0.3611,
            shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
        clip = CLIPTextModel(CLIPTextConfig(
            vocab_size=clip_vocab, hidden_size=_WIDTH, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=77, projection_dim=_WIDTH,
            bos_token_id=0, eos_token_id=1, pad_token_id=1))
        t5 = T5EncoderModel(T5Config(
            vocab_size=t5_vocab, d_model=_WIDTH, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
            feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False))
    scheduler = FlowMatchEulerDiscreteScheduler(  # FLUX.1-dev's scheduler config
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096)
    from transformers import CLIPTokenizer, T5TokenizerFast

    pipeline = FluxPipeline(
        scheduler=scheduler, vae=vae, text_encoder=clip, text_encoder_2=t5, transformer=transformer,
        tokenizer=CLIPTokenizer.from_pretrained(str(out / "tokenizer")),
        tokenizer_2=T5TokenizerFast.from_pretrained(str(out / "tokenizer_2")))
    pipeline.save_pretrained(str(out))
    return out
