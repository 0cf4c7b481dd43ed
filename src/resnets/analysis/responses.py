"""Layer responses, the paper's Fig. 7: residual functions are closer to zero than plain layers.

He et al. 2016, section 4.2: "The responses are the outputs of each 3x3 layer, after BN and
before other nonlinearity (ReLU/addition)". Their standard deviations, by layer and sorted,
are smaller for ResNets than for plain nets, and smaller still for deeper ResNets.

The paper plots one std per layer and does not say how it is taken over a layer's channels.
By default each channel's std is taken over the images and positions, and the layer's figure
is their mean: the most common reading, and the one that does not mix the channels' differing
means into the spread. `pooling="pooled"` takes one std over all images, channels and positions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..files import atomic_write
from ..models.blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck
from ..trained import model_from_checkpoint, run_config, trained_data
from .gradflow import check_fits, describe
from .plots import plot_responses


@dataclass
class LayerResponse:
    index: int  # 1-based, in forward order: Fig. 7's "layer index"
    name: str  # the BN module whose output is measured
    std: float


@dataclass
class Responses:
    """What `layer_responses` measured: one std per 3x3 layer, in order."""

    model: str
    plain: bool
    depth: int
    n_images: int
    layers: list[LayerResponse] = field(default_factory=list)
    pooling: str = "channel"  # channel: mean of the per-channel stds; pooled: one std over everything

    @property
    def sorted(self) -> list[float]:
        """The stds in descending order: the bottom panel of Fig. 7."""
        return sorted((layer.std for layer in self.layers), reverse=True)

    def to_dict(self) -> dict:
        """JSON-ready: model, plain, depth, n_images, layers (index, name, std), sorted (stds, largest first)."""
        return {
            "model": self.model,
            "plain": self.plain,
            "depth": self.depth,
            "n_images": self.n_images,
            "pooling": self.pooling,
            "layers": [asdict(layer) for layer in self.layers],
            "sorted": self.sorted,
        }


def response_layers(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """The BN right after each 3x3 conv, in forward order: the CIFAR stem's, both in a basic block, a bottleneck's bn2.

    >>> from resnets import create_model
    >>> [name for name, _ in response_layers(create_model("resnet8"))][:3]
    ['bn1', 'layer1.0.bn1', 'layer1.0.bn2']
    """
    found = []
    stem, stem_bn = getattr(model, "conv1", None), getattr(model, "bn1", None)
    if isinstance(stem, nn.Conv2d) and stem.kernel_size == (3, 3) and isinstance(stem_bn, nn.BatchNorm2d):
        found.append(("bn1", stem_bn))
    for name, module in model.named_modules():
        if isinstance(module, (PreActBasicBlock, PreActBottleneck)):
            raise ValueError(
                f"{describe(model)[0]} has pre-activation blocks, whose 3x3 convs feed the addition without BN; "
                "Fig. 7 is defined for nets of basic or bottleneck blocks (resnetN, plainN, resnet18-152)"
            )
        if isinstance(module, BasicBlock):
            found += [(f"{name}.bn1", module.bn1), (f"{name}.bn2", module.bn2)]
        elif isinstance(module, Bottleneck):
            found.append((f"{name}.bn2", module.bn2))
    if not found:
        raise ValueError(
            f"{describe(model)[0]} has no 3x3 conv followed by BN; "
            "Fig. 7 is defined for nets of basic or bottleneck blocks (resnetN, plainN, resnet18-152)"
        )
    return found


POOLINGS = ("channel", "pooled")


def layer_responses(
    model: nn.Module, images: torch.Tensor, batch_size: int = 256, pooling: str = "channel"
) -> Responses:
    """The std of every 3x3 layer's response (after BN, before ReLU or addition) over `images`, in eval mode.

    One number per layer, as Fig. 7 plots it: with `pooling="channel"` the mean over channels of
    each channel's std (over images and positions); with "pooled", one std over the whole
    response. The model's mode is restored afterwards.

    >>> import torch
    >>> from resnets import create_model
    >>> r = layer_responses(create_model("resnet20", in_channels=1), torch.randn(8, 1, 16, 16))
    >>> len(r.layers), r.sorted[0] >= r.sorted[-1]
    (19, True)
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r} is not one of {', '.join(POOLINGS)}")
    layers = response_layers(model)
    # float64 running sums (count, sum, sum of squares) per layer and channel, so that batches combine.
    sums = [torch.zeros(module.num_features, 3, dtype=torch.float64) for _, module in layers]
    handles = [module.register_forward_hook(_accumulate(sums[i])) for i, (_, module) in enumerate(layers)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for chunk in images.split(batch_size):
                model(chunk)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    name, plain, depth = describe(model)
    result = Responses(name, plain, depth, len(images), pooling=pooling)
    for i, ((layer_name, _), per_channel) in enumerate(zip(layers, sums, strict=True), 1):
        rows = per_channel if pooling == "channel" else per_channel.sum(0, keepdim=True)
        n, total, squares = rows.unbind(1)
        mean = total / n
        stds = (squares / n - mean * mean).clamp_min(0).sqrt()
        result.layers.append(LayerResponse(i, layer_name, stds.mean().item()))
    return result


def _accumulate(rows: torch.Tensor):
    def hook(module, args, output):
        # Read now: the block's in-place ReLU overwrites bn1's output as soon as this hook returns.
        out = output.detach().double()  # (B, C, H, W)
        count = out.new_full((out.shape[1],), out.numel() / out.shape[1])
        rows.add_(torch.stack([count, out.sum((0, 2, 3)), out.square().sum((0, 2, 3))], dim=1).cpu())

    return hook


def responses_for_checkpoints(
    paths: Sequence[str | Path],
    data: str | None = None,
    n_images: int = 512,
    device: str | torch.device = "cpu",
    data_dir: str | Path | None = None,
    pooling: str = "channel",
) -> list[Responses]:
    """`layer_responses` of each trained checkpoint on the first `n_images` test images.

    Each checkpoint is measured on its own dataset (the one it was trained on) unless `data`
    names another, whose images must have the shape the checkpoint was trained on. Inputs
    are normalised with each checkpoint's own training statistics.

    >>> results = responses_for_checkpoints(["runs/plain20/checkpoints/best.pt", "runs/r20/checkpoints/best.pt"])
    >>> [r.model for r in results]
    ['plain20', 'resnet20']
    """
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise ValueError(f"n_images={n_images!r} must be a positive integer")
    device = torch.device(device)
    results = []
    for path in paths:
        model, meta = model_from_checkpoint(path)
        response_layers(model)  # refuse a net without Fig. 7's layers before loading any data
        if data is None and run_config(meta, path) is None:
            raise ValueError(f"checkpoint {path} does not say which dataset it was trained on; pass data=...")
        # Each checkpoint's own test images (its normalisation differs from run to run).
        bundle = trained_data(meta, path, data, data_dir=data_dir, device=device, batch_size=256)
        images = _first_test_images(bundle, n_images)
        _check_shape(path, meta, model, images, bundle.info.name)
        results.append(layer_responses(model.to(device), images, pooling=pooling))
    return results


FILES = ("responses.json", "responses.png")  # what save_responses writes in its folder


def save_responses(results: Sequence[Responses], out: str | Path) -> tuple[Path, Path]:
    """Write the per-layer stds (responses.json) and the paper's Fig. 7 of them (responses.png) into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures, plot = (out / name for name in FILES)
    atomic_write(figures, (json.dumps([r.to_dict() for r in results], indent=2) + "\n").encode())
    plot_responses(results, plot, title="std of 3x3 layer responses (Fig. 7)")
    return figures, plot


def _first_test_images(bundle, n: int) -> torch.Tensor:
    batches, have = [], 0
    for images, _ in bundle.test.epoch(0):
        batches.append(images[: n - have])
        have += len(batches[-1])
        if have >= n:
            break
    return torch.cat(batches)


def _check_shape(path, meta: dict, model: nn.Module, images: torch.Tensor, data: str) -> None:
    trained = meta.get("data") or {}
    if "in_channels" in trained and "image_size" in trained:
        expected = (trained["in_channels"], *trained["image_size"])
        if tuple(images.shape[1:]) != tuple(expected):
            raise ValueError(
                f"checkpoint {path} was trained on {trained.get('name', 'images')} of shape {expected}, "
                f"but {data} gives {tuple(images.shape[1:])}"
            )
    check_fits(model, f"checkpoint {path}", images, data)
