"""Per-epoch metrics: `metrics.jsonl` (one JSON object a line), `metrics.csv`, TensorBoard when asked."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from pathlib import Path

from tqdm import tqdm

from ..errors import MissingExtra
from ..files import atomic_write

# Columns of metrics.csv, in order; a record may lack the optional ones (val_*).
COLUMNS = (
    "epoch",
    "step",
    "lr",
    "train_loss",
    "train_err",
    "val_err",
    "val_top5_err",
    "test_err",
    "test_top5_err",
    "test_loss",
    "images_per_s",
    "epoch_time",
    "elapsed",
)
# Fields that measure the machine rather than the run; they differ between identical runs.
TIMING_FIELDS = ("images_per_s", "epoch_time", "elapsed")


def _clean(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """The run's history of epoch records, mirrored to files; rebuilt from a checkpoint on resume."""

    def __init__(
        self, run_dir: Path, history: list[dict] | None = None, tensorboard: bool = False, write: bool = True
    ) -> None:
        self.run_dir = run_dir
        self.history: list[dict] = list(history or [])
        self.writer = None
        self.write = write  # False: the history in memory only (the processes of a group other than rank 0)
        if tensorboard and write:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise MissingExtra("tensorboard", "tensorboard", " (or leave --tensorboard out)") from None
            self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        self._rewrite()

    def add(self, record: dict) -> None:
        """Keep `record` in the history (saved with the next checkpoint); `write_last` writes it out."""
        self.history.append({k: _clean(v) for k, v in record.items()})

    def write_last(self) -> None:
        if not self.write:
            return
        record = self.history[-1]
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        self._write_csv()
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("epoch", "step") and isinstance(value, int | float):
                    self.writer.add_scalar(key, value, record["step"])
            self.writer.flush()

    def _rewrite(self) -> None:
        """Make the files hold exactly `history` (after a resume, drop what the crash left beyond it)."""
        if not self.write:
            return
        atomic_write(self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history).encode())
        self._write_csv()

    def _write_csv(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write(self.run_dir / "metrics.csv", buffer.getvalue().encode())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Progress:
    """A tqdm bar on an interactive terminal, plain log lines otherwise.

    The bar moves at every step (`advance`, which reads nothing from the device: on a GPU it counts
    the steps queued) and shows loss, error, learning rate and speed at each logging interval
    (`update`, after the loop's one host sync).
    """

    def __init__(self, total_steps: int, start_step: int, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.total = total_steps
        self.bar = None
        self.started = time.perf_counter()
        if self.stream.isatty():
            self.bar = tqdm(total=total_steps, initial=start_step, file=self.stream, unit="step", dynamic_ncols=True)

    def advance(self, step: int) -> None:
        """One more step done: the bar's count and rate (tqdm redraws at most ten times a second)."""
        if self.bar is not None:
            self.bar.update(step - self.bar.n)

    def update(self, step: int, epoch: int, loss: float, err: float, lr: float, images_per_s: float) -> None:
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(
                epoch=epoch,
                loss=f"{loss:.3f}",
                err=f"{100 * err:.1f}%",
                lr=f"{lr:.3g}",
                img_s=f"{images_per_s:.0f}",
                refresh=False,
            )
            self.bar.refresh()
        else:
            print(
                f"epoch {epoch} step {step}/{self.total}  loss {loss:.4f}  err {100 * err:.2f}%  lr {lr:.4g}  "
                f"{images_per_s:.0f} img/s",
                file=self.stream,
                flush=True,
            )

    def message(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
