"""The architectures shared with torchvision load its state dicts and give its outputs."""

import pytest
import torch
import torchvision
from bn import randomise_bn
from sizes import by_size

from resnets import create_model
from resnets.models.weights import load_state_dict, read_weights

# The spec, written out: every architecture torchvision also has (resnets.models.hub keeps its own list).
SHARED = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "vgg16",
    "vgg19",
]


@pytest.mark.parametrize("name", by_size(SHARED))
def test_torchvision_state_dict_loads_strictly_and_gives_the_same_outputs(name):
    reference = getattr(torchvision.models, name)(weights=None).eval()
    randomise_bn(reference)
    options = {} if name.startswith("vgg") else {"stride_at": "3x3"}
    ours = create_model(name, **options).eval()
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == theirs
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        diff = (ours(x) - reference(x)).abs().max().item()
    assert diff <= 1e-5


def test_data_parallel_prefix_is_stripped(tmp_path):
    reference = torchvision.models.resnet18(weights=None).eval()
    randomise_bn(reference)
    wrapped = {f"module.{k}": v for k, v in reference.state_dict().items()}
    path = tmp_path / "ddp.pth"
    torch.save(wrapped, path)
    ours = create_model("resnet18", stride_at="3x3", weights=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))


def test_wrong_architecture_is_refused_with_names_and_shapes():
    with pytest.raises(ValueError, match=r"do not fit resnet34") as err:
        load_state_dict(create_model("resnet34"), torchvision.models.resnet18(weights=None).state_dict())
    assert "missing layer1.2.conv1.weight (64, 64, 3, 3)" in str(err.value)


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        read_weights(tmp_path / "nope.pt")


def test_a_malicious_weights_file_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "created-by-unpickling"

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "weights.pth"
    torch.save({"conv1.weight": Exploit()}, evil)
    with pytest.raises(ValueError, match=r"refused: .*weights_only=True"):
        create_model("resnet20", weights=str(evil))
    assert not marker.exists()
