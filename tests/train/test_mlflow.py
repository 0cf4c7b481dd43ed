"""MLflow (the mlflow extra): a run's config and epoch records in a local file store; a resumed run
logs into the same MLflow run."""

import json
import sys

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
    assert len(client.get_metric_history(memo["run_id"], "test_err")) == 1
    monkeypatch.undo()
    again = train(config)  # the same folder: resumes after epoch 1
    assert again.history[-1]["epoch"] == 3
    run = client.get_run(memo["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    assert run.data.params["lr"] == "0.05" and run.data.params["model"] == "resnet8"
    logged = client.get_metric_history(memo["run_id"], "test_err")
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(m.step, m.value) for m in logged] == [(r["step"], r["test_err"]) for r in lines]
    assert len(client.search_runs([run.info.experiment_id])) == 1
