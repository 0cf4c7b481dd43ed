"""The run's metrics as a timm user finds them: TensorBoard and MLflow names grouped by split, no top-5 error
where it is always 0, and a progress bar on a terminal that reports no width."""

from __future__ import annotations

import io
import os
import sys
from types import SimpleNamespace
from typing import ClassVar

import pytest

from resnets.train.metrics import MetricsLog, Progress, format_record, scalar_tag, scalars, screen_shape

RECORD = {
    "epoch": 2,
    "step": 40,
    "lr": 0.1,
    "train_loss": 1.25,
    "train_err": 0.5,
    "val_err": 0.4,
    "val_top5_err": 0.0,
    "test_err": 0.375,
    "test_top5_err": 0.0,
    "test_loss": 1.5,
    "ema_test_err": 0.25,
    "ema_test_top5_err": 0.0,
    "images_per_s": 900.0,
    "epoch_time": 2.5,
    "elapsed": 5.0,
    "data_wait": 0.125,
    "test_images": 64,
    "test_left_out": None,
    "flag": True,
}
GROUPED = {
    "lr": 0.1,
    "train/loss": 1.25,
    "train/err": 0.5,
    "val/err": 0.4,
    "val/top5_err": 0.0,
    "test/err": 0.375,
    "test/top5_err": 0.0,
    "test/loss": 1.5,
    "test/ema_err": 0.25,
    "test/ema_top5_err": 0.0,
    "time/images_per_s": 900.0,
    "time/epoch_time": 2.5,
    "time/elapsed": 5.0,
    "time/data_wait": 0.125,
    "test/images": 64.0,
}


def test_scalars_are_grouped_by_split_and_leave_out_the_x_axis_and_flags():
    assert scalars(RECORD) == GROUPED
    assert [scalar_tag(k) for k in ("train_loss", "train_err", "test_err", "test_top5_err", "lr")] == [
        "train/loss",
        "train/err",
        "test/err",
        "test/top5_err",
        "lr",
    ]


@pytest.mark.parametrize(("classes", "top5"), [(2, False), (5, False), (6, True), (1000, True), (None, True)])
def test_top5_errors_are_left_out_for_five_classes_or_fewer(classes, top5):
    kept = scalars(RECORD, classes)
    assert {k for k in kept if "top5" in k} == (
        {"val/top5_err", "test/top5_err", "test/ema_top5_err"} if top5 else set()
    )
    assert kept["test/err"] == 0.375
    line = format_record(RECORD, classes)
    assert ("test top-5 err 0.00%" in line) is top5
    assert "train loss 1.2500  train err 50.00%  val err 40.00%  test err 37.50%" in line


class FakeWriter:
    """TensorBoard's SummaryWriter as far as the log uses it, keeping the scalars it is given."""

    scalars: ClassVar[list] = []

    def __init__(self, log_dir):
        self.log_dir = log_dir

    def add_scalar(self, tag, value, step):
        FakeWriter.scalars.append((tag, value, step))

    def flush(self):
        pass

    def close(self):
        pass


def test_tensorboard_gets_the_grouped_tags_at_the_records_step(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", SimpleNamespace(SummaryWriter=FakeWriter))
    FakeWriter.scalars = []
    log = MetricsLog(tmp_path, tensorboard=True, classes=4)
    log.add(RECORD)
    log.write_last()
    log.close(finished=True)
    expected = {k: v for k, v in GROUPED.items() if "top5" not in k}  # 4 classes: every label in the top 5
    assert FakeWriter.scalars == [(tag, value, 40) for tag, value in expected.items()]


class FakeClient:
    """MLflow's client as far as the log uses it, keeping the metrics it is given."""

    metrics: ClassVar[list] = []

    def __init__(self, tracking_uri):
        pass

    def get_experiment_by_name(self, name):
        return SimpleNamespace(experiment_id="0")

    def create_run(self, experiment, run_name):
        return SimpleNamespace(info=SimpleNamespace(run_id="run0"))

    def log_batch(self, run_id, metrics=(), params=()):
        FakeClient.metrics += list(metrics)

    def update_run(self, run_id, status):
        pass

    def set_terminated(self, run_id, status):
        pass


def test_mlflow_gets_the_same_grouped_names(tmp_path, monkeypatch):
    entities = SimpleNamespace(
        Metric=lambda key, value, timestamp, step: (key, value, step), Param=lambda key, value: (key, value)
    )
    monkeypatch.setitem(sys.modules, "mlflow", SimpleNamespace())
    monkeypatch.setitem(sys.modules, "mlflow.tracking", SimpleNamespace(MlflowClient=FakeClient))
    monkeypatch.setitem(sys.modules, "mlflow.entities", entities)
    FakeClient.metrics = []
    log = MetricsLog(tmp_path, mlflow=str(tmp_path / "store"), params={"lr": 0.1}, classes=10)
    log.add(RECORD)
    log.write_last()
    assert FakeClient.metrics == [(tag, value, 40) for tag, value in GROUPED.items()]


class Terminal(io.StringIO):
    """A terminal's stream: interactive, with a file descriptor whose size os.get_terminal_size gives."""

    def isatty(self):
        return True

    def fileno(self):
        return 2


def drawn(columns: int, monkeypatch, environ: str | None = None) -> list[str]:
    """The lines a bar draws (between carriage returns) on a terminal that reports `columns` columns."""
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size((columns, 24 if columns else 0)))
    if environ is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", environ)
    stream = Terminal()
    progress = Progress(100, 0, stream)
    progress.advance(30)
    progress.update(30, 1, 0.5, 0.2, 0.1, 1000.0)
    progress.close()
    return [line for line in stream.getvalue().replace("\n", "\r").split("\r") if line]


@pytest.mark.parametrize(
    ("columns", "environ", "width"), [(0, None, 79), (0, "0", 79), (0, "120", 119), (100, None, 99)]
)
def test_the_bar_shows_on_a_terminal_that_reports_no_width(monkeypatch, columns, environ, width):
    """tqdm gives a terminal of 0 columns the width -1 and draws nothing; such a terminal gets 80 columns."""
    lines = drawn(columns, monkeypatch, environ)
    assert lines and all(len(line) == width for line in lines), [len(line) for line in lines]
    assert any(" 30/100 " in line for line in lines)
    assert screen_shape(Terminal())[0] == width  # the width it keeps at every redraw (a resized window)


def test_no_terminal_behind_a_stream_gets_the_fallback_width(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert screen_shape(io.StringIO()) == (79, None)
