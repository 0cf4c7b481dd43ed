"""Training: the config and its recipes, the loop (engine), the network it trains (finetune), several
processes under torchrun (distributed), evaluation, checkpoints, metrics, the run folder and how a run
stops (stops)."""

from .checkpoint import CheckpointError, load_checkpoint
from .config import TrainConfig
from .engine import RunResult, Trainer, train
from .evaluate import EvalResult, evaluate
from .recipes import RECIPES, get_recipe
from .stops import Diverged, Interrupted

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
