"""Where a run stands, and what the loop measures between two host synchronisations."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch


@dataclass
class RunPosition:
    """A run's position: what a checkpoint saves and a resume restores, beside the weights, the
    optimizer, the schedule, the RNGs and the history of epoch records.

    >>> position = RunPosition.start(torch.device("cpu"))
    >>> position.step, position.epoch, sorted(position.state_dict())
    (0, 0, ['best', 'epoch', 'epoch_step', 'seen', 'step', 'sums'])
    """

    sums: torch.Tensor  # (loss sum, error count) over this epoch's steps, float64 on the device
    step: int = 0  # SGD steps taken
    epoch: int = 0  # epochs finished
    epoch_step: int = 0  # steps taken in the current epoch
    best: float = math.inf  # the best monitored error so far (best.pt)
    seen: int = 0  # images trained on in the current epoch

    @classmethod
    def start(cls, device: torch.device) -> RunPosition:
        return cls(sums=torch.zeros(2, device=device, dtype=torch.float64))

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "best": self.best,
            "sums": self.sums.detach().cpu(),
            "seen": self.seen,
        }

    def combine(self, totals: torch.Tensor, main: bool) -> None:
        """Take the epoch's sums over all processes (`totals`: loss sum, error count, images seen).

        The main process (whose state a checkpoint saves) holds them and the others hold none,
        so that summing the processes' positions again counts every image once.
        """
        kept = totals if main else torch.zeros_like(totals)
        self.sums.copy_(kept[:2])
        self.seen = int(kept[2].item())

    def load_state_dict(self, state: dict) -> None:
        self.step, self.epoch, self.epoch_step = state["step"], state["epoch"], state["epoch_step"]
        self.best, self.seen = state["best"], state["seen"]
        self.sums.copy_(state["sums"])

    def next_epoch(self) -> None:
        self.epoch, self.epoch_step, self.seen = self.epoch + 1, 0, 0
        self.sums.zero_()


class IntervalMeter:
    """Each step's (loss, errors), kept on the device until the loop's next host sync; and the
    images and wall time since the last one, for the speed it reports."""

    def __init__(self, size: int, device: torch.device) -> None:
        self.buffer = torch.zeros(size, 2, device=device)  # (loss, errors) per step since the last sync
        self.pending = 0
        self.start_step = 0
        self.images = 0
        self.clock = time.perf_counter()

    def add(self, loss: torch.Tensor, errors: torch.Tensor, images: int) -> None:
        self.buffer[self.pending, 0] = loss
        self.buffer[self.pending, 1] = errors
        self.pending += 1
        self.images += images

    def values(self) -> torch.Tensor:
        """The pending steps' (loss, errors) on the host: the sync."""
        return self.buffer[: self.pending].cpu()

    def restart(self, step: int, now: float | None = None) -> None:
        self.pending, self.start_step, self.images = 0, step, 0
        self.clock = time.perf_counter() if now is None else now
