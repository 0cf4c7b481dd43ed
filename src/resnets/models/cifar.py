"""The CIFAR-10 networks of section 4.2 and their follow-ups.

A 3x3 stem, three stages of 2n layers on 32x32, 16x16 and 8x8 maps with 16, 32 and 64
filters, global average pooling and a fully connected layer: 6n+2 weighted layers.
Shortcuts are option A (zero padding), so the residual nets have exactly as many
parameters as the plain ones.
"""

from __future__ import annotations

import re

from .registry import model_entry, register_model, register_pattern
from .resnet import ResNet, ResNetConfig, build

CIFAR_WIDTHS = (16, 32, 64)


def _blocks_per_stage(depth: int, per_block: int, offset: int, family: str) -> int:
    n, rest = divmod(depth - offset, 3 * per_block)
    if rest or n < 1 or isinstance(depth, bool):
        examples = ", ".join(str(3 * per_block * k + offset) for k in (1, 2, 3, 9, 18))
        raise ValueError(f"depth {depth} is not of the form {3 * per_block}n+{offset} for {family} ({examples}, ...)")
    return n


def cifar_resnet(depth: int, *, plain: bool = False, **options) -> ResNet:
    """A CIFAR-style ResNet (or plain net) of any depth 6n+2.

    >>> cifar_resnet(38).config.layers
    (6, 6, 6)
    """
    n = _blocks_per_stage(depth, 2, 2, "CIFAR-style nets")
    options.setdefault("model_name", cifar_name("plain" if plain else "resnet", depth))
    base = ResNetConfig(
        block="basic",
        layers=(n, n, n),
        widths=CIFAR_WIDTHS,
        stem="cifar",
        stem_width=16,
        shortcut=None if plain else "A",
        num_classes=10,
    )
    return build(base, options, plain)


def cifar_preact_resnet(depth: int, *, bottleneck: bool = False, **options) -> ResNet:
    """Pre-activation CIFAR ResNet (He et al. 2016b): basic blocks for 6n+2, bottlenecks for 9n+2.

    The bottleneck nets widen 4x at the end of each block (64, 128, 256 channels) and use
    projection shortcuts where the width changes, which gives the paper's 1.7M (164 layers)
    and 10.2M (1001 layers) parameters.
    """
    if bottleneck:
        n, block, shortcut = _blocks_per_stage(depth, 3, 2, "pre-activation bottleneck nets"), "preact_bottleneck", "B"
    else:
        n, block, shortcut = _blocks_per_stage(depth, 2, 2, "pre-activation nets"), "preact_basic", "A"
    options.setdefault("model_name", f"preact_resnet{depth}")
    base = ResNetConfig(
        block=block,
        layers=(n, n, n),
        widths=CIFAR_WIDTHS,
        stem="cifar",
        stem_width=16,
        shortcut=shortcut,
        num_classes=10,
    )
    return build(base, options)


def wide_resnet(depth: int, widen: int, **options) -> ResNet:
    """WRN-depth-widen (Zagoruyko and Komodakis 2016): pre-activation basic blocks, widths 16k/32k/64k.

    Dropout 0.3 between each block's convolutions, as in that paper's best CIFAR results
    (Table 6: WRN-28-10 with dropout); `dropout=0` gives the nets of its Table 4.

    >>> wide_resnet(16, 2).config.widths
    (32, 64, 128)
    """
    n = _blocks_per_stage(depth, 2, 4, "wide ResNets")
    if not isinstance(widen, int) or widen < 1:
        raise ValueError(f"widen factor {widen!r} must be a positive integer")
    options.setdefault("model_name", f"wrn{depth}_{widen}")
    base = ResNetConfig(
        block="preact_basic",
        layers=(n, n, n),
        widths=tuple(w * widen for w in CIFAR_WIDTHS),
        stem="cifar",
        stem_width=16,
        shortcut="B",
        num_classes=10,
        dropout=0.3,
    )
    # WRN counts depth as 6n+4: the stem, 6n block convs, and the three projection shortcuts.
    return build(base, options)


@register_model("cifar")
def resnet20(**options) -> ResNet:
    """ResNet-20 (Table 6): n = 3."""
    return cifar_resnet(20, **options)


@register_model("cifar")
def resnet32(**options) -> ResNet:
    """ResNet-32 (Table 6): n = 5."""
    return cifar_resnet(32, **options)


