"""An exponential moving average of the weights (Polyak averaging), evaluated beside the trained
weights: timm's ModelEmaV2 (a constant decay), or with a warm-up its ModelEmaV3. Not in the 2015 paper."""

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
    >>> ema.update()
    >>> bool(torch.allclose(ema.model.weight, net.weight - 1.0))
    True
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"ema decay={decay!r} must be in (0, 1), e.g. 0.9998")
        self.decay = decay
        self.warmup = warmup
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        # The tensors of both state dicts share storage with the networks: updated in place.
        own, source = self.model.state_dict(), model.state_dict()
        floats = [k for k, v in own.items() if v.is_floating_point()]
        self._averaged, self._current = [own[k] for k in floats], [source[k] for k in floats]
        self._kept = [(own[k], source[k]) for k in own if k not in floats]

    def decay_at(self, step: int) -> float:
        """The decay of update `step` (1 for the first): `decay` throughout (timm's ModelEmaV2), or with
        `warmup`, timm's ModelEmaV3 warm-up: the first update copies the weights, update k > 1 decays by
        1 - k^(-2/3) while that is below `decay` (0.37 at the second update, 0.99 after about 1,000).

        >>> round(WeightAverage(nn.Linear(1, 1), 0.999, warmup=True).decay_at(2), 4)  # 1 - 2 ** (-2/3)
        0.37
        """
        if not self.warmup:
            return self.decay
        if step <= 1:
            return 0.0
        return min(self.decay, 1 - step ** (-2 / 3))

    @torch.no_grad()
    def update(self, step: int | None = None) -> None:
        """Move the average towards the current weights of the network it was made from (update `step`,
        counted from 1, decides the decay with `warmup`)."""
        decay = self.decay if step is None else self.decay_at(step)
        torch._foreach_lerp_(self._averaged, self._current, 1 - decay)
        for own, source in self._kept:
            own.copy_(source)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
