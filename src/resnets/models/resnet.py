"""The residual network and its plain twin (He et al. 2016, Table 1 and section 4.2).

One class builds every member of the family, from the 20-layer CIFAR net to ResNet-152,
ResNeXt, wide and pre-activation nets; a `ResNetConfig` says which. The ImageNet
builders live here, the CIFAR ones in `cifar.py`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from .blocks import (
    BLOCKS,
    SHORTCUTS,
    STRIDE_PLACEMENTS,
    BasicBlock,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
    conv3x3,
    make_shortcut,
)
from .registry import register_model

STEMS = ("imagenet", "cifar")
INITS = ("he", "xavier")


@dataclass(frozen=True)
class ResNetConfig:
    """Everything that defines a network of the family; saved in every checkpoint."""

    block: str = "basic"  # basic | bottleneck | preact_basic | preact_bottleneck
    layers: tuple[int, ...] = (2, 2, 2, 2)  # blocks per stage (Table 1's brackets)
    widths: tuple[int, ...] = (64, 128, 256, 512)  # planes per stage, doubled as the map halves
    stem: str = "imagenet"  # imagenet: 7x7/2 conv + 3x3/2 max-pool; cifar: one 3x3 conv (sec. 4.2)
    stem_width: int = 64  # channels out of the stem conv
    shortcut: str | None = "B"  # A zero-pad, B project where the shape changes, C always; None: plain net
    stride_at: str = "1x1"  # the bottleneck's downsampling conv: the paper's 1x1, or torchvision's 3x3
    groups: int = 1  # ResNeXt cardinality
    width_per_group: int = 64  # bottleneck width per group; 128 doubles it (wide ResNet-50-2)
    num_classes: int = 1000  # 0 leaves the head out (forward returns pooled features)
    in_channels: int = 3  # 1 for Fashion-MNIST
    zero_init_residual: bool = False  # start each residual branch at zero (Goyal et al. 2017)
    dropout: float = 0.0  # between the two 3x3 convs of a pre-activation basic block (wide ResNets)
    drop_path: float = 0.0  # stochastic depth: the last block's drop rate, rising linearly from 0 (Huang et al. 2016)
    init: str = "he"  # he: the paper's (He et al. 2015); xavier: Glorot and Bengio 2010

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise ValueError(f"block={self.block!r} is not one of {', '.join(BLOCKS)}")
        if self.stem not in STEMS:
            raise ValueError(f"stem={self.stem!r} is not one of {', '.join(STEMS)}")
        if self.shortcut is not None and self.shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut={self.shortcut!r} is not one of {', '.join(SHORTCUTS)}")
        if self.stride_at not in STRIDE_PLACEMENTS:
            raise ValueError(f"stride_at={self.stride_at!r} is not one of {', '.join(STRIDE_PLACEMENTS)}")
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r} is not one of {', '.join(INITS)}")
        if len(self.layers) != len(self.widths) or not all(n >= 1 for n in self.layers):
            raise ValueError(f"layers={list(self.layers)} must give one positive count per width {list(self.widths)}")
        for name in ("num_classes", "in_channels", "groups", "width_per_group", "stem_width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "num_classes" else 1):
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if self.shortcut is None and self.zero_init_residual:
            raise ValueError("zero_init_residual=True needs a residual net: a plain net would output zeros")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout={self.dropout!r} must be a probability in [0, 1)")
        if "bottleneck" not in self.block and (self.groups != 1 or self.width_per_group != 64):
            raise ValueError(
                f"groups={self.groups}, width_per_group={self.width_per_group}: {self.block} blocks take only "
                "groups=1, width_per_group=64 (use a bottleneck net for ResNeXt or wide nets)"
            )
        if (
            isinstance(self.drop_path, bool)
            or not isinstance(self.drop_path, int | float)
            or not 0 <= self.drop_path < 1
        ):
            raise ValueError(f"drop_path={self.drop_path!r} must be a probability in [0, 1)")
        if self.drop_path and self.shortcut is None:
            raise ValueError("drop_path needs a residual net: dropping a plain net's layer cuts its only path")
        if self.shortcut is None and self.block.startswith("preact"):
            raise ValueError(f"pre-activation blocks need a shortcut: one of {', '.join(SHORTCUTS)}")
        if self.dropout and self.block != "preact_basic":
            raise ValueError(
                f"dropout={self.dropout!r} applies to pre-activation basic blocks (wide ResNets), not {self.block}"
            )

    @property
    def depth(self) -> int:
        """Weighted layers counted as the paper does: stem conv, block convs, fc."""
        convs_per_block = 3 if "bottleneck" in self.block else 2
        return 2 + convs_per_block * sum(self.layers)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"], d["widths"] = list(self.layers), list(self.widths)
        return d


def min_input_size(stages: int, imagenet_stem: bool) -> int:
    """The smallest input side a net of `stages` stages takes.

    ImageNet stem: each stride-2 layer (the 7x7 conv with padding 3, the 3x3 max-pool with padding 1, the
    first block of each stage after the first) maps a side n to ceil(n / 2); the smallest side at which every
    one of them halves a map of at least 2 pixels, so that the last stage's pixel still comes from a 2x2 map
    rather than from a 1x1 map and its zero padding, is 2 ** (layers - 1) + 1: 17 for ResNet-18..152 (sides
    17, 9, 5, 3, 2 into the five, and 1 out). torchvision and timm train these nets on 28x28 images too.
    CIFAR nets: 8, which keeps a 2x2 map in the last stage for its BatchNorm statistics.

    >>> min_input_size(4, imagenet_stem=True), min_input_size(3, imagenet_stem=False)
    (17, 8)
    """
    if not imagenet_stem:
        return max(8, 2 ** (stages - 1))
    stride_2 = 2 + stages - 1  # the stem's conv and max-pool, then every stage but the first
    return 2 ** (stride_2 - 1) + 1


class ResNet(nn.Module):
    """A residual (or, with `shortcut=None`, plain) network built from a `ResNetConfig`.

    Interface as in timm: `forward_features` returns the last feature map (B, C, H/32, W/32),
    `forward_head` pools and classifies, `num_features` is C, `reset_classifier` swaps the head.

    >>> import torch
    >>> from resnets import create_model
    >>> create_model("resnet20", num_classes=10)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(self, config: ResNetConfig, model_name: str = "custom") -> None:
        super().__init__()
        self.config = config
        self.model_name = model_name  # the registered name it is built under ("custom" for a config of one's own)
        block = BLOCKS[config.block]
        self.preact = block.preact
        imagenet = config.stem == "imagenet"
        if imagenet:
            self.conv1 = nn.Conv2d(config.in_channels, config.stem_width, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = conv3x3(config.in_channels, config.stem_width)
        # A pre-activation net normalises at the start of every block, so its CIFAR stem is a bare
        # conv and its first unit activates before splitting (He et al. 2016b, section 4.1). The
        # ImageNet stem keeps BN and ReLU before its max-pool, as in that paper's code
        # (fb.resnet.torch's preresnet.lua), and its first unit then has no activation of its own.
        self.bn1 = None if self.preact and not imagenet else nn.BatchNorm2d(config.stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if imagenet else nn.Identity()

        in_planes = config.stem_width
        self.stage_names: list[str] = []
        total, index = sum(config.layers), 0
        for i, (planes, count) in enumerate(zip(config.widths, config.layers, strict=True)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(count):
                step = stride if j == 0 else 1
                out_planes = planes * block.expansion
                # The stage maker builds the shortcut and hands it to the block, as torchvision does.
                downsample = make_shortcut(config.shortcut, in_planes, out_planes, step, with_bn=not self.preact)
                options = self._block_options(i == j == 0)
                index += 1
                if config.drop_path:
                    # Huang et al. 2016, eq. 4: block l of L survives with p_l = 1 - l / L * (1 - p_L).
                    options["drop_path"] = config.drop_path * index / total
                blocks.append(block(in_planes, planes, step, downsample, **options))
                in_planes = out_planes
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
        self.num_features = in_planes
        self.bn_final = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(inplace=True)) if self.preact else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = nn.Linear(in_planes, config.num_classes) if config.num_classes else nn.Identity()
        self.min_input_size = min_input_size(len(config.widths), imagenet)
        if not self.conv1.weight.is_meta:  # a meta-device net (for cost counting) holds no values
            init_weights(self, config.init)
            if config.zero_init_residual:
                zero_init_residual_(self)

    def _block_options(self, first: bool) -> dict:
        """The keyword arguments that this config gives its kind of block, and only those."""
        c = self.config
        options: dict = {}
        if "bottleneck" in c.block:
            options.update(groups=c.groups, base_width=c.width_per_group, stride_at=c.stride_at)
        if self.preact:
            if first:  # the first unit activates before splitting (He et al. 2016b, section 4.1)
                options["entry"] = "activated" if c.stem == "imagenet" else "shared"
        else:
            options["residual"] = c.shortcut is not None
        if c.dropout:
            options["dropout"] = c.dropout
        return options

    @property
    def num_classes(self) -> int:
        return self.fc.out_features if isinstance(self.fc, nn.Linear) else 0

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the bad shape when `x` is not (B, in_channels, H, W) large enough."""
        c = self.config.in_channels
        if x.dim() != 4 or x.shape[1] != c or x.shape[-2] < self.min_input_size or x.shape[-1] < self.min_input_size:
            raise ValueError(
                f"input of shape {tuple(x.shape)}: expected (batch, {c}, H, W) with H, W >= {self.min_input_size}"
            )

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.conv1(x)
        if self.bn1 is not None:
            x = self.relu(self.bn1(x))
        return self.maxpool(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> the last feature map (B, num_features, H', W')."""
        x = self.forward_stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x if self.bn_final is None else self.bn_final(x)

    def forward_intermediates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each stage's output by stage name; the ImageNet family gives strides 4, 8, 16, 32.

        >>> import torch
        >>> from resnets import create_model
        >>> maps = create_model("resnet18").forward_intermediates(torch.zeros(1, 3, 64, 64))
        >>> [tuple(t.shape[-2:]) for t in maps.values()]
        [(16, 16), (8, 8), (4, 4), (2, 2)]
        """
        x = self.forward_stem(x)
        out = {}
        for i, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)
            last = i == len(self.stage_names) - 1
            out[name] = self.bn_final(x) if last and self.bn_final is not None else x
        return out

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map (B, C, H, W) -> logits (B, num_classes), or pooled (B, C) with `pre_logits`."""
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def in_channels(self) -> int:
        return self.config.in_channels

    def get_classifier(self) -> nn.Module:
        """The classifier layer (timm's name for it): `fc`, or Identity for a headless net."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one of `num_classes` outputs (0: no head)."""
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes={num_classes!r} must be a non-negative integer")
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        if num_classes:
            init_weights(self.fc, self.config.init)
        self.config = replace(self.config, num_classes=num_classes)

    def stages(self) -> list[tuple[str, list[nn.Module]]]:
        """The network cut into named stages (stem, layer1..N, head), for per-stage costs."""
        stem = [m for m in (self.conv1, self.bn1, self.maxpool) if m is not None]
        head = [m for m in (self.bn_final, self.fc) if m is not None]
        return [("stem", stem)] + [(n, [getattr(self, n)]) for n in self.stage_names] + [("head", head)]


def init_weights(module: nn.Module, scheme: str) -> None:
    """He (fan-out, as in fb.resnet.torch and torchvision) or Xavier initialisation; BN to (1, 0).

    The paper says nothing of the classifier. With "he" it follows the authors' reference code
    (fb.resnet.torch, whose models zero every nn.Linear bias): the fc weight keeps PyTorch's default,
    uniform in +-1/sqrt(fan_in), and the bias starts at zero. With "xavier" both follow Glorot.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            if scheme == "he":
                # std = sqrt(2 / (k * k * out_channels)): He et al. 2015, eq. 14, backward case.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if scheme == "xavier":
                nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def zero_init_residual_(model: nn.Module) -> None:
    """Start every residual branch at zero so that each block is the identity at step 0.

    Post-activation blocks zero their last BN's gamma (Goyal et al. 2017, arXiv:1706.02677);
    pre-activation blocks have no BN after their last conv, so that conv's weights are zeroed.
    """
    for m in model.modules():
        if isinstance(m, BasicBlock | Bottleneck):
            nn.init.zeros_(m.last_bn().weight)
        elif isinstance(m, PreActBasicBlock | PreActBottleneck):
            nn.init.zeros_(m.last_conv().weight)


_FIXED = {"block", "layers", "widths", "stem", "stem_width", "groups", "width_per_group"}


def build(base: ResNetConfig, options: dict, plain: bool = False) -> ResNet:
    """Apply user options to a builder's fixed architecture, refusing the ones it must not change.

    `options` may hold `model_name`, the name the network is built under (the registry passes it).
    """
    options = dict(options)
    model_name = options.pop("model_name", "custom")
    accepted = sorted(set(ResNetConfig.__dataclass_fields__) - _FIXED - ({"shortcut"} if plain else set()))
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        what = "a plain net has no shortcut" if plain and "shortcut" in unknown else f"accepted: {', '.join(accepted)}"
        raise ValueError(f"unknown option {unknown[0]!r} ({what})")
    return ResNet(replace(base, **options), model_name)


def _resnet(block: str, layers: list[int], options: dict, plain: bool = False, **arch) -> ResNet:
    base = ResNetConfig(block=block, layers=tuple(layers), shortcut=None if plain else "B", **arch)
    return build(base, options, plain)


@register_model("imagenet")
def resnet18(**options) -> ResNet:
    """ResNet-18 (Table 1): basic blocks [2, 2, 2, 2]."""
    return _resnet("basic", [2, 2, 2, 2], options)


@register_model("imagenet")
def resnet34(**options) -> ResNet:
    """ResNet-34 (Table 1): basic blocks [3, 4, 6, 3]."""
    return _resnet("basic", [3, 4, 6, 3], options)


@register_model("imagenet")
def resnet50(**options) -> ResNet:
    """ResNet-50 (Table 1): bottleneck blocks [3, 4, 6, 3]."""
    return _resnet("bottleneck", [3, 4, 6, 3], options)


@register_model("imagenet")
def resnet101(**options) -> ResNet:
    """ResNet-101 (Table 1): bottleneck blocks [3, 4, 23, 3]."""
    return _resnet("bottleneck", [3, 4, 23, 3], options)


@register_model("imagenet")
def resnet152(**options) -> ResNet:
    """ResNet-152 (Table 1): bottleneck blocks [3, 8, 36, 3]."""
    return _resnet("bottleneck", [3, 8, 36, 3], options)


@register_model("imagenet")
def plain18(**options) -> ResNet:
    """The 18-layer plain baseline (Fig. 3 middle, without shortcuts)."""
    return _resnet("basic", [2, 2, 2, 2], options, plain=True)


@register_model("imagenet")
def plain34(**options) -> ResNet:
    """The 34-layer plain baseline of Fig. 3 and Table 2."""
    return _resnet("basic", [3, 4, 6, 3], options, plain=True)


@register_model("imagenet")
def plain50(**options) -> ResNet:
    """ResNet-50 without its shortcuts."""
    return _resnet("bottleneck", [3, 4, 6, 3], options, plain=True)


@register_model("imagenet")
def plain101(**options) -> ResNet:
    """ResNet-101 without its shortcuts."""
    return _resnet("bottleneck", [3, 4, 23, 3], options, plain=True)


@register_model("imagenet")
def plain152(**options) -> ResNet:
    """ResNet-152 without its shortcuts."""
    return _resnet("bottleneck", [3, 8, 36, 3], options, plain=True)


# ResNeXt (Xie et al. 2017, section 3.3): "the downsampling of conv3, 4, and 5 is done by stride-2
# convolutions in the 3x3 layer of the first block in each stage", which gives its Table 1's 4.2
# GFLOPs for ResNeXt-50. The wide ResNet-50-2 comes from fb.resnet.torch, whose bottleneck also
# strides its 3x3. So both families default to stride_at="3x3", unlike the ResNet paper's nets.


@register_model("imagenet")
def resnext50_32x4d(**options) -> ResNet:
    """ResNeXt-50 32x4d (Xie et al. 2017): 32 groups of width 4 in each 3x3."""
    return _resnet("bottleneck", [3, 4, 6, 3], options, groups=32, width_per_group=4, stride_at="3x3")


@register_model("imagenet")
def resnext101_32x8d(**options) -> ResNet:
    """ResNeXt-101 32x8d (Xie et al. 2017; the width torchvision publishes)."""
    return _resnet("bottleneck", [3, 4, 23, 3], options, groups=32, width_per_group=8, stride_at="3x3")


@register_model("imagenet")
def wide_resnet50_2(**options) -> ResNet:
    """Wide ResNet-50-2 (Zagoruyko and Komodakis 2016): bottleneck twice as wide inside."""
    return _resnet("bottleneck", [3, 4, 6, 3], options, width_per_group=128, stride_at="3x3")


@register_model("imagenet")
def wide_resnet101_2(**options) -> ResNet:
    """Wide ResNet-101-2 (Zagoruyko and Komodakis 2016)."""
    return _resnet("bottleneck", [3, 4, 23, 3], options, width_per_group=128, stride_at="3x3")


@register_model("imagenet")
def preact_resnet18(**options) -> ResNet:
    """Pre-activation ResNet-18 (He et al. 2016, arXiv:1603.05027)."""
    return _resnet("preact_basic", [2, 2, 2, 2], options)


@register_model("imagenet")
def preact_resnet34(**options) -> ResNet:
    """Pre-activation ResNet-34."""
    return _resnet("preact_basic", [3, 4, 6, 3], options)


@register_model("imagenet")
def preact_resnet50(**options) -> ResNet:
    """Pre-activation ResNet-50."""
    return _resnet("preact_bottleneck", [3, 4, 6, 3], options)


@register_model("imagenet")
def preact_resnet101(**options) -> ResNet:
    """Pre-activation ResNet-101."""
    return _resnet("preact_bottleneck", [3, 4, 23, 3], options)


@register_model("imagenet")
def preact_resnet152(**options) -> ResNet:
    """Pre-activation ResNet-152."""
    return _resnet("preact_bottleneck", [3, 8, 36, 3], options)
