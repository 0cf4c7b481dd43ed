"""create_model and list_models under the names timm users write: pretrained, drop_path_rate,
features_only with out_indices, list_models(pattern, pretrained=True)."""

import pytest
import timm
import torch

from resnets import create_model, list_models
from resnets.models import hub


def test_features_only_gives_timms_maps_channels_and_strides():
    ours = create_model("resnet50", stride_at="3x3", features_only=True).eval()
    theirs = timm.create_model("resnet50", features_only=True, pretrained=False).eval()
    assert [f["num_chs"] for f in ours.feature_info] == theirs.feature_info.channels() == [64, 256, 512, 1024, 2048]
    assert [f["reduction"] for f in ours.feature_info] == theirs.feature_info.reduction() == [2, 4, 8, 16, 32]
    ours.model.load_state_dict(timm.create_model("resnet50", pretrained=False).state_dict())
    theirs.load_state_dict({k: v for k, v in ours.model.state_dict().items() if not k.startswith("fc.")})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(ours(x), theirs(x), strict=True):
            assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)


def test_out_indices_pick_maps_and_cifar_nets_keep_their_strides():
    maps = create_model("resnet20", features_only=True, out_indices=(1, 3))(torch.zeros(2, 3, 32, 32))
    assert [tuple(m.shape) for m in maps] == [(2, 16, 32, 32), (2, 64, 8, 8)]
    with pytest.raises(ValueError, match=r"out_indices=\(0, 4\): distinct indices from 0 \(the stem\) to 3"):
        create_model("resnet20", features_only=True, out_indices=(0, 4))
    with pytest.raises(ValueError, match=r"features_only needs a ResNet; vgg16 has no stages"):
        create_model("vgg16", features_only=True)


def test_drop_path_rate_and_pretrained_are_timms_names():
    assert create_model("resnet56", drop_path_rate=0.1).config.drop_path == 0.1
    with pytest.raises(ValueError, match=r"drop_rate=0\.2 is timm's dropout before the classifier"):
        create_model("resnet50", drop_rate=0.2)
    with pytest.raises(ValueError, match=r"no pretrained weights for 'resnet20'; they exist for resnet18, "):
        create_model("resnet20", pretrained=True)
    with pytest.raises(ValueError, match=r"pretrained=True and weights='w\.pth' both name weights"):
        create_model("resnet18", pretrained=True, weights="w.pth")


def test_pretrained_fetches_torchvisions_weights(monkeypatch):
    """pretrained=True goes through torchvision's weights API (here a stand-in download)."""
    import torchvision

    source = torchvision.models.resnet18()
    monkeypatch.setattr(hub, "download", lambda weights: source.state_dict())
    model = create_model("resnet18", pretrained=True).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), source.eval()(x), atol=1e-5)
    assert model.class_names[0] == "tench"


def test_list_models_with_pretrained_lists_those_with_published_weights():
    assert list_models("resnet*", pretrained=True) == ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    assert "resnet20" in list_models("resnet*") and list_models("wrn*", pretrained=True) == []
