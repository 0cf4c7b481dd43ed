"""The training loop: data on the device, no host sync per step, checkpoints that survive crashes."""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.base import of_image_files, share
from ..errors import NonFiniteOutputs
from ..export import export_model, rebuild_options
from ..hardware import default_workers, resolve_device
from ..text import plural
from ..trained import RunFolder, describe_run, first_non_finite, trained_metadata
from .checkpoint import (
    latest_valid,
    load_resumable,
    plain_optimizer_state,
    restore_training,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import TrainConfig, check_resumable
from .distributed import (
    SINGLE,
    Distributed,
    StopPoll,
    agree_on_start,
    check_launch,
    check_shares,
    device_of,
    group_line,
    rank_figures,
    resumed_world_note,
    same_statistics,
    start_summary,
    sync_batchnorm,
    training_group,
)
from .draws import DropPathDraws
from .ema import WeightAverage
from .evaluate import EvalResult, evaluate
from .loaders import bad_images_fields, build_loaders, first_images, left_out_fields, unreadable_in_pass
from .metrics import Discard, MetricsLog, Progress, bad_images_line, format_record
from .network import build_network, set_train_mode
from .optimizers import build_optimizer
from .recipes import check_recipe_data, start_lines
from .rundir import check_out_folder, claimed, default_run_dir, remove_new_folder, remove_stale_files, write_start_files
from .schedule import LRSchedule
from .state import IntervalMeter, RunPosition
from .step import graphs_for, make_step
from .stops import Diverged, Interrupted, StopEvaluation, stop_signals, unless_stopped


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


class Trainer:
    """One training run: `Trainer(config).run()`; see `train()` for the one-call form.

    The loop keeps its counters on the host and its sums on the device; `_check_interval` is
    its only host synchronisation, every `log_every` steps.
    """

    def __init__(
        self, config: TrainConfig, resume: bool | str | Path = False, stream=None, place: Distributed = SINGLE
    ) -> None:
        self.config = config.resolved()  # the values left to the data, as used: what config.yaml records
        # One process of several (torchrun): rank 0 alone writes the run folder and prints.
        self.place = place
        if place.active and not config.out and os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") != "0":
            raise ValueError("a run that torchrun may restart needs --out: the restarted processes resume from it")
        self.stream = (stream or sys.stderr) if place.is_main else Discard()
        self.resume = resume
        # None until the start when --out is not given: in a group, rank 0 names a new folder and tells the others.
        self._run_dir: Path | None = Path(config.out) if config.out else None
        check_recipe_data(config)  # a recipe's placeholder ImageNet folder that is not here
        if self._run_dir is not None and not place.active:
            check_out_folder(self._run_dir)  # before anything is built (a group checks it on rank 0, at the start)
        self.device = device_of(place, resolve_device(config.device))
        self.resume_from: tuple[Path, dict] | None = None
        self.last_good: Path | None = None  # the newest checkpoint known to be complete and finite
        self.created = False  # whether this run made its folder (a failed start removes it again)
        self.length_note: str | None = None  # a resumption that changes the run's length says so

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
            self.length_note = check_resumable(found[1]["config"], self.config, self.run_dir, found[1])
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
                self.created = held.enter_context(claimed(self.run_dir, resuming=bool(self.resume)))
                if (removed := remove_stale_files(self.run_dir)) is not None:
                    self.log(removed)
                found = self._find_checkpoint()
                self._resume_from(found)
            self._setup()
        except Exception as exc:
            if not place.active:
                raise
            failure = exc
        if place.active:
            shown = str(found[0]) if found is not None else None
            summary = start_summary(self.config, self.info if failure is None else None, shown)
            path = agree_on_start(place, failure, summary)
            try:
                if not place.is_main and path is not None:  # the checkpoint rank 0 chose, read by each process
                    self._resume_from((Path(path), load_resumable(path)))
                self._restore()
            except Exception as exc:
                failure = exc
            agree_on_start(place, failure)
        else:
            self._restore()
        self._distribute()

    @property
    def _folder(self) -> bool:
        """Whether the run trains on an image folder (which may meet unreadable files)."""
        return of_image_files(self.config.data)

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
        c = self.config
        self.metrics = MetricsLog(
            self.run_dir,
            self.history,
            tensorboard=c.tensorboard,
            write=self.place.is_main,
            mlflow=c.mlflow,
            params=c.to_dict(),
            classes=self.info.num_classes,
        )
        # The header lines first, then the bar below them.
        header = (
            f"training {c.model} ({sum(p.numel() for p in self.model.parameters()):,} parameters) "
            f"on {c.data}: {plural(self.info.n_train, 'image')}, {plural(self.steps_per_epoch, 'step')}/epoch, "
            f"{plural(self.total_steps, 'step')}, device {self.device}, run folder {self.run_dir}"
        )
        workers = self.data_workers if of_image_files(c.data) else None
        group = [group_line(self.place, c.batch_size, c.accumulate, c.sync_bn, workers)] if self.place.active else []
        more = group + self.network_lines  # then the recipe's notes and the warm-up
        for line in start_lines(c, header, self.info.n_train, self.steps_per_epoch, self.schedule.warming_up, more):
            self.log(line)
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
        check_launch(self.place, c.batch_size, c.accumulate)
        # Several processes on one machine share its cores: each starts its share of the workers.
        self.data_workers = default_workers(self.place.local_world_size, c.num_workers)
        if self.place.is_main:
            write_start_files(self.run_dir, c, self.device)
        self.data = build_loaders(c, self.device, self.place, self.data_workers)
        self.info = info = self.data.info
        check_shares(self.place, c.batch_size, c.accumulate, info.n_train, info.n_val, info.n_test)
        self.num_classes = num_classes = c.num_classes or info.num_classes
        if num_classes < info.num_classes:
            raise ValueError(f"num_classes={num_classes} is fewer than the {info.num_classes} classes of {info.name}")
        self.model, lines = build_network(c, info.in_channels, num_classes, tuple(info.image_size))
        self.network_lines = lines if self.resume_from is None else []  # fine-tuning: where its weights came from
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
        self.graphed = graphs_for(c, self.device, distributed=self.place.active)  # the step is made after any restore
        self.mean, self.std = (t.detach().cpu() for t in self.data.normalization)
        # Where the run stands (restored from a checkpoint on resume), and the steps since the last
        # host sync (synced at least once an epoch).
        self.position = RunPosition.start(self.device)
        self.history: list[dict] = []
        self.meter = IntervalMeter(min(c.log_every, self.steps_per_epoch), self.device)
        self.epoch_images = 0
        self.data_wait = 0.0  # seconds this process waited for batches in the current epoch

    def _distribute(self) -> None:
        """Make the training step, which in a group wraps the network for DistributedDataParallel (a
        collective: rank 0's weights go to every process), and open the group's stop poll."""
        self.step = make_step(
            self.config,
            self.model,
            self.optimizer,
            self.schedule.lr,
            self.device,
            graphed=self.graphed,
            num_classes=self.num_classes,
            part=self.part,
            whole=self.whole_batch,
            place=self.place,
            draws=self.path_draws,
            ema=self.ema,
            warn=lambda text: self.progress.message(text),
        )
        self.stop_poll = StopPoll(self.place, self.config.dist_timeout)

    def _restore(self) -> None:
        if self.resume_from is None:
            return
        path, state = self.resume_from
        restore_training(state, path, self.model, self.optimizer, self.ema, self.device)
        self.schedule.load_state_dict(state["scheduler"])
        self.position.load_state_dict(state, main=self.place.is_main)
        self.history = state["history"]
        set_rng_state(state["rng"])
        p, c = self.position, self.config
        self.log(f"resuming {self.run_dir} from {path.name} (epoch {p.epoch + 1}, step {p.step})")
        if self.length_note is not None:
            self.log(self.length_note)
        note = resumed_world_note(state.get("world_size"), self.place.world_size, c.batch_size, c.accumulate, c.sync_bn)
        if note is not None:
            self.log(note)

    def _diverged(self, what: str, step: int, done: str) -> Diverged:
        """`what` is not finite at step `step`; `done`: what the run did about it."""
        if self.last_good is None:
            good = f"no checkpoint was written before (nothing in {self.ckpt_dir} to resume from)"
        else:
            good = f"the last good checkpoint is {self.last_good}"
        return Diverged(f"{what} at step {step} (epoch {self.position.epoch + 1}): {done}; {good}; try a lower --lr")

    def _combine(self) -> tuple[float, float, int, int]:
        """The epoch's (loss sum, error count, images seen, images timed) over every process, held by rank 0
        alone afterwards (`RunPosition.combine`)."""
        totals = self.position.combine(self.place, self.epoch_images)
        self.epoch_images = totals[3] if self.place.is_main else 0
        return totals

    def _checkpoint(self, is_best: bool = False) -> Path:
        """Save the run's whole state; refuses (Diverged) weights or BN statistics that are not finite.

        Every process takes part (the epoch's sums are combined, the weights checked); rank 0 writes.
        """
        weights = self.model.state_dict()
        bad = first_non_finite(weights)
        if self.place.agree(bad is not None, self._sync_device):
            what = f"non-finite values in {bad or 'the weights of another process'}"
            raise self._diverged(what, self.position.step, "not saved")
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
        """One step on this process's share of the global batch (eager or graphed: `make_step`); its loss
        and errors are counted on the device."""
        loss, errors = self.step(x, y, self.position.step)
        self.meter.add(loss, errors, y.shape[0])
        self.position.count(loss, errors, y.shape[0])
        self.epoch_images += y.shape[0]

    def _check_interval(self) -> None:
        """The loop's one host sync: stop on a non-finite loss, report progress, end the warm-up."""
        meter, p = self.meter, self.position
        if meter.pending == 0:
            return
        values, images = meter.values(self.place)  # in a group, the group's: every process decides alike
        bad = (~torch.isfinite(values[:, 0])).nonzero()
        if len(bad):
            at = meter.start_step + int(bad[0]) + 1
            raise self._diverged(f"non-finite loss ({values[int(bad[0]), 0].item()})", at, "stopped")
        now = time.perf_counter()
        err = values[:, 1].sum().item() / max(images, 1)
        speed = images / max(now - meter.clock, 1e-9)
        lr = self.schedule.lr(p.step - 1)
        self.progress.update(p.step, p.epoch + 1, values[:, 0].mean().item(), err, lr, speed)
        if self.schedule.observe_train_error(err):
            self.progress.message(
                f"step {p.step}: training error {100 * err:.1f}% < {100 * self.config.warmup_until_err:.0f}%, "
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
        c, model = self.config, model or self.model
        batches = loader.epoch(0) if self.place.active else unless_stopped(loader.epoch(0), self.stop)
        reduce = self.place.sum if self.place.active else None
        try:
            result = evaluate(
                model, batches, amp=c.amp, channels_last=c.channels_last, tta_flip=c.tta_flip, reduce=reduce
            )
            result.unreadable = unreadable_in_pass(loader, self.place, self._sync_device, folder=self._folder)
            return result
        except NonFiniteOutputs:
            what = "the model's outputs on evaluation images are not finite"
            raise self._diverged(what, self.position.step, "stopped, not saved") from None
        finally:
            set_train_mode(self.model)

    def _end_epoch(self) -> None:
        """Evaluate, record, step the plateau schedule, checkpoint.

        A stop signal during the evaluation abandons it and checkpoints the epoch's trained state,
        so the resumed run evaluates the epoch again and goes on exactly as an uninterrupted one.
        """
        try:
            self._record_epoch()
        except StopEvaluation:
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
        # Every process evaluates rank 0's BatchNorm statistics: those its checkpoints and final weights hold.
        models = [self.model] + ([self.ema.model] if self.ema is not None else [])
        same_statistics(self.place, models, self._sync_device)
        val = None
        if self.data.val is not None:
            val = self._evaluate(self.data.val)
            record["val_err"], record["val_top5_err"] = val.top1_err, val.top5_err
        test = self._evaluate(self.data.test)
        record.update(test_err=test.top1_err, test_top5_err=test.top5_err, test_loss=test.loss)
        for split, result in (("val", val), ("test", test)):  # images left out of a split's figures
            record.update(left_out_fields(split, result))
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
        if self.place.active:  # each process's own figures
            record.update(rank_figures(self.place, own, self._sync_device, timed=bool(epoch_images)))
        # The unreadable training images met so far, over every process (as one process would have met them).
        record.update(bad_images_fields(self.data.train, self.place, self._sync_device, folder=self._folder))
        if "bad_images" in record:
            self.progress.message(bad_images_line(record))
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
        self.progress.message(format_record(record, self.info.num_classes))

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
        inputs = first_images(self.data.test, 8)
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


def train(config: TrainConfig, resume: bool | str | Path = False, stream=None) -> RunResult:
    """Train as `config` says; resumes from the run folder's newest valid checkpoint when there is one.

    `resume=True` requires one; a checkpoint file resumes from that checkpoint.

    >>> from resnets.train import TrainConfig, train
    >>> result = train(TrainConfig(model="resnet8", data="synthetic:1,16,16,4", epochs=1, out="/tmp/doc-run"))
    ... # doctest: +SKIP

    Under torchrun (several processes) it joins the group and trains with DistributedDataParallel;
    an error that no restart can fix is left for a restarted attempt to stop on at once.
    """
    with training_group(resolve_device(config.device), config.dist_timeout) as place:
        return Trainer(config, resume=resume, stream=stream, place=place).run()
