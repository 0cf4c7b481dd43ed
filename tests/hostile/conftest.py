"""Fixtures for the hostile-input tests."""

import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hostile import tiny_config
from resnets.train import train


@pytest.fixture(scope="session")
def grey_run(tmp_path_factory):
    """A finished tiny run on 1x16x16 images: (RunResult, run folder)."""
    out = tmp_path_factory.mktemp("grey") / "run"
    return train(tiny_config(out)), out


@pytest.fixture
def restore_signals():
    """Leave SIGINT/SIGTERM handlers as the test found them."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)
