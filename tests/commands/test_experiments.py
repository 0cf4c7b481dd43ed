"""The analysis commands end to end on a tiny experiment: grad-flow, responses, report."""

import io
import json

import pytest

from resnets.cli import main
from resnets.experiments import run_degradation


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp")
    overrides = {"epochs": 1, "subset": 64, "test_subset": 64, "batch_size": 32, "device": "cpu"}
    run_degradation("synthetic:1,16,16,4", [8], overrides=overrides, out=out, stream=io.StringIO())
    return out


def test_grad_flow_at_init_and_after_training(experiment, tmp_path, capsys):
    checkpoint = experiment / "resnet8-seed0" / "checkpoints" / "last.pt"
    argv = ["grad-flow", "--model", "plain8", "--checkpoint", str(checkpoint), "--data", "synthetic:1,16,16,4"]
    assert main([*argv, "--batch-size", "16", "--out", str(tmp_path), "--json"]) == 0
    flows = json.loads(capsys.readouterr().out)
    assert [f["model"] for f in flows] == ["plain8", "resnet8"]
    assert all(layer["weight_grad_norm"] > 0 for f in flows for layer in f["layers"])
    assert json.loads((tmp_path / "gradflow.json").read_text()) == flows
    assert (tmp_path / "gradflow.png").stat().st_size > 0


def test_responses_of_plain_and_residual_checkpoints(experiment, tmp_path, capsys):
    paths = [str(experiment / f"{n}-seed0" / "checkpoints" / "best.pt") for n in ("plain8", "resnet8")]
    argv = ["responses", "--checkpoint", paths[0], "--checkpoint", paths[1], "--images", "32", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "plain8" in out and "resnet8" in out and (tmp_path / "responses.png").stat().st_size > 0
    saved = json.loads((tmp_path / "responses.json").read_text())
    assert [len(r["layers"]) for r in saved] == [7, 7]  # stem + two 3x3 layers in each of 3 blocks


def test_report_command_writes_one_page(experiment, tmp_path, capsys):
    page = tmp_path / "report.html"
    assert main(["report", str(experiment), "--out", str(page), "--title", "tiny"]) == 0
    text = page.read_text()
    assert "<title>tiny</title>" in text and 'data-model="plain8"' in text and 'data-model="resnet8"' in text


def test_report_refuses_a_folder_without_metrics(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r.html")]) == 2
    assert "has no metrics" in capsys.readouterr().err and not (tmp_path / "r.html").exists()
