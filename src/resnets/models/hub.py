"""torchvision's published ImageNet weights for the architectures that resnets shares with it.

The files are fetched through torchvision's own weights API (downloaded once into the torch hub
cache, checked against the hash in their name, unpickled with `weights_only=True`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from .convert import IMAGENET_CLASSES, SOURCE_STRIDE_AT, convert_state_dict
from .registry import build
from .weights import clean_state_dict, load_state_dict

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

# The networks with the same layers and parameter names in both projects.
SHARED_RESNETS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "wide_resnet50_2",
    "wide_resnet101_2",
)
SHARED = (*SHARED_RESNETS, "vgg16", "vgg19")


def published_weights(name: str) -> WeightsEnum:
    """torchvision's default (best) ImageNet weights entry for `name`; its `meta` holds the class names.

    >>> published_weights("resnet50")
    ResNet50_Weights.IMAGENET1K_V2
    """
    if name not in SHARED:
        raise ValueError(f"torchvision publishes no weights that fit {name!r}; accepted: {', '.join(SHARED)}")
    from torchvision.models import get_model_weights

    return get_model_weights(name).DEFAULT


def required_options(name: str) -> dict:
    """The options that give torchvision's layout: its ResNets put the bottleneck stride on the 3x3 conv."""
    return {"stride_at": SOURCE_STRIDE_AT} if name in SHARED_RESNETS else {}


def download(weights: WeightsEnum) -> dict[str, torch.Tensor]:
    """Fetch a torchvision weights file (or read it from the hub cache), never unpickling code."""
    return weights.get_state_dict(progress=True, check_hash=True, weights_only=True, map_location="cpu")


def torchvision_weights(
    name: str, *, fetch: Callable[[WeightsEnum], Mapping[str, torch.Tensor]] | None = None
) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for `name`, as a state dict for `create_model(name, stride_at="3x3")`.

    `fetch(weights_entry) -> state_dict` replaces the download (tests pass a fake one).

    >>> from resnets import create_model
    >>> model = create_model("resnet50", stride_at="3x3")
    >>> model.load_state_dict(torchvision_weights("resnet50"))  # downloads 100 MB  # doctest: +SKIP
    <All keys matched successfully>
    """
    weights = published_weights(name)
    try:
        state_dict = (fetch or download)(weights)
    except OSError as exc:  # urllib's URLError and HTTPError, socket timeouts, a read-only cache folder
        options = "".join(f", {k}={v!r}" for k, v in required_options(name).items())
        raise ValueError(
            f"cannot download torchvision's {name} weights ({weights}; offline? {exc}): "
            f"pass a local file instead, create_model({name!r}, weights='path/to/file.pth'{options})"
        ) from exc
    if name not in SHARED_RESNETS:  # VGG: the same names and shapes as torchvision's
        return clean_state_dict(state_dict)
    found, _, converted = convert_state_dict(state_dict, "torchvision")
    if found != name:
        raise ValueError(f"torchvision's {name} weights ({weights}) have the architecture of {found}")
    return converted


def torchvision_model(
    name: str, *, fetch: Callable[[WeightsEnum], Mapping[str, torch.Tensor]] | None = None, **options
) -> nn.Module:
    """`create_model(name, **options)` with torchvision's ImageNet weights; `model.class_names` lists the classes.

    This is what `create_model(name, weights="torchvision")` does. A ResNet is built with
    `stride_at="3x3"`, torchvision's layout; an explicit `stride_at="1x1"` is refused.

    >>> model = torchvision_model("resnet50")  # downloads 100 MB  # doctest: +SKIP
    >>> model.class_names[:2]  # doctest: +SKIP
    ['tench', 'goldfish']
    """
    weights = published_weights(name)
    required = required_options(name)
    for key, value in required.items():
        if options.get(key, value) != value:
            raise ValueError(
                f"{key}={options[key]!r} conflicts with weights='torchvision': "
                f"torchvision's {name} is built with {key}={value!r}"
            )
    num_classes = options.get("num_classes", IMAGENET_CLASSES)
    if num_classes != IMAGENET_CLASSES:
        raise ValueError(
            f"num_classes={num_classes!r} conflicts with weights='torchvision' ({IMAGENET_CLASSES} ImageNet classes): "
            f"load them, then call model.reset_classifier({num_classes!r})"
        )
    model = build(name, **{**options, **required})
    load_state_dict(model, torchvision_weights(name, fetch=fetch))
    model.class_names = list(weights.meta["categories"])  # type: ignore[assignment]  # a plain attribute, read by predict
    return model
