"""Departures from the papers made exact, or options: wide-ResNet dropout, fc init, warm-up, multi-scale views."""

import math

import pytest
import torch

from resnets import create_model
from resnets.data.transforms import FolderTransforms, multi_scale_views
from resnets.train import TrainConfig
from resnets.train.recipes import get_recipe, paper_warmup, warmup_reason


def test_wide_resnets_drop_out_between_their_convolutions_as_their_paper():
    model = create_model("wrn28_10")
    assert model.config.dropout == 0.3
    unit = model.layer2[1]
    assert isinstance(unit.dropout, torch.nn.Dropout) and unit.dropout.p == 0.3
    assert create_model("wrn28_10", dropout=0).layer2[1].dropout is None
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))  # off in evaluation
    model.train()
    small = create_model("wrn40_4", dropout=0.5)
    unit = small.layer1[1]
    seen = []
    unit.conv2.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    small(torch.randn(2, 3, 32, 32))
    zeros = (seen[0] == 0).float().mean().item()
    assert 0.45 < zeros < 0.85  # dropout 0.5 after a ReLU: half the units, and the ReLU's own zeros
    assert create_model("resnet20").config.dropout == 0.0


def test_the_classifier_bias_starts_at_zero_and_the_weight_keeps_pytorch_s_default():
    for name in ("resnet20", "resnet50", "preact_resnet110"):
        fc = create_model(name).fc
        assert torch.count_nonzero(fc.bias) == 0
        bound = 1 / math.sqrt(fc.in_features)
        assert fc.weight.abs().max() <= bound and fc.weight.std() > bound / 3  # uniform(+-bound)
    model = create_model("resnet20")
    model.reset_classifier(5)
    assert torch.count_nonzero(model.fc.bias) == 0
    xavier = create_model("resnet20", init="xavier").fc
    assert torch.count_nonzero(xavier.bias) == 0
    assert xavier.weight.std().item() == pytest.approx(math.sqrt(2 / (64 + 10)), rel=0.1)


def test_the_warm_up_follows_the_paper_s_rule_and_says_why():
    assert paper_warmup("resnet110")[0] == 0.01 and paper_warmup("resnet1202")[0] == 0.01
    assert paper_warmup("plain110")[0] == 0.01 and "residual twin" in paper_warmup("plain110")[1]
    for name in ("resnet56", "resnet152", "preact_resnet164", "preact_resnet1001", "wrn28_10"):
        assert paper_warmup(name)[0] is None, name
        assert get_recipe("paper-cifar", name).warmup_lr is None
    assert get_recipe("paper-cifar", "cifar_resnet152").warmup_lr == 0.01  # the 152-layer CIFAR net
    assert warmup_reason(get_recipe("paper-cifar", "resnet110")).startswith("the paper's rule for ResNet-110")
    assert warmup_reason(TrainConfig(model="resnet20", warmup_lr=0.02)) == "set in the config, not by the paper's rule"
    assert warmup_reason(get_recipe("paper-cifar", "resnet20")) is None


def test_multi_scale_testing_averages_scales_without_mirror_images():
    image = torch.randint(0, 256, (3, 30, 45), dtype=torch.uint8)
    views = multi_scale_views(image, FolderTransforms(image_size=16, scales=(16, 20)))
    assert [tuple(v.shape) for v in views] == [(3, 16, 24), (3, 20, 30)]


def test_a_run_says_when_and_why_it_warms_up(tmp_path):
    import io

    from resnets.train import train

    log = io.StringIO()
    config = TrainConfig(model="resnet8", data="synthetic:1,16,16,4", subset=64, batch_size=32, epochs=1,
                         device="cpu", out=str(tmp_path / "run"), warmup_lr=0.02, log_every=1)  # fmt: skip
    train(config, stream=log)
    assert "warm-up: lr 0.02 until the training error is below 80%, checked every 1 steps (set in the config" in (
        log.getvalue()
    )
