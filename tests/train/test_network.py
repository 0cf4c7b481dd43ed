"""Fine-tuning from trained weights: a new head, and with --freeze-backbone nothing else moves."""

import pytest
import torch
import torchvision

from resnets.train import train


@pytest.fixture
def source(tiny_config, tmp_path):
    result = train(tiny_config(out=str(tmp_path / "source"), epochs=1))
    return result, tmp_path / "source" / "model.safetensors"


def test_freeze_backbone_trains_only_the_new_head(tiny_config, tmp_path, source):
    src, weights = source
    # A new task with three classes, from weights trained on four.
    tuned = train(
        tiny_config(
            out=str(tmp_path / "tuned"), data="synthetic:1,16,16,3", init_from=str(weights), freeze_backbone=True
        )
    )
    before, after = src.model.state_dict(), tuned.model.state_dict()
    assert after["fc.weight"].shape == (3, 64)
    for k, v in after.items():
        if not k.startswith("fc."):
            assert torch.equal(v, before[k]), f"{k} changed although the backbone was frozen"


def test_init_from_without_freezing_fine_tunes_everything(tiny_config, tmp_path, source):
    src, weights = source
    tuned = train(tiny_config(out=str(tmp_path / "tuned"), init_from=str(weights), epochs=1))
    assert not torch.equal(tuned.model.layer1[0].conv1.weight, src.model.layer1[0].conv1.weight)


def test_num_classes_below_the_datasets_is_refused(tiny_config):
    with pytest.raises(ValueError, match=r"num_classes=3 is fewer than the 4 classes of synthetic:1,16,16,4"):
        train(tiny_config(num_classes=3))


def test_init_from_refuses_another_architecture(tiny_config, tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r"r18.pth does not fit resnet8: .* in the file"):
        train(tiny_config(init_from=str(path)))


def test_init_from_takes_the_model_from_the_file_and_create_model_takes_timm_s_names(tmp_path):
    from resnets import create_model
    from resnets.cli import build_parser
    from resnets.commands.train import resolve_train_config
    from resnets.train import TrainConfig, train

    source = train(TrainConfig(model="resnet14", data="synthetic:1,16,16,4", subset=64, batch_size=32, epochs=1,
                               device="cpu", out=str(tmp_path / "src")))  # fmt: skip
    args = build_parser().parse_args(["train", "--init-from", str(source.weights), "--data", "synthetic:1,16,16,4"])
    assert resolve_train_config(args).model == "resnet14"  # no --model: the file's own
    args = build_parser().parse_args(["train", "--init-from", str(source.weights), "--model", "resnet8"])
    assert resolve_train_config(args).model == "resnet8"  # --model still wins
    model = create_model("resnet20", in_chans=1)
    assert model.config.in_channels == 1 and model.get_classifier() is model.fc
    assert create_model("vgg16").get_classifier().out_features == 1000
    with pytest.raises(ValueError, match="in_chans and in_channels name the same option"):
        create_model("resnet20", in_chans=1, in_channels=3)
