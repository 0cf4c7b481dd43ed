"""The hardware: which device to run on, and the machine a figure was measured on (every result names it)."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU model as the OS reports it (e.g. 'AMD EPYC'), or the architecture when unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one), at least 1.

    >>> usable_cores() >= 1
    True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no affinity mask
        return max(1, os.cpu_count() or 1)


def default_workers(processes: int = 1, asked: int | None = None) -> int:
    """Data-loading worker processes for each of `processes` processes training on this machine: `asked`
    (at most one per usable core), else their equal share of the usable cores, at least 1.

    8 processes on a 64-core machine start 8 workers each, not 64 (512 decoders on 64 cores).

    >>> default_workers(processes=10**6)
    1
    """
    if asked is not None:
        return min(asked, usable_cores())
    return max(1, usable_cores() // max(1, processes))


def describe(device: torch.device | str | None = None) -> dict:
    """CPU, cores, torch threads, GPU and torch version; `device` is the one the work runs on.

    >>> sorted(describe("cpu"))
    ['cores', 'cpu', 'device', 'gpu', 'threads', 'torch']
    """
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "device": str(device) if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": gpu,
        "torch": torch.__version__,
    }


def summary(info: dict) -> str:
    """One line for a figure's caption: 'cpu (AMD EPYC, 2 cores, 2 threads), torch 2.14.1'.

    >>> summary({"device": "cuda", "gpu": "NVIDIA H200", "torch": "2.11.0"})
    'cuda (NVIDIA H200), torch 2.11.0'
    """
    device = str(info.get("device", "?"))
    if device.startswith("cuda"):
        where = info.get("gpu", "unknown GPU")
    else:
        parts = [info.get("cpu", "unknown CPU")]
        parts += [f"{info[k]} {k}" for k in ("cores", "threads") if info.get(k) is not None]
        where = ", ".join(str(p) for p in parts)
    return f"{device} ({where}), torch {info.get('torch', '?')}"


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


def autocast(device: torch.device, enabled: bool, cache_enabled: bool = True):
    """bf16 autocast on CUDA; nothing elsewhere (fp32 on CPU is faster than emulated bf16)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache_enabled)
    return contextlib.nullcontext()


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device`; to a GPU through pinned memory, so that the host does not wait for
    the kernels queued before the copy (a copy from pageable memory synchronises).

    >>> to_device(torch.ones(2), torch.device("cpu")).device
    device(type='cpu')
    """
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
