"""Training in several processes with PyTorch's distributed engine (torchrun, DistributedDataParallel).

`torchrun --nproc-per-node N -m resnets train ...` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT in their environment; `process_group()` joins them
(NCCL on GPUs, gloo on CPUs). Without that environment everything here is a no-op and a run is
the single process it always was.

Every decision that changes the run's course (a stop signal, a non-finite loss, the end of the
warm-up, a plateau) is taken on values that all processes share after a reduction, so the
processes never disagree about what comes next.

An error that no restart can fix (a bad option, a run that diverged) is written to torchrun's
store, which outlives the attempt; a group that torchrun restarts finds it there and stops at
once with the same error instead of failing again after minutes (`--max-restarts`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..data.base import DatasetInfo
from ..errors import first_line, is_usage_error
from .config import TrainConfig
from .stops import Diverged

# torchrun's variables; a run with WORLD_SIZE above 1 is distributed.
ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# What the collective transports say when a peer process is gone (gloo's and NCCL's words).
PEER_GONE = re.compile(r"Connection (closed|reset) by peer|remote worker|NCCL error|ProcessGroup(Gloo|NCCL)")


@dataclass(frozen=True)
class Distributed:
    """This process's place among those that train together (rank 0 of 1 when alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""
    local_world_size: int = 1  # the processes of the group on this machine (torchrun's LOCAL_WORLD_SIZE)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run folder (logs, metrics, checkpoints) and holds its lock."""
        return self.rank == 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over the processes, in place (itself when alone)."""
        if self.active:
            dist.all_reduce(tensor)
        return tensor

    def agree(self, flag: bool, device: torch.device) -> bool:
        """True on every process when it is true on any: one host sync."""
        if not self.active:
            return flag
        value = torch.tensor([float(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def broadcast(self, value: object) -> object:
        """Rank 0's `value` on every process (a picklable object)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: object) -> list:
        """Every process's `value` (a picklable object), in rank order, on every process."""
        if not self.active:
            return [value]
        values: list = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def gather_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's `tensor`, stacked in rank order (world, *shape), on every process."""
        if not self.active:
            return tensor[None]
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor)
        return torch.stack(parts)


SINGLE = Distributed()


class PeerFailed(RuntimeError):
    """Another process of the group failed to start; that process's own error says why."""


class GroupFailed(RuntimeError):
    """The group could not form, or a collective failed: a process died, hung past --dist-timeout, or is
    unreachable. Each surviving process says it with its rank; a restart may well succeed."""


class PeerUsageError(ValueError):
    """Another process of the group met a usage error (a bad value or file) while starting."""


class GroupMismatch(ValueError):
    """The processes of a group were given different settings, or see different data."""


