"""Parameters and multiply-adds of a network, total and per stage.

Multiply-adds are counted as the paper counts "FLOPs" in Table 1: one per weight of each
convolution and fully connected layer per output position. BN, ReLU, pooling and the
shortcut additions are left out (they are under 1% of the total). The count comes from
the layers' shapes, found by one forward pass on the meta device, so no arithmetic is done.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..models.registry import build, model_entry, registered_name


@dataclass
class StageCost:
    name: str
    params: int
    macs: int
    output_shape: tuple[int, ...] = ()


@dataclass
class Complexity:
    """What `complexity()` returns: totals and the per-stage breakdown."""

    name: str
    input_size: tuple[int, int, int]
    params: int
    macs: int
    stages: list[StageCost] = field(default_factory=list)

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["gmacs"] = round(self.gmacs, 4)
        for s in d["stages"]:
            s["output_shape"] = list(s["output_shape"])
        return d


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-adds of one conv or linear layer for the output it produced (batch included)."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


class _ShapesOnly(TorchFunctionMode):
    """Pass batch norm through untouched: on the meta device its decomposition costs ~4 ms a call."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.batch_norm:
            return args[0]
        return func(*args, **(kwargs or {}))


def complexity(model: nn.Module | str, input_size: tuple[int, int, int] | None = None, **options) -> Complexity:
    """Parameters and forward multiply-adds of one image, total and per stage.

    `model` is a registered name (built on the meta device: no memory, no arithmetic) or a
    module; `input_size` is (C, H, W), by default the size the model's family was designed for.

    >>> c = complexity("resnet18")
    >>> c.params, round(c.gmacs, 3)
    (11689512, 1.814)
    """
    net: Any  # a network of the registry's: it names its stages()
    size: tuple[int, ...]
    if isinstance(model, str):
        entry = model_entry(model)
        size = tuple(input_size or entry.input_size)
        name = entry.name  # as registered: ResNet50 is resnet50
        if "in_channels" not in options and size[0] != 3:
            options = {**options, "in_channels": size[0]}
        with torch.device("meta"):
            net = build(model, **options)
    else:
        name = getattr(model, "model_name", type(model).__name__)
        if input_size is not None:
            size = tuple(input_size)
        else:
            known = model_entry(name) if registered_name(model) else None
            size = tuple(known.input_size) if known else (3, 224, 224)
        net = copy.deepcopy(model).to("meta")
    size = tuple(int(v) for v in size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"input size {size} must be three positive integers C H W")
    c, h, w = size

    stage_of: dict[nn.Module, str] = {}
    for stage, modules in net.stages():
        for top in modules:
            for m in top.modules():
                stage_of.setdefault(m, stage)
    macs = {stage: 0 for stage, _ in net.stages()}
    shapes: dict[str, tuple[int, ...]] = {}

    def record(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        stage = stage_of.get(module)
        if stage is not None:
            macs[stage] += layer_macs(module, output)

    def record_stage(stage: str):
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                shapes[stage] = tuple(output.shape[1:])

        return hook

    handles = [m.register_forward_hook(record) for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    for stage, modules in net.stages():
        handles.append(modules[-1].register_forward_hook(record_stage(stage)))
    try:
        net.eval()
        with torch.no_grad(), _ShapesOnly():
            net(torch.empty(1, c, h, w, device="meta"))
    finally:
        for handle in handles:
            handle.remove()

    stages = []
    for stage, modules in net.stages():
        params = sum(p.numel() for top in modules for p in top.parameters())
        stages.append(StageCost(stage, params, macs[stage], shapes.get(stage, ())))
    total_params = sum(p.numel() for p in net.parameters())
    return Complexity(name, (c, h, w), total_params, sum(macs.values()), stages)
