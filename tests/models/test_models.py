"""Every registered model builds, runs, learns; options change the network as the paper says."""

import math

import pytest
import torch
from sizes import by_size
from torch import nn

from resnets import create_model, list_models
from resnets.models import BasicBlock, Bottleneck, ZeroPadShortcut, cifar_resnet, model_entry
from resnets.paper import FOLLOWUP_PARAMS_M, TABLE6_PARAMS_M, TORCHVISION_PARAMS


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def small_input(name: str, batch: int = 2) -> torch.Tensor:
    side = 32 if model_entry(name).family == "cifar" or name.startswith("vgg") else 64
    return torch.randn(batch, 3, side, side)


@pytest.mark.parametrize("name", by_size(list_models()))
def test_every_model_runs_and_every_parameter_learns(name):
    model = create_model(name, num_classes=7)
    out = model(small_input(name))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}.{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}.{pname} got an all-zero gradient"


def test_registry_holds_every_architecture_of_the_issue():
    expected = {
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "plain18",
        "plain34",
        "plain50",
        "plain101",
        "plain152",
        "vgg16",
        "vgg19",
        "resnext50_32x4d",
        "resnext101_32x8d",
        "wide_resnet50_2",
        "wide_resnet101_2",
        "preact_resnet18",
        "preact_resnet34",
        "preact_resnet50",
        "preact_resnet101",
        "preact_resnet152",
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "resnet110",
        "resnet1202",
        "plain20",
        "plain32",
        "plain44",
        "plain56",
        "plain110",
        "preact_resnet110",
        "preact_resnet164",
        "preact_resnet1001",
        "wrn16_4",
        "wrn28_10",
        "wrn40_4",
    }
    assert set(list_models()) == expected


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_counts_equal_torchvision_to_the_unit(name):
    with torch.device("meta"):
        assert n_params(create_model(name)) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", sorted(TABLE6_PARAMS_M))
def test_cifar_parameter_counts_match_table6(name):
    params_m = n_params(create_model(name)) / 1e6
    paper = TABLE6_PARAMS_M[name]
    decimals = len(str(paper).split(".")[1])
    assert round(params_m, decimals) == paper


@pytest.mark.parametrize("name", sorted(FOLLOWUP_PARAMS_M))
def test_followup_parameter_counts_match_their_papers(name):
    with torch.device("meta"):
        params_m = n_params(create_model(name)) / 1e6
    # The papers print one decimal (1.7M, 10.2M), so 2% is the precision they give.
    assert params_m == pytest.approx(FOLLOWUP_PARAMS_M[name], rel=0.02)


def test_plain_and_residual_cifar_nets_have_the_same_parameters_with_option_a():
    for depth in (20, 56, 110):
        assert n_params(create_model(f"plain{depth}")) == n_params(create_model(f"resnet{depth}"))


def test_depth_counts_weighted_layers_as_the_paper():
    assert create_model("resnet56").config.depth == 56
    assert create_model("resnet152").config.depth == 152
    assert create_model("plain34").config.depth == 34
    assert create_model("preact_resnet164").config.depth == 164
    assert create_model("resnet38").config.depth == 38


def test_any_6n_plus_2_depth_builds_by_name():
    model = create_model("plain74")
    assert model.config.layers == (12, 12, 12) and model.config.shortcut is None
    assert model.model_name == "plain74"


# --------------------------------------------------------------------------- shortcuts


def test_option_a_is_parameter_free_zero_padding():
    x = torch.randn(2, 16, 8, 8)
    out = ZeroPadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, 16:]) == 0


def _shortcut_kinds(model):
    kinds = []
    for m in model.modules():
        if isinstance(m, BasicBlock | Bottleneck):
            d = m.downsample
            kinds.append("id" if d is None else "pad" if isinstance(d, ZeroPadShortcut) else "proj")
    return kinds