class RepeatedFailure(Exception):
    """The previous attempt of this torchrun job stopped with an error that no restart can fix.

    `kind` is "usage" (a bad value or file) or "diverged" (a non-finite loss or weights)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def rank_of_this_process() -> int:
    """torchrun's RANK (0 without torchrun, or when it is not a number): only rank 0 reports most errors."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def launched() -> Distributed:
    """The place torchrun gave this process (rank 0 of 1 without torchrun's environment)."""
    if "WORLD_SIZE" not in os.environ:
        return SINGLE
    try:
        values = {name: int(os.environ.get(name, "0")) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    except ValueError:
        shown = ", ".join(f"{n}={os.environ.get(n)!r}" for n in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
        raise ValueError(f"the distributed environment is not integers ({shown}): start with torchrun") from None
    rank, world, local = values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"]
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} do not name a process of the group: start with torchrun")
    return Distributed(rank, world, local, local_world_size=local_world_size(world))


def local_world_size(world: int = 1) -> int:
    """The processes of the group on this machine: torchrun's LOCAL_WORLD_SIZE (at least 1; the whole
    group when it is not set, as when processes are started by hand on one machine)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    except ValueError:
        return max(1, world)


def device_of(place: Distributed, device: torch.device) -> torch.device:
    """Each process's own GPU (cuda:LOCAL_RANK) when the run is on CUDA."""
    if place.active and device.type == "cuda":
        return torch.device("cuda", place.local_rank)
    return device


_groups = 0  # process groups this process has joined (every process joins the same sequence)
FATAL_KEY = "resnets/fatal"  # in torchrun's store, unprefixed: every attempt of the job sees it
DEFAULT_TIMEOUT_S = 1800.0  # a collective that waits longer fails (PyTorch's own default, 30 minutes)


@contextmanager
def process_group(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[Distributed]:
    """Join the processes torchrun started (NCCL for CUDA, gloo otherwise), and leave at the end.

    Yields this process's place; without torchrun's environment (or with one process) it yields
    rank 0 of 1 and joins nothing. `timeout_s` bounds every collective: a process that waits
    longer for the others fails instead of hanging. An attempt that torchrun restarts after an
    error no restart can fix (`remember_fatal`) raises `RepeatedFailure` at once.
    """
    place = launched()
    if dist.is_initialized():  # the caller joined a group itself: train in it, and leave it to the caller
        yield Distributed(
            dist.get_rank(), dist.get_world_size(), place.local_rank, dist.get_backend(), place.local_world_size
        )
        return
    if not place.active:
        yield SINGLE
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(place.local_rank)
    timeout = datetime.timedelta(seconds=timeout_s)
    store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
    _refuse_repeated(store)
    # A group that torchrun restarted meets in the store its predecessor used, where that group's
    # addresses remain: its processes would connect to processes that are gone. So each attempt, and
    # each group of one attempt (an experiment trains run after run), gets keys of its own.
    global _groups, _store
    _groups += 1
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    _store = store
    prefixed = dist.PrefixStore(f"resnets/attempt{attempt}/group{_groups}", store)
    dist.init_process_group(backend, store=prefixed, rank=rank, world_size=world, timeout=timeout)
    try:
        yield Distributed(place.rank, place.world_size, place.local_rank, backend, place.local_world_size)
    finally:
        dist.destroy_process_group()
        _store = None


_store: dist.Store | None = None  # torchrun's store while this process is in a group


def remember_fatal(message: str, kind: str) -> None:
    """Leave an error that no restart can fix in torchrun's store, for a restarted attempt to stop on.

    Does nothing outside a group, or when the store cannot be written (the group is breaking up).
    """
    if _store is None or os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") == "0":
        return
    with contextlib.suppress(Exception):  # the store's own errors are RuntimeErrors of many texts
        _store.set(FATAL_KEY, json.dumps([message, kind]))


def _refuse_repeated(store: dist.Store) -> None:
    if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
        return
    try:
        if not store.check([FATAL_KEY]):
            return
        message, kind = json.loads(store.get(FATAL_KEY))
    except Exception:  # a store that cannot answer: start as usual
        return
    raise RepeatedFailure(f"{message} (the previous attempt stopped on this error: a restart cannot fix it)", kind)


@contextmanager
def training_group(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[Distributed]:
    """`process_group`, and what a failure of the training in it means: an error that no restart can
    fix is left for a restarted attempt to stop on at once (`remember_fatal`), and a process that
    died, hung or cannot be reached is a `GroupFailed`."""
    try:
        with process_group(device, timeout_s) as place:
            try:
                yield place
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
            f"longer than --dist-timeout {timeout_s:g} s for the others"
        ) from exc


class StopPoll:
    """Whether any process of the group was asked to stop (a signal), known to every process one step
    later, checked every step without a host-device synchronisation.

    Each step sends this process's flag in an asynchronous all-reduce (maximum) over a gloo group on
    the CPU, separate from the training collectives, and reads the previous step's result, which
    has long arrived. Every process reads the same value at the same step, so all stop after the
    same step: at most two steps after the signal. A stop therefore lands within seconds, well
    inside torchrun's and Slurm's 30 s between SIGTERM and SIGKILL, whatever `--log-every` is.
    """

    def __init__(self, place: Distributed, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.place = place
        self.group: dist.ProcessGroup | None = None
        if place.active:
            group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))
            assert isinstance(group, dist.ProcessGroup)  # every process is in it
            self.group = group
        self._pending: tuple[dist.Work, torch.Tensor] | None = None

    def poll(self, asked: bool) -> bool:
        """Send this process's flag; True when some process had asked to stop one poll earlier."""
        if not self.place.active:
            return asked
        agreed = self.drain()
        flag = torch.tensor([float(asked)])
        work = dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True)
        assert work is not None
        self._pending = (work, flag)
        return agreed

    def drain(self) -> bool:
        """The outcome of the last poll sent (False when none is outstanding); none is outstanding after."""
        if self._pending is None:
            return False
        work, flag = self._pending
        self._pending = None
        work.wait()
        return bool(flag.item() > 0)


