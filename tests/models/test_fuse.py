"""Folding BN into convolutions for inference keeps the outputs and removes every foldable BN."""

import pytest
import torch
from bn import randomise_bn
from torch import nn

from resnets import create_model
from resnets.models.fuse import fuse_bn


@pytest.mark.parametrize(
    ("name", "options", "size"),
    [("resnet20", {}, 32), ("plain20", {}, 32), ("resnet50", {}, 64), ("resnet34", {"shortcut": "C"}, 64)],
)
def test_fused_outputs_equal_and_no_bn_is_left(name, options, size):
    model = randomise_bn(create_model(name, **options))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_bn(model)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the original is untouched


def test_pre_activation_nets_keep_their_bn():
    model = randomise_bn(create_model("preact_resnet18"))
    fused = fuse_bn(model)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    # Only the stem's BN follows a conv and folds into it; every unit's BN precedes its conv.
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules()) == n_bn - 1
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # the folded stem rounds differently: equal to float precision
        torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)
