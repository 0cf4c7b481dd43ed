"""Gradient flow: the measured norms are the real gradients, and they show what the shortcuts do."""

import copy
import json
import math

import matplotlib.image
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnets import create_model
from resnets.analysis.gradflow import gradient_flow, gradient_flow_for
from resnets.analysis.plots import plot_gradient_flow
from resnets.models import ResNet, ResNetConfig, cifar_preact_resnet


def small_bottleneck_net() -> ResNet:
    """Paper bottlenecks (1x1, 3x3, 1x1) with a projection shortcut where the shape changes."""
    return ResNet(
        ResNetConfig(block="bottleneck", layers=(1, 2), widths=(4, 8), stem="cifar", stem_width=16, in_channels=1)
    )


def vgg_like() -> nn.Module:
    """VGG's pattern (conv, in-place ReLU, pool) at a size a test can afford."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
    )


NETS = {
    "plain8": lambda: create_model("plain8", in_channels=1),
    "resnet8-A": lambda: create_model("resnet8", in_channels=1),
    "resnet8-B": lambda: create_model("resnet8", in_channels=1, shortcut="B"),
    "bottleneck": small_bottleneck_net,
    "preact8": lambda: cifar_preact_resnet(8, in_channels=1),
    "preact-bottleneck11": lambda: cifar_preact_resnet(11, bottleneck=True, in_channels=1),
    "vgg-like": vgg_like,
}


def batch(n=16, size=16):
    return torch.randn(n, 1, size, size), torch.randint(0, 10, (n,))


def first_last(name, images, labels, weights=False):
    flow = gradient_flow(create_model(name, in_channels=1), images, labels)
    return flow.first_last_weight_ratio if weights else flow.first_last_ratio


def test_plain_gradients_grow_by_orders_of_magnitude_with_depth_residual_ones_do_not():
    # The gradient reaching the first layer over that reaching the last (RMS per element). Over seeds
    # 0-9 at this size (2-core CPU): plain8 3.4-3.7, plain44 1,010-1,680, resnet8 3.1-3.4, resnet44 20-24.
    images, labels = batch(64)
    plain8, plain44 = first_last("plain8", images, labels), first_last("plain44", images, labels)
    resnet8, resnet44 = first_last("resnet8", images, labels), first_last("resnet44", images, labels)
    assert plain44 / plain8 > 50
    assert resnet44 / resnet8 < 20
    assert resnet44 < 40
    assert plain44 > 10 * resnet44
    # The weight gradients tell the same story (an H200 gave plain-20 8.9, plain-56 1,950; ResNet-20 3.0,
    # ResNet-56 9.4). Over seeds 0-9 here: plain8 1.4-1.9, plain44 245-700, resnet8 1.2-1.7, resnet44 8-13.
    plain8, plain44 = first_last("plain8", images, labels, True), first_last("plain44", images, labels, True)
    resnet8, resnet44 = first_last("resnet8", images, labels, True), first_last("resnet44", images, labels, True)
    assert plain44 / plain8 > 50 and resnet44 / resnet8 < 20 and resnet44 < 20


@pytest.mark.parametrize("name", sorted(NETS))
def test_layer_norms_are_the_gradients_of_a_plain_backward_pass(name):
    model = NETS[name]()
    images, labels = batch()
    flow = gradient_flow(model, images, labels)
    model.train()
    images.requires_grad_(True)
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    modules = dict(model.named_modules())
    weighted = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert sorted(layer.name for layer in flow.layers) == sorted(weighted)
    for layer in flow.layers:
        assert layer.weight_grad_norm == pytest.approx(modules[layer.name].weight.grad.norm().item(), rel=1e-5)
        assert layer.input_grad_rms > 0
    # The gradient reaching the first layer is that of the images: its RMS per element.
    rms = images.grad.norm().item() / images.numel() ** 0.5
    assert flow.layers[0].input_grad_rms == pytest.approx(rms, rel=1e-5)
    assert flow.loss == pytest.approx(loss.item(), rel=1e-6)
    counted = [layer.depth for layer in flow.layers if layer.depth is not None]
    assert counted == list(range(1, len(counted) + 1))
    if isinstance(model, ResNet):
        assert len(counted) == model.config.depth
        assert [b.name for b in flow.blocks] == [
            f"{s}.{i}" for s in model.stage_names for i in range(len(model.get_submodule(s)))
        ]
        assert all(b.output_grad_rms > 0 and b.input_grad_rms > 0 for b in flow.blocks)


@pytest.mark.parametrize("name", sorted(NETS))
def test_in_place_relus_do_not_change_what_is_measured(name):
    model = NETS[name]()
    copied = copy.deepcopy(model)
    for m in copied.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    images, labels = batch()
    ours, reference = gradient_flow(model, images, labels).to_dict(), gradient_flow(copied, images, labels).to_dict()
    for key in ("layers", "blocks"):
        assert len(ours[key]) == len(reference[key])
        for a, b in zip(ours[key], reference[key], strict=True):
            assert a["name"] == b["name"]
            measured = [k for k in a if k.endswith(("norm", "rms"))]
            assert [a[k] for k in measured] == pytest.approx([b[k] for k in measured], rel=1e-5)


def test_a_block_with_a_zero_residual_passes_the_gradient_unchanged():
    # y = relu(0 + x) = x for the non-negative x a block receives, so dL/dx = dL/dy * (x > 0). The
    # last block's output gradient (from the pooling) is not yet masked by x > 0, so it is left out;
    # option A blocks only drop the zero gradients of their padded channels and skipped positions:
    # the same norm over twice as many elements, so their per-element gain is 1/sqrt(2).
    model = create_model("resnet14", in_channels=1, zero_init_residual=True)
    flow = gradient_flow(model, *batch())
    identity = [b for b in flow.blocks[:-1] if model.get_submodule(b.name).downsample is None]
    assert [b.name for b in identity] == ["layer1.0", "layer1.1", "layer2.1"]
    assert all(b.gain == 1.0 for b in identity)
    transitions = [b for b in flow.blocks[:-1] if b not in identity]
    assert [b.name for b in transitions] == ["layer2.0", "layer3.0"]
    assert all(b.gain == pytest.approx(2**-0.5, rel=1e-6) for b in transitions)
    assert flow.blocks[-1].gain < 1.0


def test_a_pre_activation_block_with_a_zero_residual_is_the_identity_for_the_gradient():
    model = cifar_preact_resnet(14, in_channels=1, zero_init_residual=True)
    flow = gradient_flow(model, *batch())
    # The first unit activates before its split (He et al. 2016b, section 4.1), so it is BN-ReLU, not the identity.
    units = {b.name: model.get_submodule(b.name) for b in flow.blocks}
    identity = [b for b in flow.blocks if units[b.name].downsample is None and units[b.name].entry == "preact"]
    assert len(identity) == 3
    assert all(b.gain == 1.0 for b in identity)


def test_the_model_is_left_as_it_was():
    model = create_model("resnet8", in_channels=1, shortcut="B").eval()
    images, labels = batch()
    F.cross_entropy(model(images), labels).backward()
    model.fc.weight.grad = None
    model.layer1[0].conv1.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    gradient_flow(model, images, labels)
    assert not model.training
    assert not model.layer1[0].conv1.weight.requires_grad
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights and BN running statistics
    for n, p in model.named_parameters():
        assert (p.grad is None) == (grads[n] is None), n
        assert p.grad is None or torch.equal(p.grad, grads[n]), n


def test_to_dict_is_json_ready():
    flow = gradient_flow(create_model("resnet8", in_channels=1), *batch())
    d = json.loads(json.dumps(flow.to_dict()))
    assert d["model"] == "resnet8" and d["plain"] is False and d["depth"] == 8
    assert d["first_last_ratio"] == pytest.approx(d["layers"][0]["input_grad_rms"] / d["layers"][-2]["input_grad_rms"])
    assert d["first_last_weight_ratio"] == pytest.approx(
        d["layers"][0]["weight_grad_norm"] / d["layers"][-2]["weight_grad_norm"]
    )
    assert [la["kind"] for la in d["layers"]] == ["conv"] * 7 + ["linear"]
    assert d["blocks"][0].keys() == {"name", "index", "residual", "output_grad_rms", "input_grad_rms", "gain"}
    assert math.isfinite(d["loss"])


def test_gradient_flow_for_a_name_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a = gradient_flow_for("plain8", data="synthetic:1,16,16,4", batch_size=32, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    b = gradient_flow_for("plain8", data="synthetic:1,16,16,4", batch_size=32, seed=3)
    c = gradient_flow_for("plain8", data="synthetic:1,16,16,4", batch_size=32, seed=4)
    assert a.to_dict() == b.to_dict() != c.to_dict()
    assert a.model == "plain8" and a.plain and len(a.layers) == 8


def test_gradient_flow_for_a_checkpoint_uses_its_dataset_and_refuses_other_shapes(monkeypatch, tmp_path):
    import resnets.analysis.gradflow as gradflow

    trained = create_model("resnet8", in_channels=1, num_classes=4)
    from resnets.train.config import TrainConfig

    meta = {"model_name": "resnet8", "config": TrainConfig(data="synthetic:1,16,16,4").to_dict()}
    monkeypatch.setattr(gradflow, "model_from_checkpoint", lambda path: (copy.deepcopy(trained).eval(), meta))
    path = tmp_path / "last.pt"
    flow = gradient_flow_for(path, batch_size=32)
    from resnets.data import load_dataset

    images, labels = next(iter(load_dataset("synthetic:1,16,16,4", batch_size=32, augment=False).train.epoch(0)))
    assert flow.to_dict() == {**gradient_flow(trained, images, labels).to_dict(), "weights": "trained"}
    with pytest.raises(ValueError, match=r"last\.pt takes \(1, H, W\).*synthetic:3,16,16,4 gives \(3, 16, 16\)"):
        gradient_flow_for(path, data="synthetic:3,16,16,4")
    with pytest.raises(ValueError, match="4 outputs, but synthetic:1,16,16,10 has 10 classes"):
        gradient_flow_for(path, data="synthetic:1,16,16,10")


def test_plot_gradient_flow_writes_a_png(tmp_path):
    images, labels = batch()
    plain, residual = (gradient_flow(create_model(n, in_channels=1), images, labels) for n in ("plain8", "resnet14"))
    path = plot_gradient_flow([plain, residual.to_dict()], tmp_path / "figs" / "gradflow.png")  # JSON records too
    assert path.stat().st_size > 0
    assert matplotlib.image.imread(path).shape[0] > 0
