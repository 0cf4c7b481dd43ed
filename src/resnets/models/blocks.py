"""Residual blocks and shortcuts (He et al. 2016, section 3).

Attribute names follow torchvision (`conv1`, `bn1`, ..., `downsample.0/1`) so that
state dicts line up across projects.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SHORTCUTS = ("A", "B", "C")
STRIDE_PLACEMENTS = ("1x1", "3x3")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth"): in training,
    each image's residual branch is dropped with probability `rate`, and kept ones are scaled by
    1 / (1 - rate), so that evaluation (identity) sees the expected branch; timm's per-sample form.

    The uniform draws that decide come from `draws` (rows, >= B), row `row`, when the training loop
    sets them (`resnets.train.draws`: a function of the seed, the step and each image's place in the
    global batch, so that 1 and N processes drop the same branches); else from the global generator.

    >>> drop = DropPath(0.5).eval()
    >>> bool(drop(torch.ones(2, 3, 1, 1)).eq(1).all())
    True
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
            raise ValueError(f"drop-path rate={rate!r} must be a probability in [0, 1)")
        self.rate = float(rate)
        self.draws: torch.Tensor | None = None
        self.row = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        keep = 1 - self.rate
        b = x.shape[0]
        u = self.draws[self.row, :b] if self.draws is not None else torch.rand(b, device=x.device)
        mask = (u < keep).reshape((b,) + (1,) * (x.dim() - 1))  # (B, 1, 1, 1)
        return x * (mask.to(x.dtype) / keep)

    def extra_repr(self) -> str:
        return f"rate={self.rate:.4g}"


class ZeroPadShortcut(nn.Module):
    """Option A: identity, subsampled by striding, with zero channels appended.

    Parameter-free, as in section 3.3 ("the shortcut still performs identity mapping,
    with extra zero entries padded for increasing dimensions").
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]  # same size as a stride-s conv with padding
        if self.extra:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra}"


def make_shortcut(
    kind: str | None, in_planes: int, out_planes: int, stride: int, with_bn: bool = True
) -> nn.Module | None:
    """The shortcut of one block; None where the identity is used as it is.

    A: zero-padding identity; B: projection (1x1 conv + BN) only where the shape
    changes; C: projection on every block. Pre-activation blocks project without BN. The stage
    maker builds it and hands it to the block as `downsample`, as torchvision does.
    """
    if kind is None:
        return None
    if kind not in SHORTCUTS:
        raise ValueError(f"shortcut={kind!r} is not one of {', '.join(SHORTCUTS)}")
    reshapes = stride != 1 or in_planes != out_planes
    if kind == "A":
        return ZeroPadShortcut(in_planes, out_planes, stride) if reshapes else None
    if kind == "B" and not reshapes:
        return None
    if not with_bn:
        return nn.Sequential(conv1x1(in_planes, out_planes, stride))
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    """3x3 conv, BN, ReLU, 3x3 conv, BN, add the shortcut, ReLU (Fig. 2 left).

    With `shortcut=None` this is the plain baseline's pair of layers: nothing is added.
    """

    expansion = 1
    preact = False

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        residual: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))  # the residual F(x)
        if self.drop_path is not None:
            out = self.drop_path(out)
        if self.residual:
            out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2


