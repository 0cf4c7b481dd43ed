"""Where a run stands, and what the loop measures between two host synchronisations."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from .distributed import SINGLE, Distributed


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

    def combine(self, place: Distributed, images: int) -> tuple[float, float, int, int]:
        """The epoch's (loss sum, error count, images seen) and `images` (this process's images timed),
        each summed over the processes of `place`'s group.

        Afterwards the main process (whose state a checkpoint saves) holds the sums and the others
        hold none, so that summing the processes' positions again counts every image once.
        """
        if not place.active:
            return self.sums[0].item(), self.sums[1].item(), self.seen, images
        extra = torch.tensor([self.seen, images], dtype=torch.float64, device=self.sums.device)
        totals = place.sum(torch.cat([self.sums, extra]))
        kept = totals[:3] if place.is_main else torch.zeros_like(totals[:3])
        self.sums.copy_(kept[:2])
        self.seen = int(kept[2].item())
        loss, errors, seen, images_total = totals.tolist()
        return loss, errors, int(seen), int(images_total)

    def count(self, loss: torch.Tensor, errors: torch.Tensor, n: int) -> None:
        """A step of `n` images taken: its loss and errors added to the epoch's sums (on the device)."""
        self.sums[0] += loss.double() * n
        self.sums[1] += errors
        self.seen += n
        self.step += 1
        self.epoch_step += 1

    def load_state_dict(self, state: dict, main: bool = True) -> None:
        """Restore a checkpoint's position; the epoch's sums so far go to the main process alone (see `combine`)."""
        self.step, self.epoch, self.epoch_step = state["step"], state["epoch"], state["epoch_step"]
        self.best, self.seen = state["best"], state["seen"]
        self.sums.copy_(state["sums"])
        if not main:
            self.sums.zero_()
            self.seen = 0

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

    def values(self, place: Distributed = SINGLE) -> tuple[torch.Tensor, int]:
        """The pending steps' (loss, errors) on the host, and the images they took: the sync. Over a
        group (`place`), the mean of the processes' mean losses and the sums of their errors and
        images: every process takes the same decisions from them."""
        if not place.active:
            return self.buffer[: self.pending].cpu(), self.images
        local = self.buffer[: self.pending].double().flatten()
        extra = torch.tensor([self.images], dtype=torch.float64, device=local.device)
        totals = place.sum(torch.cat([local, extra])).cpu()
        values = totals[:-1].view(-1, 2)
        values[:, 0] /= place.world_size  # the mean of the processes' mean losses
        return values, int(totals[-1])

    def restart(self, step: int, now: float | None = None) -> None:
        self.pending, self.start_step, self.images = 0, step, 0
        self.clock = time.perf_counter() if now is None else now
