"""torchvision's published weights, fetched through a fake download: never the network."""

from urllib.error import URLError

import pytest
import torch
import torchvision
from bn import randomise_bn

from resnets import create_model
from resnets.models import hub
from resnets.models.hub import published_weights, torchvision_weights


class FakeFetch:
    """Stands in for the download: the weights of a randomly initialised torchvision model."""

    def __init__(self, name: str, drop_bn_counters: bool = False) -> None:
        self.reference = randomise_bn(torchvision.models.get_model(name, weights=None))
        self.state_dict = {
            k: v
            for k, v in self.reference.state_dict().items()
            if not (drop_bn_counters and k.endswith("num_batches_tracked"))
        }
        self.calls: list = []

    def __call__(self, weights):
        self.calls.append(weights)
        return self.state_dict


def outputs_match(ours: torch.nn.Module, reference: torch.nn.Module) -> bool:
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        return (ours.eval()(x) - reference(x)).abs().max().item() <= 1e-5


def test_fetched_weights_give_torchvisions_outputs():
    # resnet18's published file (resnet18-f37072fd.pth, 2017) has no BN batch counters.
    fetch = FakeFetch("resnet18", drop_bn_counters=True)
    state_dict = torchvision_weights("resnet18", fetch=fetch)
    assert fetch.calls == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1]
    ours = create_model("resnet18", stride_at="3x3")
    ours.load_state_dict(state_dict, strict=True)
    assert outputs_match(ours, fetch.reference)


@pytest.mark.parametrize("name", ["resnet18", pytest.param("resnet50", marks=pytest.mark.slow)])
def test_create_model_with_torchvision_weights(name, monkeypatch):
    fetch = FakeFetch(name)
    monkeypatch.setattr(hub, "download", fetch)
    model = create_model(name, weights="torchvision")
    assert fetch.calls == [torchvision.models.get_model_weights(name).DEFAULT]
    assert model.model_name == name and model.config.stride_at == "3x3"
    assert len(model.class_names) == 1000 and model.class_names[:2] == ["tench", "goldfish"]
    assert outputs_match(model, fetch.reference)


def test_vgg_weights_load_unchanged(monkeypatch):
    with torch.device("meta"):  # shapes only: a VGG-16 is 138M parameters
        reference = torchvision.models.vgg16(weights=None).state_dict()
        monkeypatch.setattr(hub, "download", lambda weights: reference)
        model = create_model("vgg16", weights="torchvision")
    assert model.classifier[-1].out_features == 1000 and model.class_names[0] == "tench"


def test_offline_gives_one_line_naming_the_model_and_the_way_out():
    def offline(weights):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    with pytest.raises(ValueError, match=r"cannot download torchvision's resnet50 weights .*offline") as err:
        torchvision_weights("resnet50", fetch=offline)
    message = str(err.value)
    assert "\n" not in message
    assert "pass a local file instead, create_model('resnet50', weights='path/to/file.pth', stride_at='3x3')" in message


def test_conflicting_options_are_refused_before_any_download(monkeypatch):
    def never(weights):
        raise AssertionError("downloaded")

    monkeypatch.setattr(hub, "download", never)
    with pytest.raises(ValueError, match=r"stride_at='1x1' conflicts with weights='torchvision'.*stride_at='3x3'"):
        create_model("resnet50", weights="torchvision", stride_at="1x1")
    with pytest.raises(ValueError, match=r"num_classes=10 conflicts .* model\.reset_classifier\(10\)"):
        create_model("resnet18", weights="torchvision", num_classes=10)
    with pytest.raises(ValueError, match=r"publishes no weights that fit 'resnet20'; accepted: resnet18"):
        create_model("resnet20", weights="torchvision")


def test_published_weights_are_torchvisions_defaults():
    assert published_weights("resnet50") == torchvision.models.ResNet50_Weights.DEFAULT
    assert published_weights("wide_resnet101_2").meta["categories"][0] == "tench"


def test_the_download_checks_the_hash_and_never_unpickles_code():
    class Entry:
        def get_state_dict(self, **kwargs):
            self.kwargs = kwargs
            return {}

    entry = Entry()
    hub.download(entry)
    assert entry.kwargs["weights_only"] is True and entry.kwargs["check_hash"] is True
