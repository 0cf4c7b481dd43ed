"""Whole-step CUDA graphs: forward, backward and the SGD step of one batch, replayed as one graph.

The CIFAR nets are small: an eager step on a GPU spends most of its time launching kernels. A
graph launches them all at once (about 3.5x on an H200 for ResNet-56 at batch 128: BENCHMARKS.md).
The step reads its batch from fixed input buffers, its learning rate from a device tensor (so the
schedules go on working inside the graph), and leaves its loss and error count on the device.
SGD runs fused, which takes the learning rate as a tensor without reading it on the host.

The same class runs without capture (`capture=False`): the CPU tests exercise everything but the
graph itself, which needs a CUDA device.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..errors import first_line
from ..hardware import autocast

CUDA_GRAPHS = ("auto", "on", "off")
WARMUP_STEPS = 3  # eager steps before capture (cuDNN's choices, the allocator), undone afterwards


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


class GraphedStep:
    """One SGD step of `model` on fixed buffers: `step(x, y, lr)` returns (loss, error count) on the device.

    The buffers, the learning-rate tensor and the outputs keep their storage between steps, so the
    captured graph replays on each new batch. The warm-up steps that capture needs are undone
    (weights, BN statistics, momentum): the run goes on from exactly where it stood.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module,
        optimizer: torch.optim.SGD,
        batch_shape: tuple[int, ...],
        device: torch.device,
        *,
        amp: bool,
        channels_last: bool,
        capture: bool,
        fallback: bool = False,
    ) -> None:
        self.model, self.criterion, self.optimizer = model, criterion, optimizer
        self.device, self.amp, self.capture = device, amp, capture
        # With `fallback` (--cuda-graphs auto) a capture that fails leaves the step uncaptured (the same
        # arithmetic, launched eagerly) and says why in `failed`; otherwise the failure is raised.
        self.fallback = fallback
        self.failed: str | None = None
        layout = torch.channels_last if channels_last and len(batch_shape) == 4 else torch.contiguous_format
        self.x = torch.zeros(batch_shape, device=device).contiguous(memory_format=layout)
        self.y = torch.zeros(batch_shape[0], dtype=torch.long, device=device)
        self.lr = torch.zeros((), device=device)
        for group in optimizer.param_groups:  # fused SGD reads the learning rate from the tensor
            group.update(lr=self.lr, fused=True, foreach=False)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss = torch.zeros((), device=device)
        self.errors = torch.zeros((), dtype=torch.long, device=device)
        self.ready = False

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

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on (x, y) at learning rate `lr`; the loss and error count stay on the device (their
        tensors are overwritten by the next step: read or copy them before)."""
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        self.lr.fill_(lr)
        if not self.ready:
            self._warm_up_and_capture()
        if self.graph is not None:
            self.graph.replay()
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self._body()
        return self.loss, self.errors
