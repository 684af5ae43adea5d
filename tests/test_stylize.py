"""`advtune stylize`: the training-time transfer at any size, every kind of input image, re-runs, one-line errors."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from advtune.cli import main
from advtune.models.vqgan import VQAutoencoder
from advtune.stylize_images import fingerprint_of, read_image
from advtune.stylize_model import Stylizer, load_style_image, load_stylizer
from advtune.tasks.style_transfer import StyleTransferTask
from advtune.tasks.vqgan import VQGANTask
from advtune.tiling import apply_tiled, seam_ratio, tile_borders


def _task(**kwargs) -> StyleTransferTask:
    torch.manual_seed(0)
    autoencoder = VQAutoencoder(base_channels=8, channel_multipliers=[1, 2, 2], num_res_blocks=1, latent_channels=8,
                                code_dim=4, num_codes=16)
    task = StyleTransferTask(autoencoder=autoencoder, hidden_channels=8, num_blocks=1, style_dim=8, image_size=16,
                             **kwargs)
    with torch.no_grad():  # away from the identity, so the style changes the output
        torch.nn.init.normal_(task.transfer.conv_out.weight, std=0.2)
    return task.eval()


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth colour picture with some texture, ``(H, W, 3)`` uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([np.sin(x / 9 + c) * np.cos(y / 13 - c) for c in range(3)], axis=-1)
    return np.clip(127.5 + 90 * base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)


@pytest.fixture()
def files(tmp_path):
    """An exported model, a style image and a folder of content images of several kinds."""
    model = tmp_path / "model"
    _task().export(model)
    Image.fromarray(_photo(80, 80, 9)).save(tmp_path / "style.png")
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_photo(45, 70, 1)).save(photos / "rgb.png")  # odd sizes: not multiples of 4
    Image.fromarray(_photo(40, 52, 2)[..., 0]).save(photos / "grey.jpg")
    rgba = np.concatenate([_photo(36, 44, 3), np.full((36, 44, 1), 255, np.uint8)], axis=-1)
    rgba[:, :10, 3] = 0  # a transparent band
    Image.fromarray(rgba).save(photos / "alpha.png")
    Image.fromarray((_photo(30, 30, 4)[..., 1].astype(np.uint16) * 257)).save(photos / "deep.png")  # 16-bit grey
    (photos / "notes.txt").write_text("not an image")
    return {"model": model, "style": tmp_path / "style.png", "photos": photos, "out": tmp_path / "out"}


def _run(capsys, *args: str) -> tuple[int, str]:
    code = main(["stylize", *args])
    return code, capsys.readouterr().err


def test_help_is_fast_and_imports_nothing_heavy():
    code = "import sys, advtune.cli as c\nassert c.main(['stylize', '--help']) == 0\nassert 'torch' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "usage: advtune stylize ckpt_path=PATH content=IMAGE_OR_FOLDER style=IMAGE" in out and "tile_size=" in out


def test_stylizer_is_the_training_time_transfer_and_tiles_blend_without_seams():
    task = _task()
    stylizer = Stylizer(task.autoencoder, task.transfer, task.quantize_output)
    generator = torch.Generator().manual_seed(0)
    content, style = torch.rand(2, 3, 32, 48, generator=generator) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    codes = torch.cat([stylizer.style_code(style[i : i + 1]) for i in range(2)])
    assert torch.allclose(stylizer.stylize(content, codes), task.transfer_images(content, style), atol=1e-6)
    photo = torch.from_numpy(_photo(160, 256, 5)).permute(2, 0, 1)[None].float() / 127.5 - 1
    code = stylizer.style_code(style[:1])
    whole = stylizer.stylize(photo, code)
    tiled = apply_tiled(lambda x: stylizer.stylize(x, code), photo, tile_size=96, overlap=32, multiple=4)
    rows, cols = tile_borders(160, 96, 32, 4), tile_borders(256, 96, 32, 4)
    assert seam_ratio(tiled[0], rows, cols) < 1.15 * seam_ratio(whole[0], rows, cols)


def test_every_kind_of_image_keeps_its_size_alpha_and_orientation(files, capsys, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": a phone photo taken upright
    Image.fromarray(_photo(24, 40, 6)).save(files["photos"] / "phone.jpg", exif=exif)
    code, err = _run(capsys, f"ckpt_path={files['model']}", f"content={files['photos']}", f"style={files['style']}",
                     f"out_dir={files['out']}", "tile_size=32", "tile_overlap=16")
    assert code == 0, err
    assert "[5/5]" in err and "notes" not in err
    expected = {"rgb": (45, 70), "grey": (40, 52), "alpha": (36, 44), "deep": (30, 30), "phone": (40, 24)}
    for name, size in expected.items():
        with Image.open(files["out"] / f"{name}_style.png") as output:
            assert output.size[::-1] == size, name
            assert output.mode == ("RGBA" if name == "alpha" else "RGB"), name
            if name == "alpha":
                given = np.asarray(Image.open(files["photos"] / "alpha.png"))[..., 3]
                assert np.array_equal(np.asarray(output)[..., 3], given)
    with Image.open(files["out"] / "contact_sheet_style.png") as sheet:
        assert sheet.height > 5 * 256  # one row per image
    assert read_image(files["photos"] / "deep.png").rgb.std() > 0.1  # 16-bit values scaled, not clipped to white


def test_rerun_skips_what_is_up_to_date_and_redoes_what_changed(files, capsys):
    args = [f"ckpt_path={files['model']}", f"content={files['photos'] / 'rgb.png'}", f"style={files['style']}",
            f"out_dir={files['out']}"]
    assert _run(capsys, *args)[0] == 0
    output = files["out"] / "rgb_style.png"
    first, stamp = fingerprint_of(output), output.stat().st_mtime_ns
    code, err = _run(capsys, *args)
    assert code == 0 and "up to date" in err and output.stat().st_mtime_ns == stamp
    code, err = _run(capsys, *args, "style_size=64")  # another setting: computed again, same file
    assert code == 0 and "up to date" not in err and fingerprint_of(output) != first
    assert sorted(p.name for p in files["out"].iterdir()) == ["contact_sheet_style.png", "rgb_style.png"]


def test_outputs_in_the_content_folder_are_not_stylized_again_and_foreign_files_are_left_alone(files, capsys):
    args = [f"ckpt_path={files['model']}", f"content={files['photos']}", f"style={files['style']}",
            f"out_dir={files['photos']}"]
    assert _run(capsys, *args)[0] == 0
    code, err = _run(capsys, *args)
    assert code == 0 and err.count("up to date") == 4
    assert not list(files["photos"].glob("*_style_style.png"))
    (files["photos"] / "rgb_style.png").unlink()
    Image.fromarray(_photo(20, 20, 8)).save(files["photos"] / "rgb_style.png")  # the user's own picture
    mine = (files["photos"] / "rgb_style.png").read_bytes()
    code, err = _run(capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "rgb_style.png exists and was not written" in err
    assert (files["photos"] / "rgb_style.png").read_bytes() == mine


def test_bad_input_is_one_line(files, capsys, tmp_path):
    model, style, photos = files["model"], files["style"], files["photos"]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    Image.new("RGB", (64, 64), (120, 30, 30)).save(tmp_path / "flat.png")
    Image.fromarray(_photo(8, 40, 0)).save(tmp_path / "thin.png")
    vq_only = tmp_path / "vq"
    VQGANTask(autoencoder=_task().autoencoder).export(vq_only)
    cases = {
        "content not found": [f"ckpt_path={model}", f"content={tmp_path / 'nope.jpg'}", f"style={style}"],
        r"1 of 1 images in .* cannot be read: broken.png \(UnidentifiedImageError": [
            f"ckpt_path={model}", f"content={tmp_path / 'broken.png'}", f"style={style}"],
        "style image .* cannot be read": [f"ckpt_path={model}", f"content={photos}",
                                          f"style={tmp_path / 'broken.png'}"],
        "style= must be one image file": [f"ckpt_path={model}", f"content={photos}", f"style={photos}"],
        "is a flat colour": [f"ckpt_path={model}", f"content={photos}", f"style={tmp_path / 'flat.png'}"],
        "needs at least 16 on each side": [f"ckpt_path={model}", f"content={photos}", f"style={tmp_path / 'thin.png'}"],
        "written by VQGANTask, not by a style-transfer run": [f"ckpt_path={vq_only / 'vq_autoencoder.pt'}",
                                                              f"content={photos}", f"style={style}"],
        "holds neither style_transfer.pt nor checkpoints/last.ckpt": [f"ckpt_path={vq_only}", f"content={photos}",
                                                                      f"style={style}"],
        "unknown argument 'tile=3'": [f"ckpt_path={model}", f"content={photos}", f"style={style}", "tile=3"],
        "tile_overlap=200 must be at most half": [f"ckpt_path={model}", f"content={photos}", f"style={style}",
                                                  "tile_size=256",
                                                  "tile_overlap=200"],
    }
    for message, args in cases.items():
        code, err = _run(capsys, *args, f"out_dir={tmp_path / 'out'}")
        assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(message, err), (message, err)
    assert not (tmp_path / "out").exists()  # nothing written by a refused run
    code, err = _run(capsys, f"ckpt_path={model}", f"content={photos}", f"style={style}", f"out_dir={style}")
    assert code == 2 and "is a file, not a folder" in err
    if not torch.cuda.is_available():
        code, err = _run(capsys, f"ckpt_path={model}", f"content={photos}", f"style={style}", "device=cuda")
        assert code == 2 and "sees no CUDA device" in err
    (photos / "broken.png").write_bytes((tmp_path / "broken.png").read_bytes())
    code, err = _run(capsys, f"ckpt_path={model}", f"content={photos}", f"style={style}", f"out_dir={tmp_path / 'o'}",
                     "skip_bad_files=true")
    assert code == 0 and "[4/4]" in err and "broken.png" in err  # warned, then the readable four


def test_style_is_resized_to_the_training_scale_stored_in_the_export(tmp_path):
    _task(style_short_side=48).export(tmp_path / "model")
    stylizer, files = load_stylizer(tmp_path / "model")
    assert stylizer.style_short_side == 48 and [f.name for f in files] == ["style_transfer.pt", "vq_autoencoder.pt"]
    Image.fromarray(_photo(120, 200, 3)).save(tmp_path / "s.png")
    assert load_style_image(stylizer, tmp_path / "s.png")[0].shape[-2:] == (48, 80)
    assert load_style_image(stylizer, tmp_path / "s.png", 64)[0].shape[-2:] == (64, 108)  # 106.7 → 107, padded


def test_the_whole_path_vqgan_then_style_transfer_then_stylize_from_the_checkpoint_or_the_run(tmp_path, capsys):
    from advtune.config import compose_config
    from advtune.runner import train

    small = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
             "trainer.enable_progress_bar=false", "adversarial.warmup_steps=1", "data.patch_size=16",
             "data.patches_per_image=2", "data.val_patches_per_image=1", "data.batch_size=4", "discriminator.ndf=8",
             "discriminator.n_layers=2", "checkpoint_every=2"]
    autoencoder = ["task.autoencoder.base_channels=8", "task.autoencoder.num_codes=16"]
    train(compose_config(["experiment=vqgan", f"output_dir={tmp_path / 'vq'}", "data.short_side=48",
                          "data.images=[coffee,brick]", *small, *autoencoder]))
    train(compose_config(["experiment=style_transfer", f"output_dir={tmp_path / 'st'}",
                          f"task.autoencoder_path={tmp_path / 'vq' / 'vq_autoencoder.pt'}",
                          "data.content_short_side=48",
                          "data.style_short_side=48", "task.hidden_channels=8", "task.style_dim=8", *small]))
    capsys.readouterr()
    (tmp_path / "photos").mkdir()
    Image.fromarray(_photo(50, 60, 7)).save(tmp_path / "photos" / "photo.png")
    Image.fromarray(_photo(64, 64, 8)).save(tmp_path / "photos" / "texture.png")
    common = [f"content={tmp_path / 'photos'}", f"style={tmp_path / 'photos' / 'texture.png'}"]
    assert load_stylizer(tmp_path / "st")[0].style_short_side == 48  # the run's style scale, from its export
    for name, model in (("run", tmp_path / "st"), ("ckpt", tmp_path / "st" / "checkpoints" / "last.ckpt")):
        code, err = _run(capsys, f"ckpt_path={model}", *common, f"out_dir={tmp_path / name}")
        assert code == 0, err
    outputs = sorted((tmp_path / "run").glob("*.png")), sorted((tmp_path / "ckpt").glob("*.png"))
    # the style image in the content folder is not stylized with itself
    assert [p.name for p in outputs[0]] == [p.name for p in outputs[1]] == ["contact_sheet_texture.png",
                                                                            "photo_texture.png"]
    for from_run, from_ckpt in zip(*outputs):
        if not from_run.name.startswith("contact_sheet"):
            assert np.array_equal(np.asarray(Image.open(from_run)), np.asarray(Image.open(from_ckpt)))
    code, err = _run(capsys, f"ckpt_path={tmp_path / 'vq' / 'checkpoints' / 'last.ckpt'}", *common)
    assert code == 2 and "is a checkpoint of a VQGANTask run" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "vq" / "vq_autoencoder.pt").unlink()  # the checkpoint's autoencoder_path is gone...
    code, err = _run(capsys, f"ckpt_path={tmp_path / 'st' / 'checkpoints' / 'last.ckpt'}", *common,
                     f"out_dir={tmp_path / 'again'}")
    assert code == 2 and "ckpt_path=<output_dir>" in err
    # ...the run's own export still works
    assert _run(capsys, f"ckpt_path={tmp_path / 'st'}", *common, f"out_dir={tmp_path / 'again'}")[0] == 0


def test_read_image_fills_transparent_pixels_with_the_mean_visible_colour(tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[:, :3] = (200, 100, 50, 255)  # visible half
    rgba[:, 3:] = (0, 0, 0, 0)  # transparent half, black underneath (what most editors write)
    Image.fromarray(rgba).save(tmp_path / "logo.png")
    loaded = read_image(tmp_path / "logo.png")
    expected = torch.tensor([200.0, 100.0, 50.0]) / 127.5 - 1
    assert torch.allclose(loaded.rgb[0, :, :, 3:].mean(dim=(1, 2)), expected, atol=1e-5)  # no black halo source
    assert loaded.alpha.tolist() == [[255] * 3 + [0] * 3] * 4
    Image.fromarray(rgba[..., :3]).save(tmp_path / "opaque.png")
    assert read_image(tmp_path / "opaque.png").alpha is None