def check_same_settings(settings: list[dict]) -> None:
    """Refuse (GroupMismatch) processes given different settings, naming each differing field.

    >>> check_same_settings([{"lr": 0.1, "seed": 0}, {"lr": 0.2, "seed": 0}])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    resnets.train.distributed.GroupMismatch: ... different settings: lr (rank 0: 0.1, rank 1: 0.2); launch ...
    """
    first = settings[0]
    fields = sorted({k for s in settings for k in s if any(t.get(k) != first.get(k) for t in settings)})
    if not fields:
        return
    shown = []
    for k in fields:
        differing = [(r, s.get(k)) for r, s in enumerate(settings) if r == 0 or s.get(k) != first.get(k)]
        values = ", ".join(f"rank {r}: {value!r}" for r, value in differing)
        shown.append(f"{k} ({values})")
    raise GroupMismatch(
        f"the processes of the group were given different settings: {'; '.join(shown)}; "
        "launch every process with the same options"
    )


def check_launch(place: Distributed, batch_size: int, accumulate: int) -> int:
    """The images each process takes per micro-step; refuses a batch that does not share evenly."""
    shares = place.world_size * accumulate
    if batch_size % shares:
        micro = f"{accumulate} micro-batches (--accumulate {accumulate})"
        if place.world_size == 1:
            what = f"into {micro}"
        else:
            what = f"among {place.world_size} processes" + (f" x {micro}" if accumulate > 1 else "")
        raise ValueError(
            f"--batch-size {batch_size} (the global batch) does not divide {what}: use a multiple of {shares}"
        )
    return batch_size // shares


def group_line(place: Distributed, batch_size: int, accumulate: int, sync_bn: bool, workers: int | None) -> str:
    """What a group trains with, for the log: its processes, each one's share of the batch, where
    BatchNorm takes its statistics, and (image folders) each one's data-loading `workers`."""
    per_step = f"{batch_size // place.world_size} per process"
    if accumulate > 1:
        per_step += f", in {accumulate} micro-batches of {batch_size // (place.world_size * accumulate)}"
    shown = "" if workers is None else f", {workers} data-loading worker{'s' if workers != 1 else ''} per process"
    return (
        f"distributed: {place.world_size} processes ({place.backend}), global batch "
        f"{batch_size} ({per_step}), BatchNorm statistics "
        + ("over the global batch (--sync-bn)" if sync_bn else "per process")
        + shown
    )


