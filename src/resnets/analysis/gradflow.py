"""Gradient flow at a glance: how the identity term of a residual block's Jacobian keeps gradients alive.

The Jacobian of each kind of block, for its input x and output y:
- a pre-activation unit, y = F(x) + x: dy/dx = dF/dx + I exactly ("Identity Mappings in Deep
  Residual Networks", arXiv:1603.05027, eq. 5), whatever the depth;
- a post-activation block of the ResNet paper, y = ReLU(F(x) + s(x)): dy/dx = D (dF/dx + ds/dx),
  with D = diag(1[F(x) + s(x) > 0]) the ReLU's mask and ds/dx = I for an identity shortcut (a
  projection's matrix otherwise): the identity term survives where the sum is positive;
- a plain block, y = ReLU(BN(W2 ReLU(BN(W1 x)))): the product of its layers' Jacobians, no identity
  term, so the gradient reaching the early layers of a plain net is a product of many factors.

One forward/backward pass measures it: the gradient with respect to each weighted layer's input
activation, as a root mean square per element (the gradient "reaching" that layer, comparable
between layers of different sizes); the norm of each layer's weight gradient, a separate figure;
and the gain through every block, RMS(dL/dx) / RMS(dL/dy), free of the tensors' sizes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data import load_dataset
from ..files import atomic_write
from ..models import create_model
from ..models.blocks import BLOCKS
from ..trained import model_from_checkpoint, run_config, trained_data
from .plots import plot_gradient_flow

BLOCK_TYPES = tuple(BLOCKS.values())
FILES = ("gradflow.json", "gradflow.png")  # what save_gradient_flow writes in its folder
DEFAULT_DATA = "synthetic:1,28,28,10"  # Fashion-MNIST's shape, no files needed


@dataclass
class LayerGrad:
    """One conv or linear layer: `depth` is its 1-based position in the paper's layer count.

    Projection shortcuts are not counted in the paper's depth, so their `depth` is None.
    """

    name: str
    kind: str  # conv | shortcut (a projection) | linear
    depth: int | None
    input_grad_rms: float  # RMS of dL/d(layer input), per element: the gradient reaching the layer
    weight_grad_norm: float  # ||dL/dW||_2 of the layer's weight, a figure of another size per layer


@dataclass
class BlockGrad:
    """One residual (or plain) block: `gain` = RMS(dL/d(input)) / RMS(dL/d(output)), per element."""

    name: str
    index: int  # 1-based, in forward order
    residual: bool
    output_grad_rms: float
    input_grad_rms: float

    @property
    def gain(self) -> float:
        return self.input_grad_rms / self.output_grad_rms if self.output_grad_rms else math.nan


@dataclass
class GradFlow:
    """What `gradient_flow` measured on one batch."""

    model: str
    plain: bool  # no shortcuts: a plain net or a VGG
    depth: int  # weighted layers, counted as the paper does
    loss: float
    layers: list[LayerGrad] = field(default_factory=list)
    blocks: list[BlockGrad] = field(default_factory=list)
    weights: str = "init"  # init: at He initialisation; trained: from a checkpoint

    @property
    def first_last_ratio(self) -> float:
        """RMS gradient reaching the first conv (at its input) over that reaching the last conv."""
        convs = [layer for layer in self.layers if layer.kind == "conv"]
        if not convs or not convs[-1].input_grad_rms:
            return math.nan
        return convs[0].input_grad_rms / convs[-1].input_grad_rms

    @property
    def first_last_weight_ratio(self) -> float:
        """Weight-gradient norm of the first conv over that of the last conv (projections left out)."""
        convs = [layer for layer in self.layers if layer.kind == "conv"]
        if not convs or convs[-1].weight_grad_norm == 0:
            return math.nan
        return convs[0].weight_grad_norm / convs[-1].weight_grad_norm

    def to_dict(self) -> dict:
        """JSON-ready: model, plain, depth, loss, weights, the two first/last ratios, layers, blocks (with gains)."""
        return {
            "model": self.model,
            "plain": self.plain,
            "depth": self.depth,
            "loss": self.loss,
            "weights": self.weights,
            "first_last_ratio": self.first_last_ratio,
            "first_last_weight_ratio": self.first_last_weight_ratio,
            "layers": [asdict(layer) for layer in self.layers],
            "blocks": [{**asdict(block), "gain": block.gain} for block in self.blocks],
        }


def describe(model: nn.Module) -> tuple[str, bool, int]:
    """(name, plain, depth) of a network: its registry name where it has one, else one made from its shape."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "shortcut"):
        plain, depth = config.shortcut is None, config.depth
        default = f"{'plain' if plain else 'preact_resnet' if 'preact' in config.block else 'resnet'}{depth}"
    else:
        depth = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
        plain, default = True, f"{type(model).__name__.lower()}{getattr(model, 'depth', depth)}"
    return getattr(model, "model_name", None) or default, plain, depth


