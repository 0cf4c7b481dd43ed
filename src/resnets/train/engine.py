"""The training loop: data on the device, no host sync per step, checkpoints that survive crashes."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .. import hardware
from ..data import load_dataset
from ..data.base import BatchAugment, share
from ..data.transforms import FolderTransforms
from ..errors import NonFiniteOutputs, first_line, is_usage_error
from ..export import export_model, rebuild_options
from ..files import atomic_write, remove_stale_temporaries
from ..hardware import autocast, default_workers, resolve_device
from ..models.registry import model_entry
from ..trained import CheckpointError, RunFolder, describe_run, first_non_finite, trained_metadata
from .checkpoint import (
    latest_valid,
    load_resumable,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import TrainConfig, legacy_values
from .distributed import (
    SINGLE,
    Distributed,
    GroupFailed,
    GroupMismatch,
    PeerFailed,
    PeerUsageError,
    StopPoll,
    check_launch,
    check_same_settings,
    device_of,
    process_group,
    remember_fatal,
    sync_batchnorm,
)
from .draws import DropPathDraws
from .ema import WeightAverage
from .evaluate import EvalResult, evaluate
from .finetune import build_model, set_train_mode
from .graphs import GraphedStep, graphs_wanted
from .metrics import MetricsLog, Progress
from .mix import BinaryCrossEntropy, Mixer
from .optimizers import build_optimizer, optimizer_launch
from .recipes import lr_note, warmup_note, warmup_reason
from .rundir import check_out_folder, claimed, remove_new_folder
from .schedule import LRSchedule
from .state import IntervalMeter, RunPosition
from .stops import Diverged, Interrupted, stop_signals

# Fields that may change between a run and its resumption: they do not touch the arithmetic.
RESUMABLE_CHANGES = {
    "out",
    "device",
    "log_every",
    "keep",
    "tensorboard",
    "mlflow",
    "num_workers",
    "checkpoint_every",
    "eval_batch_size",
    "compile",
    "compile_mode",
    "data_dir",
    "max_image_pixels",
    "cuda_graphs",  # the same arithmetic, launched otherwise (fused SGD: rounding alone differs)
    "dist_timeout",
}
# What the collective transports say when a peer process is gone (gloo's and NCCL's words).
PEER_GONE = re.compile(r"Connection (closed|reset) by peer|remote worker|NCCL error|ProcessGroup(Gloo|NCCL)")
MAX_NAMED = 20  # unreadable files named in an epoch's record (all are counted)


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


def default_run_dir(config: TrainConfig) -> Path:
    data = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.data.split(":")[0])
    return Path("runs") / f"{config.model}-{data}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_resumable(saved: dict, config: TrainConfig, run_dir: Path) -> None:
    # A run saved before a field existed had its legacy value, or else its default (as from_dict reads it).
    saved = {**TrainConfig().to_dict(), **saved, **legacy_values(saved)}
    current = config.to_dict()
    # A choice left to the optimizer compares as what it resolved to (runs saved before it could be left).
    for values, optimizer in ((saved, saved.get("optimizer", "sgd")), (current, config.optimizer)):
        if values.get("decay_norm_bias") is None:
            values["decay_norm_bias"] = optimizer == "sgd"
    different = [k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k]]
    if different:
        k = different[0]
        raise ValueError(
            f"{run_dir} holds a run with {k}={saved.get(k)!r}, not {current[k]!r}: "
            "resume it with its own settings, or choose another --out"
        )


class _StopEvaluation(Exception):
    """A stop signal arrived during an evaluation pass: abandon it, checkpoint, stop."""


class _Discard:
    """Where the processes other than rank 0 write their progress: nowhere."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class Trainer:
    """One training run: `Trainer(config).run()`; see `train()` for the one-call form.

    The loop keeps its counters on the host and its sums on the device; `_check_interval` is
    its only host synchronisation, every `log_every` steps.
    """

    def __init__(
        self, config: TrainConfig, resume: bool | str | Path = False, stream=None, place: Distributed = SINGLE
    ) -> None:
        self.config = config
        # One process of several (torchrun): rank 0 alone writes the run folder and prints.
        self.place = place
        if place.active and not config.out and os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") != "0":
            raise ValueError("a run that torchrun may restart needs --out: the restarted processes resume from it")
        self.stream = (stream or sys.stderr) if place.is_main else _Discard()
        self.resume = resume
        # None until the start when --out is not given: in a group, rank 0 names a new folder and tells the others.
        self._run_dir: Path | None = Path(config.out) if config.out else None
        if self._run_dir is not None and not place.active:
            check_out_folder(self._run_dir)  # before anything is built (a group checks it on rank 0, at the start)
        self.device = device_of(place, resolve_device(config.device))
        self.resume_from: tuple[Path, dict] | None = None
        self.last_good: Path | None = None  # the newest checkpoint known to be complete and finite
        self.created = False  # whether this run made its folder (a failed start removes it again)

    @property
    def run_dir(self) -> Path:
        assert self._run_dir is not None, "the run folder is named at the start of the run"
        return self._run_dir

    @property
    def ckpt_dir(self) -> Path:
        return RunFolder(self.run_dir).checkpoints

    def _find_checkpoint(self) -> tuple[Path, dict] | None:
        """The checkpoint to resume from: the one `resume` names, else the run folder's newest valid one."""
        resume = self.resume
        if isinstance(resume, str | Path) and Path(resume).is_file():  # this checkpoint, not the newest
            return Path(resume), load_resumable(resume)
        found = latest_valid(self.ckpt_dir) if self.ckpt_dir.is_dir() else None
        if found is None and resume:
            raise ValueError(f"nothing to resume: {self.ckpt_dir} holds no valid checkpoint")
        return found

    def _resume_from(self, found: tuple[Path, dict] | None) -> None:
        if found is not None:
            check_resumable(found[1]["config"], self.config, self.run_dir)
            self.resume_from = found
            self.last_good = found[0]

    def log(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def run(self) -> RunResult:
        """Train, holding the run folder (refused when another run holds it) and honouring stop signals.

        A stop signal (SIGINT, SIGTERM) during start-up stops before training, during training or
        evaluation it writes a checkpoint first; either way `Interrupted` says what was saved. One
        that arrives while the final weights are written lets them be written.
        """
        self.started = time.perf_counter()
        with stop_signals() as self.stop, ExitStack() as held:
            try:
                self._start(held)
                return self._run()
            except BaseException:
                if self.created and self.last_good is None:  # a failed start leaves no half-made run folder behind
                    remove_new_folder(self.run_dir)
                raise

    def _start(self, held: ExitStack) -> None:
        """Claim the run folder (rank 0), build the data, the network and the optimizer, restore a
        checkpoint, then (in a group) wrap the network for DistributedDataParallel.

        In a group, every step that one process can fail alone (the run folder held by another run
        or read-only, a file that one machine cannot read, a bad value) comes before the first
        collective of training, and the processes then agree on the outcome: when one fails, every
        process stops at once with its error (rank 0 says it), instead of waiting for a peer that
        will never come. They also check that they were given the same settings and see the same data.
        """
        place = self.place
        # The first collective, which every process reaches: rank 0's run folder (a process launched
        # with another --out, or none, is refused below with the other differing settings).
        chosen = place.broadcast(str(self._run_dir or default_run_dir(self.config)) if place.is_main else None)
        self._run_dir = self._run_dir or Path(str(chosen))
        failure: Exception | None = None
        found: tuple[Path, dict] | None = None
        try:
            if place.is_main:
                self.created = held.enter_context(claimed(self.run_dir))
                self._remove_stale_files()
                found = self._find_checkpoint()
                self._resume_from(found)
            self._setup()
        except Exception as exc:
            if not place.active:
                raise
            failure = exc
        if place.active:
            shown = str(found[0]) if found is not None else None
            path = self._agree(failure, (self._settings(), self._data_digest() if failure is None else None, shown))
            try:
                if not place.is_main and path is not None:  # the checkpoint rank 0 chose, read by each process
                    self._resume_from((Path(path), load_resumable(path)))
                self._restore()
            except Exception as exc:
                failure = exc
            self._agree(failure)
        else:
            self._restore()
        self._distribute()

    def _settings(self) -> dict:
        """The resolved config, less what may differ between machines (where the data lies, their cores)."""
        return {k: v for k, v in self.config.to_dict().items() if k not in ("data_dir", "num_workers")}

    def _data_digest(self) -> str:
        """What the processes must agree on about the data: its splits, classes and files (image folders)."""
        info = self.info
        return f"{info.n_train}/{info.n_val}/{info.n_test} images, {info.num_classes} classes, {info.digest}"

    def _agree(self, failure: Exception | None, summary: tuple | None = None) -> str | None:
        """Every process's outcome of a start-up step, and (with `summary`: settings, data, rank 0's
        checkpoint) a check that they match. Raises on every process when any failed or differs;
        returns rank 0's checkpoint path."""
        report = None if failure is None else (is_usage_error(failure), first_line(failure))
        everyone = self.place.gather((report, summary))
        if summary is not None:
            check_same_settings([s[0] for _, s in everyone])
        failed = [(rank, r) for rank, (r, _) in enumerate(everyone) if r is not None]
        if failure is not None:
            raise failure
        if failed:
            rank, (usage, text) = failed[0]
            error = PeerUsageError if usage else PeerFailed
            raise error(f"rank {rank} failed to start: {text}")
        if summary is not None:
            digests = {s[1] for _, s in everyone}
            if len(digests) > 1:
                shown = "; ".join(f"rank {r}: {s[1]}" for r, (_, s) in enumerate(everyone))
                raise GroupMismatch(
                    f"the processes of the group see different data ({shown}): give every process the same files"
                )
            return everyone[0][1][2]
        return None

    def _remove_stale_files(self) -> None:
        """Temporary files that a killed run left half-written (its process is gone) are deleted."""
        removed = remove_stale_temporaries(self.run_dir) + remove_stale_temporaries(self.ckpt_dir)
        if removed:
            names = ", ".join(p.name for p in removed[:3]) + (", ..." if len(removed) > 3 else "")
            self.log(f"removed {len(removed)} half-written file(s) of an interrupted run: {names}")

    @property
    def _sync_device(self) -> torch.device:
        """Where the group's small reductions run: the GPU under NCCL, the CPU under gloo."""
        return self.device if self.place.backend == "nccl" else torch.device("cpu")

    def _stop_agreed(self) -> bool:
        """A stop signal reached any process (all agree: one host sync when several run)."""
        return self.place.agree(bool(self.stop), self._sync_device)

    def _interrupted(self, checkpoint: Path | None) -> Interrupted:
        # A process that received no signal itself stops because another did (torchrun sends SIGTERM).
        signum = self.stop.signum if self.stop else signal.SIGTERM
        launcher = "torchrun [the same options]" if self.place.active else ""
        return Interrupted(signum, self.position.step, checkpoint, self.run_dir, launcher)

    def _run(self) -> RunResult:
        if self._stop_agreed():
            raise self._interrupted(None)
        self.metrics = MetricsLog(
            self.run_dir,
            self.history,
            tensorboard=self.config.tensorboard,
            write=self.place.is_main,
            mlflow=self.config.mlflow,
            params=self.config.to_dict(),
        )
        # The header lines first, then the bar below them.
        self.log(
            f"training {self.config.model} ({sum(p.numel() for p in self.model.parameters()):,} parameters) "
            f"on {self.config.data}: {self.info.n_train} images, {self.steps_per_epoch} steps/epoch, "
            f"{self.total_steps} steps, device {self.device}, run folder {self.run_dir}"
            + (f", lr {self.config.lr:.3g} ({note})" if (note := lr_note(self.config)) else "")
        )
        if self.place.active:
            c = self.config
            per_step = f"{c.batch_size // self.place.world_size} per process"
            if c.accumulate > 1:
                per_step += f", in {c.accumulate} micro-batches of {self.micro_batch}"
            workers = ""
            if c.data.startswith("imagefolder:"):
                n = self.data_workers
                workers = f", {n} data-loading worker{'s' if n != 1 else ''} per process"
            self.log(
                f"distributed: {self.place.world_size} processes ({self.place.backend}), global batch "
                f"{c.batch_size} ({per_step}), BatchNorm statistics "
                + ("over the global batch (--sync-bn)" if c.sync_bn else "per process")
                + workers
            )
        scaled = warmup_note(self.config)
        if scaled is not None:
            self.log(scaled)
        reason = warmup_reason(self.config)
        if reason is not None and self.schedule.warming_up:
            self.log(
                f"warm-up: lr {self.config.warmup_lr} until the training error is below "
                f"{100 * self.config.warmup_until_err:.0f}%, checked every {self.config.log_every} steps ({reason})"
            )
        self.progress = Progress(self.total_steps, self.position.step, self.stream)
        set_train_mode(self.model)
        try:
            while self.position.epoch < self.n_epochs:
                self._train_epoch()
                self._end_epoch()
                if self._stop_agreed():
                    raise self._interrupted(self.last_good)
        except BaseException:
            self.progress.close()
            self.metrics.close(finished=False)
            raise
        self.progress.close()
        try:  # the final weights first: closing a logger (MLflow's server) must not cost them
            with self.stop.shielded():
                result = self._finish()
        except BaseException:
            self.metrics.close(finished=False)
            raise
        self.metrics.close(finished=True)
        if self.stop:
            name = signal.Signals(self.stop.signum).name
            self.log(f"{name} arrived after the last epoch: the run is complete, {result.weights} written")
        return result

    # ------------------------------------------------------------------------- set-up

    def _setup(self) -> None:
        c = self.config
        torch.manual_seed(c.seed)
        self.micro_batch = check_launch(self.place, c.batch_size, c.accumulate)
        # Several processes on one machine share its cores: each starts its share of the workers.
        self.data_workers = default_workers(self.place.local_world_size, c.num_workers)
        if self.place.is_main:
            folder = RunFolder(self.run_dir)
            atomic_write(folder.config, yaml.safe_dump(c.to_dict(), sort_keys=False).encode())
            atomic_write(folder.hardware, (json.dumps(hardware.describe(self.device)) + "\n").encode())
        self.data = load_dataset(
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
            num_workers=self.data_workers,
            max_image_pixels=c.max_image_pixels,
            decode=c.decode,
            normalize=c.normalize,
            folder_transforms=folder_transforms(c) if c.data.startswith("imagefolder:") else None,
            test_subset=c.test_subset,
            shard=(self.place.rank, self.place.world_size),
            extra=batch_augment(c),
            repeats=c.repeated_aug,
        )
        self.info = info = self.data.info
        self._check_shares()
        num_classes = c.num_classes or info.num_classes
        if num_classes < info.num_classes:
            raise ValueError(f"num_classes={num_classes} is fewer than the {info.num_classes} classes of {info.name}")
        self.model = build_model(c, info.in_channels, num_classes, tuple(info.image_size))
        self.model.to(self.device)
        if c.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.place.active and c.sync_bn:
            self.model = sync_batchnorm(self.model, self.device)
        # This process's images of each global batch; drop-path draws for them (world-size invariant).
        self.whole_batch = min(c.batch_size, info.n_train)
        self.part = share(self.whole_batch, self.place.rank, self.place.world_size)
        self.path_draws = DropPathDraws(self.model, c.seed, self.device, self.part.stop - self.part.start)
        self.optimizer = build_optimizer(c, self.model, self.device)
        # An average of the weights (--ema), of the bare network, evaluated beside it.
        self.ema = WeightAverage(self.model, c.ema, c.ema_warmup) if c.ema is not None else None
        self.steps_per_epoch = len(self.data.train)
        self.total_steps = c.iterations or c.epochs * self.steps_per_epoch
        self.n_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.schedule = LRSchedule(c, self.total_steps, self.steps_per_epoch)
        self.graphed = graphs_wanted(
            c.cuda_graphs,
            self.device,
            model_entry(c.model).family,
            distributed=self.place.active,
            accumulate=c.accumulate,
            compiled=c.compile,
            folder=c.data.startswith("imagefolder:"),
            uncaptured=beyond_paper_step(c),
        )
        self.graph_step: GraphedStep | None = None  # made at the first step, after any restore
        self.criterion: nn.Module = (
            BinaryCrossEntropy(c.label_smoothing, c.bce_target_thresh)
            if c.bce
            else nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)
        )
        self.mixer = Mixer(c.mixup, c.cutmix, num_classes, c.seed) if c.mixup or c.cutmix else None
        self.mean, self.std = (t.detach().cpu() for t in self.data.normalization)
        # Where the run stands (restored from a checkpoint on resume), and the steps since the last
        # host sync (synced at least once an epoch).
        self.position = RunPosition.start(self.device)
        self.history: list[dict] = []
        self.meter = IntervalMeter(min(c.log_every, self.steps_per_epoch), self.device)
        self.epoch_images = 0
        self.data_wait = 0.0  # seconds this process waited for batches in the current epoch

    def _distribute(self) -> None:
        """Wrap the network for DistributedDataParallel (a collective: rank 0's weights go to every
        process) and open the group's stop poll; then compile, if asked."""
        c = self.config
        self.ddp: DistributedDataParallel | None = None
        if self.place.active:
            # DDP all-reduces (averages) the gradients; self.model stays the bare network, whose
            # state dict (no "module." prefix) the checkpoints hold.
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        self.stop_poll = StopPoll(self.place, c.dist_timeout)
        network = self.ddp if self.ddp is not None else self.model
        self.forward = torch.compile(network, mode=c.compile_mode) if c.compile else network

    def _restore(self) -> None:
        if self.resume_from is None:
            return
        path, state = self.resume_from
        if self.ema is not None and "ema" not in state:
            raise CheckpointError(f"checkpoint {path} holds no 'ema' entry (--ema's average): it cannot be resumed")
        try:  # shapes and keys that do not fit the run's network: one line, not torch's listing
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {path} does not fit this run's network: {first_line(exc)}") from None
        for group in self.optimizer.param_groups:  # how to step is this device's choice, not the checkpoint's
            group.update(optimizer_launch(self.optimizer, self.device))
        self.schedule.load_state_dict(state["scheduler"])
        self.position.load_state_dict(state)
        self.history = state["history"]
        set_rng_state(state["rng"])
        p = self.position
        if not self.place.is_main:  # rank 0 holds the epoch's sums so far, the others none (see combine)
            p.sums.zero_()
            p.seen = 0
        self.log(f"resuming {self.run_dir} from {path.name} (epoch {p.epoch + 1}, step {p.step})")
        saved, world = state.get("world_size"), self.place.world_size  # None: saved before it was recorded
        if saved is not None and saved != world and not self.config.sync_bn:
            c = self.config
            before, now = (c.batch_size // (n * c.accumulate) for n in (saved, world))
            self.log(
                f"note: the run trained on {saved} process(es) and resumes on {world}: BatchNorm now takes its "
                f"statistics over {now} images, not {before} (each process's share of the batch; --sync-bn "
                "takes them over the global batch, whatever the number of processes)"
            )

    def _check_shares(self) -> None:
        """Refuse a group with more processes than the data can give images to."""
        c, info, world = self.config, self.info, self.place.world_size
        whole = min(c.batch_size, info.n_train)  # a training set smaller than the batch is one batch
        if whole < c.batch_size:
            check_launch(self.place, whole, c.accumulate)
        for split, n in (("training", whole), ("validation", info.n_val), ("test", info.n_test)):
            if n and n < world:
                raise ValueError(
                    f"{world} processes are too many for the data: the {split} split has {n} images, "
                    "fewer than one per process"
                )

    def _good_checkpoint_text(self) -> str:
        if self.last_good is None:
            return f"no checkpoint was written before (nothing in {self.ckpt_dir} to resume from)"
        return f"the last good checkpoint is {self.last_good}"

    def _combine(self) -> tuple[float, float, int, int]:
        """The epoch's (loss sum, error count, images seen, images timed) over every process.

        Afterwards rank 0 holds them in its position (what a checkpoint saves) and the other
        processes hold none, so that a run resumed on any number of processes counts each image once.
        """
        p = self.position
        if not self.place.active:
            return p.sums[0].item(), p.sums[1].item(), p.seen, self.epoch_images
        extra = torch.tensor([p.seen, self.epoch_images], dtype=torch.float64, device=p.sums.device)
        totals = self.place.sum(torch.cat([p.sums, extra]))
        p.combine(totals[:3], self.place.is_main)
        loss, errors, seen, images = totals.tolist()
        self.epoch_images = int(images) if self.place.is_main else 0
        return loss, errors, int(seen), int(images)

    def _checkpoint(self, is_best: bool = False) -> Path:
        """Save the run's whole state; refuses (Diverged) weights or BN statistics that are not finite.

        Every process takes part (the epoch's sums are combined, the weights checked); rank 0 writes.
        """
        weights = self.model.state_dict()
        bad = first_non_finite(weights)
        if self.place.agree(bad is not None, self._sync_device):
            at = self.position
            raise Diverged(
                f"non-finite values in {bad or 'the weights of another process'} at step {at.step} "
                f"(epoch {at.epoch + 1}): not saved; {self._good_checkpoint_text()}; try a lower --lr"
            )
        self._combine()
        if self.place.is_main:  # rank 0 writes; every process knows where the checkpoint is
            self._write_checkpoint(weights, is_best)
        self.last_good = RunFolder(self.run_dir).last
        return self.last_good

    def _write_checkpoint(self, weights: dict, is_best: bool) -> None:
        state = {
            "model": {k: v.detach().cpu() for k, v in weights.items()},
            "optimizer": plain_optimizer_state(self.optimizer),
            "scheduler": self.schedule.state_dict(),
            **self.position.state_dict(),
            "history": self.metrics.history,
            "rng": rng_state(),
            "model_name": self.config.model,
            "model_options": rebuild_options(self.model),
            **describe_run(self.config, self.info, self.mean, self.std),
            "world_size": self.place.world_size,  # BatchNorm's batch without --sync-bn depends on it
        }
        if self.ema is not None:
            state["ema"] = {k: v.detach().cpu() for k, v in self.ema.state_dict().items()}
        with self.stop.shielded():
            save_checkpoint(state, self.ckpt_dir, self.position.step, self.config.keep, is_best)

    # ------------------------------------------------------------------------- the loop

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One SGD step on this process's share of the global batch; its loss and errors stay on the device.

        With `accumulate` K the share goes through in K micro-batches whose gradients add up
        (DDP all-reduces after the last one only), each weighted by its share of the images.
        """
        c = self.config
        lr = self.schedule.lr(self.position.step)
        if self.graphed:
            first = self.graph_step is None
            if self.graph_step is None:
                assert isinstance(self.optimizer, torch.optim.SGD)  # graphs_wanted: the paper's SGD step only
                self.graph_step = GraphedStep(
                    self.model,
                    self.criterion,
                    self.optimizer,
                    tuple(x.shape),
                    self.device,
                    amp=c.amp,
                    channels_last=c.channels_last,
                    capture=self.device.type == "cuda",
                    fallback=c.cuda_graphs == "auto",
                )
            loss, errors = self.graph_step.step(x, y, lr)
            if first and self.graph_step.failed:
                self.progress.message(
                    f"warning: CUDA graph capture failed ({self.graph_step.failed}); training without it "
                    "(--cuda-graphs off says so from the start)"
                )
            self._count(loss, errors, y.shape[0])
            return
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # Mixup and CutMix: soft targets; the errors still count against each image's own label.
        x, target = self.mixer(x, y, self.position.step) if self.mixer is not None else (x, y)
        if c.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        if c.accumulate == 1:
            if self.path_draws:
                self.path_draws.set(self.position.step, self.part, self.whole_batch)
            with autocast(self.device, c.amp):
                logits = self.forward(x)
                loss = self.criterion(logits, target)
            loss.backward()
            errors = (logits.detach().argmax(1) != y).sum()
            loss = loss.detach().float()
        else:
            loss, errors = self._accumulated(x, y, target)
        if c.clip_grad is not None:  # returns the norm as a tensor: no host sync
            nn.utils.clip_grad_norm_(self.model.parameters(), c.clip_grad)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.position.step + 1)  # counted from 1, as timm's updates
        self._count(loss, errors, y.shape[0])

    def _count(self, loss: torch.Tensor, errors: torch.Tensor, n: int) -> None:
        """A step's loss and errors into the interval meter and the epoch's sums (on the device)."""
        p = self.position
        self.meter.add(loss, errors, n)
        p.sums[0] += loss.double() * n
        p.sums[1] += errors
        p.seen += n
        self.epoch_images += n
        p.step += 1
        p.epoch_step += 1

    def _accumulated(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward in micro-batches; the mean loss and the error count of all of them."""
        n, k = y.shape[0], self.config.accumulate
        parts = list(zip(x.chunk(k), y.chunk(k), target.chunk(k), strict=True))
        loss_sum = torch.zeros((), device=x.device)
        errors = torch.zeros((), device=x.device, dtype=torch.long)
        first = self.part.start  # the place of the micro-batch's first image in the global batch
        for i, (xs, ys, ts) in enumerate(parts):
            last = i == len(parts) - 1
            if self.path_draws:
                self.path_draws.set(self.position.step, slice(first, first + ys.shape[0]), self.whole_batch)
                first += ys.shape[0]
            with self.ddp.no_sync() if self.ddp is not None and not last else nullcontext():
                with autocast(self.device, self.config.amp):
                    logits = self.forward(xs)
                    loss = self.criterion(logits, ts)
                (loss * (ys.shape[0] / n)).backward()
            errors += (logits.detach().argmax(1) != ys).sum()
            loss_sum += loss.detach().float() * ys.shape[0]
        return loss_sum / n, errors

    def _check_interval(self) -> None:
        """The loop's one host sync: stop on a non-finite loss, report progress, end the warm-up."""
        meter, p = self.meter, self.position
        if meter.pending == 0:
            return
        c = self.config
        if self.place.active:  # the group's numbers: every process takes the same decisions from them
            local = meter.buffer[: meter.pending].double().flatten()
            extra = torch.tensor([meter.images], dtype=torch.float64, device=local.device)
            totals = self.place.sum(torch.cat([local, extra])).cpu()
            values = totals[:-1].view(-1, 2)
            values[:, 0] /= self.place.world_size  # the mean of the processes' mean losses
            images = int(totals[-1])
        else:
            values, images = meter.values(), meter.images
        bad = (~torch.isfinite(values[:, 0])).nonzero()
        if len(bad):
            at = meter.start_step + int(bad[0]) + 1
            raise Diverged(
                f"non-finite loss ({values[int(bad[0]), 0].item()}) at step {at} (epoch {p.epoch + 1}): "
                f"stopped; {self._good_checkpoint_text()}; try a lower --lr"
            )
        now = time.perf_counter()
        err = values[:, 1].sum().item() / max(images, 1)
        speed = images / max(now - meter.clock, 1e-9)
        lr = self.schedule.lr(p.step - 1)
        self.progress.update(p.step, p.epoch + 1, values[:, 0].mean().item(), err, lr, speed)
        if self.schedule.observe_train_error(err):
            self.progress.message(
                f"step {p.step}: training error {100 * err:.1f}% < {100 * c.warmup_until_err:.0f}%, "
                f"warm-up over, lr {self.schedule.lr(p.step)}"
            )
        meter.restart(p.step, now)

    def _train_epoch(self) -> None:
        c, p = self.config, self.position
        self.epoch_started = time.perf_counter()
        self.epoch_images = 0
        self.data_wait = 0.0
        self.meter.restart(p.step, self.epoch_started)
        steps = min(self.steps_per_epoch, self.total_steps - p.epoch * self.steps_per_epoch)
        batches = self.data.train.epoch(p.epoch, start=p.epoch_step) if p.epoch_step < steps else iter(())
        try:
            while (batch := self._next_batch(batches)) is not None:
                self._train_step(*batch)
                self.progress.advance(p.step)
                if self.meter.pending == c.log_every:
                    self._check_interval()
                # A stop signal is honoured at the next step alone; in a group, one or two steps after it
                # reached any process, where all of them learn of it (`StopPoll`: no device sync).
                if self.stop_poll.poll(bool(self.stop)):
                    self._stopped_in_epoch()
                if c.checkpoint_every and p.step % c.checkpoint_every == 0:
                    self._check_interval()
                    self._checkpoint()
                if p.epoch_step >= steps:
                    break
            # A signal during the last step: the epoch's training is saved, its evaluation left to the resumption.
            if self.stop_poll.drain():
                self._stopped_in_epoch()
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        self._check_interval()

    def _next_batch(self, batches) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The next batch (None at the end), the time this process waited for it added to `data_wait`."""
        started = time.perf_counter()
        batch = next(batches, None)
        self.data_wait += time.perf_counter() - started
        return batch

    def _stopped_in_epoch(self) -> None:
        self.stop_poll.drain()  # the poll sent with this step: every process has sent it, none waits on it
        self._check_interval()
        raise self._interrupted(self._checkpoint())

    def _evaluate(self, loader, model: nn.Module | None = None) -> EvalResult:
        """Errors on a split; in a group each process evaluates its part and the counts are summed.

        Alone, a stop signal abandons the pass; a group finishes it (its processes hold unequal
        numbers of batches, so they cannot agree between two) and stops right after.
        """
        c = self.config
        batches = loader.epoch(0) if self.place.active else self._unless_stopped(loader.epoch(0))
        reduce = self.place.sum if self.place.active else None
        try:
            result = evaluate(
                model or self.model,
                batches,
                amp=c.amp,
                channels_last=c.channels_last,
                tta_flip=c.tta_flip,
                reduce=reduce,
            )
            result.unreadable = self._unreadable_in_pass(loader)
            return result
        except NonFiniteOutputs:
            at = self.position
            raise Diverged(
                f"the model's outputs on evaluation images are not finite at step {at.step} (epoch {at.epoch + 1}): "
                f"stopped, not saved; {self._good_checkpoint_text()}; try a lower --lr"
            ) from None
        finally:
            set_train_mode(self.model)

    def _unreadable_in_pass(self, loader) -> list[str]:
        """The evaluation images an image folder left out in this pass, over every process (each evaluates its
        own part): rare, so their names travel only when there are some."""
        if not self.config.data.startswith("imagefolder:"):
            return []
        files = list(loader.pass_files)
        if not self.place.active:
            return files
        if not self.place.sum(torch.tensor([float(len(files))], device=self._sync_device)).item():
            return []
        return sorted({f for part in self.place.gather(files) for f in part})

    def _unless_stopped(self, batches):
        """`batches`, abandoned (`_StopEvaluation`) as soon as a stop signal arrives: a long test pass
        must not keep a scheduler's SIGTERM waiting."""
        for batch in batches:
            if self.stop:
                raise _StopEvaluation
            yield batch

    def _end_epoch(self) -> None:
        """Evaluate, record, step the plateau schedule, checkpoint.

        A stop signal during the evaluation abandons it and checkpoints the epoch's trained state,
        so the resumed run evaluates the epoch again and goes on exactly as an uninterrupted one.
        """
        try:
            self._record_epoch()
        except _StopEvaluation:
            self._check_interval()
            raise self._interrupted(self._checkpoint()) from None

    def _record_epoch(self) -> None:
        p = self.position
        train_seconds = time.perf_counter() - self.epoch_started
        # This process's speed and its wait for data, before the epoch's counts are combined.
        own = torch.tensor([self.epoch_images / max(train_seconds, 1e-9), self.data_wait], dtype=torch.float64)
        loss_sum, error_sum, seen, epoch_images = self._combine()
        train_loss = loss_sum / max(seen, 1)
        record: dict[str, Any] = {
            "epoch": p.epoch + 1,
            "step": p.step,
            "lr": self.schedule.lr(p.step - 1),
            "train_loss": train_loss,
            "train_err": error_sum / max(seen, 1),
        }
        self._same_statistics()
        val = None
        if self.data.val is not None:
            val = self._evaluate(self.data.val)
            record["val_err"], record["val_top5_err"] = val.top1_err, val.top5_err
        test = self._evaluate(self.data.test)
        record.update(test_err=test.top1_err, test_top5_err=test.top5_err, test_loss=test.loss)
        for split, result in (("val", val), ("test", test)):
            if result is not None and result.unreadable:  # left out of that split's figures: said beside them
                record[f"{split}_unreadable"] = result.unreadable[:MAX_NAMED]
                record[f"{split}_left_out"], record[f"{split}_images"] = len(result.unreadable), result.n
        if self.ema is not None:  # the averaged weights, on the same images
            if self.data.val is not None:
                record["ema_val_err"] = self._evaluate(self.data.val, self.ema.model).top1_err
            ema_test = self._evaluate(self.data.test, self.ema.model)
            record.update(ema_test_err=ema_test.top1_err, ema_test_top5_err=ema_test.top5_err)
        # None when no step ran since the start or the resumption (an epoch evaluated again after a stop).
        record["images_per_s"] = epoch_images / max(train_seconds, 1e-9) if epoch_images else None
        record["epoch_time"] = time.perf_counter() - self.epoch_started
        record["elapsed"] = time.perf_counter() - self.started
        record["data_wait"] = self.data_wait
        if self.place.active:  # each process's own figures: a slow process or a starved loader shows here
            ranks = self.place.gather_tensor(own.to(self._sync_device)).cpu()
            record["rank_images_per_s"] = [round(v, 1) for v in ranks[:, 0].tolist()] if epoch_images else None
            record["rank_data_wait"] = [round(v, 3) for v in ranks[:, 1].tolist()]
            record["data_wait"] = float(ranks[:, 1].max())
        self._record_bad_images(record)
        # The test set never steers training: the plateau and best.pt watch validation, else training.
        monitored = val.top1_err if val is not None else train_loss
        if self.schedule.observe_epoch(monitored):
            self.progress.message(f"epoch {p.epoch + 1}: plateau, lr now {self.schedule.lr(p.step)}")
        is_best = monitored < p.best
        p.best = min(p.best, monitored)
        self.metrics.add(record)
        p.next_epoch()
        self._checkpoint(is_best)  # holds the record: a crash after it loses nothing
        self.metrics.write_last()
        self.progress.message(format_record(record))

    def _same_statistics(self) -> None:
        """Rank 0's BatchNorm running statistics (and its weight average's) on every process, before an
        evaluation: the model every process evaluates is then the one the checkpoints and the final
        weights hold (rank 0's), and the reported error is that model's.

        Broadcast rather than averaged: DistributedDataParallel already gives every process rank 0's
        buffers at each training forward (broadcast_buffers), so the statistics the run carries are
        rank 0's plus one step's update; and running statistics never enter a training step, so the
        training does not change, and a run is bitwise the same whatever its checkpoint interval.
        """
        if not self.place.active:
            return
        models = [self.model] + ([self.ema.model] if self.ema is not None else [])
        buffers = [b for m in models for b in m.buffers() if b.is_floating_point()]
        if not buffers:
            return
        flat = torch.cat([b.detach().flatten().to(self._sync_device, torch.float64) for b in buffers])
        dist.broadcast(flat, src=0)
        with torch.no_grad():
            for b, value in zip(buffers, flat.split([b.numel() for b in buffers]), strict=True):
                b.copy_(value.view_as(b).to(b.device, b.dtype))

    def _record_bad_images(self, record: dict) -> None:
        """The unreadable images met so far, over every process (as one process would have met them)."""
        loader = self.data.train
        count, names = loader.bad_images, list(getattr(loader, "bad_files", []))
        if self.place.active and self.config.data.startswith("imagefolder:"):
            total = self.place.sum(torch.tensor([float(count)], device=self._sync_device)).item()
            if total:
                names = sorted({n for part in self.place.gather(names) for n in part})
            count = int(total)
        if count:
            record["bad_images"] = count
            record["bad_image_files"] = sorted(names)[:MAX_NAMED]
            shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
            self.progress.message(
                f"epoch {record['epoch']}: {count} unreadable image{'s' if count != 1 else ''} met so far, "
                f"each replaced by another training image: {shown}"
            )

    def _finish(self) -> RunResult:
        """The final weights as safetensors, with what `resnets predict` needs in the metadata.

        The file is checked against the model on real test images. The weights are already safe in
        the last checkpoint; should the check fail, they are written unchecked with a warning, never
        dropped.
        """
        weights = RunFolder(self.run_dir).weights
        names = list(self.info.class_names)
        if not self.place.is_main:  # rank 0 writes the weights
            seconds = time.perf_counter() - self.started
            return RunResult(self.run_dir, self.model, self.metrics.history, seconds, weights, names)
        metadata = trained_metadata(describe_run(self.config, self.info, self.mean, self.std))
        size = (self.info.in_channels, *self.info.image_size)
        batches = self.data.test.epoch(0)
        try:
            inputs = next(batches, (None,))[0]
        finally:
            batches.close()
        inputs = inputs[:8] if inputs is not None else None
        try:
            export_model(self.model, "safetensors", weights, input_size=size, metadata=metadata, check_inputs=inputs)
        except ValueError as exc:
            export_model(self.model, "safetensors", weights, input_size=size, metadata=metadata, check=False)
            self.log(f"warning: {exc}; {weights} written unchecked (the same weights are in {self.last_good})")
        if self.ema is not None:  # the averaged weights, loadable as any run's model.safetensors
            export_model(
                self.ema.model, "safetensors", RunFolder(self.run_dir).ema_weights, metadata=metadata, check=False
            )
        seconds = time.perf_counter() - self.started
        return RunResult(self.run_dir, self.model, self.metrics.history, seconds, weights, list(self.info.class_names))


def folder_transforms(config: TrainConfig) -> FolderTransforms:
    """The image-folder augmentation and test view that a config asks for."""
    c = config
    return FolderTransforms(
        image_size=c.image_size,
        test_size=c.test_size,
        test_resize=c.test_resize,
        crop=c.crop,
        jitter=c.color_jitter,
        lighting=c.lighting,
        interpolation=c.interpolation,
        randaugment=c.randaugment_policy,
        trivialaugment=c.trivialaugment,
        erasing=c.random_erasing,
    )


def batch_augment(config: TrainConfig) -> BatchAugment:
    """The augmentations beyond the paper's that device-resident data do a batch at a time (image
    folders do theirs per image in the workers: `folder_transforms`)."""
    c = config
    if c.data.startswith("imagefolder:"):
        return BatchAugment()
    return BatchAugment(
        randaugment=c.randaugment_policy,
        trivialaugment=c.trivialaugment,
        erasing=c.random_erasing,
    )


def beyond_paper_step(config: TrainConfig) -> str | None:
    """The first option of the step that a CUDA graph does not capture (the graph holds the paper's step)."""
    c = config
    options = (
        (c.optimizer != "sgd", f"--optimizer {c.optimizer}"),
        (not c.decays_norm_bias, "--no-decay-norm-bias"),
        (c.mixup > 0 or c.cutmix > 0, "--mixup/--cutmix"),
        (c.bce, "--bce"),
        (c.clip_grad is not None, "--clip-grad"),
        (c.ema is not None, "--ema"),
        (c.drop_path > 0, "--drop-path"),
    )
    return next((name for on, name in options if on), None)


def plain_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state for a checkpoint, with the learning rate as a number (a CUDA-graphed run
    holds it in a device tensor), so that the checkpoint loads on any device and in an eager run."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = group["lr"].item()
    return state


def format_record(r: dict) -> str:
    parts = [f"epoch {r['epoch']}", f"train loss {r['train_loss']:.4f}", f"train err {100 * r['train_err']:.2f}%"]
    if r.get("val_err") is not None:
        parts.append(f"val err {100 * r['val_err']:.2f}%")
    parts += [
        f"test err {100 * r['test_err']:.2f}%",
        f"test top-5 err {100 * r['test_top5_err']:.2f}%",
    ]
    for split in ("val", "test"):
        if r.get(f"{split}_left_out"):
            n = r[f"{split}_left_out"]
            parts.append(f"({split} errors on {r[f'{split}_images']} images: {n} unreadable left out)")
    if r.get("ema_test_err") is not None:
        parts.append(f"EMA test err {100 * r['ema_test_err']:.2f}%")
    parts += [
        f"{r['images_per_s']:.0f} img/s" if r.get("images_per_s") is not None else "evaluated again",
        f"{r['epoch_time']:.1f} s",
    ]
    return "  ".join(parts)


def train(config: TrainConfig, resume: bool | str | Path = False, stream=None) -> RunResult:
    """Train as `config` says; resumes from the run folder's newest valid checkpoint when there is one.

    `resume=True` requires one; a checkpoint file resumes from that checkpoint.

    >>> from resnets.train import TrainConfig, train
    >>> result = train(TrainConfig(model="resnet8", data="synthetic:1,16,16,4", epochs=1, out="/tmp/doc-run"))
    ... # doctest: +SKIP

    Under torchrun (several processes) it joins the group and trains with DistributedDataParallel;
    an error that no restart can fix is left for a restarted attempt to stop on at once.
    """
    try:
        with process_group(resolve_device(config.device), config.dist_timeout) as place:
            try:
                return Trainer(config, resume=resume, stream=stream, place=place).run()
            except Diverged as exc:  # a restart would resume the last good checkpoint and diverge again
                remember_fatal(first_line(exc), "diverged")
                raise
            except Exception as exc:
                if is_usage_error(exc):  # a bad value or file: a restart meets it again
                    remember_fatal(first_line(exc), "usage")
                if place.active and isinstance(exc, RuntimeError) and PEER_GONE.search(str(exc)):
                    # DDP's reducer reports a peer that died as a plain RuntimeError of its transport.
                    raise dist.DistError(first_line(exc)) from exc
                raise
    except dist.DistError as exc:  # the rendezvous or a collective: a peer died, hung or cannot be reached
        raise GroupFailed(
            f"the group of processes failed ({first_line(exc)}): a process died, is unreachable, or waited "
            f"longer than --dist-timeout {config.dist_timeout:g} s for the others"
        ) from exc
