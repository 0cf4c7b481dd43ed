"""ResNet weights from torchvision and timm, recognised and converted to resnets state dicts.

Both libraries name ResNet parameters as resnets does (`conv1`, `layer1.0.bn2`, `downsample.0/1`,
`fc`; timm's `resnet*`, `resnext*` and `wide_resnet*` have exactly torchvision's keys), so the
conversion is recognising the architecture from the keys and shapes, choosing the options that
give the same layout, and filling in the BN batch counters that old files lack.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS, paper_test_resize
from ..errors import write_error
from .registry import build, list_models, model_entry
from .resnet import ResNetConfig
from .weights import clean_state_dict, load_state_dict, mismatches, read_weights_entry

SOURCES = ("torchvision", "timm")
# Both libraries put the bottleneck's stride on the 3x3 conv ("ResNet v1.5", see blocks.Bottleneck);
# basic blocks have no 1x1 conv, but their options say the same so that every converted config agrees.
SOURCE_STRIDE_AT = "3x3"
VERIFY_ATOL = 1e-5
_BLOCK_KEY = re.compile(r"layer(\d+)\.(\d+)\.conv1\.weight")


@dataclass(frozen=True)
class ConvertResult:
    model_name: str
    options: dict
    source: str
    path: Path
    max_abs_diff: float | None  # None when not verified (verify=False, or the source library is not installed)
    entry: str | None = None  # the training checkpoint's entry the weights came from (None: a bare state dict)
    inputs: Inputs | None = None  # what the network is shown, as stored in the file


IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class Inputs:
    """What a converted network expects of its images, stored beside its weights so that `resnets eval`
    and `predict` show it images as its source library did: the test view (a centre crop of
    `input_size` after resizing the shorter side to `test_resize`), the normalisation (mean and std of
    each channel, in [0, 1] units as timm and torchvision write them), and the class names.

    Both libraries' ImageNet ResNets are trained on 224 crops with ImageNet's statistics; torchvision's
    first weights and the paper test 224 crops of images resized to 256 (later weights use 232 to 236:
    give theirs with `test_resize`)."""

    input_size: int = 224
    test_resize: int | None = None  # None: input_size * 256 / 224, the paper's ratio
    mean: tuple[float, ...] | None = None  # None: ImageNet's, for RGB networks
    std: tuple[float, ...] | None = None
    interpolation: str = "bilinear"
    class_names: tuple[str, ...] | None = None  # None: ImageNet's for 1,000 classes

    def metadata(self, num_classes: int, in_channels: int) -> dict[str, str]:
        """The trained-network fields of a resnets safetensors file (see `resnets.trained`)."""
        if not 1 <= self.input_size <= 4096 or (self.test_resize is not None and self.test_resize < self.input_size):
            raise ValueError(
                f"input_size={self.input_size} and test_resize={self.test_resize}: a side of 1 to 4096 pixels "
                "and a resize at least as large"
            )
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation={self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
        resize = self.test_resize or paper_test_resize(self.input_size)
        data = {"name": "imagenet", "image_size": [self.input_size] * 2, "in_channels": in_channels}
        data.update(test_size=self.input_size, test_resize=resize, interpolation=self.interpolation)
        fields = {"data": json.dumps(data)}
        mean, std = self.mean, self.std
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (one number per input channel), or neither")
        if mean is None and in_channels == 3:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        if mean is not None and std is not None:
            if len(mean) != in_channels or len(std) != in_channels or min(std) <= 0:
                raise ValueError(
                    f"mean {list(mean)} and std {list(std)}: one number per input channel ({in_channels}), std positive"
                )
            pixels = {"mean": [255 * v for v in mean], "std": [255 * v for v in std]}
            fields["normalization"] = json.dumps(pixels)
        names = list(self.class_names) if self.class_names is not None else imagenet_classes(num_classes)
        if names is not None:
            if len(names) != num_classes:
                raise ValueError(f"{len(names)} class names for a network of {num_classes} classes")
            fields["class_names"] = json.dumps(names)
        return fields


def imagenet_classes(num_classes: int) -> list[str] | None:
    """ImageNet's 1,000 class names (torchvision's list, installed with it) for a 1,000-class network, else None."""
    if num_classes != IMAGENET_CLASSES or importlib.util.find_spec("torchvision") is None:
        return None
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], source: str
) -> tuple[str, dict, dict[str, torch.Tensor]]:
    """Recognise a torchvision or timm ResNet state dict: (model name, create_model options, state dict).

    >>> import torchvision
    >>> name, options, state_dict = convert_state_dict(torchvision.models.resnet50().state_dict(), "torchvision")
    >>> name, options
    ('resnet50', {'stride_at': '3x3', 'num_classes': 1000})
    >>> model = build(name, **options)
    >>> model.load_state_dict(state_dict)
    <All keys matched successfully>
    """
    if source not in SOURCES:
        raise ValueError(f"unknown weights source {source!r}; accepted: {', '.join(SOURCES)}")
    state_dict = with_bn_counters(clean_state_dict(state_dict))
    found = infer_config(state_dict)
    name = _registered_name(found, source)
    options: dict = {"stride_at": SOURCE_STRIDE_AT, "num_classes": found["num_classes"]}
    if found["in_channels"] != 3:
        options["in_channels"] = found["in_channels"]
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        problems = mismatches(build(name, **options), state_dict)
    if problems:
        more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
        raise ValueError(f"{source} state dict looks like {name} but does not fit it: {'; '.join(problems[:4])}{more}")
    return name, options, state_dict


def convert_file(
    src_path: str | Path, source: str, out_path: str | Path, verify: bool = True, inputs: Inputs | None = None
) -> ConvertResult:
    """Convert a torchvision or timm ResNet weights file into a resnets `.safetensors` file.

    With `verify` (and the source library installed), the source model with the original weights
    and the resnets model with the converted ones must agree within 1e-5 on a random batch.
    The file's metadata holds the model name, the options (JSON), the source and `inputs` (the test
    view, normalisation and class names: ImageNet's by default), so that it evaluates and predicts
    as a trained run's weights do. A timm or torchvision training checkpoint gives its weights entry.

    >>> result = convert_file("resnet50-11ad3fa6.pth", "torchvision",
    ...                       "resnet50.safetensors")  # torchvision's 100 MB file  # doctest: +SKIP
    >>> model = create_model(result.model_name, weights=result.path, **result.options)  # doctest: +SKIP
    """
    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise ValueError(f"out_path {str(out_path)!r} must end in .safetensors")
    if not out_path.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(out_path.parent)!r} does not exist")
    original, entry = read_weights_entry(src_path)
    original = clean_state_dict(original)
    name, options, converted = convert_state_dict(original, source)
    inputs = inputs or Inputs()
    trained = inputs.metadata(options["num_classes"], options.get("in_channels", 3))  # checked before the work
    diff = None
    if verify and importlib.util.find_spec(source) is not None:
        diff = verify_conversion(name, options, original, converted, source)
    metadata = {"format": "pt", "model_name": name, "options": json.dumps(options), "source": source, **trained}
    _save_safetensors(converted, out_path, metadata)
    return ConvertResult(name, options, source, out_path, diff, entry, inputs)


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Block type, blocks per stage, groups, width per group, classes and input channels, read off the keys.

    >>> import torchvision
    >>> infer_config(torchvision.models.resnext50_32x4d().state_dict())["groups"]
    32
    """
    if "conv1.weight" not in state_dict:
        stems = sorted(k for k in state_dict if k.startswith("conv1."))[:2]
        if stems:
            raise ValueError(f"deep stems ({', '.join(stems)}, ...) are not supported: resnets has one 7x7 stem conv")
        first = ", ".join(list(state_dict)[:3])
        raise ValueError(f"not a ResNet state dict: no stem conv 'conv1.weight' (keys start {first}, ...)")
    block = "bottleneck" if "layer1.0.conv3.weight" in state_dict else "basic"
    groups, width_per_group = 1, 64
    if block == "bottleneck":
        # conv2 of the first stage is (width, width / groups, 3, 3) with width = groups * width_per_group.
        width, per_group = state_dict["layer1.0.conv2.weight"].shape[:2]
        groups = width // per_group
        width_per_group = width // groups
    fc = state_dict.get("fc.weight")
    return {
        "block": block,
        "layers": blocks_per_stage(state_dict),
        "groups": groups,
        "width_per_group": width_per_group,
        "num_classes": 0 if fc is None else int(fc.shape[0]),
        "in_channels": int(state_dict["conv1.weight"].shape[1]),
    }


