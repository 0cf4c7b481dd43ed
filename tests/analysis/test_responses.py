"""Layer responses (the paper's Fig. 7): which layers are measured, the values, and trained checkpoints."""

import json

import matplotlib.image
import pytest
import torch
from torch import nn

import resnets.analysis.responses as responses
from resnets import create_model
from resnets.analysis.plots import plot_responses
from resnets.analysis.responses import layer_responses, response_layers, responses_for_checkpoints
from resnets.models import ResNet, ResNetConfig, cifar_preact_resnet
from resnets.train import TrainConfig, train

DATA = "synthetic:1,16,16,4"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("responses") / "run"
    train(TrainConfig(model="resnet8", data=DATA, subset=128, batch_size=32, epochs=1, device="cpu", out=str(out)))
    return out


def images(n=32, size=16):
    return torch.randn(n, 1, size, size)


@pytest.mark.parametrize(("name", "count"), [("resnet20", 19), ("plain20", 19), ("resnet8", 7), ("resnet18", 16)])
def test_one_response_per_3x3_conv_with_bn(name, count):
    # CIFAR nets: the stem and both convs of every block; ImageNet nets' 7x7 stem is not a 3x3 layer.
    with torch.device("meta"):
        model = create_model(name)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(response_layers(model)) == len(convs) == count


def test_bottlenecks_are_measured_at_their_3x3_only():
    model = ResNet(ResNetConfig(block="bottleneck", layers=(1, 2), widths=(4, 8), stem="cifar", stem_width=16))
    assert [name for name, _ in response_layers(model)] == ["bn1", "layer1.0.bn2", "layer2.0.bn2", "layer2.1.bn2"]


def test_the_std_is_that_of_the_bn_output_before_the_relu():
    model = create_model("resnet20", in_channels=1)
    x = images(40)
    responses = layer_responses(model, x, batch_size=16)  # three batches, combined
    model.eval()
    with torch.no_grad():
        stem = model.bn1(model.conv1(x))
        block = model.layer1[0]
        first = block.bn1(block.conv1(torch.relu(stem)))
    assert responses.layers[0].name == "bn1" and responses.pooling == "channel"
    # By default: each channel's std over images and positions, averaged over the channels.
    per_channel = stem.std(dim=(0, 2, 3), correction=0).mean().item()
    assert responses.layers[0].std == pytest.approx(per_channel, rel=1e-5)
    assert responses.layers[1].std == pytest.approx(first.std(dim=(0, 2, 3), correction=0).mean().item(), rel=1e-5)
    assert responses.n_images == 40 and model.training is False
    pooled = layer_responses(model, x, batch_size=16, pooling="pooled")  # one std over everything
    assert pooled.layers[0].std == pytest.approx(stem.std(correction=0).item(), rel=1e-5)
    assert pooled.layers[1].std == pytest.approx(first.std(correction=0).item(), rel=1e-5)
    assert abs(pooled.layers[0].std - per_channel) > 1e-3  # the channels' means differ: the readings do too
    with pytest.raises(ValueError, match="pooling='mean' is not one of channel, pooled"):
        layer_responses(model, x, pooling="mean")


def test_scaling_the_last_bn_scales_its_response():
    model = create_model("resnet20", in_channels=1).train()
    x = images()
    before = layer_responses(model, x)
    with torch.no_grad():
        model.layer3[-1].bn2.weight.mul_(0.1)
    after = layer_responses(model, x)
    assert model.training  # the mode is restored
    assert after.layers[-1].name == "layer3.2.bn2"
    assert after.layers[-1].std == pytest.approx(0.1 * before.layers[-1].std, rel=1e-5)
    assert [r.std for r in after.layers[:-1]] == [r.std for r in before.layers[:-1]]


def test_sorted_is_the_stds_largest_first_and_to_dict_is_json_ready():
    responses = layer_responses(create_model("plain20", in_channels=1), images())
    stds = [layer.std for layer in responses.layers]
    assert responses.sorted == sorted(stds, reverse=True)
    d = json.loads(json.dumps(responses.to_dict()))
    assert d["model"] == "plain20" and d["plain"] is True and d["depth"] == 20
    assert [la["index"] for la in d["layers"]] == list(range(1, 20))
    assert d["sorted"] == responses.sorted


def test_nets_without_fig7_layers_are_refused():
    with pytest.raises(ValueError, match="pre-activation blocks"):
        layer_responses(cifar_preact_resnet(8, in_channels=1), images())
    with torch.device("meta"):
        vgg = create_model("vgg16")
    with pytest.raises(ValueError, match="vgg16 has no 3x3 conv followed by BN"):
        response_layers(vgg)


def test_responses_of_a_trained_checkpoint(run):
    (ours,) = responses_for_checkpoints([run / "checkpoints" / "last.pt"], n_images=100)
    assert ours.model == "resnet8" and ours.n_images == 100 and len(ours.layers) == 7
    assert all(layer.std > 0 for layer in ours.layers)
    (exported,) = responses_for_checkpoints([run / "model.safetensors"], data=DATA, n_images=100)
    assert [r.std for r in exported.layers] == pytest.approx([r.std for r in ours.layers], rel=1e-5)


def test_a_checkpoint_is_refused_data_of_another_shape(run):
    path = run / "checkpoints" / "last.pt"
    with pytest.raises(
        ValueError,
        match=r"last\.pt was trained on synthetic:1,16,16,4 of shape \(1, 16, 16\), but "
        r"synthetic:3,16,16,4 gives \(3, 16, 16\)",
    ):
        responses_for_checkpoints([path], data="synthetic:3,16,16,4")
    with pytest.raises(ValueError, match=r"synthetic:1,20,20,4 gives \(1, 20, 20\)"):
        responses_for_checkpoints([path], data="synthetic:1,20,20,4")


def test_a_vgg_checkpoint_is_refused_before_any_data_is_read(monkeypatch):
    with torch.device("meta"):
        vgg = create_model("vgg16")
    meta = {"model_name": "vgg16", "config": {"data": "no-such-dataset"}}
    monkeypatch.setattr(responses, "model_from_checkpoint", lambda path: (vgg, meta))
    with pytest.raises(ValueError, match="vgg16 has no 3x3 conv followed by BN"):
        responses_for_checkpoints(["vgg.pt"])


def test_plot_responses_writes_a_png(tmp_path):
    results = [layer_responses(create_model(n, in_channels=1), images()) for n in ("plain8", "resnet8", "resnet14")]
    path = plot_responses([results[0], results[1].to_dict(), results[2]], tmp_path / "figs" / "fig7.png")
    assert path.stat().st_size > 0
    assert matplotlib.image.imread(path).shape[0] > 0
