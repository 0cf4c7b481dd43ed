"""The training loop: data on the device, no host sync per step, checkpoints that survive crashes."""

from __future__ import annotations

import json
import math
import re
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
import yaml
from torch import nn

from .. import hardware
from ..data import load_dataset
from ..export import export_model, rebuild_options
from ..models import create_model
from ..models.weights import clean_state_dict, read_weights
from .checkpoint import atomic_write, latest_valid, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .evaluate import autocast, evaluate
from .metrics import MetricsLog, Progress
from .schedule import LRSchedule

# Fields that may change between a run and its resumption: they do not touch the arithmetic.
RESUMABLE_CHANGES = {
    "out",
    "device",
    "log_every",
    "keep",
    "tensorboard",
    "num_workers",
    "checkpoint_every",
    "eval_batch_size",
    "compile",
    "data_dir",
}


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; a checkpoint was written."""

    def __init__(self, signum: int, step: int, checkpoint: Path, run_dir: Path) -> None:
        self.signum, self.step, self.checkpoint, self.run_dir = signum, step, checkpoint, run_dir
        name = signal.Signals(signum).name
        super().__init__(
            f"{name} at step {step}: checkpoint written to {checkpoint}; resume with: "
            f"resnets train --out {run_dir} --resume"
        )


class Diverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


@dataclass
class RunResult:
    run_dir: Path
    model: nn.Module
    history: list[dict]
    seconds: float
    weights: Path
    class_names: list[str] = field(default_factory=list)

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then the CPU; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r}: CUDA is not available here (accepted: auto, cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={name!r}: MPS is not available here (accepted: auto, cpu)")
    return device


def default_run_dir(config: TrainConfig) -> Path:
    data = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.data.split(":")[0])
    return Path("runs") / f"{config.model}-{data}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def build_model(config: TrainConfig, in_channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    """The network a config asks for, shaped for the data; refuses images too small for it."""
    options = {"init": config.init, **config.model_options}
    model = create_model(config.model, in_channels=in_channels, num_classes=num_classes, **options)
    if min(image_size) < model.min_input_size:
        raise ValueError(
            f"model {config.model} needs images of at least {model.min_input_size}x{model.min_input_size}, "
            f"the data has {image_size[0]}x{image_size[1]} (use a CIFAR-style net such as resnet20)"
        )
    if config.init_from:
        load_backbone(model, config.init_from)
    if config.freeze_backbone:
        freeze_backbone(model)
    return model


def head_of(model: nn.Module) -> nn.Module:
    """The classifier layer that fine-tuning replaces."""
    return model.classifier[-1] if hasattr(model, "classifier") else model.fc


def head_names(model: nn.Module) -> set[str]:
    """State-dict names of the classifier layer's parameters."""
    head = {id(p) for p in head_of(model).parameters()}
    return {name for name, p in model.named_parameters() if id(p) in head}


def load_backbone(model: nn.Module, path: str) -> list[str]:
    """Load the weights of `path` into everything but the head (kept when its shape fits).

    Returns the names left at their fresh initialisation (the head, when the class count
    differs). Any other missing, unexpected or reshaped weight means another architecture
    and is refused with its name.
    """
    weights = clean_state_dict(read_weights(path))
    own = model.state_dict()
    head = head_names(model)
    fitting = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    misfits = [k for k in sorted(set(own) | set(weights)) if k not in fitting and k not in head]
    if misfits:
        k = misfits[0]
        found = tuple(weights[k].shape) if k in weights else "nothing"
        wanted = tuple(own[k].shape) if k in own else "nothing"
        raise ValueError(
            f"{path} does not fit {getattr(model, 'model_name', type(model).__name__)}: "
            f"{k} is {found} in the file, {wanted} in the model ({len(misfits)} mismatches)"
        )
    model.load_state_dict(fitting, strict=False)
    return sorted(set(own) - set(fitting))