def blocks_per_stage(state_dict: Mapping[str, torch.Tensor]) -> list[int]:
    """Blocks in each stage, from the `layer{stage}.{block}.conv1.weight` keys."""
    counts: dict[int, int] = {}
    for key in state_dict:
        match = _BLOCK_KEY.fullmatch(key)
        if match:
            stage, block = int(match[1]), int(match[2])
            counts[stage] = max(counts.get(stage, 0), block + 1)
    if sorted(counts) != list(range(1, len(counts) + 1)) or not counts:
        raise ValueError(f"no ResNet stages layer1..layerN found (stages {sorted(counts)}); is this a ResNet?")
    return [counts[stage] for stage in sorted(counts)]


def with_bn_counters(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state_dict` with a zero `num_batches_tracked` for every BN that lacks one.

    torchvision's 2017 files (e.g. resnet18-f37072fd.pth) predate the counter (PyTorch 0.4.1);
    BatchNorm's own loader fills it in the same way. Eval-mode outputs do not depend on it.
    """
    filled = dict(state_dict)
    for key in state_dict:
        if key.endswith(".running_mean"):
            counter = key[: -len("running_mean")] + "num_batches_tracked"
            filled.setdefault(counter, torch.tensor(0, dtype=torch.long))
    return filled


def verify_conversion(
    name: str, options: dict, original: Mapping[str, torch.Tensor], converted: Mapping[str, torch.Tensor], source: str
) -> float:
    """Max abs difference between the source model (original weights) and ours (converted), in eval mode."""
    reference = source_model(name, options, source)
    reference.load_state_dict(original)
    ours = load_state_dict(build(name, **options), converted)
    x = torch.randn(2, options.get("in_channels", 3), 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours.eval()(x) - reference.eval()(x)).abs().max().item()
    if not diff <= VERIFY_ATOL:
        raise ValueError(f"converted {name} differs from {source}'s: max abs difference {diff:.3g} > {VERIFY_ATOL:g}")
    return diff


def source_model(name: str, options: dict, source: str) -> nn.Module:
    """The torchvision or timm network `name`, randomly initialised, with the head and input of `options`."""
    num_classes, in_channels = options["num_classes"], options.get("in_channels", 3)
    if source == "timm":
        try:
            import timm
        except ImportError:
            raise ValueError("checking against timm needs timm, which is not installed (pip install timm)") from None

        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    import torchvision

    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if in_channels != 3:  # torchvision's builders take no input channels; the stem is the only layer that changes
        model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, 7, stride=2, padding=3, bias=False)
    return model


@functools.cache
def _registered_resnets() -> dict[str, ResNetConfig]:
    """The registered ImageNet ResNets in torchvision's layout: post-activation blocks, projection shortcuts."""
    configs = {}
    with torch.device("meta"):
        for name in list_models():
            config = getattr(build(name), "config", None) if model_entry(name).family == "imagenet" else None
            if config and config.block in ("basic", "bottleneck") and config.shortcut == "B":
                configs[name] = config
    return configs


def _registered_name(found: dict, source: str) -> str:
    arch = (found["block"], tuple(found["layers"]), found["groups"], found["width_per_group"])
    for name, c in _registered_resnets().items():
        if (c.block, c.layers, c.groups, c.width_per_group) == arch:
            return name
    grouping = f" ({found['groups']}x{found['width_per_group']}d)" if found["block"] == "bottleneck" else ""
    known = [
        f"{n} {list(c.layers)}" + (f" ({c.groups}x{c.width_per_group}d)" if grouping else "")
        for n, c in _registered_resnets().items()
        if c.block == found["block"]
    ]
    raise ValueError(
        f"{source} state dict: {found['block']} blocks per stage {found['layers']}{grouping} "
        f"match no registered ResNet (known: {', '.join(known)})"
    )


def _save_safetensors(state_dict: Mapping[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write next to `path` and rename, so that a failure leaves no half-written file."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except SafetensorError as exc:  # safetensors' own error for a failed write: an OSError naming the file
        raise write_error(exc, path) from exc
    finally:
        tmp.unlink(missing_ok=True)
