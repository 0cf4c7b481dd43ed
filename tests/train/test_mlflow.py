"""MLflow (the mlflow extra): a run's config and epoch records in a local file store; a resumed run
logs into the same MLflow run."""

import json
import sys
from types import SimpleNamespace
from typing import ClassVar

import pytest

from resnets.errors import MissingExtra
from resnets.train import train
from resnets.train.engine import Trainer


def test_without_mlflow_installed_the_error_names_the_extra(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(MissingExtra, match=r"resnets\[mlflow\]"):
        train(tiny_config(mlflow=str(tmp_path / "mlruns"), epochs=1))


def test_a_run_and_its_resumption_log_every_epoch_into_one_mlflow_run(tiny_config, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    config = tiny_config(mlflow=str(tmp_path / "mlruns"), epochs=3)
    original = Trainer._train_epoch

    def crash_in_epoch_2(self):
        if self.position.epoch == 1:
            raise RuntimeError("the machine went down")
        original(self)

    monkeypatch.setattr(Trainer, "_train_epoch", crash_in_epoch_2)
    with pytest.raises(RuntimeError, match="went down"):
        train(config)
    run_dir = tmp_path / "run"
    memo = json.loads((run_dir / "mlflow.json").read_text())
    client = MlflowClient(tracking_uri=memo["tracking_uri"])
    assert client.get_run(memo["run_id"]).info.status == "KILLED"
    assert len(client.get_metric_history(memo["run_id"], "test/err")) == 1
    monkeypatch.undo()
    again = train(config)  # the same folder: resumes after epoch 1
    assert again.history[-1]["epoch"] == 3
    run = client.get_run(memo["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    assert run.data.params["lr"] == "0.05" and run.data.params["model"] == "resnet8"
    logged = client.get_metric_history(memo["run_id"], "test/err")
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(m.step, m.value) for m in logged] == [(r["step"], r["test_err"]) for r in lines]
    assert len(client.search_runs([run.info.experiment_id])) == 1


class FakeClient:
    """MLflow's client as far as the logger uses it, keeping what it is given."""

    runs: ClassVar[dict] = {}

    def __init__(self, tracking_uri):
        self.uri = tracking_uri

    def get_experiment_by_name(self, name):
        return None

    def create_experiment(self, name):
        return "7"

    def create_run(self, experiment, run_name):
        run_id = f"run{len(self.runs)}"
        self.runs[run_id] = {"name": run_name, "params": {}, "metrics": [], "status": None}
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id))

    def log_batch(self, run_id, metrics=(), params=()):
        self.runs[run_id]["params"].update({p.key: p.value for p in params})
        self.runs[run_id]["metrics"] += [(m.key, m.value, m.step) for m in metrics]

    def update_run(self, run_id, status):
        self.runs[run_id]["status"] = status

    def set_terminated(self, run_id, status):
        self.runs[run_id]["status"] = status


def test_the_logger_gives_mlflow_the_config_once_and_each_epoch_at_its_step(tiny_config, tmp_path, monkeypatch):
    """Without MLflow installed: a stand-in client records what the logger sends."""
    entities = SimpleNamespace(
        Metric=lambda key, value, timestamp, step: SimpleNamespace(key=key, value=value, step=step),
        Param=lambda key, value: SimpleNamespace(key=key, value=value),
    )
    monkeypatch.setitem(sys.modules, "mlflow", SimpleNamespace())
    monkeypatch.setitem(sys.modules, "mlflow.tracking", SimpleNamespace(MlflowClient=FakeClient))
    monkeypatch.setitem(sys.modules, "mlflow.entities", entities)
    FakeClient.runs = {}
    result = train(tiny_config(mlflow=str(tmp_path / "store"), epochs=2))
    (run,) = FakeClient.runs.values()
    assert run["name"] == "run" and run["status"] == "FINISHED"
    assert run["params"]["lr"] == "0.05" and run["params"]["mlflow"] == str(tmp_path / "store")
    test_err = [(step, value) for key, value, step in run["metrics"] if key == "test/err"]
    assert test_err == [(r["step"], r["test_err"]) for r in result.history]
    memo = json.loads((result.run_dir / "mlflow.json").read_text())
    assert memo == {"tracking_uri": (tmp_path / "store").resolve().as_uri(), "run_id": "run0"}


def test_a_tracking_server_that_cannot_be_reached_stops_the_start_in_one_line(tiny_config, tmp_path, monkeypatch):
    class Unreachable(FakeClient):
        def get_experiment_by_name(self, name):
            raise ConnectionError("Connection refused\nretried 2 times")

    monkeypatch.setitem(sys.modules, "mlflow", SimpleNamespace())
    monkeypatch.setitem(sys.modules, "mlflow.tracking", SimpleNamespace(MlflowClient=Unreachable))
    with pytest.raises(ValueError, match=r"^cannot log to MLflow at http://127\.0\.0\.1:9: Connection refused$"):
        train(tiny_config(mlflow="http://127.0.0.1:9", epochs=1))
    assert not (tmp_path / "run").exists()  # a failed start leaves no run folder behind
