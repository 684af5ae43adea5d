"""Per-image latents: only new or changed images are encoded, bad ones named or skipped, ranks that only read."""

from __future__ import annotations

import os

import numpy as np
import pytest

from advtune.config import ConfigError
from advtune.data.codecs import IdentityCodec
from advtune.data.latent_cache import cached_images, encode_new_images, latent_cache
from advtune.data.latents import _load_image


class _CountingIdentity(IdentityCodec):
    """advtune's identity codec, counting the images it encodes."""

    def __init__(self, log: list[int]) -> None:
        self.log = log

    def encode(self, images):
        self.log.append(len(images))
        return super().encode(images)


def _images(folder, names):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(names))
    for name in names:
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / name)
    return sorted(folder.glob("*.png"))


def _encode(cache, files, root, log, skip_bad=False):
    return encode_new_images(cache, files, root, lambda p: _load_image(p, 8).shape, lambda p, _: _load_image(p, 8),
                             lambda: _CountingIdentity(log), batch_size=2, skip_bad=skip_bad, where="test folder")


def test_only_new_or_changed_images_are_encoded_and_the_console_says_so(tmp_path, capsys):
    files = _images(tmp_path / "img", ["a.png", "b.png", "c.png"])
    cache, log = latent_cache(tmp_path / "cache", ["square", "8", b"{config}"]), []
    assert _encode(cache, files, tmp_path / "img", log) == 3 and sum(log) == 3
    assert "caching latents of 3 new images (0 cached) of test folder" in capsys.readouterr().out
    _, first = cached_images(cache, files, tmp_path / "img", skip_bad=False, where="test folder")
    written = {f: f.stat().st_mtime_ns for f in first}
    assert _encode(cache, files, tmp_path / "img", log) == 0 and sum(log) == 3  # nothing new: no codec at all
    assert capsys.readouterr().out == ""
    files = _images(tmp_path / "img", ["d.png"]) + files  # one added ...
    os.utime(files[1], ns=(files[1].stat().st_atime_ns, files[1].stat().st_mtime_ns + 10**9))  # ... one changed
    files = sorted(set(files))
    assert _encode(cache, files, tmp_path / "img", log) == 2 and sum(log) == 5
    assert "caching latents of 2 new images (2 cached)" in capsys.readouterr().out
    kept, paths = cached_images(cache, files, tmp_path / "img", skip_bad=False, where="test folder")
    unchanged = [p for p in paths if p in written]
    assert kept == files and len(unchanged) == 2 and all(p.stat().st_mtime_ns == written[p] for p in unchanged)
    assert latent_cache(tmp_path / "cache", ["square", "16", b"{config}"]).directory != cache.directory


def test_unreadable_new_images_are_named_or_skipped_and_ranks_that_only_read(tmp_path):
    root = tmp_path / "img"
    files = _images(root, ["a.png", "b.png"])
    cache, log = latent_cache(tmp_path / "cache", ["x"]), []
    _encode(cache, files, root, log)
    (root / "bad.png").write_bytes(b"not a png")
    files = sorted(root.glob("*.png"))
    with pytest.raises(FileNotFoundError, match=r"1 images of test folder have no cached latent .*bad\.png"):
        cached_images(cache, files, root, skip_bad=False, where="test folder")  # a rank that only reads
    with pytest.raises(ConfigError, match=r"1 of 1 files in test folder cannot be read: .*bad\.png"):
        _encode(cache, files, root, log)
    assert _encode(cache, files, root, log, skip_bad=True) == 0  # all new ones bad, the cached ones remain
    kept, _ = cached_images(cache, files, root, skip_bad=True, where="test folder")
    assert [p.name for p in kept] == ["a.png", "b.png"]
    with pytest.raises(FileNotFoundError, match="no image of test folder has a cached latent"):
        cached_images(latent_cache(tmp_path / "cache", ["y"]), files, root, skip_bad=True, where="test folder")
    assert sum(log) == 2  # the two good images, once