def test_options_a_b_c_place_projections_as_described():
    a = create_model("resnet34", shortcut="A")
    b = create_model("resnet34", shortcut="B")
    c = create_model("resnet34", shortcut="C")
    # Three stages change shape (layer2..4, first block); all other 13 blocks keep it.
    assert _shortcut_kinds(a).count("pad") == 3 and _shortcut_kinds(a).count("id") == 13
    assert _shortcut_kinds(b).count("proj") == 3 and _shortcut_kinds(b).count("id") == 13
    assert _shortcut_kinds(c) == ["proj"] * 16
    # Table 3: A has no extra parameters; B adds the three projections; C adds one per block.
    assert n_params(a) == n_params(create_model("plain34"))
    # Each projection is a 1x1 conv (in x out weights) and a BN (2 x out): 64->128, 128->256, 256->512.
    projections = sum(c_in * c_out + 2 * c_out for c_in, c_out in ((64, 128), (128, 256), (256, 512)))
    assert n_params(b) - n_params(a) == projections
    assert n_params(c) > n_params(b)


def test_plain_blocks_ignore_the_identity_and_residual_blocks_add_it():
    x = torch.rand(1, 16, 8, 8)  # non-negative, so relu(x) == x
    residual = cifar_resnet(20).layer1[0].eval()
    plain = cifar_resnet(20, plain=True).layer1[0].eval()
    for block in (residual, plain):
        nn.init.zeros_(block.conv2.weight)  # F(x) = BN(0) = 0: the block must pass x or nothing
    assert torch.allclose(residual(x), x)
    assert torch.count_nonzero(plain(x)) == 0


def test_zero_init_residual_makes_each_block_the_identity():
    model = create_model("resnet50", zero_init_residual=True).eval()
    block = model.layer1[1]  # an identity-shortcut block
    assert torch.count_nonzero(block.bn3.weight) == 0
    x = torch.rand(1, 256, 8, 8)
    assert torch.allclose(block(x), x)
    preact = create_model("preact_resnet18", zero_init_residual=True).eval()
    assert torch.count_nonzero(preact.layer1[0].conv2.weight) == 0
    x = torch.randn(1, 64, 8, 8)
    assert torch.allclose(preact.layer1[1](x), x)


def test_stride_placement_moves_the_downsampling_conv():
    paper = create_model("resnet50")  # the paper's default
    v15 = create_model("resnet50", stride_at="3x3")
    assert paper.layer2[0].conv1.stride == (2, 2) and paper.layer2[0].conv2.stride == (1, 1)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    x = torch.randn(1, 3, 64, 64)
    assert paper(x).shape == v15(x).shape


def test_resnext_and_wide_bottlenecks_have_the_published_widths():
    x50 = create_model("resnext50_32x4d")
    assert x50.layer1[0].conv2.groups == 32 and x50.layer1[0].conv2.in_channels == 128
    wide = create_model("wide_resnet50_2")
    assert wide.layer1[0].conv2.in_channels == 128 and wide.layer4[0].conv3.out_channels == 2048


# --------------------------------------------------------------------------- initialisation


def test_he_init_has_the_papers_std():
    conv = create_model("resnet18").layer3[0].conv2  # 3x3, 256 -> 256
    expected = math.sqrt(2.0 / (3 * 3 * conv.out_channels))
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.02)


def test_xavier_init_is_glorot_uniform():
    model = create_model("resnet18", init="xavier")
    conv = model.layer3[0].conv2
    bound = math.sqrt(6.0 / (2 * 3 * 3 * 256))
    assert conv.weight.abs().max().item() <= bound
    assert conv.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert torch.count_nonzero(model.fc.bias) == 0


def test_bn_starts_at_unit_scale_and_zero_shift():
    bn = create_model("resnet20").layer2[1].bn1
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.count_nonzero(bn.bias) == 0


# --------------------------------------------------------------------------- interface


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet20", "preact_resnet164", "wrn40_4", "vgg16"])
def test_timm_style_interface(name):
    model = create_model(name).eval()
    x = small_input(name, 1)
    feats = model.forward_features(x)
    pooled = model.forward_head(feats, pre_logits=True)
    assert pooled.shape == (1, model.num_features)
    assert torch.equal(model.forward_head(feats), model(x))
    model.reset_classifier(5)
    assert model(x).shape == (1, 5) and model.num_classes == 5


def test_forward_intermediates_give_strides_4_to_32():
    maps = create_model("resnet50").forward_intermediates(torch.randn(1, 3, 128, 128))
    assert [m.shape[-1] for m in maps.values()] == [32, 16, 8, 4]
    assert [m.shape[1] for m in maps.values()] == [256, 512, 1024, 2048]


def test_cifar_nets_take_fashion_mnist_shapes():
    model = create_model("resnet20", in_channels=1).eval()
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert model(torch.randn(1, 1, 8, 8)).shape == (1, 10)


