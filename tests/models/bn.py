"""Batch norm that is not the identity in eval mode, so that comparisons of outputs test something."""

from torch import nn


def randomise_bn(model: nn.Module) -> nn.Module:
    """Random running statistics and affine terms in every BatchNorm2d; returns the model in eval mode."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()