def gradient_flow(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> GradFlow:
    """Gradient norms per layer and gains per block for one batch, with cross-entropy loss.

    The model runs in training mode (batch statistics, as when it learns) and is left as it
    was: mode, parameters, their `.grad`, `requires_grad` flags and BN running statistics.

    >>> import torch
    >>> from resnets import create_model
    >>> model = create_model("resnet8", in_channels=1)
    >>> flow = gradient_flow(model, torch.randn(16, 1, 16, 16), torch.randint(0, 10, (16,)))
    >>> len(flow.layers), len(flow.blocks), flow.first_last_ratio > 0
    (8, 3, True)
    """
    weighted = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not weighted:
        raise ValueError(f"{type(model).__name__} has no conv or linear layers to measure")
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, BLOCK_TYPES)]
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    buffers = [b.detach().clone() for b in model.buffers()]
    layer_in: dict[str, float] = {}
    block_out: dict[str, float] = {}
    block_in: dict[str, float] = {}
    handles = []
    images = images.detach().clone().requires_grad_(True)  # so that the first layer's input has a gradient
    try:
        handles += [m.register_forward_pre_hook(_record_grad(n, layer_in, output=False)) for n, m in weighted]
        handles += [m.register_forward_hook(_record_grad(n, block_out, output=True)) for n, m in blocks]
        handles += [m.register_forward_pre_hook(_record_grad(n, block_in, output=False)) for n, m in blocks]
        for p in model.parameters():
            p.requires_grad_(True)
        model.train()
        with torch.enable_grad():
            loss = F.cross_entropy(model(images), labels)
            order = list(layer_in)  # dicts keep insertion order: the order the layers ran
            modules = dict(weighted)
            # autograd.grad rather than backward(): the caller's .grad stays untouched.
            # The images are among the inputs so that the gradient reaching the first layer is computed.
            grads = torch.autograd.grad(loss, [images, *(modules[n].weight for n in order)])[1:]
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        with torch.no_grad():
            for b, saved in zip(model.buffers(), buffers, strict=True):
                b.copy_(saved)

    name, plain, depth = describe(model)
    result = GradFlow(name, plain, depth, loss.item())
    counted = 0
    for layer_name, grad in zip(order, grads, strict=True):
        kind = _kind(layer_name, modules[layer_name])
        counted += kind != "shortcut"
        position = None if kind == "shortcut" else counted
        result.layers.append(LayerGrad(layer_name, kind, position, layer_in[layer_name], grad.norm().item()))
    for i, (block_name, block) in enumerate(blocks, 1):
        residual = getattr(block, "residual", True)
        result.blocks.append(BlockGrad(block_name, i, residual, block_out[block_name], block_in[block_name]))
    return result


def _record_grad(name: str, store: dict[str, float], output: bool):
    """A forward (or pre-forward) hook that stores the RMS (per element) of the gradient of the module's output
    (or input)."""

    def hook(module, args, out=None):
        tensor = out if output else args[0]
        if name in store or not tensor.requires_grad:  # a module run twice is measured at its first call
            return
        store[name] = math.nan  # until the backward pass fills it in
        # A tensor hook receives the gradient of this version of the tensor even when a later
        # in-place ReLU overwrites it (PyTorch's tensor-hook semantics since 2.0).
        tensor.register_hook(lambda g: store.__setitem__(name, g.norm().item() / math.sqrt(g.numel())))

    return hook


