"""Image folders of small images: the views follow the crop's size, ImageNet nets take them, the run records
what it used."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import yaml

from resnets import create_model
from resnets.cli import main
from resnets.data.transforms import (
    PAPER_SCALE_RANGE,
    FolderTransforms,
    crop_area,
    paper_scale_range,
    paper_test_resize,
    random_resized_box,
    train_view,
)
from resnets.train import TrainConfig, train
from resnets.train.config import check_resumable, resolved_values
from resnets.train.loaders import folder_transforms
from resnets.train.network import build_model
from resnets.train.recipes import view_lines


def folder(root: Path, n_train: int = 24, n_val: int = 8) -> Path:
    """28x28 PNGs of three classes that only a view of most of the image tells apart: horizontal bands,
    vertical bands, and a checkerboard, each band 7 pixels wide, at a random phase and brightness."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    idx = torch.arange(28)
    for split, count in (("train", n_train), ("val", n_val)):
        for k in range(3):
            for i in range(count):
                phase = int(torch.randint(0, 14, (), generator=g))
                rows = ((idx + phase) // 7 % 2)[:, None].expand(28, 28)
                cols = ((idx + phase) // 7 % 2)[None, :].expand(28, 28)
                bands = (rows, cols, rows ^ cols)[k]
                level = 120 + int(torch.randint(0, 100, (), generator=g))
                image = (bands * level + 20).to(torch.uint8)[:, :, None].expand(28, 28, 3)
                path = root / split / f"c{k}" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image.numpy().copy()).save(path)
    return root


def folder_config(root: Path, out: Path, **options) -> TrainConfig:
    values = {
        "model": "resnet8",
        "data": f"imagefolder:{root}",
        "image_size": 28,
        "test_size": 28,
        "batch_size": 12,
        "epochs": 6,
        "num_workers": 0,
        "device": "cpu",
        "log_every": 1000,
        "out": str(out),
        **options,
    }
    return TrainConfig(**values)


def test_the_scale_range_and_test_resize_keep_the_paper_s_ratios_to_the_crop():
    assert paper_scale_range(224) == PAPER_SCALE_RANGE == (256, 480)  # section 3.4, exactly
    assert paper_test_resize(224) == 256
    # 8/7 and 15/7 of the side, rounded to the nearest pixel (no ties: k/7 is never a half).
    assert paper_scale_range(32) == (37, 69) and paper_scale_range(28) == (32, 60) and paper_test_resize(32) == 37
    assert FolderTransforms().resize_range == (256, 480) and FolderTransforms().test_resize == 256
    config = TrainConfig(data="imagefolder:x", image_size=32, test_size=32)
    t = folder_transforms(config)
    assert (t.resize_range, t.test_resize) == ((37, 69), 37)
    given = folder_transforms(config.replace(scale_range=[40, 90], test_resize=36))
    assert (given.resize_range, given.test_resize) == ((40, 90), 36)
    resolved = config.resolved()
    assert (resolved.scale_range, resolved.test_resize, resolved.normalize) == ([37, 69], 37, "imagenet")
    paper = TrainConfig(data="imagefolder:x").resolved()
    assert (paper.scale_range, paper.test_resize) == ([256, 480], 256)


def test_scale_range_is_validated_in_one_line_naming_the_values(tmp_path, capsys):
    base = ["train", "--data", f"imagefolder:{tmp_path}", "--image-size", "32", "--test-size", "32", "--print-config"]
    assert main([*base, "--scale-range", "40", "80"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["scale_range"] == [40, 80]
    assert main(base) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["scale_range"], printed["test_resize"], printed["normalize"]) == ([37, 69], 37, "imagenet")
    for argv, message in (
        (["--scale-range", "30", "80"], "scale_range=30 80 must satisfy image_size (32) <= LO <= HI"),
        (["--scale-range", "80", "40"], "scale_range=80 40 must satisfy image_size (32) <= LO <= HI"),
        (["--scale-range", "40", "80", "--crop", "random-resized"], "scale_range is the range of crop 'scale'"),
    ):
        assert main([*base, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    with pytest.raises(ValueError, match="scale_range applies to image folders, not to fashion-mnist"):
        TrainConfig(scale_range=[40, 80])
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--scale-range LO HI" in text and "35-100% under 64 px" in text


def test_runs_saved_before_keep_the_views_they_trained_with():
    old = TrainConfig(data="imagefolder:/data/x", image_size=32, test_size=32, test_resize=32).to_dict()
    del old["scale_range"]
    old["normalize"] = "pixel-mean"  # what image-folder runs recorded, though they used ImageNet's statistics
    restored = TrainConfig.from_dict(old)
    assert (restored.scale_range, restored.normalize) == ([256, 480], "imagenet")
    check_resumable(old, restored, Path("runs/x"))
    with pytest.raises(ValueError, match=r"holds a run with scale_range=\[256, 480\], not \[37, 69\]"):
        check_resumable(old, restored.replace(scale_range=None).resolved(), Path("runs/x"))
    # A 224 run saved before resumes under the recipe's values, which resolve to the same.
    paper = TrainConfig(data="imagefolder:/data/x").to_dict()
    paper.update(normalize="pixel-mean", test_resize=256)
    del paper["scale_range"]
    check_resumable(paper, TrainConfig(data="imagefolder:/data/x"), Path("runs/x"))
    # Small images recorded the folders' test resize of 256, which they never used.
    small = {**TrainConfig().to_dict(), "normalize": "pixel-mean", "test_resize": 256}
    del small["scale_range"]
    assert TrainConfig.from_dict(small).test_resize is None
    assert resolved_values(small)["normalize"] == "pixel-mean"


def test_a_training_crop_much_smaller_than_the_test_view_is_said_with_the_flag_that_fixes_it():
    config = TrainConfig(data="imagefolder:x", image_size=32, test_size=32, test_resize=32)
    lines = view_lines(config.replace(scale_range=[256, 480]))
    assert lines[0].startswith("training view: shorter side resized to 256-480 pixels (--scale-range)")
    assert lines[1] == (
        "warning: a training crop covers on average 0.8% of the area that the test view sees: the net trains on "
        "details and is tested on whole images; --scale-range 37 69 (the paper's ratios to --image-size 32) trains "
        "on views like the test's"
    )
    assert len(view_lines(config)) == 1  # [37, 69]: 40% of the whole image
    expected = sum((32 / s) ** 2 for s in range(37, 70)) / 33  # a side s of [37, 69], the crop (32 / s)^2 of it
    assert folder_transforms(config).crop_share() == pytest.approx(expected) == pytest.approx(0.404, abs=0.001)
    assert len(view_lines(TrainConfig(data="imagefolder:x"))) == 1  # the paper's sizes: 0.53
    assert view_lines(TrainConfig()) == []  # small images: pad-and-crop, no such views


def test_random_resized_crops_of_small_images_keep_at_least_35_percent_of_the_area():
    assert crop_area(224) == (0.08, 1.0) and crop_area(63) == (0.35, 1.0) and crop_area(64) == (0.08, 1.0)
    g = torch.Generator().manual_seed(0)
    boxes = [random_resized_box(28, 28, g, crop_area(28)) for _ in range(300)]
    shares = [h * w / 28**2 for _, _, h, w in boxes]
    assert min(shares) > 0.3 and max(shares) <= 1.0  # 0.35 of the area, up to rounding of the sides
    config = FolderTransforms(28, crop="random-resized", lighting=0.0)
    crop, _ = train_view(torch.zeros(3, 28, 28, dtype=torch.uint8), config, g)
    assert tuple(crop.shape) == (3, 28, 28)
    line = view_lines(TrainConfig(data="imagefolder:x", image_size=28, test_size=28, crop="random-resized"))[0]
    assert line.startswith("training view: a random 35-100% of the area, aspect 0.75-1.33, resized to 28x28")


def test_a_small_image_folder_trains_with_the_default_augmentation_as_well_as_without(tmp_path):
    root = folder(tmp_path / "folder")
    log = io.StringIO()
    augmented = train(folder_config(root, tmp_path / "aug"), stream=log)
    plain = train(folder_config(root, tmp_path / "plain", augment=False), stream=io.StringIO())
    first = log.getvalue().splitlines()[:3]
    assert any(
        line.startswith("training view: shorter side resized to 32-60 pixels (--scale-range), a random 28x28 crop")
        for line in first
    ), first
    # The paper's ImageNet range whatever the size (as before): 28-pixel crops of images resized to 256-480.
    before = train(folder_config(root, tmp_path / "before", scale_range=[256, 480]), stream=io.StringIO())
    errors = augmented.final["test_err"], plain.final["test_err"], before.final["test_err"]
    assert plain.final["test_err"] <= 0.1, errors
    assert augmented.final["test_err"] <= plain.final["test_err"] + 0.05, errors
    assert before.final["test_err"] >= 0.5, errors  # three classes: chance is 67%
    recorded = yaml.safe_load((augmented.run_dir / "config.yaml").read_text())
    assert (recorded["normalize"], recorded["scale_range"], recorded["test_resize"]) == ("imagenet", [32, 60], 32)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_imagenet_resnets_take_28_pixel_images_as_torchvision_and_timm_do(name):
    import torchvision

    x = torch.randn(2, 3, 28, 28)
    ours = create_model(name, num_classes=10).eval()
    theirs = getattr(torchvision.models, name)(num_classes=10).eval()
    trunk = torch.nn.Sequential(*list(theirs.children())[:-2])
    assert ours.forward_features(x).shape == trunk(x).shape == (2, ours.num_features, 1, 1)
    assert ours(x).shape == theirs(x).shape == (2, 10)
    timm = pytest.importorskip("timm")
    assert timm.create_model(name, num_classes=10).eval()(x).shape == (2, 10)


def test_the_smallest_side_is_computed_from_the_strides_and_the_side_below_it_is_refused(capsys):
    # 7x7/2 conv, 3x3/2 max-pool, three stride-2 stages: ceil(n / 2) five times; each must halve >= 2 pixels.
    net = create_model("resnet18").eval()
    assert net.min_input_size == 17
    sides = [17]
    for _ in range(5):
        sides.append(-(-sides[-1] // 2))
    assert sides == [17, 9, 5, 3, 2, 1]  # the last stride-2 layer still halves a 2x2 map
    x = net.maxpool(net.relu(net.bn1(net.conv1(torch.zeros(2, 3, 17, 17)))))
    maps = [x.shape[-1]] + [(x := layer(x)).shape[-1] for layer in (net.layer1, net.layer2, net.layer3, net.layer4)]
    assert maps == [5, 5, 3, 2, 1]
    with pytest.raises(
        ValueError, match=r"^input of shape \(2, 3, 16, 16\): expected \(batch, 3, H, W\) with H, W >= 17$"
    ):
        net(torch.zeros(2, 3, 16, 16))
    config = TrainConfig(model="resnet18", data="imagefolder:x", image_size=16, test_size=16)
    message = (
        "model resnet18 needs images of at least 17x17, not --image-size 16 and --test-size 16: give --image-size "
        "and --test-size of 17 or more"
    )
    with pytest.raises(ValueError, match=f"^{message}$"):
        build_model(config, 3, 10, (16, 16))
    assert build_model(config.replace(image_size=17, test_size=17), 3, 10, (17, 17)).min_input_size == 17


def test_the_report_does_not_count_values_resolved_from_the_data_as_overrides():
    from resnets.report.recipe import describe_recipe
    from resnets.train import get_recipe

    assert describe_recipe(get_recipe("paper-cifar", "resnet20").resolved().to_dict()) == "paper-cifar"
    imagenet = get_recipe("paper-imagenet", "resnet50").resolved().to_dict()
    assert describe_recipe(imagenet) == "paper-imagenet"
    overridden = describe_recipe({**imagenet, "scale_range": [300, 480]})
    assert overridden == "paper-imagenet, overridden: scale range 300, 480"
