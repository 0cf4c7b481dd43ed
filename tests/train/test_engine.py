"""The training loop: what a run writes, what it learns, how it fails."""

import io
import json
import math

import pytest
import torch
from safetensors import safe_open

from resnets.cli import main
from resnets.train import CheckpointError, Diverged, load_checkpoint, train
from resnets.train.metrics import COLUMNS, Progress
from resnets.trained import model_from_checkpoint, verify


def test_a_run_writes_its_folder_and_learns(tiny_config, tmp_path):
    config = tiny_config(epochs=3)
    result = train(config)
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3] and [r["step"] for r in records] == [8, 16, 24]
    for key in ("epoch", "step", "train_loss", "train_err", "test_err", "test_top5_err", "lr", "images_per_s"):
        assert all(key in r for r in records)
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert records[-1]["test_err"] < 0.5  # four separable synthetic classes: chance is 75%
    csv_lines = (run / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(COLUMNS) and len(csv_lines) == 4
    assert "model: resnet8" in (run / "config.yaml").read_text()
    for name in ("last.pt", "best.pt", "step-00000024.pt"):
        assert verify(run / "checkpoints" / name) is None
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    # the config as used: what the data decided (normalize) filled in
    assert state["config"] == {**config.to_dict(), "normalize": "pixel-mean"}
    assert state["step"] == 24 and len(state["history"]) == 3
    assert state["class_names"] == [f"class {i}" for i in range(4)]
    with safe_open(str(run / "model.safetensors"), "pt") as f:
        meta = f.metadata()
        assert torch.equal(f.get_tensor("fc.weight"), result.model.fc.weight.detach())
    assert meta["model_name"] == "resnet8" and json.loads(meta["train_config"])["lr"] == 0.05


def test_keep_prunes_old_step_checkpoints(tiny_config, tmp_path):
    train(tiny_config(epochs=4, keep=2))
    steps = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*.pt"))
    assert steps == ["step-00000024.pt", "step-00000032.pt"]


def test_same_seed_same_run_and_a_validation_split_picks_best(tiny_config, tmp_path):
    a = train(tiny_config(val_split=64, out=str(tmp_path / "a")))
    b = train(tiny_config(val_split=64, out=str(tmp_path / "b")))
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    assert all("val_err" in r for r in a.history)
    best = load_checkpoint(tmp_path / "a" / "checkpoints" / "best.pt")
    best_epoch = min(range(len(a.history)), key=lambda i: a.history[i]["val_err"])
    assert best["epoch"] == best_epoch + 1


def test_iterations_stop_mid_epoch(tiny_config):
    result = train(tiny_config(iterations=11, epochs=99))
    assert [r["step"] for r in result.history] == [8, 11]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path):
    with pytest.raises(Diverged, match=r"non-finite loss .* at step (\d+)") as err:
        train(tiny_config(lr=1e30, checkpoint_every=1, log_every=100))
    bad_step = int(err.value.args[0].split("at step ")[1].split()[0])
    checkpoints = tmp_path / "run" / "checkpoints"
    steps = [int(p.stem.split("-")[1]) for p in checkpoints.glob("step-*.pt")]
    assert steps and max(steps) < bad_step
    assert verify(checkpoints / "last.pt") is None
    state = load_checkpoint(checkpoints / "last.pt")
    assert state["step"] == max(steps)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tiny_config, tmp_path):
    finished = train(tiny_config(epochs=3))
    newest = tmp_path / "run" / "checkpoints" / "step-00000024.pt"
    with open(newest, "r+b") as f:  # last.pt and best.pt are hard links to the same bytes
        f.truncate(1000)
    with pytest.warns(UserWarning, match="skipping checkpoint .*truncated"):
        resumed = train(tiny_config(epochs=3))
    for k, v in finished.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_resume_refuses_a_different_config(tiny_config):
    train(tiny_config(epochs=1))
    with pytest.raises(ValueError, match=r"holds a run with lr=0.05, not 0.1"):
        train(tiny_config(epochs=1, lr=0.1))


def test_resume_flag_needs_a_checkpoint(tiny_config):
    with pytest.raises(ValueError, match="nothing to resume"):
        train(tiny_config(), resume=True)


def test_eval_command_reproduces_the_final_test_error(tiny_config, tmp_path, capsys):
    result = train(tiny_config())
    capsys.readouterr()
    code = main(["eval", "--checkpoint", str(tmp_path / "run" / "checkpoints" / "last.pt"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and set(out) >= {"top1_err", "top5_err", "n"}
    assert out["top1_err"] == result.final["test_err"] and out["n"] == 256
    code = main(["eval", "--checkpoint", str(tmp_path / "run" / "model.safetensors"), "--json", "--ten-crop"])
    assert code == 0 and json.loads(capsys.readouterr().out)["n"] == 256


def test_model_from_checkpoint_rebuilds_the_trained_net(tiny_config, tmp_path):
    result = train(tiny_config(epochs=1))
    model, meta = model_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    x = torch.randn(3, 1, 16, 16)
    torch.testing.assert_close(model(x), result.model.eval()(x), rtol=0, atol=1e-6)  # memory formats differ
    assert meta["normalization"]["mean"].shape == (1, 16, 16)


def test_unsafe_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "resnets-checkpoint", "model": Exploit()}, evil)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_images_too_small_for_the_model_are_refused_before_training(tiny_config):
    with pytest.raises(ValueError, match=r"resnet18 needs images of at least 17x17, the data has 16x16"):
        train(tiny_config(model="resnet18"))


def test_metrics_have_no_nan(tiny_config):
    result = train(tiny_config(epochs=1))
    assert all(math.isfinite(v) for v in result.final.values() if isinstance(v, float))


class Terminal(io.StringIO):
    """What a terminal receives: the loop draws a bar on it."""

    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_header_comes_first_and_the_bar_moves_every_step(tiny_config, monkeypatch):
    counts = []
    real = Progress.advance
    monkeypatch.setattr(Progress, "advance", lambda self, step: (counts.append(self.bar.n), real(self, step)))
    stream = Terminal()
    train(tiny_config(iterations=11, epochs=99, log_every=100), stream=stream)
    # The bar stood at each step before it: it moved at every step, not only at the logging interval.
    assert counts == list(range(11))
    text = stream.getvalue()
    assert text.startswith("training resnet8 ") and text.index("\n") < text.index("\r")  # header, then the bar
    assert "11/11" in text
    assert "test err " in text and "top-5" not in text  # 4 classes: every label is among the top 5, none shown


def test_without_a_terminal_there_is_no_bar():
    progress = Progress(10, 0, io.StringIO())
    progress.advance(3)
    assert progress.bar is None


def test_compile_passes_its_mode_to_torch_compile(tiny_config, monkeypatch):
    seen = []

    def recorded(model, mode=None):
        seen.append(mode)
        return model  # the network as it is: inductor's C++ build would take minutes here

    monkeypatch.setattr(torch, "compile", recorded)
    result = train(tiny_config(epochs=1, compile=True, compile_mode="max-autotune-no-cudagraphs"))
    assert seen == ["max-autotune-no-cudagraphs"] and math.isfinite(result.history[-1]["train_loss"])
