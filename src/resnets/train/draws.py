"""Random draws of a training step that belong to each image: drop-path's keep-or-drop decisions.

An image's draws depend on (seed, step, its place in the global batch) only, as its data
augmentation does (`resnets.data.base`): each process draws the whole global batch's values with
one generator and keeps its own rows, so 1 and N processes drop the same branches of the same
images, and every process's images get draws of their own.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.base import generator
from ..models.blocks import DropPath


class DropPathDraws:
    """The uniform draws of every DropPath of `model`, set before each forward (`set`).

    `capacity` is the largest number of images one forward takes (this process's share of the global
    batch). The draws live in one tensor on `device`, updated in place (no host synchronisation, and
    a compiled model sees the same tensor every step).

    >>> from resnets import create_model
    >>> net = create_model("resnet20", drop_path=0.2)
    >>> draws = DropPathDraws(net, seed=0, device=torch.device("cpu"), capacity=4)
    >>> draws.set(step=0, rows=slice(2, 4), whole=8)  # images 2 and 3 of a global batch of 8
    >>> tuple(draws.values.shape)  # a row for each of the 9 blocks, a column for each image of a forward
    (9, 4)
    """

    def __init__(self, model: nn.Module, seed: int, device: torch.device, capacity: int) -> None:
        modules = [m for m in model.modules() if isinstance(m, DropPath)]
        self.seed = seed
        self.values = torch.zeros(len(modules), capacity, device=device)  # (DropPaths, images)
        for row, module in enumerate(modules):
            module.draws, module.row = self.values, row

    def __bool__(self) -> bool:
        return self.values.shape[0] > 0

    def set(self, step: int, rows: slice, whole: int) -> None:
        """The draws of images `rows` of step `step`'s global batch of `whole` images."""
        n = rows.stop - rows.start
        if n > self.values.shape[1]:
            raise ValueError(f"{n} images exceed the {self.values.shape[1]} the drop-path draws were made for")
        g = generator(self.values.device, self.seed, "drop-path", step)
        u = torch.rand(self.values.shape[0], whole, generator=g, device=self.values.device)
        self.values[:, :n].copy_(u[:, rows])
