"""Training in several processes with PyTorch's distributed engine (torchrun, DistributedDataParallel).

`torchrun --nproc-per-node N -m resnets train ...` starts N processes with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT in their environment; `process_group()` joins them
(NCCL on GPUs, gloo on CPUs). Without that environment everything here is a no-op and a run is
the single process it always was.

Every decision that changes the run's course (a stop signal, a non-finite loss, the end of the
warm-up, a plateau) is taken on values that all processes share after a reduction, so the
processes never disagree about what comes next.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

# torchrun's variables; a run with WORLD_SIZE above 1 is distributed.
ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Distributed:
    """This process's place among those that train together (rank 0 of 1 when alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

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


SINGLE = Distributed()


class PeerFailed(RuntimeError):
    """Another process of the group failed to start; that process's own error says why."""


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
    return Distributed(rank, world, local)


def device_of(place: Distributed, device: torch.device) -> torch.device:
    """Each process's own GPU (cuda:LOCAL_RANK) when the run is on CUDA."""
    if place.active and device.type == "cuda":
        return torch.device("cuda", place.local_rank)
    return device


_groups = 0  # process groups this process has joined (every process joins the same sequence)


@contextmanager
def process_group(device: torch.device, timeout_s: float = 1800) -> Iterator[Distributed]:
    """Join the processes torchrun started (NCCL for CUDA, gloo otherwise), and leave at the end.

    Yields this process's place; without torchrun's environment (or with one process) it yields
    rank 0 of 1 and joins nothing.
    """
    place = launched()
    if dist.is_initialized():  # the caller joined a group itself: train in it, and leave it to the caller
        yield Distributed(dist.get_rank(), dist.get_world_size(), place.local_rank, dist.get_backend())
        return
    if not place.active:
        yield SINGLE
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(place.local_rank)
    timeout = datetime.timedelta(seconds=timeout_s)
    store, rank, world = next(dist.rendezvous("env://", timeout=timeout))
    # A group that torchrun restarted meets in the store its predecessor used, where that group's
    # addresses remain: its processes would connect to processes that are gone. So each attempt, and
    # each group of one attempt (an experiment trains run after run), gets keys of its own.
    global _groups
    _groups += 1
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    store = dist.PrefixStore(f"resnets/attempt{attempt}/group{_groups}", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    try:
        yield Distributed(place.rank, place.world_size, place.local_rank, backend)
    finally:
        dist.destroy_process_group()


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