def resumed_world_note(saved: int | None, world: int, batch_size: int, accumulate: int, sync_bn: bool) -> str | None:
    """What changes when a run saved on `saved` processes (None: saved before it was recorded) resumes on
    `world`: BatchNorm's batch, unless it is the global one (--sync-bn)."""
    if saved is None or saved == world or sync_bn:
        return None
    before, now = (batch_size // (n * accumulate) for n in (saved, world))
    return (
        f"note: the run trained on {saved} process(es) and resumes on {world}: BatchNorm now takes its "
        f"statistics over {now} images, not {before} (each process's share of the batch; --sync-bn "
        "takes them over the global batch, whatever the number of processes)"
    )


def rank_figures(place: Distributed, own: torch.Tensor, device: torch.device, timed: bool) -> dict:
    """Each process's own (images/s, seconds waiting for data) of an epoch (`own`), for its record: a slow
    process or a starved loader shows there. `timed`: whether any step ran since the start or resumption."""
    ranks = place.gather_tensor(own.to(device)).cpu()
    return {
        "rank_images_per_s": [round(v, 1) for v in ranks[:, 0].tolist()] if timed else None,
        "rank_data_wait": [round(v, 3) for v in ranks[:, 1].tolist()],
        "data_wait": float(ranks[:, 1].max()),
    }


def check_shares(place: Distributed, batch_size: int, accumulate: int, n_train: int, n_val: int, n_test: int) -> None:
    """Refuse a group with more processes than the data can give images to."""
    whole = min(batch_size, n_train)  # a training set smaller than the batch is one batch
    if whole < batch_size:
        check_launch(place, whole, accumulate)
    for split, n in (("training", whole), ("validation", n_val), ("test", n_test)):
        if n and n < place.world_size:
            raise ValueError(
                f"{place.world_size} processes are too many for the data: the {split} split has {n} images, "
                "fewer than one per process"
            )


def start_summary(config: TrainConfig, info: DatasetInfo | None, checkpoint: str | None) -> tuple:
    """What the processes of a group compare before they train together (`agree_on_start`): the resolved
    config less what may differ between machines (where the data lies, their cores); the data's splits,
    classes and files (`info`: None where this process could not load it); rank 0's checkpoint."""
    settings = {k: v for k, v in config.to_dict().items() if k not in ("data_dir", "num_workers")}
    if info is None:
        return settings, None, checkpoint
    data = f"{info.n_train}/{info.n_val}/{info.n_test} images, {info.num_classes} classes, {info.digest}"
    return settings, data, checkpoint


def agree_on_start(place: Distributed, failure: Exception | None, summary: tuple | None = None) -> str | None:
    """Every process's outcome of a start-up step, and (with `summary`: settings, data, rank 0's
    checkpoint) a check that they match. Raises on every process when any failed or differs;
    returns rank 0's checkpoint path."""
    report = None if failure is None else (is_usage_error(failure), first_line(failure))
    everyone = place.gather((report, summary))
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


def same_statistics(place: Distributed, models: list[nn.Module], device: torch.device) -> None:
    """Rank 0's BatchNorm running statistics (the floating-point buffers of `models`: the network and its
    weight average) on every process, before an evaluation: the model every process evaluates is then
    the one the checkpoints and the final weights hold (rank 0's), and the reported error is that model's.
    `device`: where the broadcast runs.

    Broadcast rather than averaged: DistributedDataParallel already gives every process rank 0's
    buffers at each training forward (broadcast_buffers), so the statistics the run carries are
    rank 0's plus one step's update; and running statistics never enter a training step, so the
    training does not change, and a run is bitwise the same whatever its checkpoint interval.
    """
    if not place.active:
        return
    buffers = [b for m in models for b in m.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.detach().flatten().to(device, torch.float64) for b in buffers])
    dist.broadcast(flat, src=0)
    with torch.no_grad():
        for b, value in zip(buffers, flat.split([b.numel() for b in buffers]), strict=True):
            b.copy_(value.view_as(b).to(b.device, b.dtype))


class _Summed(torch.autograd.Function):
    """The sum over the processes of a tensor, differentiable: the gradient is summed as well (each
    process's input influences every process's output)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def summed(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over the processes of the group, with its gradient."""
    return _Summed.apply(tensor)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the global batch, on any device.

    torch.nn.SyncBatchNorm runs on GPUs only; this one reduces (sum, count) and then the centred
    sum of squares with torch.distributed's all_reduce (differentiable, `summed`), so that CPU (gloo) runs
    normalise exactly as one process over the whole batch does. Same parameters, buffers and
    state-dict keys as nn.BatchNorm2d; in eval mode, or alone, it is nn.BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # statistics in float32 at least
        count = torch.full((1,), x.numel() // c, dtype=xf.dtype, device=x.device)
        totals = summed(torch.cat([xf.sum((0, 2, 3)), count]))
        n = totals[c]
        mean = totals[:c] / n
        centred = xf - mean[None, :, None, None]
        var = summed(centred.square().sum((0, 2, 3))) / n
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                tracked = self.num_batches_tracked
                if tracked is not None:
                    tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(tracked if tracked is not None else 1)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                unbiased = var.detach() * n / (n - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of `model` computing its training statistics over the global batch: PyTorch's
    SyncBatchNorm on CUDA, `SyncBatchNorm2d` elsewhere. The state-dict keys do not change."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = SyncBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            synced.load_state_dict(child.state_dict())
            synced.train(child.training)
            setattr(model, name, synced.to(device=child.weight.device, dtype=child.weight.dtype))
        else:
            sync_batchnorm(child, device)
    return model
