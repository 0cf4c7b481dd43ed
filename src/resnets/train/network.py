"""The network a run trains: built from its config, optionally started from other weights (fine-tuning)."""

from __future__ import annotations

import torch
from torch import nn

from ..data.base import of_image_files
from ..models import create_model
from ..models.hub import published_weights, required_options, torchvision_weights
from ..models.registry import interface
from ..models.weights import clean_state_dict, read_weights, with_layout
from .config import PRETRAINED, TrainConfig


def build_model(config: TrainConfig, in_channels: int, num_classes: int, image_size: tuple[int, ...]) -> nn.Module:
    """The network a config asks for, shaped for the data; refuses images too small for it."""
    return build_network(config, in_channels, num_classes, image_size)[0]


def build_network(
    config: TrainConfig, in_channels: int, num_classes: int, image_size: tuple[int, ...]
) -> tuple[nn.Module, list[str]]:
    """`build_model`, and what the run's log says of where its weights started (`fine_tune_lines`)."""
    options = {"init": config.init, **config.model_options}
    if config.drop_path:
        options["drop_path"] = config.drop_path
    if config.init_from:  # the layout the weights were built with (a converted torchvision ResNet-50: 3x3)
        options = _layout(config, options)
    options.update(in_channels=in_channels, num_classes=num_classes)  # the data's, whatever the file's were
    model = create_model(config.model, **options)
    check_size(config, interface(model).min_input_size, image_size)
    if not config.init_from:
        return model, []
    weights, source = initial_weights(config)
    fresh = load_backbone(model, weights, source)
    if config.freeze_backbone:
        freeze_backbone(model)
    return model, fine_tune_lines(model, weights, source, fresh, config.freeze_backbone)


def check_size(config: TrainConfig, smallest: int, image_size: tuple[int, ...]) -> None:
    """Refuse images smaller than `smallest` (the model's `min_input_size`) in one line: an image folder's
    training crop or test view, named by its flag, or small images of a fixed size."""
    if of_image_files(config.data):
        sides = {"--image-size": config.image_size, "--test-size": config.test_size}
        small = [f"{flag} {side}" for flag, side in sides.items() if side < smallest]
        if small:
            raise ValueError(
                f"model {config.model} needs images of at least {smallest}x{smallest}, not {' and '.join(small)}: "
                f"give --image-size and --test-size of {smallest} or more"
            )
    if min(image_size) < smallest:
        raise ValueError(
            f"model {config.model} needs images of at least {smallest}x{smallest}, "
            f"the data has {image_size[0]}x{image_size[1]} (a CIFAR-style net such as resnet20 takes them)"
        )


def _layout(config: TrainConfig, options: dict) -> dict:
    """`options` with the layout of the weights `init_from` names; a contradicting option is refused."""
    if config.init_from != PRETRAINED:
        return with_layout(str(config.init_from), options)
    for key, value in required_options(config.model).items():
        if options.setdefault(key, value) != value:
            raise ValueError(
                f"{key}={options[key]!r} contradicts --pretrained: torchvision's {config.model} is built with "
                f"{key}={value!r}; leave --{key.replace('_', '-')} out"
            )
    return options


def initial_weights(config: TrainConfig) -> tuple[dict[str, torch.Tensor], str]:
    """The weights `init_from` names, and how the log names them: a file, or torchvision's ImageNet weights."""
    if config.init_from == PRETRAINED:
        return torchvision_weights(config.model), f"torchvision's {published_weights(config.model)}"
    return clean_state_dict(read_weights(str(config.init_from))), str(config.init_from)


def fine_tune_lines(
    model: nn.Module, weights: dict[str, torch.Tensor], source: str, fresh: list[str], frozen: bool
) -> list[str]:
    """Where a fine-tuned network started: the weights, its head replaced (old -> new classes) or kept,
    and its trainable and frozen parameters."""
    head = sorted(head_names(model))
    name = head[0].rsplit(".", 1)[0] if head else "head"
    classes = next((p.shape[0] for n, p in model.named_parameters() if n in head), 0)
    if any(n in fresh for n in head):
        old = next((weights[n].shape[0] for n in head if n in weights and weights[n].ndim), "no")
        what = f"head {name} replaced ({old} -> {classes} classes, newly initialised)"
    else:
        what = f"head {name} kept ({classes} classes, loaded)"
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    fixed = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    why = " (--freeze-backbone: the head alone learns; BatchNorm statistics are kept)" if frozen else ""
    return [f"fine-tuning from {source}: {what}", f"parameters: {trainable:,} trainable, {fixed:,} frozen{why}"]


def head_of(model: nn.Module) -> nn.Module:
    """The classifier layer that fine-tuning replaces."""
    return interface(model).get_classifier()


def head_names(model: nn.Module) -> set[str]:
    """State-dict names of the classifier layer's parameters."""
    head = {id(p) for p in head_of(model).parameters()}
    return {name for name, p in model.named_parameters() if id(p) in head}


def load_backbone(model: nn.Module, weights: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load `weights` (from `source`) into everything but the head (kept when its shape fits).

    Returns the names left at their fresh initialisation (the head, when the class count
    differs). Any other missing, unexpected or reshaped weight means another architecture
    and is refused with its name.
    """
    own = model.state_dict()
    head = head_names(model)
    fitting = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    misfits = [k for k in sorted(set(own) | set(weights)) if k not in fitting and k not in head]
    if misfits:
        k = misfits[0]
        found = tuple(weights[k].shape) if k in weights else "nothing"
        wanted = tuple(own[k].shape) if k in own else "nothing"
        raise ValueError(
            f"{source} does not fit {getattr(model, 'model_name', type(model).__name__)}: "
            f"{k} is {found} in the file, {wanted} in the model ({len(misfits)} mismatches)"
        )
    model.load_state_dict(fitting, strict=False)
    return sorted(set(own) - set(fitting))


def freeze_backbone(model: nn.Module) -> None:
    """Train only the head: every other parameter stops learning and every BN keeps its statistics."""
    head = set(head_of(model).parameters())
    for p in model.parameters():
        p.requires_grad_(p in head)


def set_train_mode(model: nn.Module) -> None:
    """`model.train()`, except that BN layers with frozen parameters keep their running statistics."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.weight is not None and not m.weight.requires_grad:
            m.eval()
