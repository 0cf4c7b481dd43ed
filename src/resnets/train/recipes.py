"""Named training recipes: plain functions that return a `TrainConfig` for a model.

Each takes the model name, because the paper's recipe depends on it (ResNet-110 warms up).
"""

from __future__ import annotations

from collections.abc import Callable

from ..models import create_model
from .config import TrainConfig


def _depth(model: str) -> int:
    import torch

    with torch.device("meta"):
        net = create_model(model)
    config = getattr(net, "config", None)
    return config.depth if config is not None else 0


def paper_cifar(model: str = "resnet20") -> TrainConfig:
    """Section 4.2: batch 128, lr 0.1 divided by 10 at 32k and 48k iterations, stop at 64k.

    Weight decay 1e-4, momentum 0.9, He initialisation, 4-pixel pad-and-crop and flips. For
    110 layers and more the paper warms up at lr 0.01 until training error is below 80%
    (about 400 iterations), then returns to 0.1.

    >>> paper_cifar("resnet110").warmup_lr
    0.01
    """
    return TrainConfig(
        recipe="paper-cifar",
        model=model,
        batch_size=128,
        iterations=64_000,
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="step",
        milestones=[0.5, 0.75],
        init="he",
        warmup_lr=0.01 if _depth(model) >= 110 else None,
        warmup_until_err=0.8,
    )


def paper_imagenet(model: str = "resnet50") -> TrainConfig:
    """Section 3.4: batch 256, lr 0.1 divided by 10 when the error plateaus, up to 60e4 iterations.

    Weight decay 1e-4, momentum 0.9, He initialisation; scale and colour augmentation. The
    plateau is watched on the validation split (`--val-split`), or on the training loss
    without one: the test set never steers training.
    """
    return TrainConfig(
        recipe="paper-imagenet",
        model=model,
        data="imagefolder:imagenet",
        batch_size=256,
        iterations=600_000,
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="plateau",
        plateau_patience=3,
        init="he",
    )


def explainer(model: str = "resnet20") -> TrainConfig:
    """The source explainer's table: Xavier init, weight decay 1e-5, batch 256, lr 0.1 on a plateau schedule."""
    return TrainConfig(
        recipe="explainer",
        model=model,
        batch_size=256,
        epochs=30,
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-5,
        schedule="plateau",
        plateau_patience=3,
        init="xavier",
    )


def fast(model: str = "resnet20") -> TrainConfig:
    """A short recipe for small data: one-cycle lr, Nesterov, label smoothing, flip test-time augmentation.

    Batch 512, 15 epochs; the lr rises linearly to 0.4 over the first 20% of training and falls
    linearly to zero (Smith and Topin 2018, "super-convergence"); weight decay 5e-4.
    """
    return TrainConfig(
        recipe="fast",
        model=model,
        batch_size=512,
        epochs=15,
        lr=0.4,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        schedule="onecycle",
        onecycle_warmup=0.2,
        label_smoothing=0.1,
        tta_flip=True,
    )


RECIPES: dict[str, Callable[[str], TrainConfig]] = {
    "paper-cifar": paper_cifar,
    "paper-imagenet": paper_imagenet,
    "explainer": explainer,
    "fast": fast,
}


def get_recipe(name: str, model: str) -> TrainConfig:
    """The config of recipe `name` for `model`.

    >>> get_recipe("explainer", "resnet20").init
    'xavier'
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; accepted: {', '.join(RECIPES)}")
    return RECIPES[name](model)