def freeze_backbone(model: nn.Module) -> None:
    """Train only the head: every other parameter stops learning and every BN keeps its statistics."""
    head = set(head_of(model).parameters())
    for p in model.parameters():
        p.requires_grad_(p in head)


def set_train_mode(model: nn.Module) -> None:
    """`model.train()`, except that BN layers with frozen parameters keep their running statistics."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.weight is not None and not m.weight.requires_grad:
            m.eval()


@contextmanager
def stop_signals():
    """Turn SIGINT/SIGTERM into a flag that the loop checks between steps."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, _frame):
        if received:  # a second signal: the user insists
            raise KeyboardInterrupt
        received.append(signum)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def check_resumable(saved: dict, config: TrainConfig, run_dir: Path) -> None:
    current = config.to_dict()
    different = [k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k]]
    if different:
        k = different[0]
        raise ValueError(
            f"{run_dir} holds a run with {k}={saved.get(k)!r}, not {current[k]!r}: "
            "resume it with its own settings, or choose another --out"
        )


class Trainer:
    """One training run. `Trainer(config).run()`; see `train()` for the one-call form."""

    def __init__(self, config: TrainConfig, resume: bool = False, stream=None) -> None:
        self.config = config
        self.stream = stream or sys.stderr
        self.run_dir = Path(config.out) if config.out else default_run_dir(config)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.device = resolve_device(config.device)
        self.resume_from = None
        found = latest_valid(self.ckpt_dir) if self.ckpt_dir.is_dir() else None
        if found is not None:
            check_resumable(found[1]["config"], config, self.run_dir)
            self.resume_from = found
        elif resume:
            raise ValueError(f"nothing to resume: {self.ckpt_dir} holds no valid checkpoint")

    def log(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def run(self) -> RunResult:
        c = self.config
        started = time.perf_counter()
        torch.manual_seed(c.seed)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.run_dir / "config.yaml", yaml.safe_dump(c.to_dict(), sort_keys=False).encode())
        atomic_write(self.run_dir / "hardware.json", (json.dumps(hardware.describe(self.device)) + "\n").encode())

        data = load_dataset(
            c.data,
            data_dir=c.data_dir,
            device=self.device,
            batch_size=c.batch_size,
            eval_batch_size=c.eval_batch_size,
            seed=c.seed,
            subset=c.subset,
            val_split=c.val_split,
            augment=c.augment,
            bad_images=c.bad_images,
            num_workers=c.num_workers,
        )
        info = data.info
        num_classes = c.num_classes or info.num_classes
        if num_classes < info.num_classes:
            raise ValueError(f"num_classes={num_classes} is fewer than the {info.num_classes} classes of {info.name}")
        model = build_model(c, info.in_channels, num_classes, tuple(info.image_size))
        model.to(self.device, memory_format=torch.channels_last if c.channels_last else torch.preserve_format)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(
            params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay
        )
        steps_per_epoch = len(data.train)
        total_steps = c.iterations or c.epochs * steps_per_epoch
        n_epochs = math.ceil(total_steps / steps_per_epoch)
        schedule = LRSchedule(c, total_steps)
        forward = torch.compile(model) if c.compile else model

        step, epoch, epoch_step, best = 0, 0, 0, math.inf
        sums = torch.zeros(2, device=self.device, dtype=torch.float64)  # (loss sum, error count) this epoch
        seen = 0  # images seen this epoch
        history: list[dict] = []
        if self.resume_from is not None:
            path, state = self.resume_from
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["scheduler"])
            step, epoch, epoch_step, best = state["step"], state["epoch"], state["epoch_step"], state["best"]
            sums.copy_(state["sums"])
            seen, history = state["seen"], state["history"]
            set_rng_state(state["rng"])
            self.log(f"resuming {self.run_dir} from {path.name} (epoch {epoch}, step {step})")
        metrics = MetricsLog(self.run_dir, history, tensorboard=c.tensorboard)
        class_names = list(info.class_names)
        mean, std = (t.detach().cpu() for t in data.normalization)

        def checkpoint(is_best: bool = False) -> Path:
            state = {
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": schedule.state_dict(),
                "step": step,
                "epoch": epoch,
                "epoch_step": epoch_step,
                "best": best,
                "sums": sums.detach().cpu(),
                "seen": seen,
                "history": metrics.history,
                "rng": rng_state(),
                "config": c.to_dict(),
                "model_name": c.model,
                "model_options": rebuild_options(model),
                "class_names": class_names,
                "normalization": {"mean": mean, "std": std},
                "data": {"name": c.data, "image_size": list(info.image_size), "in_channels": info.in_channels},
            }
            return save_checkpoint(state, self.ckpt_dir, step, c.keep, is_best)

        criterion = nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)
        interval = torch.zeros(c.log_every, 2, device=self.device)  # per-step (loss, errors) since the last check
        pending = 0  # steps in `interval`
        interval_start = step
        interval_images = 0
        clock = time.perf_counter()
        progress = Progress(total_steps, step, self.stream)
        self.log(
            f"training {c.model} ({sum(p.numel() for p in model.parameters()):,} parameters) on {c.data}: "
            f"{info.n_train} images, {steps_per_epoch} steps/epoch, {total_steps} steps, device {self.device}, "
            f"run folder {self.run_dir}"
        )

        def check_interval() -> None:
            """The loop's one host sync: stop on a non-finite loss, report progress, end the warm-up."""
            nonlocal pending, interval_start, interval_images, clock
            if pending == 0:
                return
            values = interval[:pending].cpu()
            bad = (~torch.isfinite(values[:, 0])).nonzero()
            if len(bad):
                at = interval_start + int(bad[0]) + 1
                raise Diverged(
                    f"non-finite loss ({values[int(bad[0]), 0].item()}) at step {at} (epoch {epoch}); "
                    f"stopped, the last good checkpoint in {self.ckpt_dir} is intact; try a lower --lr"
                )
            now = time.perf_counter()
            err = values[:, 1].sum().item() / max(interval_images, 1)
            progress.update(
                step,
                epoch + 1,
                values[:, 0].mean().item(),
                err,
                schedule.lr(step - 1),
                interval_images / max(now - clock, 1e-9),
            )
            if schedule.observe_train_error(err):
                progress.message(
                    f"step {step}: training error {100 * err:.1f}% < "
                    f"{100 * c.warmup_until_err:.0f}%, warm-up over, lr {schedule.lr(step)}"
                )
            pending, interval_start, interval_images, clock = 0, step, 0, now

        set_train_mode(model)
        with stop_signals() as received:
            try:
                while epoch < n_epochs:
                    epoch_started = time.perf_counter()
                    epoch_images = 0
                    steps_this_epoch = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
                    for x, y in data.train.epoch(epoch, start=epoch_step) if epoch_step < steps_this_epoch else ():
                        lr = schedule.lr(step)
                        for group in optimizer.param_groups:
                            group["lr"] = lr
                        if c.channels_last:
                            x = x.contiguous(memory_format=torch.channels_last)
                        with autocast(self.device, c.amp):
                            logits = forward(x)
                            loss = criterion(logits, y)
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
                        errors = (logits.detach().argmax(1) != y).sum()
                        loss = loss.detach().float()
                        interval[pending, 0] = loss
                        interval[pending, 1] = errors
                        sums[0] += loss.double() * y.shape[0]
                        sums[1] += errors
                        seen += y.shape[0]
                        interval_images += y.shape[0]
                        epoch_images += y.shape[0]
                        pending += 1
                        step += 1
                        epoch_step += 1
                        if pending == c.log_every:
                            check_interval()
                        if received:
                            check_interval()
                            raise Interrupted(received[0], step, checkpoint(), self.run_dir)
                        if c.checkpoint_every and step % c.checkpoint_every == 0:
                            check_interval()
                            checkpoint()
                        if epoch_step >= steps_this_epoch:
                            break
                    check_interval()
                    train_seconds = time.perf_counter() - epoch_started
                    record = {"epoch": epoch + 1, "step": step, "lr": schedule.lr(step - 1)}
                    record["train_loss"] = sums[0].item() / max(seen, 1)
                    record["train_err"] = sums[1].item() / max(seen, 1)
                    if data.val is not None:
                        val = evaluate(
                            model, data.val.epoch(0), amp=c.amp, channels_last=c.channels_last, tta_flip=c.tta_flip
                        )
                        record["val_err"], record["val_top5_err"] = val.top1_err, val.top5_err
                    test = evaluate(
                        model,
                        take_images(data.test.epoch(0), c.test_subset),
                        amp=c.amp,
                        channels_last=c.channels_last,
                        tta_flip=c.tta_flip,
                    )
                    set_train_mode(model)
                    record.update(test_err=test.top1_err, test_top5_err=test.top5_err, test_loss=test.loss)
                    record["images_per_s"] = epoch_images / max(train_seconds, 1e-9)
                    record["epoch_time"] = time.perf_counter() - epoch_started
                    record["elapsed"] = time.perf_counter() - started
                    if data.train.bad_images:
                        record["bad_images"] = data.train.bad_images
                        progress.message(f"epoch {epoch + 1}: {data.train.bad_images} unreadable images skipped")
                    # The test set never steers training: the plateau and best.pt watch validation, else training.
                    monitored = record.get("val_err", record["train_loss"])
                    if schedule.observe_epoch(monitored):
                        progress.message(f"epoch {epoch + 1}: plateau, lr now {schedule.lr(step)}")
                    is_best = monitored < best
                    best = min(best, monitored)
                    metrics.add(record)
                    epoch, epoch_step, seen = epoch + 1, 0, 0
                    sums.zero_()
                    checkpoint(is_best)  # holds the record: a crash after it loses nothing
                    metrics.write_last()
                    progress.message(format_record(record))
            finally:
                progress.close()
                metrics.close()

        weights = self.run_dir / "model.safetensors"
        export_model(
            model,
            "safetensors",
            weights,
            input_size=(info.in_channels, *info.image_size),
            metadata={
                "class_names": class_names,
                "train_config": c.to_dict(),
                "normalization": {"mean": mean.tolist(), "std": std.tolist()},
                "data": {"name": c.data, "image_size": list(info.image_size), "in_channels": info.in_channels},
            },
        )
        return RunResult(self.run_dir, model, metrics.history, time.perf_counter() - started, weights, class_names)


