"""VGG-16 and VGG-19 (Simonyan and Zisserman 2015), the baselines of the paper's Fig. 3 and Table 1.

Layer names and shapes follow torchvision's `vgg16`/`vgg19` (no batch norm), so their
state dicts load unchanged.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from .registry import register_model
from .resnet import INITS

# Output channels of each 3x3 conv, "M" for a 2x2 max-pool (configurations D and E of the VGG paper).
VGG_LAYERS: dict[int, list[int | str]] = {
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """A VGG net with the timm-style interface of `ResNet`.

    >>> import torch
    >>> from resnets import create_model
    >>> create_model("vgg16", num_classes=10)(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 10])
    """

    min_input_size = 32  # five 2x2 max-pools

    def __init__(
        self,
        depth: int,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.5,
        init: str = "he",
        model_name: str | None = None,
    ) -> None:
        super().__init__()
        self.model_name = model_name or f"vgg{depth}"
        if init not in INITS:
            raise ValueError(f"init={init!r} is not one of {', '.join(INITS)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        self.depth, self.in_channels, self.init = depth, in_channels, init
        layers: list[nn.Module] = []
        channels = in_channels
        for v in VGG_LAYERS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                channels = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        self.num_features = 4096
        for m in self.modules() if not self.classifier[0].weight.is_meta else ():
            if isinstance(m, nn.Conv2d):
                if init == "he":
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                else:
                    nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                if init == "he":
                    nn.init.normal_(m.weight, 0, 0.01)  # as torchvision and the VGG paper
                else:
                    nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def num_classes(self) -> int:
        return self.get_classifier().out_features

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the bad shape when `x` is not (B, in_channels, H, W) large enough."""
        m = self.min_input_size
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[-2] < m or x.shape[-1] < m:
            raise ValueError(
                f"input of shape {tuple(x.shape)}: expected (batch, {self.in_channels}, H, W) with H, W >= {m}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the last conv feature map (B, 512, H/32, W/32)."""
        self.check_input(x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> logits, or the 4096-d output of the second fc layer with `pre_logits`."""
        x = torch.flatten(self.avgpool(x), 1)
        x = self.classifier[:-1](x)
        return x if pre_logits else self.classifier[-1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Linear:
        """The last fully connected layer, the one `reset_classifier` replaces."""
        return cast(nn.Linear, self.classifier[-1])  # built so, and reset_classifier keeps it so

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the last fc layer with a fresh one of `num_classes` outputs."""
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes={num_classes!r} must be a positive integer")
        self.classifier[-1] = nn.Linear(4096, num_classes)

    def stages(self) -> list[tuple[str, list[nn.Module]]]:
        """Five conv blocks (each ending in a max-pool) and the classifier."""
        stages: list[tuple[str, list[nn.Module]]] = []
        current: list[nn.Module] = []
        for m in self.features:
            current.append(m)
            if isinstance(m, nn.MaxPool2d):
                stages.append((f"block{len(stages) + 1}", current))
                current = []
        return [*stages, ("head", [self.avgpool, self.classifier])]


def _vgg(depth: int, options: dict) -> VGG:
    accepted = ("num_classes", "in_channels", "dropout", "init")
    unknown = sorted(set(options) - {*accepted, "model_name"})
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for a VGG net (accepted: {', '.join(accepted)})")
    return VGG(depth, **options)


@register_model("imagenet")
def vgg16(**options) -> VGG:
    """VGG-16 (configuration D), the 15.3 GMAC baseline of Table 1."""
    return _vgg(16, options)


@register_model("imagenet")
def vgg19(**options) -> VGG:
    """VGG-19 (configuration E), the 19.6 GMAC baseline of Fig. 3 and Table 1."""
    return _vgg(19, options)
