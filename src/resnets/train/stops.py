"""Stopping a run: signals turned into a request the loop honours, and the two ways a run stops early."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written (None: the run stopped during start-up)."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None, run_dir: Path, launcher: str = "") -> None:
        self.signum, self.step, self.checkpoint, self.run_dir = signum, step, checkpoint, run_dir
        # Under torchrun the same launch line resumes ("torchrun ... -m resnets train ...").
        command = f"{launcher} -m resnets train" if launcher else "resnets train"
        super().__init__(f"{self.what}; resume with: {command} --out {run_dir} --resume")

    @property
    def what(self) -> str:
        """What happened and what was saved, without the advice on resuming."""
        name = signal.Signals(self.signum).name
        if self.checkpoint is None:
            return f"{name} during start-up, before any training step: nothing new was saved in {self.run_dir}"
        return f"{name} at step {self.step}: checkpoint written to {self.checkpoint}"


class Diverged(RuntimeError):
    """The loss or the weights became NaN or infinite; no such checkpoint is written."""


class StopEvaluation(Exception):
    """A stop signal arrived during an evaluation pass: abandon it, checkpoint, stop."""


class StopRequest:
    """SIGINT/SIGTERM turned into a flag that the loop checks between steps.

    A second signal raises KeyboardInterrupt at once (the user insists), except while a
    checkpoint is being written (`shielded`): that finishes first, so it is never lost half-way.
    """

    def __init__(self) -> None:
        self.signals: list[int] = []
        self._shields = 0

    def __bool__(self) -> bool:
        return bool(self.signals)

    @property
    def signum(self) -> int:
        return self.signals[0]

    @contextmanager
    def shielded(self):
        self._shields += 1
        try:
            yield
        finally:
            self._shields -= 1

    def handle(self, signum: int, _frame=None) -> None:
        self.signals.append(signum)
        if len(self.signals) > 1 and not self._shields:
            raise KeyboardInterrupt


@contextmanager
def stop_signals():
    """SIGINT/SIGTERM, while the block runs, set a `StopRequest` instead of killing the process."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, request.handle)
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def unless_stopped(batches: Iterable, stop: StopRequest) -> Iterator:
    """`batches`, abandoned (`StopEvaluation`) as soon as a stop signal arrives: a long test pass
    must not keep a scheduler's SIGTERM waiting."""
    for batch in batches:
        if stop:
            raise StopEvaluation
        yield batch
