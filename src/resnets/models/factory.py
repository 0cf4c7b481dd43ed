"""`create_model`: a registered network by name, with its weights loaded from a file or torchvision,
under the names timm users know (`pretrained`, `drop_path_rate`, `features_only`, `in_chans`)."""

from __future__ import annotations

from torch import nn

from . import registry
from .features import FeatureMaps
from .hub import SHARED, torchvision_model
from .registry import build
from .weights import load_state_dict, read_weights, with_layout


def create_model(
    name: str,
    weights: str | None = None,
    *,
    pretrained: bool = False,
    drop_path_rate: float | None = None,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    **options,
) -> nn.Module:
    """Build a registered network by name, with options such as `num_classes` or `shortcut`.

    `weights` is a local `.safetensors` or `.pt`/`.pth` state dict to load (strictly), or "torchvision"
    for torchvision's ImageNet weights (ResNets built with `stride_at="3x3"`; sets `model.class_names`).
    A file's layout is the one it records (a bare torchvision or timm ResNet file: theirs, `stride_at="3x3"`).

    As in timm: `pretrained=True` is `weights="torchvision"`; `drop_path_rate` the stochastic depth of the
    last block (`drop_path`); `in_chans` is `in_channels`; `features_only=True` gives the feature maps at
    `out_indices` (0 the stem, 1.. the stages) instead of the logits.

    >>> from resnets import create_model
    >>> model = create_model("resnet50", stride_at="3x3", num_classes=10)
    >>> model.fc.out_features
    10
    >>> create_model("resnet20", in_chans=1).config.in_channels  # timm's name for in_channels
    1
    """
    options = _timm_options(name, options, drop_path_rate)
    if pretrained:
        if weights is not None:
            raise ValueError(f"pretrained=True and weights={weights!r} both name weights: give one")
        if name.lower() not in SHARED:
            raise ValueError(f"no pretrained weights for {name!r}; they exist for {', '.join(SHARED)}")
        weights = "torchvision"
    if weights == "torchvision":
        model = torchvision_model(name, **options)
    else:
        if weights is not None:  # the layout the file was built with (a converted torchvision ResNet-50: 3x3)
            options = with_layout(weights, options)
        model = build(name, **options)
        if weights is not None:
            load_state_dict(model, read_weights(weights))
    return FeatureMaps(model, out_indices) if features_only else model


def _timm_options(name: str, options: dict, drop_path_rate: float | None) -> dict:
    """`options` with timm's names translated; timm's classifier dropout, which resnets lacks, refused."""
    options = dict(options)
    if "in_chans" in options:
        if "in_channels" in options:
            raise ValueError("in_chans and in_channels name the same option: give one")
        options["in_channels"] = options.pop("in_chans")
    if drop_path_rate is not None:
        if "drop_path" in options:
            raise ValueError("drop_path_rate and drop_path name the same option: give one")
        options["drop_path"] = drop_path_rate
    if "drop_rate" in options:
        raise ValueError(
            f"drop_rate={options['drop_rate']!r} is timm's dropout before the classifier, which resnets's "
            f"{name} does not have; the nearest are drop_path_rate (stochastic depth) and, in wide ResNets, dropout"
        )
    return options


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Registered model names matching a shell-style pattern, in registration order; with `pretrained`,
    only those with published ImageNet weights (torchvision's).

    >>> list_models("resnet1*", pretrained=True)
    ['resnet18', 'resnet101', 'resnet152']
    """
    names = registry.list_models(pattern)
    return [n for n in names if n in SHARED] if pretrained else names