@register_model("cifar")
def resnet44(**options) -> ResNet:
    """ResNet-44 (Table 6): n = 7."""
    return cifar_resnet(44, **options)


@register_model("cifar")
def resnet56(**options) -> ResNet:
    """ResNet-56 (Table 6): n = 9."""
    return cifar_resnet(56, **options)


@register_model("cifar")
def resnet110(**options) -> ResNet:
    """ResNet-110 (Table 6): n = 18."""
    return cifar_resnet(110, **options)


@register_model("cifar")
def resnet1202(**options) -> ResNet:
    """ResNet-1202 (Table 6): n = 200."""
    return cifar_resnet(1202, **options)


@register_model("cifar")
def plain20(**options) -> ResNet:
    """The 20-layer plain net of Fig. 6."""
    return cifar_resnet(20, plain=True, **options)


@register_model("cifar")
def plain32(**options) -> ResNet:
    """The 32-layer plain net of Fig. 6."""
    return cifar_resnet(32, plain=True, **options)


@register_model("cifar")
def plain44(**options) -> ResNet:
    """The 44-layer plain net of Fig. 6."""
    return cifar_resnet(44, plain=True, **options)


@register_model("cifar")
def plain56(**options) -> ResNet:
    """The 56-layer plain net of Fig. 6."""
    return cifar_resnet(56, plain=True, **options)


@register_model("cifar")
def plain110(**options) -> ResNet:
    """The 110-layer plain net of section 4.2 (over 60% error)."""
    return cifar_resnet(110, plain=True, **options)


@register_model("cifar")
def preact_resnet110(**options) -> ResNet:
    """Pre-activation ResNet-110 (He et al. 2016b, Table 2): basic blocks."""
    return cifar_preact_resnet(110, **options)


@register_model("cifar")
def preact_resnet164(**options) -> ResNet:
    """Pre-activation ResNet-164 (He et al. 2016b, Table 4): bottlenecks."""
    return cifar_preact_resnet(164, bottleneck=True, **options)


@register_model("cifar")
def preact_resnet1001(**options) -> ResNet:
    """Pre-activation ResNet-1001 (He et al. 2016b, Table 4): bottlenecks.

    Our count exceeds the paper's by the 0.15M parameters of batch normalisation, which it leaves out.
    """
    return cifar_preact_resnet(1001, bottleneck=True, **options)


@register_model("cifar")
def wrn16_4(**options) -> ResNet:
    """Wide ResNet 16-4 (Zagoruyko and Komodakis 2016): 2.75M parameters, the base of `fmnist-best`."""
    return wide_resnet(16, 4, **options)


@register_model("cifar")
def wrn28_10(**options) -> ResNet:
    """Wide ResNet 28-10 (Zagoruyko and Komodakis 2016)."""
    return wide_resnet(28, 10, **options)


@register_model("cifar")
def wrn40_4(**options) -> ResNet:
    """Wide ResNet 40-4 (Zagoruyko and Komodakis 2016)."""
    return wide_resnet(40, 4, **options)


def _any_depth(match: re.Match[str], **options) -> ResNet:
    kind, depth = match.group(1), int(match.group(2))
    if kind == "plain" or (depth - 2) % 6 == 0:
        return cifar_resnet(depth, plain=kind == "plain", **options)
    raise ValueError(
        f"unknown model '{kind}{depth}': CIFAR-style depths are 6n+2 (20, 32, 44, 56, 110, ...), "
        "ImageNet depths 18, 34, 50, 101, 152 (see `resnets models`)"
    )


def _cifar_prefixed(match: re.Match[str], **options) -> ResNet:
    return cifar_resnet(int(match.group(2)), plain=match.group(1) == "plain", **options)


# resnet38, plain74, ...: any 6n+2 depth, for the depth sweeps of Fig. 6.
register_pattern(r"(resnet|plain)(\d+)", "cifar", _any_depth)
# cifar_resnet50, cifar_plain152: always the CIFAR family, where the bare name is an ImageNet net.
register_pattern(r"cifar_(resnet|plain)(\d+)", "cifar", _cifar_prefixed)


def cifar_name(family: str, depth: int) -> str:
    """The name of the CIFAR-style net of `family` (resnet or plain) and `depth`, never an ImageNet net's.

    >>> cifar_name("resnet", 56), cifar_name("resnet", 50)
    ('resnet56', 'cifar_resnet50')
    """
    name = f"{family}{depth}"
    return name if model_entry(name).family == "cifar" else f"cifar_{name}"