def take_images(batches, limit: int | None):
    """The first `limit` images of `batches` (all of them when `limit` is None)."""
    if limit is None:
        yield from batches
        return
    left = limit
    for x, y in batches:
        if left <= 0:
            return
        yield x[:left], y[:left]
        left -= y.shape[0]


def format_record(r: dict) -> str:
    parts = [f"epoch {r['epoch']}", f"train loss {r['train_loss']:.4f}", f"train err {100 * r['train_err']:.2f}%"]
    if r.get("val_err") is not None:
        parts.append(f"val err {100 * r['val_err']:.2f}%")
    parts += [
        f"test err {100 * r['test_err']:.2f}%",
        f"top-5 {100 * r['test_top5_err']:.2f}%",
        f"{r['images_per_s']:.0f} img/s",
        f"{r['epoch_time']:.1f} s",
    ]
    return "  ".join(parts)


def train(config: TrainConfig, resume: bool = False, stream=None) -> RunResult:
    """Train as `config` says; resumes from the run folder's newest valid checkpoint when there is one.

    >>> from resnets.train import TrainConfig, train
    >>> result = train(TrainConfig(model="resnet8", data="synthetic:1,16,16,4", epochs=1, out="/tmp/doc-run"))
    ... # doctest: +SKIP
    """
    return Trainer(config, resume=resume, stream=stream).run()
