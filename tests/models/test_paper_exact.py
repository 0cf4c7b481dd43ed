"""Each family as its own paper builds it: where the stride sits, which net a depth names, where a unit activates."""

import json
from types import SimpleNamespace

import pytest
import torch

from resnets import create_model
from resnets.analysis import complexity
from resnets.cli import main
from resnets.models.cifar import cifar_name, cifar_preact_resnet
from resnets.paper import FOLLOWUP_GMACS, FOLLOWUP_PARAMS_M


@pytest.mark.parametrize("name", ["resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2"])
def test_resnext_and_wide_nets_downsample_in_the_3x3_by_default(name):
    with torch.device("meta"):
        model = create_model(name)
    first = model.layer2[0]
    assert (first.conv1.stride, first.conv2.stride) == ((1, 1), (2, 2))
    assert model.config.stride_at == "3x3"
    with torch.device("meta"):
        assert create_model(name, stride_at="1x1").layer2[0].conv1.stride == (2, 2)  # still an option


def test_resnext50_counts_its_paper_s_4_2_gflops_and_the_cli_shows_both(capsys):
    assert round(complexity("resnext50_32x4d").gmacs, 3) == 4.230  # 3.768 with the stride on the 1x1
    assert complexity("resnext50_32x4d").gmacs == pytest.approx(FOLLOWUP_GMACS["resnext50_32x4d"], rel=0.01)
    assert main(["flops", "resnext50_32x4d", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["paper_gmacs"], result["paper_params_m"]) == (4.2, 25.0)
    assert main(["flops", "wide_resnet50_2"]) == 0
    out = capsys.readouterr().out
    assert "paper (Zagoruyko and Komodakis 2016, ImageNet table): 68.9M parameters; this count 68.88M" in out
    assert complexity("wide_resnet50_2").params / 1e6 == pytest.approx(FOLLOWUP_PARAMS_M["wide_resnet50_2"], abs=0.05)


def test_degradation_depths_always_name_the_cifar_family(monkeypatch, tmp_path):
    import resnets.experiments.degradation as degradation

    assert (cifar_name("resnet", 56), cifar_name("plain", 50), cifar_name("resnet", 152)) == (
        "resnet56",
        "cifar_plain50",
        "cifar_resnet152",
    )
    with torch.device("meta"):
        net = create_model("cifar_resnet50")
    assert (net.config.stem, net.config.layers, net.config.shortcut) == ("cifar", (8, 8, 8), "A")
    trained = []

    def fake_train(config, stream=None):
        trained.append(config.model)
        with torch.device("meta"):
            model = create_model(config.model)
        record = {"epoch": 1, "step": 1, "train_err": 0.5, "test_err": 0.5, "elapsed": 1.0}
        return SimpleNamespace(final=record, history=[record], seconds=1.0, model=model)

    monkeypatch.setattr(degradation, "train", fake_train)
    monkeypatch.setattr(degradation, "write_outputs", lambda *args: None)
    summary = degradation.run_degradation("fashion-mnist", [50, 56], out=tmp_path / "exp")
    assert trained == ["cifar_plain50", "cifar_resnet50", "plain56", "resnet56"]
    assert summary["cifar_resnet50"]["depth"] == 50 and summary["cifar_resnet50"]["params"] < 1_000_000


def test_the_first_pre_activation_unit_activates_before_the_split():
    # He et al. 2016b, section 4.1: "we adopt the first activation right after conv1 and before
    # splitting into two paths". The identity path carries BN-ReLU(stem), not the raw stem output.
    model = cifar_preact_resnet(14, in_channels=1).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # statistics far from (0, 1), so BN-ReLU changes x
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 1, 16, 16)
    unit = model.layer1[0]
    with torch.no_grad():
        stem = model.conv1(x)
        activated = unit.relu(unit.bn1(stem))
        residual = unit.conv2(unit.relu(unit.bn2(unit.conv1(activated))))
        out = unit(stem.clone())
        torch.testing.assert_close(out, residual + activated, rtol=0, atol=1e-6)
        assert (out - (residual + stem)).abs().max() > 0.1
        second = model.layer1[1]  # every later unit: the identity carries its raw input
        a = second.relu(second.bn1(out))
        expected = second.conv2(second.relu(second.bn2(second.conv1(a)))) + out
        torch.testing.assert_close(second(out.clone()), expected, rtol=0, atol=1e-6)


def test_the_imagenet_pre_activation_stem_is_conv_bn_relu_maxpool():
    # The paper's code (fb.resnet.torch, preresnet.lua): conv 7x7, BN, ReLU, max-pool; the first
    # unit then has no activation of its own, and its identity carries the activated map.
    model = create_model("preact_resnet18").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        torch.testing.assert_close(model.forward_stem(x), expected, rtol=0, atol=0)
        unit = model.layer1[0]
        assert unit.bn1 is None
        residual = unit.conv2(unit.relu(unit.bn2(unit.conv1(expected))))
        torch.testing.assert_close(unit(expected.clone()), residual + expected, rtol=0, atol=1e-6)
    # The BN moved from the first unit into the stem: the parameter count is unchanged.
    assert sum(p.numel() for p in model.parameters()) == 11_687_720
