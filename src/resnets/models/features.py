"""A network's feature maps at several strides, as timm's `features_only=True` gives them (for detection
and segmentation heads: FPN, U-Net)."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import BLOCKS
from .resnet import ResNet


class FeatureMaps(nn.Module):
    """The feature maps of `model` at `out_indices`: 0 is the stem's activation (before the max-pool),
    1.. the outputs of the stages, as in timm's ResNets. `feature_info` lists each map's channels
    and total stride (`reduction`).

    >>> from resnets import create_model
    >>> backbone = create_model("resnet18", features_only=True, out_indices=(2, 4))
    >>> [tuple(t.shape) for t in backbone(torch.zeros(1, 3, 64, 64))]
    [(1, 128, 8, 8), (1, 512, 2, 2)]
    >>> backbone.feature_info
    [{'module': 'layer2', 'num_chs': 128, 'reduction': 8}, {'module': 'layer4', 'num_chs': 512, 'reduction': 32}]
    """

    def __init__(self, model: nn.Module, out_indices: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if not isinstance(model, ResNet):
            raise ValueError(
                f"features_only needs a ResNet; {getattr(model, 'model_name', type(model).__name__)} has no stages"
            )
        self.model = model
        self.model_name = model.model_name
        available = self._all_features(model)
        out_indices = tuple(range(len(available))) if out_indices is None else tuple(out_indices)
        bad = [i for i in out_indices if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(available)]
        if bad or not out_indices or len(set(out_indices)) != len(out_indices):
            raise ValueError(
                f"out_indices={out_indices!r}: distinct indices from 0 (the stem) to {len(available) - 1} "
                f"(the last stage) for {model.model_name}"
            )
        self.out_indices = tuple(sorted(out_indices))
        self.feature_info = [available[i] for i in self.out_indices]

    @staticmethod
    def _all_features(model: ResNet) -> list[dict]:
        imagenet = model.config.stem == "imagenet"
        info = [{"module": "act1", "num_chs": model.config.stem_width, "reduction": 2 if imagenet else 1}]
        expansion = BLOCKS[model.config.block].expansion
        reduction = 4 if imagenet else 1
        for i, (name, width) in enumerate(zip(model.stage_names, model.config.widths, strict=True)):
            reduction *= 1 if i == 0 else 2
            info.append({"module": name, "num_chs": width * expansion, "reduction": reduction})
        return info

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        m = self.model
        m.check_input(x)
        x = m.conv1(x)
        if m.bn1 is not None:
            x = m.relu(m.bn1(x))
        maps = [x] if 0 in self.out_indices else []
        x = m.maxpool(x)
        last = max(self.out_indices)
        for i, name in enumerate(m.stage_names, start=1):
            if i > last:
                break
            x = getattr(m, name)(x)
            if i in self.out_indices:
                maps.append(m.bn_final(x) if i == len(m.stage_names) and m.bn_final is not None else x)
        return maps