def _kind(name: str, module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    return "shortcut" if ".downsample." in f".{name}." else "conv"


def gradient_flow_for(
    name_or_checkpoint: str | Path,
    data: str | None = None,
    batch_size: int = 128,
    seed: int = 0,
    device: str | torch.device = "cpu",
    data_dir: str | Path | None = None,
) -> GradFlow:
    """`gradient_flow` of a registered network at initialisation, or of a trained checkpoint.

    A name builds the network shaped for `data` (He init, seeded by `seed`); a path (`.pt` or
    `.safetensors`) loads the checkpoint. One batch of `batch_size` images is taken from the
    training split of `data`, unaugmented; `data` defaults to the checkpoint's own dataset, or
    to synthetic images of Fashion-MNIST's shape for a name. A checkpoint sees its images as in
    its training (`resnets.trained.trained_data`: the run's normalisation, and the first batch of
    the run's own order: `seed` seeds a fresh network only). The global RNG is left as it was.

    >>> flow = gradient_flow_for("plain20", data="synthetic:1,16,16,10", batch_size=32)
    >>> flow.model, len(flow.layers), len(flow.blocks)
    ('plain20', 20, 9)
    """
    device = torch.device(device)
    checkpoint = _is_checkpoint(name_or_checkpoint)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        if checkpoint:  # its own data unless another is named, normalised as in its training
            model, meta = model_from_checkpoint(name_or_checkpoint)
            if data is None and run_config(meta, name_or_checkpoint) is None:
                data = DEFAULT_DATA
            bundle = trained_data(
                meta, name_or_checkpoint, data, data_dir=data_dir, device=device, batch_size=batch_size
            )
        else:
            bundle = load_dataset(
                data or DEFAULT_DATA, data_dir=data_dir, device=device, batch_size=batch_size, seed=seed, augment=False
            )
        info = bundle.info
        if not checkpoint:
            model = create_model(str(name_or_checkpoint), in_channels=info.in_channels, num_classes=info.num_classes)
        model = model.to(device)
        images, labels = next(iter(bundle.train.epoch(0)))
        check_fits(model, str(name_or_checkpoint), images, info.name, info.num_classes)
        flow = gradient_flow(model, images, labels)
        flow.weights = "trained" if checkpoint else "init"
        return flow


def save_gradient_flow(flows: Sequence[GradFlow], out: str | Path) -> tuple[Path, Path]:
    """Write the per-layer figures (gradflow.json) and their plot (gradflow.png) into the folder `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures, plot = (out / name for name in FILES)
    atomic_write(figures, (json.dumps([f.to_dict() for f in flows], indent=2) + "\n").encode())
    title = "gradient reaching each layer (RMS) and gain through each block, at one batch"
    plot_gradient_flow(flows, plot, title=title)
    return figures, plot


def _is_checkpoint(name_or_checkpoint: str | Path) -> bool:
    path = Path(name_or_checkpoint)
    return isinstance(name_or_checkpoint, Path) or path.suffix in (".pt", ".pth", ".safetensors") or path.is_file()


def check_fits(model: nn.Module, what: str, images: torch.Tensor, data: str, num_classes: int | None = None) -> None:
    """Raise a ValueError naming both when `data`'s images (or classes) do not fit `model`."""
    channels = getattr(model, "in_channels", None)  # a registered model has it; a bare nn.Module may not
    smallest = getattr(model, "min_input_size", 1)
    shape = tuple(images.shape[1:])
    if (channels is not None and shape[0] != channels) or min(shape[1:]) < smallest:
        raise ValueError(f"{what} takes ({channels}, H, W) images with H, W >= {smallest}, but {data} gives {shape}")
    outputs = getattr(model, "num_classes", None)
    if num_classes is not None and outputs is not None and outputs < num_classes:
        raise ValueError(f"{what} has {outputs} outputs, but {data} has {num_classes} classes")
