"""Parameters and multiply-adds: the paper's Table 1, torchvision's counts, PyTorch's own counter."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from resnets import create_model
from resnets.analysis import complexity
from resnets.paper import TABLE1_GMACS, TORCHVISION_PARAMS


@pytest.mark.parametrize("name", sorted(TABLE1_GMACS))
def test_table1_multiply_adds_within_3_percent(name):
    assert complexity(name).gmacs == pytest.approx(TABLE1_GMACS[name], rel=0.03)


def test_stride_on_the_3x3_costs_what_torchvision_reports():
    # torchvision's model cards: ResNet-50 (v1.5) 4.089 GFLOPS, ResNet-18 1.814.
    assert round(complexity("resnet50", stride_at="3x3").gmacs, 3) == 4.089
    assert round(complexity("resnet18").gmacs, 3) == 1.814
    assert complexity("resnet50").macs < complexity("resnet50", stride_at="3x3").macs


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("resnet50", (3, 64, 64)),
        ("resnet20", (3, 32, 32)),
        ("resnext50_32x4d", (3, 64, 96)),
        ("preact_resnet164", (1, 28, 28)),
        ("wrn40_4", (3, 32, 32)),
        ("vgg16", (3, 32, 32)),
        ("plain34", (3, 64, 64)),
        ("resnet34", (3, 64, 64)),
    ],
)
def test_analytic_count_equals_pytorch_flop_counter(name, size):
    options = {"in_channels": size[0]}
    model = create_model(name, shortcut="A", **options) if name == "resnet34" else create_model(name, **options)
    ours = complexity(model, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.randn(1, *size))
    assert 2 * ours.macs == counter.get_total_flops()  # the counter counts a multiply-add as 2 FLOPs
    assert ours.params == sum(p.numel() for p in model.parameters())


def test_stages_add_up_and_have_the_papers_output_sizes():
    cost = complexity("resnet34")
    assert [s.name for s in cost.stages] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert sum(s.macs for s in cost.stages) == cost.macs
    assert sum(s.params for s in cost.stages) == cost.params == TORCHVISION_PARAMS["resnet34"]
    # Table 1's output sizes: conv2_x 56x56 ... conv5_x 7x7.
    assert [s.output_shape for s in cost.stages[1:5]] == [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]


def test_cifar_cost_follows_the_input_size():
    full = complexity("resnet20")
    fashion = complexity("resnet20", (1, 28, 28))
    assert fashion.input_size == (1, 28, 28)
    assert fashion.macs < full.macs
    assert fashion.params == full.params - 2 * 16 * 9  # the stem sees one channel instead of three


def test_counting_a_built_model_leaves_it_untouched():
    model = create_model("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    complexity(model, (3, 32, 32))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).device.type == "cpu"


def test_bad_input_size_is_named():
    with pytest.raises(ValueError, match=r"input size \(3, 0, 32\)"):
        complexity("resnet20", (3, 0, 32))
