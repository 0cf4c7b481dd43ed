"""Ctrl-C and SIGTERM at every stage: start-up, training, evaluation, checkpoint writes, after the loop, experiments."""

import json
import signal

import pytest
import torch

import resnets.train.engine as engine
import resnets.train.loaders as loaders
from hostile import send, tiny_config, train_argv
from resnets.cli import main
from resnets.train import Interrupted, load_checkpoint, train
from resnets.train.checkpoint import verify
from resnets.train.metrics import TIMING_FIELDS

pytestmark = pytest.mark.usefixtures("restore_signals")


def same_run(a, b) -> None:
    """Two finished run folders hold bitwise equal weights, optimizer state and metrics."""
    sa, sb = load_checkpoint(a / "checkpoints" / "last.pt"), load_checkpoint(b / "checkpoints" / "last.pt")
    assert sa["step"] == sb["step"]
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), k
    for pid, state in sa["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], sb["optimizer"]["state"][pid]["momentum_buffer"])

    def strip(history):
        return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in history]

    assert strip(sa["history"]) == strip(sb["history"])
    lines = [json.loads(line) for line in (b / "metrics.jsonl").read_text().splitlines()]
    assert strip(lines) == strip(sa["history"])


def test_sigterm_during_evaluation_checkpoints_and_the_resumed_run_is_bitwise_equal(tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    train(tiny_config(reference, epochs=3))
    real = engine.evaluate
    calls = []

    def signalling(model, batches, **options):
        calls.append(1)
        if len(calls) == 2:  # the test pass of epoch 2
            send(signal.SIGTERM)
        return real(model, batches, **options)

    monkeypatch.setattr(engine, "evaluate", signalling)
    stopped = tmp_path / "stopped"
    with pytest.raises(Interrupted) as info:
        train(tiny_config(stopped, epochs=3))
    assert info.value.signum == signal.SIGTERM and info.value.step == 8
    state = load_checkpoint(stopped / "checkpoints" / "last.pt")
    assert (state["epoch"], state["epoch_step"], len(state["history"])) == (1, 4, 1)  # trained, not evaluated
    monkeypatch.setattr(engine, "evaluate", real)
    train(tiny_config(stopped, epochs=3))
    same_run(reference, stopped)


def test_ctrl_c_during_start_up_stops_before_training_and_leaves_no_new_folder(tmp_path, monkeypatch, capsys):
    real = loaders.load_dataset

    def slow_start(*args, **kwargs):
        send(signal.SIGINT)  # the user gives up while the data loads
        return real(*args, **kwargs)

    monkeypatch.setattr(loaders, "load_dataset", slow_start)
    out = tmp_path / "run"
    assert main(train_argv(out)) == 128 + signal.SIGINT
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("resnets: SIGINT during start-up, before any training step") and "Traceback" not in err
    assert not out.exists()


def test_a_second_ctrl_c_while_a_checkpoint_is_written_lets_it_finish(tmp_path, monkeypatch):
    real = engine.save_checkpoint
    count = []

    def insistent(state, *args, **kwargs):
        count.append(1)
        if len(count) == 1:
            send(signal.SIGINT)
            send(signal.SIGINT)  # the user insists, mid-write
        return real(state, *args, **kwargs)

    monkeypatch.setattr(engine, "save_checkpoint", insistent)
    out = tmp_path / "run"
    with pytest.raises(Interrupted) as info:
        train(tiny_config(out, epochs=3))
    assert info.value.checkpoint == out / "checkpoints" / "last.pt"
    assert verify(out / "checkpoints" / "last.pt") is None
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1


def test_a_second_ctrl_c_outside_a_write_stops_at_once_in_one_line(tmp_path, monkeypatch, capsys):
    original = engine.Trainer._train_step

    def step(self, x, y):
        original(self, x, y)
        if self.position.step == 6:
            send(signal.SIGINT)
            send(signal.SIGINT)

    monkeypatch.setattr(engine.Trainer, "_train_step", step)
    out = tmp_path / "run"
    assert main(train_argv(out, epochs=3)) == 128 + signal.SIGINT
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "resnets: SIGINT: stopped; files already written are intact"
    assert verify(out / "checkpoints" / "last.pt") is None  # epoch 1's


def test_sigterm_after_the_loop_lets_the_final_weights_be_written(tmp_path, monkeypatch, capsys):
    real = engine.export_model

    def signalling(*args, **kwargs):
        send(signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "export_model", signalling)
    out = tmp_path / "run"
    assert main(train_argv(out)) == 0
    err = capsys.readouterr().err
    assert f"SIGTERM arrived after the last epoch: the run is complete, {out / 'model.safetensors'} written" in err
    assert (out / "model.safetensors").is_file()


def test_stopping_an_experiment_says_to_run_the_same_command_again(tmp_path, monkeypatch, capsys):
    real = engine.Trainer._train_step
    argv = ["experiment", "degradation", "--depths", "8", "--out", str(tmp_path / "exp"), "--epochs", "1"]
    argv += ["--data", "synthetic:1,16,16,4", "--subset", "64", "--batch-size", "32", "--device", "cpu"]

    def step(self, x, y):
        real(self, x, y)
        if self.config.model == "resnet8":  # the second run of the experiment
            send(signal.SIGINT)

    monkeypatch.setattr(engine.Trainer, "_train_step", step)
    assert main(argv) == 128 + signal.SIGINT
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("resnets: SIGINT at step 1: checkpoint written to")
    assert "resume the whole experiment by running the same command again: resnets experiment degradation" in err
    monkeypatch.setattr(engine.Trainer, "_train_step", real)
    assert main(argv) == 0  # plain8 reused, resnet8 resumed
    assert json.loads((tmp_path / "exp" / "summary.json").read_text()).keys() == {"plain8", "resnet8"}


def test_sigterm_outside_a_training_run_is_one_line_and_status_143(tmp_path, monkeypatch, capsys):
    import resnets.commands.experiments as cli

    def interrupted(*args, **kwargs):
        send(signal.SIGTERM)
        return sum(range(10))  # the handler runs here

    monkeypatch.setattr(cli, "build_report", interrupted)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip() == "resnets: SIGTERM: stopped; files already written are intact"
