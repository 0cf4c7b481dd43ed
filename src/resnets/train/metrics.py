"""Per-epoch metrics: `metrics.jsonl` (one JSON object a line), `metrics.csv`; TensorBoard and MLflow when asked."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tqdm import tqdm

from ..errors import MissingExtra, first_line
from ..files import atomic_write
from ..text import plural
from ..trained import METRICS, METRICS_CSV

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
# Columns that runs with an average of the weights (--ema) add.
EMA_COLUMNS = ("ema_val_err", "ema_test_err", "ema_test_top5_err")
# Fields that measure the machine rather than the run; they differ between identical runs.
TIMING_FIELDS = ("images_per_s", "epoch_time", "elapsed", "data_wait", "rank_images_per_s", "rank_data_wait")


SPLITS = ("train", "val", "test")
# More classes than this, and a top-5 error says something: with 5 or fewer every label is among the top 5.
TOP5_FROM = 6


def shows_top5(classes: int | None) -> bool:
    """Whether a top-5 error is worth showing for a network of `classes` outputs (None: not known, shown).

    >>> shows_top5(10), shows_top5(5), shows_top5(None)
    (True, False, True)
    """
    return classes is None or classes >= TOP5_FROM


def scalar_tag(key: str) -> str:
    """The TensorBoard and MLflow name of an epoch record's field, grouped by split as timm users find them:
    train/loss, train/err, val/err, test/err, test/top5_err, test/ema_err; the timings under time/; lr as it is.

    >>> [scalar_tag(k) for k in ("train_loss", "test_top5_err", "ema_test_err", "images_per_s", "lr")]
    ['train/loss', 'test/top5_err', 'test/ema_err', 'time/images_per_s', 'lr']
    """
    if key in TIMING_FIELDS:
        return f"time/{key}"
    ema = key.startswith("ema_")
    split, _, rest = key.removeprefix("ema_").partition("_")
    if split in SPLITS and rest:
        return f"{split}/{'ema_' * ema}{rest}"
    return key


def scalars(record: dict, classes: int | None = None) -> dict[str, float]:
    """An epoch record's numbers under their grouped names (`scalar_tag`), without epoch and step (the x axis)
    and without the top-5 errors where they are always 0 (`shows_top5`)."""
    return {
        scalar_tag(k): float(v)
        for k, v in record.items()
        if k not in ("epoch", "step")
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and (shows_top5(classes) or "top5" not in k)
    }


def _clean(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """The run's history of epoch records, mirrored to files; rebuilt from a checkpoint on resume."""

    def __init__(
        self,
        run_dir: Path,
        history: list[dict] | None = None,
        tensorboard: bool = False,
        write: bool = True,
        mlflow: str | None = None,
        params: dict | None = None,
        classes: int | None = None,
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
        self.mlflow = MlflowLog(run_dir, mlflow, params or {}) if mlflow and write else None
        self.classes = classes
        self._rewrite()

    def add(self, record: dict) -> None:
        """Keep `record` in the history (saved with the next checkpoint); `write_last` writes it out."""
        self.history.append({k: _clean(v) for k, v in record.items()})

    def write_last(self) -> None:
        if not self.write:
            return
        record = self.history[-1]
        with open(self.run_dir / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")
        self._write_csv()
        if self.writer is not None:
            for tag, value in scalars(record, self.classes).items():
                self.writer.add_scalar(tag, value, record["step"])
            self.writer.flush()
        if self.mlflow is not None:
            try:
                self.mlflow.log(record, self.classes)
            except Exception as exc:  # a tracking server that went away must not stop the training
                print(
                    f"warning: MLflow logging stopped ({type(exc).__name__}: {exc}); metrics.jsonl has every epoch",
                    file=sys.stderr,
                )
                self.mlflow = None

    def _rewrite(self) -> None:
        """Make the files hold exactly `history` (after a resume, drop what the crash left beyond it)."""
        if not self.write:
            return
        atomic_write(self.run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in self.history).encode())
        self._write_csv()

    def _write_csv(self) -> None:
        buffer = io.StringIO()
        extra = [k for k in EMA_COLUMNS if any(k in r for r in self.history)]
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS + tuple(extra), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write(self.run_dir / METRICS_CSV, buffer.getvalue().encode())

    def close(self, finished: bool = False) -> None:
        """Close TensorBoard and MLflow. A logger that fails now costs the run nothing: a warning, and
        metrics.jsonl (written every epoch) keeps the figures."""
        loggers: list[tuple[str, Any, Callable[[Any], object]]] = [("TensorBoard", self.writer, lambda w: w.close())]
        loggers.append(("MLflow", self.mlflow, lambda m: m.close(finished)))
        self.writer = self.mlflow = None
        for name, logger, close in loggers:
            if logger is None:
                continue
            try:
                close(logger)
            except Exception as exc:  # a tracking server that went away, a full disk under the event files
                warnings.warn(
                    f"{name} could not be closed ({type(exc).__name__}: {first_line(exc)}); the run itself is "
                    f"complete and {self.run_dir / METRICS} has every epoch",
                    stacklevel=2,
                )


def _store_hint(where: str) -> str:
    """What a tracking URI needs beyond the mlflow extra's client, where the client refuses it."""
    scheme = urlparse(where).scheme.split("+")[0]
    if scheme in ("sqlite", "postgresql", "mysql", "mssql"):
        return " (a database store needs the whole MLflow package, pip install mlflow, not the mlflow extra's client)"
    if scheme not in ("", "file", "http", "https", "databricks"):
        return f" ({scheme}:// is not a tracking store: give a folder, file://, http(s):// or a database URI)"
    return ""


class MlflowLog:
    """The run's config and epoch records in MLflow (the mlflow extra), under the experiment "resnets".

    `where` is a folder, a local file store that needs no server, or a tracking URI (sqlite:///...,
    http://...). The MLflow run's id is kept in the run folder (mlflow.json): a resumed run logs
    into the same MLflow run.
    """

    def __init__(self, run_dir: Path, where: str, params: dict) -> None:
        if urlparse(where).scheme in ("", "file"):
            # MLflow 3 refuses file stores unless told otherwise; here the user asked for one.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            where = Path(where.removeprefix("file://")).expanduser().resolve().as_uri()
        # MLflow retries a request 7 times with growing pauses (4 minutes against a server that is
        # down); a run waits at most seconds, then says so, unless the environment sets otherwise.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise MissingExtra("mlflow", "mlflow", " (or leave --mlflow out)") from None
        try:
            self.client = MlflowClient(tracking_uri=where)
            self._open(run_dir, where, params)
        except Exception as exc:  # MLflow's own errors: an unreachable server, a store it cannot write or read
            raise ValueError(f"cannot log to MLflow at {where}: {first_line(exc)}{_store_hint(where)}") from None

    def _open(self, run_dir: Path, where: str, params: dict) -> None:
        memo = run_dir / "mlflow.json"
        try:
            saved = json.loads(memo.read_text()) if memo.is_file() else {}
            if not isinstance(saved, dict) or (saved and not isinstance(saved.get("run_id"), str)):
                raise ValueError("no run id")
        except (ValueError, OSError) as exc:
            raise ValueError(
                f"{memo} is not the record of an MLflow run ({first_line(exc)}): delete it to log into a new run"
            ) from None
        if saved.get("tracking_uri") == where:
            self.run_id = saved["run_id"]
            try:
                self.client.update_run(self.run_id, status="RUNNING")
            except Exception as exc:  # the run was deleted, or the store replaced
                raise ValueError(
                    f"the MLflow run {self.run_id} that {memo} records is not in {where} ({first_line(exc)}): "
                    f"delete {memo} to log into a new run"
                ) from None
            return
        found = self.client.get_experiment_by_name("resnets")
        experiment = found.experiment_id if found else self.client.create_experiment("resnets")
        run = self.client.create_run(experiment, run_name=run_dir.name)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        # MLflow keeps parameters as strings of at most 6,000 characters.
        values = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        self.client.log_batch(self.run_id, params=values)
        atomic_write(memo, (json.dumps({"tracking_uri": where, "run_id": self.run_id}) + "\n").encode())
        self.client.update_run(self.run_id, status="RUNNING")

    def log(self, record: dict, classes: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = int(record["step"])
        metrics = [Metric(tag, value, now, step) for tag, value in scalars(record, classes).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, finished: bool) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if finished else "KILLED")


class Discard:
    """Where the processes of a group other than rank 0 write their progress: nowhere."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


FALLBACK_COLUMNS = 80  # the width of a terminal that reports none (0 columns: serial consoles, some containers)


def screen_shape(stream) -> tuple[int, int | None]:
    """(columns, rows) for a tqdm bar on `stream`'s terminal: $COLUMNS where it is a positive number, else
    what the terminal reports, else `FALLBACK_COLUMNS`; one column less, as tqdm keeps clear of a wrap.

    >>> import io
    >>> screen_shape(io.StringIO())  # no terminal behind it
    (79, None)
    """
    try:
        size = os.get_terminal_size(stream.fileno())
        columns, rows = size.columns, size.lines
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        columns = rows = 0
    environ = os.environ.get("COLUMNS", "")
    if environ.isdigit() and int(environ) > 0:
        columns = int(environ)
    return (columns if columns > 0 else FALLBACK_COLUMNS) - 1, (rows - 1 if rows > 0 else None)


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
            columns, rows = screen_shape(self.stream)
            self.bar = tqdm(
                total=total_steps, initial=start_step, file=self.stream, unit="step", ncols=columns, nrows=rows
            )
            # tqdm asks this at every redraw, so the bar follows a resized window; its own asker gives a
            # terminal that reports 0 columns a width of -1, and draws nothing at all.
            self.bar.dynamic_ncols = screen_shape

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


def format_record(r: dict, classes: int | None = None) -> str:
    """An epoch's record as the one line the run prints; without the top-5 error for a network of 5 or fewer
    `classes` (outputs), where it is always 0.

    >>> record = {"epoch": 1, "train_loss": 1.0, "train_err": 0.5, "test_err": 0.25, "test_top5_err": 0.0,
    ...           "images_per_s": 900.0, "epoch_time": 2.0}
    >>> format_record(record, classes=4)
    'epoch 1  train loss 1.0000  train err 50.00%  test err 25.00%  900 img/s  2.0 s'
    """
    parts = [f"epoch {r['epoch']}", f"train loss {r['train_loss']:.4f}", f"train err {100 * r['train_err']:.2f}%"]
    if r.get("val_err") is not None:
        parts.append(f"val err {100 * r['val_err']:.2f}%")
    parts.append(f"test err {100 * r['test_err']:.2f}%")
    if shows_top5(classes):
        parts.append(f"test top-5 err {100 * r['test_top5_err']:.2f}%")
    for split in ("val", "test"):
        if r.get(f"{split}_left_out"):
            images, unreadable = plural(r[f"{split}_images"], "image"), r[f"{split}_left_out"]
            parts.append(f"({split} errors on {images}: {unreadable} unreadable left out)")
    if r.get("ema_test_err") is not None:
        parts.append(f"EMA test err {100 * r['ema_test_err']:.2f}%")
    parts += [
        f"{r['images_per_s']:.0f} img/s" if r.get("images_per_s") is not None else "evaluated again",
        f"{r['epoch_time']:.1f} s",
    ]
    return "  ".join(parts)


def bad_images_line(r: dict) -> str:
    """What the run says of the unreadable training images an epoch's record counts (`bad_images_fields`)."""
    count, names = r["bad_images"], r["bad_image_files"]
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return (
        f"epoch {r['epoch']}: {plural(count, 'unreadable image')} met so far, "
        f"each replaced by another training image: {shown}"
    )
