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