class Bottleneck(nn.Module):
    """1x1 (reduce), 3x3, 1x1 (restore), each with BN, shortcut added before the last ReLU (Fig. 5).

    The paper downsamples with the first 1x1 conv (`stride_at="1x1"`); torchvision and
    timm move the stride to the 3x3 ("ResNet v1.5", after Goyal et al. 2017,
    arXiv:1706.02677), which costs 0.231 GMACs more for ResNet-50 at 224x224 (4.089 against 3.858)
    and is slightly more accurate.
    `groups` and `width_per_group` give ResNeXt (Xie et al. 2017) and wide ResNets.
    """

    expansion = 4
    preact = False

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        groups: int = 1,
        base_width: int = 64,
        stride_at: str = "1x1",
        residual: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        stride_1x1, stride_3x3 = (stride, 1) if stride_at == "1x1" else (1, stride)
        self.residual = residual
        self.conv1 = conv1x1(in_planes, width, stride_1x1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride_3x3, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.drop_path is not None:
            out = self.drop_path(out)
        if self.residual:
            out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3


# How a pre-activation unit begins (He et al. 2016b and its code, fb.resnet.torch's preresnet.lua):
# "preact": BN and ReLU on the residual branch only; the identity carries the raw input.
# "shared": "for the first Residual Unit (that follows a stand-alone convolutional layer, conv1), we
#     adopt the first activation right after conv1 and before splitting into two paths" (section 4.1):
#     BN and ReLU before the split, so the identity carries the activated input too.
# "activated": the input was already activated (the ImageNet stem's BN and ReLU, before its
#     max-pool): no BN or ReLU of the unit's own.
PREACT_ENTRIES = ("preact", "shared", "activated")


class PreActBasicBlock(nn.Module):
    """BN, ReLU, 3x3 conv, BN, ReLU, 3x3 conv, add: the full pre-activation unit.

    He et al. 2016, "Identity Mappings in Deep Residual Networks" (arXiv:1603.05027), Fig. 4(e):
    nothing follows the addition, so the shortcut path is a clean identity. A projection
    shortcut reads the pre-activated input, as in that paper's code. `entry` says how the unit
    begins (see PREACT_ENTRIES): the first unit of a net activates before the split.
    """

    expansion = 1
    preact = True

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        entry: str = "preact",
        dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.entry = _check_entry(entry)
        self.bn1 = None if entry == "activated" else nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        # Wide ResNets (Zagoruyko and Komodakis 2016, section 2.4): "a dropout layer into each residual
        # block between convolutions and after ReLU".
        self.dropout = nn.Dropout(dropout) if dropout else None
        self.conv2 = conv3x3(planes, planes)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.bn1 is None else self.relu(self.bn1(x))
        shortcut = _preact_shortcut(self.downsample, x, out, self.entry)
        out = self.relu(self.bn2(self.conv1(out)))
        if self.dropout is not None:
            out = self.dropout(out)
        out = self.conv2(out)
        if self.drop_path is not None:
            out = self.drop_path(out)
        return out + shortcut

    def last_conv(self) -> nn.Conv2d:
        return self.conv2


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck: (BN, ReLU, conv) x (1x1, 3x3, 1x1), then add (arXiv:1603.05027)."""

    expansion = 4
    preact = True

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        groups: int = 1,
        base_width: int = 64,
        stride_at: str = "1x1",
        entry: str = "preact",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        stride_1x1, stride_3x3 = (stride, 1) if stride_at == "1x1" else (1, stride)
        self.entry = _check_entry(entry)
        self.bn1 = None if entry == "activated" else nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv1x1(in_planes, width, stride_1x1)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride_3x3, groups)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.downsample = downsample
        self.drop_path = DropPath(drop_path) if drop_path else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.bn1 is None else self.relu(self.bn1(x))
        shortcut = _preact_shortcut(self.downsample, x, out, self.entry)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        if self.drop_path is not None:
            out = self.drop_path(out)
        return out + shortcut

    def last_conv(self) -> nn.Conv2d:
        return self.conv3


def _check_entry(entry: str) -> str:
    if entry not in PREACT_ENTRIES:
        raise ValueError(f"entry={entry!r} is not one of {', '.join(PREACT_ENTRIES)}")
    return entry


def _preact_shortcut(
    downsample: nn.Module | None, x: torch.Tensor, activated: torch.Tensor, entry: str = "preact"
) -> torch.Tensor:
    if entry != "preact":  # the activation came before the split: both paths read it
        return activated if downsample is None else downsample(activated)
    if downsample is None:
        return x
    if isinstance(downsample, ZeroPadShortcut):
        return downsample(x)
    return downsample(activated)


Block = BasicBlock | Bottleneck | PreActBasicBlock | PreActBottleneck
BLOCKS: dict[str, type[Block]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
    "preact_basic": PreActBasicBlock,
    "preact_bottleneck": PreActBottleneck,
}
