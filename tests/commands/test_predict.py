"""Using trained weights: predict, embed and export from the command line, on generated image files."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from resnets.cli import main
from resnets.data import load_dataset
from resnets.inference import Predictor
from resnets.train import TrainConfig, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ResNet-8 trained briefly on 16x16 greyscale synthetic images, and its run folder."""
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        model="resnet8",
        data="synthetic:1,16,16,4",
        subset=256,
        batch_size=32,
        epochs=2,
        lr=0.05,
        device="cpu",
        out=str(out),
        log_every=8,
        seed=3,
    )
    return train(config), out


def write_images(folder, bundle_seed=3):
    """PNG files of the first test images (exact pixels), a colour JPEG of another size, and a broken file."""
    from resnets.data.synthetic import synthetic_arrays

    images, _ = synthetic_arrays((1, 16, 16, 4), 256, seed=bundle_seed, split="test")
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(3):
        path = folder / f"test{i}.png"
        Image.fromarray(images[i, 0].numpy()).save(path)
        paths.append(path)
    colour = folder / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(colour)
    broken = folder / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    return paths, colour, broken


def test_predict_matches_the_model_on_the_test_set(trained, tmp_path):
    result, out = trained
    paths, colour, broken = write_images(tmp_path / "images")
    predictor = Predictor(out / "model.safetensors", device="cpu")
    predictions = predictor.predict([*paths, colour, broken], topk=3)
    # The same pixels through the data pipeline give the same probabilities.
    bundle = load_dataset("synthetic:1,16,16,4", device="cpu", batch_size=32, subset=256, seed=3, augment=False)
    x, _ = next(bundle.test.epoch(0))
    with torch.no_grad():
        expected = torch.softmax(result.model.eval()(x[:3]), 1)
    for i in range(3):
        top = predictions[i].top
        assert top[0][0] == bundle.info.class_names[int(expected[i].argmax())]
        assert top[0][1] == pytest.approx(expected[i].max().item(), abs=1e-5)
        assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    assert predictions[3].error is None and len(predictions[3].top) == 3  # colour, 40x30: converted and resized
    assert predictions[4].error is not None and "broken.png" in predictions[4].error


def test_predict_cli_json_and_exit_status(trained, tmp_path, capsys):
    _, out = trained
    paths, _, _ = write_images(tmp_path / "images")
    code = main(
        [
            "predict",
            "--checkpoint",
            str(out / "checkpoints" / "last.pt"),
            str(tmp_path / "images"),
            "--json",
            "--topk",
            "2",
        ]
    )
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert code == 1  # one file could not be read, the rest still ran
    assert len(lines) == 5 and sum("error" in line for line in lines) == 1
    assert all(len(line["top"]) == 2 for line in lines if "error" not in line)
    assert "broken.png" in captured.err and "1 of 5 images could not be read" in captured.err
    code = main(["predict", "--checkpoint", str(out / "model.safetensors"), str(paths[0])])
    assert code == 0 and capsys.readouterr().out.startswith(str(paths[0]) + ": class ")


def test_embed_writes_pre_logits_features(trained, tmp_path, capsys):
    result, out = trained
    paths, _, _ = write_images(tmp_path / "images")
    npy = tmp_path / "emb.npy"
    assert main(["embed", "--checkpoint", str(out / "model.safetensors"), *map(str, paths), "--out", str(npy)]) == 0
    embeddings = np.load(npy)
    assert embeddings.shape == (3, result.model.num_features)
    predictor = Predictor(out / "model.safetensors", device="cpu")
    x = torch.stack([predictor.preprocess(predictor.load(p)) for p in paths])
    with torch.no_grad():
        expected = result.model.forward_head(result.model.forward_features(x), pre_logits=True)
    np.testing.assert_allclose(embeddings, expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("fmt", ["torchscript", "safetensors"])
def test_export_cli_checks_parity(trained, tmp_path, capsys, fmt):
    _, out = trained
    target = tmp_path / f"model.{fmt}"
    code = main(["export", "--checkpoint", str(out / "checkpoints" / "best.pt"), "--format", fmt, "--out", str(target)])
    assert code == 0 and target.is_file()
    assert "max abs difference" in capsys.readouterr().out


def test_missing_images_and_bad_checkpoint_are_one_line_errors(trained, tmp_path, capsys):
    _, out = trained
    assert main(["predict", "--checkpoint", str(out / "model.safetensors"), str(tmp_path / "nope.png")]) == 2
    assert "no such image or folder" in capsys.readouterr().err
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"not a checkpoint")
    paths, _, _ = write_images(tmp_path / "images")
    assert main(["predict", "--checkpoint", str(fake), str(paths[0])]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "fake.pt" in err


def test_an_image_folder_run_predicts_through_its_own_test_view(tmp_path):
    """Predictor takes an image-folder run's test view from its config (resnets.trained.test_view), as eval does:
    a run trained at 16 and tested at 24 after resizing to 28 predicts on 28-then-24 views, not the defaults."""
    from resnets.trained import model_from_checkpoint, run_config, test_view, trained_data

    root = tmp_path / "folder"
    for split, n in (("train", 6), ("val", 2)):
        for k, colour in enumerate(((200, 30, 30), (30, 30, 200))):
            for i in range(n):
                path = root / split / f"c{k}" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = np.zeros((36, 40 + 3 * i, 3), np.uint8) + np.array(colour, np.uint8)
                pixels[:18, :13] = 255 - pixels[:18, :13]  # not symmetric: a crop or flip shows
                Image.fromarray(pixels).save(path)
    config = TrainConfig(
        model="resnet8",
        data=f"imagefolder:{root}",
        image_size=16,
        test_size=24,
        test_resize=28,
        interpolation="bicubic",
        batch_size=4,
        epochs=1,
        num_workers=0,
        device="cpu",
        out=str(tmp_path / "run"),
    )
    train(config)
    weights = tmp_path / "run" / "model.safetensors"
    predictor = Predictor(weights, device="cpu")
    _, meta = model_from_checkpoint(weights)
    assert predictor.view == test_view(run_config(meta, weights)) and predictor.size == (24, 24)
    assert (predictor.view.test_resize, predictor.view.tested, predictor.view.interpolation) == (28, 24, "bicubic")
    # The same inputs as the run's own test loader: one val image through both.
    images, _ = next(trained_data(meta, weights, batch_size=4).test.epoch(0))
    first = sorted((root / "val" / "c0").iterdir())[0]
    mine = predictor.preprocess(predictor.load(first))
    assert mine.shape == images[0].shape == (3, 24, 24)
    assert torch.allclose(mine, images[0], atol=1e-4)
