"""`create_model`: a registered network by name, with its weights loaded from a file or torchvision."""

from __future__ import annotations

from torch import nn

from .hub import torchvision_model
from .registry import build
from .weights import load_state_dict, read_weights, with_layout


def create_model(name: str, weights: str | None = None, **options) -> nn.Module:
    """Build a registered network by name, with options such as `num_classes` or `shortcut`.

    `weights` is a local `.safetensors` or `.pt`/`.pth` state dict to load (strictly), or "torchvision"
    for torchvision's ImageNet weights (ResNets built with `stride_at="3x3"`; sets `model.class_names`).

    >>> from resnets import create_model
    >>> model = create_model("resnet50", stride_at="3x3", num_classes=10)
    >>> model.fc.out_features
    10
    >>> create_model("resnet20", in_chans=1).config.in_channels  # timm's name for in_channels
    1
    """
    if "in_chans" in options:
        if "in_channels" in options:
            raise ValueError("in_chans and in_channels name the same option: give one")
        options["in_channels"] = options.pop("in_chans")
    if weights == "torchvision":
        return torchvision_model(name, **options)
    if weights is not None:  # the layout the file was built with (a converted torchvision ResNet-50: 3x3)
        options = with_layout(weights, options)
    model = build(name, **options)
    if weights is not None:
        load_state_dict(model, read_weights(weights))
    return model
