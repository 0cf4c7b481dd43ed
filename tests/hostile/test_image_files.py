"""Odd image files: 16-bit, animated, decompression bombs, BMP, newlines in names, unreadable folders."""

import json
import re

import numpy as np
import pytest
import torch
from datagen import save_image
from PIL import Image

from hostile import bomb_png, png16, train_argv
from resnets.cli import main
from resnets.data import load_dataset
from resnets.data.images import DEFAULT_MAX_PIXELS, ImageError, read_image
from resnets.inference import Predictor


def test_a_16_bit_png_is_scaled_to_0_255_not_cut(tmp_path):
    grey = np.arange(256, dtype=np.uint16).reshape(16, 16) * 257  # 0..65535 in steps of 257: exactly 0..255
    assert torch.equal(read_image(str(png16(tmp_path / "g.png", grey)), 1)[0], torch.from_numpy(grey // 257).byte())
    rgb = np.stack([grey, 65535 - grey, np.full_like(grey, 32896)], axis=-1)
    image = read_image(str(png16(tmp_path / "rgb.png", rgb)), 3)
    assert image.dtype == torch.uint8
    assert torch.equal(image[0], torch.from_numpy(grey // 257).byte())
    assert torch.equal(image[1], torch.from_numpy(255 - grey // 257).byte())
    assert int(image[2].unique()) == 128


def test_predict_gives_a_16_bit_png_the_class_of_its_8_bit_twin(grey_run, tmp_path):
    from resnets.data.synthetic import synthetic_arrays

    _, out = grey_run
    images, _ = synthetic_arrays((1, 16, 16, 4), 4, seed=1, split="test")
    predictor = Predictor(out / "model.safetensors", device="cpu")
    for i in range(4):
        eight = tmp_path / f"{i}-8.png"
        Image.fromarray(images[i, 0].numpy()).save(eight)
        sixteen = png16(tmp_path / f"{i}-16.png", images[i, 0].numpy().astype(np.uint16) * 257)
        a, b = predictor.predict([eight, sixteen], topk=4)
        assert b.error is None and [c for c, _ in a.top] == [c for c, _ in b.top]
        assert [p for _, p in a.top] == pytest.approx([p for _, p in b.top], abs=1e-6)


def test_an_image_folder_of_16_bit_pngs_trains(tmp_path):
    for name, level in (("dark", 8000), ("light", 56000)):
        for split, n in (("train", 4), ("val", 2)):
            for i in range(n):
                png16(tmp_path / "f" / split / name / f"{i}.png", np.full((20, 24, 3), level + 100 * i, np.uint16))
    bundle = load_dataset(f"imagefolder:{tmp_path / 'f'}", batch_size=4, num_workers=0, augment=False)
    x, y = next(bundle.train.epoch(0))
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    # Centre crops of constant images: one value per channel, that of the pixel scaled to 0..255.
    mean, std = (t.flatten() for t in bundle.normalization)
    for image, label in zip(x, y.tolist(), strict=True):
        level = round((8000 if bundle.info.class_names[label] == "dark" else 56000) / 257)
        assert (image[0] * std[0] + mean[0]).round().unique().tolist() == pytest.approx([level], abs=1)


def test_an_animated_gif_gives_its_first_frame_in_the_model_s_channels(grey_run, tmp_path, capsys):
    frames = [Image.fromarray(np.full((20, 20, 3), 40 * (i + 1), np.uint8)) for i in range(3)]
    gif = tmp_path / "images" / "anim.gif"
    gif.parent.mkdir()
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    image = read_image(str(gif), 1)
    assert tuple(image.shape) == (1, 20, 20) and image.unique().tolist() == [40]
    assert tuple(read_image(str(gif), 3).shape) == (3, 20, 20)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "images" / "plain.png")
    _, out = grey_run
    assert main(["predict", "--checkpoint", str(out / "model.safetensors"), str(tmp_path / "images"), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and all("top" in line for line in lines)


def test_a_decompression_bomb_is_refused_before_decoding(grey_run, tmp_path, capsys):
    bomb = bomb_png(tmp_path / "bomb.png", 30000, 30000)
    assert bomb.stat().st_size < 10_000
    with pytest.raises(ImageError, match=r"bomb.png: 900,000,000 pixels, above the limit of 89,478,485"):
        read_image(str(bomb), 3)
    with pytest.raises(ImageError, match="40x40 = 1,600 pixels, above the limit of 1,000"):
        read_image(str(bomb_png(tmp_path / "small.png", 40, 40)), 3, max_pixels=1000)
    assert read_image(str(bomb_png(tmp_path / "small.png", 40, 40)), 3, max_pixels=1600).shape == (3, 40, 40)
    assert DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS
    _, out = grey_run
    ok = tmp_path / "ok.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(ok)
    code = main(["predict", "--checkpoint", str(out / "model.safetensors"), str(bomb), str(ok)])
    captured = capsys.readouterr()
    assert code == 1 and captured.out.startswith(f"{ok}: class ")  # the rest still ran
    assert "bomb.png: 900,000,000 pixels" in captured.err and "--max-image-pixels" in captured.err
    code = main(["predict", "--checkpoint", str(out / "model.safetensors"), str(ok), "--max-image-pixels", "100"])
    assert code == 1 and "above the limit of 100" in capsys.readouterr().err


def test_bmp_and_tiff_files_are_read(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    for suffix in (".bmp", ".tif"):
        Image.fromarray(pixels).save(tmp_path / f"x{suffix}")
        assert torch.equal(read_image(str(tmp_path / f"x{suffix}"), 3), torch.from_numpy(pixels).permute(2, 0, 1))


def test_a_newline_in_a_file_name_stays_on_one_output_line(grey_run, tmp_path, capsys):
    _, out = grey_run
    odd = tmp_path / "two\nlines.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(odd)
    assert main(["predict", "--checkpoint", str(out / "model.safetensors"), str(odd)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(str(tmp_path / "two\\nlines.png") + ": class ")


def test_an_image_folder_with_no_readable_image_is_an_error_naming_it(tmp_path, capsys):
    root = tmp_path / "images"
    for split in ("train", "val"):
        for name in ("a", "b"):
            for i in range(2):
                path = root / split / name / f"{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"\xff\xd8 not a jpeg")
    bundle = load_dataset(f"imagefolder:{root}", batch_size=2, num_workers=0)
    # Training replaces an unreadable image by another training image, until none is left to try.
    unreadable = f"nor any of the 16 training images drawn to replace it: is {root / 'train'} readable?"
    with pytest.raises(ValueError, match=re.escape(unreadable)):
        list(bundle.train.epoch(0))
    # The batch's 2 files, then the 16 drawn in vain for the first: 4 files met 18 times.
    assert bundle.train.bad_images == 18 and len(bundle.train.bad_files) == 4
    with pytest.raises(ValueError, match=f"no readable image in {root / 'val'}: all 4 files failed to decode"):
        list(bundle.test.epoch(0))
    out = tmp_path / "run"
    argv = train_argv(out, data=f"imagefolder:{root}", subset=None, batch_size=2, num_workers=0, epochs=1)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert unreadable in err.strip().splitlines()[-1]
    assert not out.exists()  # no model, no half-made run folder


def test_eval_on_an_image_folder_starts_no_more_workers_than_cores(monkeypatch, tmp_path):
    import resnets.data.imagefolder as imagefolder

    root = tmp_path / "images"
    for split in ("train", "val"):
        for name in ("a", "b"):
            save_image(root / split / name / "0.png", (20, 20), (90, 10, 200))
    seen = []

    class Recording(imagefolder.DataLoader):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs["num_workers"])
            kwargs["num_workers"] = 0
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(imagefolder, "DataLoader", Recording)
    monkeypatch.setattr(imagefolder, "usable_cores", lambda: 2)
    bundle = load_dataset(f"imagefolder:{root}", batch_size=2, num_workers=16)
    list(bundle.test.epoch(0))
    assert seen == [2]
