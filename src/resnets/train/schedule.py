"""Learning-rate schedules as functions of the step, so that a resumed run picks up exactly."""

from __future__ import annotations

import math

from .config import TrainConfig


class LRSchedule:
    """The learning rate at each step, plus the little state that plateaus and warm-ups need.

    >>> from resnets.train.config import TrainConfig
    >>> s = LRSchedule(TrainConfig(lr=0.1, schedule="step", milestones=[0.5, 0.75]), total_steps=64000)
    >>> [round(s.lr(k), 4) for k in (0, 31999, 32000, 48000)]
    [0.1, 0.1, 0.01, 0.001]
    """

    def __init__(self, config: TrainConfig, total_steps: int, steps_per_epoch: int = 1) -> None:
        self.config = config
        self.total_steps = max(1, total_steps)
        # A linear warm-up over `warmup_epochs`, step by step: from near 0 (Goyal et al. 2017, section
        # 2.2), or from `warmup_lr` (timm's warm-up).
        self.ramp = min(self.total_steps, round(config.warmup_epochs * steps_per_epoch))
        if config.warmup_epochs and self.ramp >= self.total_steps and config.schedule != "constant":
            raise ValueError(
                f"warmup_epochs={config.warmup_epochs:g} spans the whole run of {self.total_steps} steps: the lr "
                "would end at its peak, never decaying; warm up for less than the run"
            )
        self.scale = 1.0  # plateau: the product of the drops so far
        self.best = math.inf  # plateau: the best monitored value
        self.bad_epochs = 0
        # The paper's warm-up (section 4.2): `warmup_lr` until the training error falls, then the schedule.
        self.warming_up = config.warmup_lr is not None and not config.warmup_epochs

    def lr(self, step: int) -> float:
        c = self.config
        if self.warming_up and c.warmup_lr is not None:
            return float(c.warmup_lr)
        if step < self.ramp:
            if c.warmup_lr is None:
                return self._scheduled(step) * (step + 1) / self.ramp
            return c.warmup_lr + (self._scheduled(step) - c.warmup_lr) * step / self.ramp
        return self._scheduled(step)

    def _scheduled(self, step: int) -> float:
        c = self.config
        t = step / self.total_steps
        if self.ramp and c.schedule == "cosine":  # the cosine spans the steps after the warm-up
            t = max(0, step - self.ramp) / max(1, self.total_steps - self.ramp)
        if c.schedule == "step":
            return c.lr * c.gamma ** sum(t >= m for m in c.milestones)
        if c.schedule == "plateau":
            return c.lr * self.scale
        if c.schedule == "onecycle":
            w = c.onecycle_warmup
            return c.lr * (t / w if t < w else max(0.0, (1 - t) / (1 - w)))
        if c.schedule == "cosine":  # from lr down to min_lr (timm's floor; 0 by default)
            return c.min_lr + (c.lr - c.min_lr) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        return c.lr

    def observe_train_error(self, err: float) -> bool:
        """End the warm-up once training error is below the threshold; True when it just ended."""
        if self.warming_up and err < self.config.warmup_until_err:
            self.warming_up = False
            return True
        return False

    def observe_epoch(self, monitored: float) -> bool:
        """Plateau schedule: divide the lr after `plateau_patience` epochs without improvement."""
        if self.config.schedule != "plateau":
            return False
        if monitored < self.best - 1e-4:
            self.best, self.bad_epochs = monitored, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs >= self.config.plateau_patience:
            self.scale *= self.config.gamma
            self.bad_epochs = 0
            return True
        return False

    def state_dict(self) -> dict:
        return {"scale": self.scale, "best": self.best, "bad_epochs": self.bad_epochs, "warming_up": self.warming_up}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best = float(state["scale"]), float(state["best"])
        self.bad_epochs, self.warming_up = int(state["bad_epochs"]), bool(state["warming_up"])
