"""An exponential moving average of the weights (Polyak averaging; timm's ModelEmaV2), evaluated
beside the trained weights. Not in the 2015 paper."""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """`average = decay * average + (1 - decay) * weights` after every step, for every parameter and
    floating-point buffer (BN's running statistics); integer buffers are copied.

    The update runs on the device with no host synchronisation. Its state is a state dict, saved
    in checkpoints, so that a resumed run averages exactly as an uninterrupted one.

    >>> net = nn.Linear(1, 1)
    >>> ema = WeightAverage(net, decay=0.5)
    >>> with torch.no_grad():
    ...     _ = net.weight.add_(2.0)
    >>> ema.update(net)
    >>> bool(torch.allclose(ema.model.weight, net.weight - 1.0))
    True
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"ema decay={decay!r} must be in (0, 1), e.g. 0.9998")
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._pairs_of: tuple[int, list, list, list, list] | None = None

    def _pairs(self, model: nn.Module) -> tuple[list, list, list, list]:
        if self._pairs_of is None or self._pairs_of[0] != id(model):
            own, theirs = self.model.state_dict(), model.state_dict()
            floats = [k for k, v in own.items() if v.is_floating_point()]
            others = [k for k in own if k not in floats]
            self._pairs_of = (
                id(model),
                [own[k] for k in floats],
                [theirs[k] for k in floats],
                [own[k] for k in others],
                [theirs[k] for k in others],
            )
        return self._pairs_of[1:]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model`'s current weights (the network it was made from)."""
        averaged, current, kept, counted = self._pairs(model)
        torch._foreach_lerp_(averaged, current, 1 - self.decay)
        for a, b in zip(kept, counted, strict=True):
            a.copy_(b)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
