"""The model registry: one name for each network, and the builder behind it.

Builders register themselves with `@register_model(family)`; a family also says the
input size its networks were designed for (the size at which FLOPs are reported). The
registry is a leaf: weight loading (`create_model`) lives above it, in `factory.py`.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

# The input each family was designed for: (channels, height, width).
FAMILY_INPUT_SIZE: dict[str, tuple[int, int, int]] = {
    "imagenet": (3, 224, 224),
    "cifar": (3, 32, 32),
}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    family: str  # imagenet | cifar

    @property
    def input_size(self) -> tuple[int, int, int]:
        return FAMILY_INPUT_SIZE[self.family]

    @property
    def description(self) -> str:
        return (self.builder.__doc__ or "").strip().splitlines()[0] if self.builder.__doc__ else ""


@runtime_checkable
class Model(Protocol):
    """What every registered network offers (timm's interface): a test checks each one.

    `model_name` is the registered name it was built under; `num_features` the width of the
    pooled features that `forward_head(x, pre_logits=True)` returns; `min_input_size` the
    smallest height and width it takes.
    """

    model_name: str
    in_channels: int
    num_features: int
    num_classes: int
    min_input_size: int

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor: ...

    def get_classifier(self) -> nn.Module: ...

    def reset_classifier(self, num_classes: int) -> None: ...


def interface(model: nn.Module) -> Model:
    """`model` as the model interface: a network of this registry, refused with a clear error otherwise.

    (A check the type checker understands: nn.Module types its attributes loosely.)
    """
    if not isinstance(model, Model):
        raise TypeError(f"{type(model).__name__} does not offer the model interface (model_name, num_classes, ...)")
    return model


_MODELS: dict[str, ModelEntry] = {}
# Name patterns that stand for a whole family of depths, tried after the named models:
# (pattern, family, builder taking the regex match and the options).
_PATTERNS: list[tuple[re.Pattern[str], str, Callable[..., nn.Module]]] = []


def register_model(family: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder to the registry under its function name."""
    if family not in FAMILY_INPUT_SIZE:
        raise ValueError(f"family={family!r} is not one of {', '.join(FAMILY_INPUT_SIZE)}")

    def add(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")

        @functools.wraps(builder)
        def named(**options) -> nn.Module:
            # The network takes its name at construction: called directly, a builder names it after itself.
            options.setdefault("model_name", name)
            return builder(**options)

        _MODELS[name] = ModelEntry(name, named, family)
        return named

    return add


def register_pattern(pattern: str, family: str, builder: Callable[..., nn.Module]) -> None:
    """Let names matching `pattern` (e.g. resnet38) build through `builder(match, **options)`."""
    _PATTERNS.append((re.compile(pattern), family, builder))


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names, in registration order, filtered by a shell-style pattern.

    >>> from resnets import list_models
    >>> list_models("resnet1*")
    ['resnet18', 'resnet101', 'resnet152', 'resnet110', 'resnet1202']
    """
    from fnmatch import fnmatchcase

    return [name for name in _MODELS if fnmatchcase(name, pattern)]


def model_entry(name: str) -> ModelEntry:
    """The registry entry of `name` (in any case: ResNet50 is resnet50); also resolves family patterns
    such as `resnet38`. An unknown name is refused with the nearest registered ones.

    >>> model_entry("ResNet50").name
    'resnet50'
    >>> model_entry("resnt50")
    Traceback (most recent call last):
    ValueError: unknown model 'resnt50' (did you mean resnet50?); accepted: ...
    """
    key = name.lower()
    if key in _MODELS:
        return _MODELS[key]
    for regex, family, builder in _PATTERNS:
        match = regex.fullmatch(key)
        if match:
            return ModelEntry(key, lambda _m=match, _b=builder, **options: _b(_m, **options), family)
    near = difflib.get_close_matches(key, list(_MODELS), n=1, cutoff=0.75)
    hint = f" (did you mean {near[0]}?)" if near else ""
    raise ValueError(f"unknown model {name!r}{hint}; accepted: {', '.join(_MODELS)} (see `resnets models`)")


def registered_name(model: nn.Module) -> str | None:
    """The registered name `model` was built under; None for a network of one's own (a ResNet from a
    custom config is named "custom") or a module from elsewhere.

    >>> registered_name(build("resnet20")), registered_name(nn.Linear(1, 1))
    ('resnet20', None)
    """
    name = getattr(model, "model_name", None)
    if not isinstance(name, str):
        return None
    try:
        model_entry(name)
    except ValueError:
        return None
    return name


def build(name: str, **options) -> nn.Module:
    """A fresh network of the registered `name`, built with `options`, and named after it at construction.

    Weights stay at their initialisation: `resnets.create_model` is the function that also
    loads them.

    >>> build("resnet20", num_classes=4).model_name
    'resnet20'
    """
    if not isinstance(name, str):
        raise ValueError(f"model name {name!r} must be a string")
    if "model_name" in options:
        raise ValueError(f"model_name={options['model_name']!r} is not an option: the network is named {name!r}")
    return model_entry(name).builder(model_name=name, **options)
