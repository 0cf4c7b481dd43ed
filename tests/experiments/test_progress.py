"""What an experiment says as it goes: run k of N, and the time it has left at the pace of the runs finished."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest
from torch import nn

import resnets.experiments.degradation as degradation
from resnets.experiments.degradation import Pace, run_degradation

STEPS = 10
SECONDS_PER_STEP_AND_LAYER = 1.5


@pytest.fixture
def timed_training(monkeypatch):
    """Training replaced by runs of `STEPS` steps whose epochs took 1.5 s per step and layer; the configs it got."""
    trained = []

    def train(config, stream=None):
        trained.append(config)
        depth = int(re.search(r"\d+$", config.model).group())
        seconds = SECONDS_PER_STEP_AND_LAYER * STEPS * depth
        history = [
            {"epoch": 1, "step": STEPS // 2, "train_err": 0.6, "test_err": 0.6, "epoch_time": seconds / 4},
            {"epoch": 2, "step": STEPS, "train_err": 0.5, "test_err": 0.5, "epoch_time": 3 * seconds / 4},
        ]
        return SimpleNamespace(history=history, model=nn.Linear(depth, 2))

    monkeypatch.setattr(degradation, "train", train)
    return trained


def test_each_run_says_which_of_how_many_and_the_time_left(timed_training, tmp_path):
    log = io.StringIO()
    run_degradation("synthetic:1,16,16,4", [8, 14], seeds=1, out=tmp_path / "exp", stream=log)
    lines = [line for line in log.getvalue().splitlines() if line.startswith("==")]
    assert [line.split(":")[0] for line in lines] == [f"== run {k} of 4" for k in range(1, 5)]
    assert [c.model for c in timed_training] == ["plain8", "resnet8", "plain14", "resnet14"]
    assert lines[0] == (
        f"== run 1 of 4: plain8, seed 0: {tmp_path / 'exp' / 'plain8-seed0'} "
        "(the experiment's time left is estimated once a run has finished)"
    )
    # 1.5 s a step and layer, 10 steps a run: the runs left (this one included) of 8 + 14 + 14 layers take 540 s.
    assert lines[1].endswith("(about 9 min 00 s left for the experiment: 3 runs to train)")
    assert lines[2].endswith("(about 7 min 00 s left for the experiment: 2 runs to train)")  # 14 + 14 layers
    assert lines[3].endswith("(about 3 min 30 s left for the experiment: 1 run to train)")


def test_the_pace_is_seconds_per_step_and_layer_of_the_finished_runs():
    pace = Pace()
    assert pace.left([8]) is None  # nothing finished: no estimate
    pace.add([{"step": 4, "epoch_time": 2.0}, {"step": 8, "epoch_time": 2.0}], depth=20)  # 4 s / 160 step-layers
    pace.add([{"step": 8, "epoch_time": 6.0}], depth=20)  # a run resumed: its epochs' times add up all the same
    assert pace.left([20, 56]) == pytest.approx(10 / 320 * 8 * 76)
    assert pace.left([]) == 0.0
