"""Inference-time folding of batch norm into the convolution before it.

In eval mode BN is an affine map per channel, y = gamma * (x - mean) / sqrt(var + eps) + beta, so
a conv followed by BN is one conv with scaled weights and a bias: the same outputs (to rounding)
for one kernel fewer and one pass over the activations fewer per layer.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .blocks import BasicBlock, Bottleneck

# (conv, bn) attribute pairs of the post-activation blocks; pre-activation blocks put a ReLU
# between BN and the next conv, so there is nothing to fold there.
_PAIRS = {
    BasicBlock: (("conv1", "bn1"), ("conv2", "bn2")),
    Bottleneck: (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")),
}


def fuse_bn(model: nn.Module) -> nn.Module:
    """A copy of `model` for inference, with each BN that follows a conv folded into that conv.

    The copy is in eval mode and cannot be trained (its BN statistics are gone); `model` is untouched.

    >>> import torch
    >>> from resnets import create_model
    >>> model = create_model("resnet20").eval()
    >>> fused = fuse_bn(model)
    >>> x = torch.randn(2, 3, 32, 32)
    >>> bool(torch.allclose(fused(x), model(x), atol=1e-5))
    True
    """
    fused = copy.deepcopy(model).eval()
    pairs = [(fused, "conv1", "bn1")] if isinstance(getattr(fused, "bn1", None), nn.BatchNorm2d) else []
    for module in fused.modules():
        pairs += [(module, conv, bn) for conv, bn in _PAIRS.get(type(module), ())]
        downsample = getattr(module, "downsample", None)
        if isinstance(downsample, nn.Sequential) and len(downsample) == 2 and isinstance(downsample[1], nn.BatchNorm2d):
            pairs.append((downsample, "0", "1"))
    for module, conv_name, bn_name in pairs:
        conv, bn = getattr(module, conv_name), getattr(module, bn_name)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, bn_name, nn.Identity())
    return fused
