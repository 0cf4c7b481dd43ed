"""Training: configs and recipes, the loop, evaluation and checkpoints."""

from .checkpoint import CheckpointError, load_checkpoint
from .config import TrainConfig
from .engine import Diverged, Interrupted, RunResult, Trainer, train
from .evaluate import EvalResult, evaluate
from .recipes import RECIPES, get_recipe

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
