import sys
from pathlib import Path

import pytest

from resnets.train import TrainConfig

sys.path.insert(0, str(Path(__file__).parent.parent / "data"))  # datagen, the shared generators of test files

# A run small enough for a test: ResNet-8 on 16x16 synthetic images, a few dozen steps.
TINY = {
    "recipe": "test",
    "model": "resnet8",
    "data": "synthetic:1,16,16,4",
    "subset": 256,
    "batch_size": 32,
    "eval_batch_size": 128,
    "epochs": 2,
    "lr": 0.05,
    "log_every": 4,
    "device": "cpu",
    "seed": 1,
}


@pytest.fixture
def tiny_argv():
    """The `resnets train` flags of the tiny run, writing to `out`."""

    def make(out, **changes) -> list[str]:
        values = {**TINY, **changes, "out": str(out)}
        values.pop("recipe")
        return [part for k, v in values.items() for part in (f"--{k.replace('_', '-')}", str(v))]

    return make


@pytest.fixture
def tiny_config(tmp_path):
    def make(**changes) -> TrainConfig:
        return TrainConfig(**{**TINY, "out": str(tmp_path / "run"), **changes})

    return make


@pytest.fixture
def watched_steps(monkeypatch):
    """Makes every training step after the first two raise on a host synchronisation (CUDA's sync
    debug mode); the list it returns counts the steps. The first steps may synchronise: they create
    the optimizer's state and capture the CUDA graph."""
    import torch

    from resnets.train.engine import Trainer

    step, steps = Trainer._train_step, []

    def watched(self, x, y):
        steps.append(len(steps))
        if len(steps) <= 2:
            return step(self, x, y)
        torch.cuda.set_sync_debug_mode("error")
        try:
            return step(self, x, y)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(Trainer, "_train_step", watched)
    return steps
