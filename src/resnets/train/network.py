"""The network a run trains: built from its config, optionally started from other weights (fine-tuning)."""

from __future__ import annotations

from torch import nn

from ..models import create_model
from ..models.registry import interface
from ..models.weights import clean_state_dict, read_weights, with_layout
from .config import TrainConfig


def build_model(config: TrainConfig, in_channels: int, num_classes: int, image_size: tuple[int, ...]) -> nn.Module:
    """The network a config asks for, shaped for the data; refuses images too small for it."""
    options = {"init": config.init, **config.model_options}
    if config.drop_path:
        options["drop_path"] = config.drop_path
    if config.init_from:  # the layout the weights were built with (a converted torchvision ResNet-50: 3x3)
        options = with_layout(config.init_from, options)
    options.update(in_channels=in_channels, num_classes=num_classes)  # the data's, whatever the file's were
    model = create_model(config.model, **options)
    smallest = interface(model).min_input_size
    if min(image_size) < smallest:
        raise ValueError(
            f"model {config.model} needs images of at least {smallest}x{smallest}, "
            f"the data has {image_size[0]}x{image_size[1]} (use a CIFAR-style net such as resnet20)"
        )
    if config.init_from:
        load_backbone(model, config.init_from)
    if config.freeze_backbone:
        freeze_backbone(model)
    return model


def head_of(model: nn.Module) -> nn.Module:
    """The classifier layer that fine-tuning replaces."""
    return interface(model).get_classifier()


def head_names(model: nn.Module) -> set[str]:
    """State-dict names of the classifier layer's parameters."""
    head = {id(p) for p in head_of(model).parameters()}
    return {name for name, p in model.named_parameters() if id(p) in head}


def load_backbone(model: nn.Module, path: str) -> list[str]:
    """Load the weights of `path` into everything but the head (kept when its shape fits).

    Returns the names left at their fresh initialisation (the head, when the class count
    differs). Any other missing, unexpected or reshaped weight means another architecture
    and is refused with its name.
    """
    weights = clean_state_dict(read_weights(path))
    own = model.state_dict()
    head = head_names(model)
    fitting = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    misfits = [k for k in sorted(set(own) | set(weights)) if k not in fitting and k not in head]
    if misfits:
        k = misfits[0]
        found = tuple(weights[k].shape) if k in weights else "nothing"
        wanted = tuple(own[k].shape) if k in own else "nothing"
        raise ValueError(
            f"{path} does not fit {getattr(model, 'model_name', type(model).__name__)}: "
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
