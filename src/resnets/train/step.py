"""One training step, two ways: eager (every option of a run) or replayed as a CUDA graph (the paper's step).

Both are called alike, `step(x, y, i)`: train on the batch (x, y) at step i's learning rate and return
its (loss, error count), which stay on the device. `make_step` builds the one a run uses.

The CIFAR nets are small: an eager step on a GPU spends most of its time launching kernels. A
graph launches them all at once (about 3.5x on an H200 for ResNet-56 at batch 128: BENCHMARKS.md).
The graphed step reads its batch from fixed input buffers, its learning rate from a device tensor
(so the schedules go on working inside the graph), and leaves its loss and error count on the
device. SGD runs fused, which takes the learning rate as a tensor without reading it on the host.
The graphed step also runs without capture (`capture=False`): the CPU tests exercise everything but
the graph itself, which needs a CUDA device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data.base import of_image_files
from ..errors import first_line
from ..hardware import autocast
from ..models.registry import model_entry
from .config import CUDA_GRAPHS, TrainConfig
from .distributed import SINGLE, Distributed
from .draws import DropPathDraws
from .ema import WeightAverage
from .mix import BinaryCrossEntropy, Mixer

WARMUP_STEPS = 3  # eager steps before capture (cuDNN's choices, the allocator), undone afterwards


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


def graphs_wanted(
    mode: str,
    device: torch.device,
    family: str,
    *,
    distributed: bool = False,
    accumulate: int = 1,
    compiled: bool = False,
    folder: bool = False,
    uncaptured: str | None = None,
) -> bool:
    """Whether to train through a CUDA graph. `auto`: for the CIFAR nets on a CUDA device (launch-bound,
    where a graph pays); `on` refuses a run that cannot be captured; `off` never. `uncaptured` names
    an option of the step that the graph does not hold (the graph holds the paper's SGD step).

    >>> graphs_wanted("auto", torch.device("cpu"), "cifar")
    False
    """
    if mode not in CUDA_GRAPHS:
        raise ValueError(f"cuda_graphs={mode!r} is not one of {', '.join(CUDA_GRAPHS)}")
    if mode == "off":
        return False
    obstacles = [
        (device.type != "cuda", f"needs a CUDA device (this run is on {device.type})"),
        (distributed, "captures a single process (several processes run eagerly)"),
        (accumulate > 1, "captures whole steps, not --accumulate micro-batches"),
        (compiled, "and --compile are exclusive (torch.compile has its own mode=reduce-overhead)"),
        (folder, "needs batches of one size: device-resident data (an image folder skips unreadable files)"),
        (uncaptured is not None, f"captures the paper's SGD step, not {uncaptured}"),
    ]
    found = [why for bad, why in obstacles if bad]
    if mode == "on" and found:
        raise ValueError(f"--cuda-graphs on {found[0]}")
    return not found and (mode == "on" or family == "cifar")


def graphs_for(config: TrainConfig, device: torch.device, *, distributed: bool) -> bool:
    """Whether a run of `config` on `device` trains through a CUDA graph: `graphs_wanted` on its options."""
    c = config
    return graphs_wanted(
        c.cuda_graphs,
        device,
        model_entry(c.model).family,
        distributed=distributed,
        accumulate=c.accumulate,
        compiled=c.compile,
        folder=of_image_files(c.data),
        uncaptured=beyond_paper_step(c),
    )


class EagerStep:
    """One step of `config`'s options on this process's share of the global batch (`part` of `whole`
    images): mixup/CutMix (of `num_classes`), drop-path, micro-batches, clipping, the weight average.

    In a group (`place`) the network trains wrapped for DistributedDataParallel, which all-reduces the
    gradients (a collective at construction: rank 0's weights go to every process); `model` stays the
    bare network, whose state dict (no "module." prefix) the checkpoints hold. With `accumulate` K the
    share goes through in K micro-batches whose gradients add up (DDP all-reduces after the last one
    only), each weighted by its share of the images.
    """

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_at: Callable[[int], float],
        device: torch.device,
        *,
        num_classes: int,
        part: slice,
        whole: int,
        place: Distributed = SINGLE,
        draws: DropPathDraws | None = None,
        ema: WeightAverage | None = None,
    ) -> None:
        c = config
        self.model, self.criterion, self.optimizer, self.lr_at, self.device = model, criterion, optimizer, lr_at, device
        self.amp, self.channels_last = c.amp, c.channels_last
        self.accumulate, self.clip_grad = c.accumulate, c.clip_grad
        self.mixer = Mixer(c.mixup, c.cutmix, num_classes, c.seed) if c.mixup or c.cutmix else None
        self.part, self.whole, self.draws, self.ema = part, whole, draws, ema
        self.ddp: DistributedDataParallel | None = None
        if place.active:
            ids = [device.index] if device.type == "cuda" else None
            self.ddp = DistributedDataParallel(model, device_ids=ids)
        network = self.ddp if self.ddp is not None else model
        self.forward = torch.compile(network, mode=c.compile_mode) if c.compile else network

    def __call__(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on (x, y) at step `step`'s learning rate; the loss and error count stay on the device."""
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # Mixup and CutMix: soft targets; the errors still count against each image's own label.
        x, target = self.mixer(x, y, step) if self.mixer is not None else (x, y)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        if self.accumulate == 1:
            if self.draws:
                self.draws.set(step, self.part, self.whole)
            with autocast(self.device, self.amp):
                logits = self.forward(x)
                loss = self.criterion(logits, target)
            loss.backward()
            errors = (logits.detach().argmax(1) != y).sum()
            loss = loss.detach().float()
        else:
            loss, errors = self._accumulated(x, y, target, step)
        if self.clip_grad is not None:  # returns the norm as a tensor: no host sync
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(step + 1)  # counted from 1, as timm's updates
        return loss, errors

    def _accumulated(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor, step: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward in micro-batches; the mean loss and the error count of all of them."""
        n, k = y.shape[0], self.accumulate
        parts = list(zip(x.chunk(k), y.chunk(k), target.chunk(k), strict=True))
        loss_sum = torch.zeros((), device=x.device)
        errors = torch.zeros((), device=x.device, dtype=torch.long)
        first = self.part.start  # the place of the micro-batch's first image in the global batch
        for i, (xs, ys, ts) in enumerate(parts):
            last = i == len(parts) - 1
            if self.draws:
                self.draws.set(step, slice(first, first + ys.shape[0]), self.whole)
                first += ys.shape[0]
            with self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext():
                with autocast(self.device, self.amp):
                    logits = self.forward(xs)
                    loss = self.criterion(logits, ts)
                (loss * (ys.shape[0] / n)).backward()
            errors += (logits.detach().argmax(1) != ys).sum()
            loss_sum += loss.detach().float() * ys.shape[0]
        return loss_sum / n, errors


class GraphedStep:
    """The paper's SGD step of `model`, captured as one CUDA graph at the first call and replayed after.

    The buffers, the learning-rate tensor and the outputs keep their storage between steps, so the
    captured graph replays on each new batch; they are made at the first call, from its batch and
    after any restore (the optimizer then reads its learning rate from the tensor). The warm-up
    steps that capture needs are undone (weights, BN statistics, momentum): the run goes on from
    exactly where it stood. With `fallback` (--cuda-graphs auto) a capture that fails leaves the step
    uncaptured (the same arithmetic, launched eagerly), says why in `failed` and tells `warn`;
    otherwise the failure is raised.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module,
        optimizer: torch.optim.SGD,
        lr_at: Callable[[int], float],
        device: torch.device,
        *,
        amp: bool,
        channels_last: bool,
        capture: bool,
        fallback: bool = False,
        warn: Callable[[str], object] | None = None,
    ) -> None:
        self.model, self.criterion, self.optimizer, self.lr_at = model, criterion, optimizer, lr_at
        self.device, self.amp, self.channels_last, self.capture = device, amp, channels_last, capture
        self.fallback, self.warn = fallback, warn
        self.failed: str | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.ready = False

    def _make_buffers(self, batch_shape: tuple[int, ...]) -> None:
        device = self.device
        layout = torch.channels_last if self.channels_last and len(batch_shape) == 4 else torch.contiguous_format
        self.x = torch.zeros(batch_shape, device=device).contiguous(memory_format=layout)
        self.y = torch.zeros(batch_shape[0], dtype=torch.long, device=device)
        self.lr = torch.zeros((), device=device)
        for group in self.optimizer.param_groups:  # fused SGD reads the learning rate from the tensor
            group.update(lr=self.lr, fused=True, foreach=False)
        self.loss = torch.zeros((), device=device)
        self.errors = torch.zeros((), dtype=torch.long, device=device)

    def _body(self, capturing: bool = False) -> None:
        # Autocast's cache of cast weights must not outlive a capture (torch.cuda.graphs' advice).
        with autocast(self.device, self.amp, cache_enabled=not capturing):
            logits = self.model(self.x)
            loss = self.criterion(logits, self.y)
        loss.backward()
        self.optimizer.step()
        self.loss = loss.detach().float()
        self.errors = (logits.detach().argmax(1) != self.y).sum()

    def _warm_up_and_capture(self) -> None:
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        weights = {k: v.clone() for k, v in self.model.state_dict().items()}
        momentum = {p: self.optimizer.state[p]["momentum_buffer"].clone() for p in params if p in self.optimizer.state}
        rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.get_rng_state()
        side = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        if side is not None:
            side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
            for _ in range(WARMUP_STEPS):
                self.optimizer.zero_grad(set_to_none=True)
                self._body()
        if side is not None:
            torch.cuda.current_stream(self.device).wait_stream(side)
        # Undo the warm-up in place (the graph records these very tensors). A momentum buffer that did
        # not exist is zero: SGD's first step then gives it the gradient, as a fresh buffer would get.
        with torch.no_grad():
            self.model.load_state_dict(weights)
            for p in params:
                buffer = self.optimizer.state[p].get("momentum_buffer")
                if buffer is None:
                    continue
                if p in momentum:
                    buffer.copy_(momentum[p])
                else:
                    buffer.zero_()
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(rng, self.device)
        else:
            torch.set_rng_state(rng)
        self.optimizer.zero_grad(set_to_none=True)
        if self.capture:
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self._body(capturing=True)
                self.graph = graph
            except RuntimeError as exc:  # capture runs nothing: the state is as the warm-up left it, undone
                if not self.fallback:
                    raise
                self.failed = first_line(exc)
                self.optimizer.zero_grad(set_to_none=True)
        self.ready = True

    def __call__(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on (x, y) at step `step`'s learning rate; the loss and error count stay on the device
        (their tensors are overwritten by the next step: read or copy them before)."""
        first = not self.ready
        if first:
            self._make_buffers(tuple(x.shape))
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        self.lr.fill_(self.lr_at(step))
        if first:
            self._warm_up_and_capture()
        if self.graph is not None:
            self.graph.replay()
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self._body()
        if first and self.failed and self.warn is not None:
            self.warn(
                f"warning: CUDA graph capture failed ({self.failed}); training without it "
                "(--cuda-graphs off says so from the start)"
            )
        return self.loss, self.errors


def make_step(
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_at: Callable[[int], float],
    device: torch.device,
    *,
    graphed: bool,
    num_classes: int,
    part: slice,
    whole: int,
    place: Distributed = SINGLE,
    draws: DropPathDraws | None = None,
    ema: WeightAverage | None = None,
    warn: Callable[[str], object] | None = None,
) -> EagerStep | GraphedStep:
    """The run's training step, with the loss `config` asks for: graphed when `graphed` (`graphs_for`
    said so), else eager. `lr_at(step)`: the learning rate of each step (the schedule's)."""
    c = config
    criterion: nn.Module = (
        BinaryCrossEntropy(c.label_smoothing, c.bce_target_thresh)
        if c.bce
        else nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)
    )
    if not graphed:
        return EagerStep(
            c,
            model,
            criterion,
            optimizer,
            lr_at,
            device,
            num_classes=num_classes,
            part=part,
            whole=whole,
            place=place,
            draws=draws,
            ema=ema,
        )
    assert isinstance(optimizer, torch.optim.SGD)  # graphs_wanted: the paper's SGD step only
    return GraphedStep(
        model,
        criterion,
        optimizer,
        lr_at,
        device,
        amp=c.amp,
        channels_last=c.channels_last,
        capture=device.type == "cuda",
        fallback=c.cuda_graphs == "auto",
        warn=warn,
    )
