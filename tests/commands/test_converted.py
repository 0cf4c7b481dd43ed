"""Converted weights used as timm's validate.py and inference.py use theirs: they carry their test view,
normalisation and class names; eval takes a plain folder of class folders; predict writes CSV and JSON."""

import csv
import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import load_file, save_file
from torchvision.transforms import v2

from resnets.cli import main
from resnets.data.transforms import IMAGENET_MEAN, IMAGENET_STD

CLASSES = ["ant", "bee", "cat"]


def randomise_bn(model):
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A 3-class torchvision ResNet-18 saved as timm's train.py saves a checkpoint, converted with its
    view (32 crops), its class names, and a plain folder of class folders to evaluate it on."""
    tmp = tmp_path_factory.mktemp("converted")
    torch.manual_seed(0)
    reference = randomise_bn(torchvision.models.resnet18(num_classes=3))
    torch.save({"epoch": 9, "state_dict": reference.state_dict()}, tmp / "checkpoint-9.pth.tar")
    (tmp / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    out = tmp / "r18.safetensors"
    command = ["convert", str(tmp / "checkpoint-9.pth.tar"), "--from", "timm", "--to", str(out)]
    assert main([*command, "--input-size", "32", "--class-names", str(tmp / "classes.txt")]) == 0
    folder = tmp / "val"
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (40 + 4 * i, 48, 3), dtype=np.uint8)
            pixels[..., label] //= 3  # something of each class's own
            Image.fromarray(pixels).save(folder / name / f"{i}.png")
    return reference, out, folder


def torchvision_view(path, size=32, resize=37):
    """timm's and torchvision's evaluation transform: shorter side to `resize`, centre crop, normalise."""
    image = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    transform = v2.Compose(
        [
            v2.Resize(resize, antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    return transform(image)


def test_convert_stores_the_view_the_normalisation_and_the_class_names(converted, capsys):
    _, out, _ = converted
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["class_names"]) == CLASSES
    assert json.loads(meta["data"]) == {
        "name": "imagenet", "image_size": [32, 32], "in_channels": 3, "test_size": 32, "test_resize": 37,
        "interpolation": "bilinear",
    }  # fmt: skip
    assert json.loads(meta["normalization"])["std"] == pytest.approx([255 * s for s in IMAGENET_STD])


def test_imagenet_weights_get_imagenets_classes_and_view_by_default(tmp_path, capsys):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18-f37072fd.pth")
    out = tmp_path / "r18.safetensors"
    assert main(["convert", str(tmp_path / "resnet18-f37072fd.pth"), "--from", "torchvision", "--to", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "stored for eval and predict: 224 crops of images resized to 256 (bilinear); " in printed
    assert "mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225); 1000 class names" in printed
    from resnets.inference import Predictor

    predictor = Predictor(out, "cpu")
    assert predictor.class_names[:2] == ["tench", "goldfish"] and predictor.size == (224, 224)


def test_eval_on_a_plain_folder_of_class_folders_is_torchvisions_evaluation(converted, capsys):
    reference, out, folder = converted
    files = sorted(folder.rglob("*.png"))
    with torch.no_grad():
        logits = reference(torch.stack([torchvision_view(f) for f in files]))
    labels = torch.tensor([CLASSES.index(f.parent.name) for f in files])
    expected = (logits.argmax(1) != labels).sum().item() / len(files)
    assert main(["eval", "--checkpoint", str(out), "--data", f"imagefolder:{folder}", "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 12 and result["top1_err"] == pytest.approx(expected, abs=1e-9)
    # The folder above it (ROOT/val/ with no train/ beside it) is taken as timm's validate.py takes it.
    assert main(["eval", "--checkpoint", str(out), "--data", f"imagefolder:{folder.parent}", "--device", "cpu"]) == 0
    assert f"top-1 error {100 * expected:.2f}%" in capsys.readouterr().out


def test_predict_csv_and_json_give_indices_and_torchvisions_probabilities(converted, tmp_path, capsys):
    reference, out, folder = converted
    files = sorted(folder.rglob("*.png"))[:4]
    with torch.no_grad():
        probs = reference(torch.stack([torchvision_view(f) for f in files])).softmax(1)
    table = tmp_path / "predictions.csv"
    command = ["predict", "--checkpoint", str(out), *map(str, files), "--topk", "2", "--device", "cpu"]
    assert main([*command, "--csv", str(table), "--json"]) == 0
    rows = list(csv.DictReader(table.open()))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for f, row, line, p in zip(files, rows, lines, probs, strict=True):
        best = p.topk(2)
        assert row["path"] == line["path"] == str(f)
        assert [int(row["index_1"]), int(row["index_2"])] == best.indices.tolist() == [t["index"] for t in line["top"]]
        assert row["class_1"] == CLASSES[best.indices[0]] == line["top"][0]["class"]
        assert float(row["probability_1"]) == pytest.approx(best.values[0].item(), abs=1e-4)
        assert row["error"] == ""
    assert main([*command, "--csv", str(tmp_path / "nowhere" / "p.csv")]) == 2
    assert f"--csv {tmp_path / 'nowhere' / 'p.csv'}: the folder" in capsys.readouterr().err


def test_weights_without_a_test_view_are_refused_unless_one_is_given(converted, tmp_path, capsys):
    _, out, folder = converted
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "data"}
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(str(out)), str(bare), metadata=meta)
    command = ["eval", "--checkpoint", str(bare), "--data", f"imagefolder:{folder}", "--device", "cpu"]
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "records no test view (the crop it is tested at): give --test-size and --test-resize (ImageNet's: 224 and 256)"
    )
    assert main([*command, "--test-size", "32", "--test-resize", "37", "--json"]) == 0
    given = json.loads(capsys.readouterr().out)["top1_err"]
    assert main(["eval", "--checkpoint", str(out), "--data", f"imagefolder:{folder}", "--device", "cpu", "--json"]) == 0
    assert given == json.loads(capsys.readouterr().out)["top1_err"]


def test_a_run_folder_stands_for_its_weights_and_training_needs_a_train_folder(converted, tmp_path, capsys):
    _, _, folder = converted
    run = tmp_path / "run"
    common = ["--model", "resnet8", "--data", "synthetic:3,16,16,3", "--subset", "32", "-b", "16", "--epochs", "1"]
    assert main(["train", *common, "--device", "cpu", "--out", str(run), "--num-workers", "0"]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith(f"{run}: top-1 error ")
    (run / "model.safetensors").unlink()
    assert main(["eval", "--checkpoint", str(run), "--device", "cpu"]) == 2
    assert (
        f"holds no model.safetensors (not finished?): give --checkpoint {run}/checkpoints/last.pt"
        in capsys.readouterr().err
    )
    command = ["train", "--model", "resnet8", "--data", f"imagefolder:{folder}", "--image-size", "32", "--epochs", "1"]
    assert (
        main([*command, "--device", "cpu", "--out", str(tmp_path / "r2"), "--test-size", "32", "--test-resize", "36"])
        == 2
    )
    assert "has no train/ folder: training needs ROOT/train/<class>/ and ROOT/val/<class>/" in capsys.readouterr().err


def test_a_greyscale_network_evaluates_on_a_folder_of_colour_images(tmp_path, capsys):
    """A network trained on 16x16 greyscale images, evaluated on RGB files: each image is shown as its grey
    (luminance), at the network's size, normalised with its own mean image: the error of the network on
    those grey images computed directly."""
    from resnets.trained import model_from_checkpoint

    run = tmp_path / "run"
    common = ["--model", "resnet8", "--data", "synthetic:1,16,16,3", "--subset", "64", "-b", "16", "--epochs", "1"]
    assert main(["train", *common, "--device", "cpu", "--out", str(run), "--num-workers", "0"]) == 0
    rng = np.random.default_rng(1)
    folder, grey = tmp_path / "colour", []
    for label in range(3):
        (folder / f"class {label}").mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (16, 16), dtype=np.uint8)
            Image.fromarray(np.stack([pixels] * 3, -1)).save(folder / f"class {label}" / f"{i}.png")  # R = G = B
            grey.append((pixels, label))
    model, meta = model_from_checkpoint(run / "model.safetensors")
    norm = meta["normalization"]
    x = torch.stack([torch.from_numpy(p).float()[None] for p, _ in grey])
    with torch.no_grad():
        wrong = (model((x - norm["mean"]) / norm["std"]).argmax(1) != torch.tensor([y for _, y in grey])).sum().item()
    capsys.readouterr()
    command = ["eval", "--checkpoint", str(run), "--data", f"imagefolder:{folder}", "--device", "cpu", "--json"]
    assert main(command) == 0
    assert json.loads(capsys.readouterr().out)["top1_err"] == pytest.approx(wrong / 9, abs=1e-9)


def test_predict_shows_a_small_image_network_what_eval_shows_it(tmp_path, capsys):
    """A network of 16x16 images predicts on a 16x24 colour file from its shorter side resized to 16 and the
    central square (not the whole file squashed), as eval shows it image files."""
    from resnets.trained import model_from_checkpoint

    run = tmp_path / "run"
    common = ["--model", "resnet8", "--data", "synthetic:3,16,16,3", "--subset", "32", "-b", "16", "--epochs", "1"]
    assert main(["train", *common, "--device", "cpu", "--out", str(run), "--num-workers", "0"]) == 0
    pixels = np.random.default_rng(2).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    model, meta = model_from_checkpoint(run)
    norm = meta["normalization"]
    centre = torch.from_numpy(pixels[:, 4:20].copy()).permute(2, 0, 1).float()
    with torch.no_grad():
        expected = model(((centre - norm["mean"]) / norm["std"])[None]).softmax(1)[0]
    capsys.readouterr()
    command = ["predict", "--checkpoint", str(run), str(tmp_path / "wide.png"), "--json", "--device", "cpu"]
    assert main(command) == 0
    top = json.loads(capsys.readouterr().out)["top"]
    assert [t["index"] for t in top] == expected.argsort(descending=True).tolist()
    assert [t["probability"] for t in top] == pytest.approx(expected.sort(descending=True).values.tolist(), abs=1e-5)