def test_num_classes_zero_returns_features():
    model = create_model("resnet18", num_classes=0)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 512)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "fragments"),
    [
        (lambda: create_model("resnet9000x"), ["'resnet9000x'", "resnet50", "wrn28_10"]),
        (lambda: create_model("resnet18", shortcut="D"), ["'D'", "one of A, B, C"]),
        (lambda: create_model("resnet50", stride_at="2x2"), ["'2x2'", "one of 1x1, 3x3"]),
        (lambda: create_model("resnet50", init="orthogonal"), ["'orthogonal'", "one of he, xavier"]),
        (lambda: create_model("resnet21"), ["resnet21", "6n+2"]),
        (lambda: cifar_resnet(21), ["21", "6n+2"]),
        (lambda: create_model("plain20", shortcut="B"), ["shortcut", "plain"]),
        (lambda: create_model("resnet20", dropout=0.5), ["dropout=0.5", "pre-activation basic blocks"]),
        (lambda: create_model("wrn28_10", dropout=1.0), ["dropout=1.0", "[0, 1)"]),
        (lambda: create_model("resnet20", num_classes=-1), ["num_classes=-1"]),
        (lambda: create_model("vgg16", shortcut="A"), ["'shortcut'", "dropout"]),
        (lambda: create_model("plain20", zero_init_residual=True), ["zero_init_residual"]),
    ],
)
def test_bad_options_name_the_value_and_the_accepted_ones(call, fragments):
    with pytest.raises(ValueError) as err:
        call()
    for fragment in fragments:
        assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("name", "shape", "fragment"),
    [
        ("resnet20", (1, 3, 7, 7), ">= 8"),
        ("resnet18", (1, 3, 16, 16), ">= 17"),
        ("resnet20", (1, 1, 32, 32), "(batch, 3"),
    ],
)
def test_bad_input_shapes_are_named(name, shape, fragment):
    with pytest.raises(ValueError, match=r"input of shape") as err:
        create_model(name)(torch.randn(*shape))
    assert fragment in str(err.value) and str(shape) in str(err.value)


def test_blocks_take_only_the_options_their_kind_has():
    import inspect

    from resnets.models import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, ResNetConfig

    for block in (BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck):
        params = list(inspect.signature(block.__init__).parameters)
        assert params[1:5] == ["in_planes", "planes", "stride", "downsample"], block  # torchvision's order
        assert ("stride_at" in params) == ("Bottleneck" in block.__name__), block
        assert ("groups" in params) == ("Bottleneck" in block.__name__), block
    # A basic-block net with groups would have built groups=1 convolutions under a config saying 32.
    with pytest.raises(ValueError, match=r"groups=32, width_per_group=64: preact_basic blocks take only groups=1"):
        ResNetConfig(block="preact_basic", groups=32)
    with pytest.raises(ValueError, match="pre-activation blocks need a shortcut"):
        ResNetConfig(block="preact_bottleneck", shortcut=None)
    model = create_model("resnext50_32x4d")
    assert model.layer1[0].conv2.groups == 32 and isinstance(model.layer2[0].downsample[1], torch.nn.BatchNorm2d)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_offers_the_model_interface(name):
    from resnets.models.registry import Model

    with torch.device("meta"):
        model = create_model(name)
    assert isinstance(model, Model), name
    assert model.model_name == name and model.in_channels == 3 and model.num_classes > 0
    assert model.get_classifier().out_features == model.num_classes


def test_a_network_is_named_at_construction():
    """The name is the builder's, given to the network's constructor: never attached afterwards."""
    from resnets.models import cifar, resnet, vgg
    from resnets.models.registry import build

    with torch.device("meta"):
        assert resnet.resnet18().model_name == "resnet18" and vgg.vgg16().model_name == "vgg16"
        assert cifar.cifar_resnet(38).model_name == "resnet38" and cifar.cifar_resnet(50).model_name == "cifar_resnet50"
        assert cifar.wide_resnet(16, 2).model_name == "wrn16_2"
        assert build("plain74").model_name == "plain74"
        assert resnet.ResNet(resnet.ResNetConfig(layers=(1, 1), widths=(4, 8))).model_name == "custom"
    with pytest.raises(ValueError, match="model_name='x' is not an option: the network is named 'resnet20'"):
        build("resnet20", model_name="x")
