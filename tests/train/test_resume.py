"""Crashes lose nothing: a run killed at any moment and resumed ends bitwise equal to one never killed."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resnets.train import load_checkpoint
from resnets.train.metrics import TIMING_FIELDS

# 3 epochs of 8 steps with a checkpoint every 3 steps, so kills land inside epochs too.
RUN = {"epochs": 3, "checkpoint_every": 3, "log_every": 2}


@pytest.fixture
def command(tiny_argv):
    return lambda out: [sys.executable, "-m", "resnets", "train", *tiny_argv(out, **RUN)]


def run_to_end(command, out: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(out), capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def wait_for_checkpoint(out: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not list((out / "checkpoints").glob("step-*.pt")):
        assert proc.poll() is None, "the run ended before writing a checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in history]


def assert_same_run(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a / "checkpoints" / "last.pt"), load_checkpoint(b / "checkpoints" / "last.pt")
    assert sa["step"] == sb["step"] == 24
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), f"weight {k} differs"
    for pid, state in sa["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], sb["optimizer"]["state"][pid]["momentum_buffer"])
    assert without_timing(sa["history"]) == without_timing(sb["history"])
    lines = [json.loads(line) for line in (b / "metrics.jsonl").read_text().splitlines()]
    assert without_timing(lines) == without_timing(sa["history"])  # no duplicated or missing epoch lines


@pytest.mark.slow  # 12 s; the SIGINT test below and tests/hostile/ check bitwise resumes in make test
def test_sigkill_at_random_moments_then_resume_is_bitwise_equal(tmp_path, command):
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    run_to_end(command, reference)
    rng = random.Random(os.getpid())
    kills = 0
    for _ in range(2):
        proc = subprocess.Popen(command(crashed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_checkpoint(crashed, proc)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1
    resumed = run_to_end(command, crashed)
    assert "resuming" in resumed.stderr
    assert_same_run(reference, crashed)


@pytest.mark.slow  # 12 s of real processes; tests/hostile/test_stop_signals.py covers the same in make test
def test_sigint_writes_a_checkpoint_and_says_how_to_resume(tmp_path, command):
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    run_to_end(command, reference)
    proc = subprocess.Popen(command(stopped), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(stopped, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGINT arrived: nothing to check this time")
    assert proc.returncode == 128 + signal.SIGINT
    assert "SIGINT at step" in err and f"resnets train --out {stopped} --resume" in err
    assert "Traceback" not in err
    step = load_checkpoint(stopped / "checkpoints" / "last.pt")["step"]
    assert 0 < step < 24
    # The command the message suggests, which names nothing but the run folder, finishes the run.
    proc = subprocess.run(
        [sys.executable, "-m", "resnets", "train", "--out", str(stopped), "--resume"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert_same_run(reference, stopped)


def test_resume_takes_a_run_folder_or_a_checkpoint_file(tmp_path, tiny_argv, capsys):
    from resnets.cli import main

    run = tmp_path / "run"
    assert main(["train", *tiny_argv(run, epochs=2, checkpoint_every=2, keep=10)]) == 0
    finished = load_checkpoint(run / "checkpoints" / "last.pt")
    capsys.readouterr()
    # From an earlier checkpoint file: the run goes on from there and ends where it ended before.
    assert main(["train", "--resume", str(run / "checkpoints" / "step-00000004.pt")]) == 0
    assert f"resuming {run} from step-00000004.pt (epoch 1, step 4)" in capsys.readouterr().err
    again = load_checkpoint(run / "checkpoints" / "last.pt")
    assert again["step"] == finished["step"] == 16
    assert all(torch.equal(again["model"][k], v) for k, v in finished["model"].items())
    assert main(["train", "--resume", str(run)]) == 0  # a run folder: its newest checkpoint
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "--resume" in capsys.readouterr().err
