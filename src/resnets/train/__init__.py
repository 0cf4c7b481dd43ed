"""Training: the config and its recipes, the loop (engine), its step, eager or as a CUDA graph (step), its
data (loaders), the network it trains (network: built, or started from other weights), several
processes under torchrun (distributed), evaluation, checkpoints, metrics, the run folder and how a
run stops (stops).

The names below load on first use, so that `resnets.train.config` (the schema of a run, which
`resnets.trained` reads) imports without the loop.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..trained import CheckpointError, load_checkpoint
    from .config import TrainConfig
    from .engine import RunResult, Trainer, train
    from .evaluate import EvalResult, evaluate
    from .recipes import RECIPES, get_recipe
    from .stops import Diverged, Interrupted

_WHERE = {
    "CheckpointError": "..trained",
    "load_checkpoint": "..trained",
    "TrainConfig": ".config",
    "RunResult": ".engine",
    "Trainer": ".engine",
    "train": ".engine",
    "EvalResult": ".evaluate",
    "evaluate": ".evaluate",
    "RECIPES": ".recipes",
    "get_recipe": ".recipes",
    "Diverged": ".stops",
    "Interrupted": ".stops",
}
__all__ = [
    "RECIPES",
    "CheckpointError",
    "Diverged",
    "EvalResult",
    "Interrupted",
    "RunResult",
    "TrainConfig",
    "Trainer",
    "evaluate",
    "get_recipe",
    "load_checkpoint",
    "train",
]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name], __name__), name)
