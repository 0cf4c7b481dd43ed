"""Checkpoints that survive crashes: atomic writes, a checksum beside each file, what a run resumes from.

A checkpoint is written to a temporary file, fsynced and renamed, so a file under its final
name is always complete; its SHA-256 goes to `NAME.sha256` first. On resume the newest file
whose checksum matches is used; a truncated or corrupt one is reported and skipped. Reading one
safely is `resnets.trained`'s (`load_checkpoint`, `verify`), as for every file of a run.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
import typing
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

from ..errors import first_line
from ..files import atomic_write, fsync_dir, link_or_copy
from ..trained import BEST, FORMAT, LAST, CheckpointError, first_non_finite, load_checkpoint, verify
from .ema import WeightAverage
from .optimizers import optimizer_launch

STEP_FILE = re.compile(r"step-(\d+)\.pt")


def save_checkpoint(state: dict, directory: Path, step: int, keep: int, best: bool) -> Path:
    """Write `step-NNNNNNNN.pt` (+ checksum), point last.pt (and best.pt) at it, prune old steps.

    Step files beyond the newest `keep - 1` are deleted before the new one is written, so that a
    nearly full disk needs room for `keep` of them, not `keep + 1`; last.pt (and best.pt) are
    replaced only once the new file is complete. A failed write (a full disk) leaves them as they
    were and raises a CheckpointWriteError naming the file and the checkpoint still intact.
    """
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    path = directory / f"step-{step:08d}.pt"
    _prune(directory, keep - 1, spare=path)
    try:
        atomic_write(path.with_name(path.name + ".sha256"), f"{digest}  {len(data)}\n".encode())
        atomic_write(path, data)
        for alias in [LAST] + ([BEST] if best else []):
            target = directory / alias
            # The checksum first: a crash between the two leaves a mismatch, which resume skips.
            atomic_write(target.with_name(alias + ".sha256"), f"{digest}  {len(data)}\n".encode())
            link_or_copy(path, target)
    except OSError as exc:
        intact = directory / LAST
        kept = f"{intact} is intact" if verify(intact) is None else "no earlier checkpoint is intact"
        reason = exc.strerror or str(exc)
        raise CheckpointWriteError(f"could not write checkpoint {path} ({reason}); {kept}") from exc
    _prune(directory, keep)
    fsync_dir(directory)
    return path


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full or read-only disk); the earlier ones are untouched."""


def _prune(directory: Path, keep: int, spare: Path | None = None) -> None:
    """Delete all but the newest `keep` step checkpoints (never `spare`), with their checksums."""
    for old in [p for p in step_checkpoints(directory) if p != spare][max(keep, 0) :]:
        old.unlink(missing_ok=True)
        old.with_name(old.name + ".sha256").unlink(missing_ok=True)


def step_checkpoints(directory: Path) -> list[Path]:
    """Step checkpoints in `directory`, newest first."""
    found = [(int(m.group(1)), p) for p in directory.glob("step-*.pt") if (m := STEP_FILE.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def load_resumable(path: str | Path) -> dict:
    """A checkpoint a run can continue from: it loads safely (`load_checkpoint`), and every floating
    state in it (the weights, their average, the optimizer's buffers) is a dict of finite tensors.

    A CheckpointError says why not.
    """
    state = load_checkpoint(path)
    for entry in ("model", "ema", "optimizer"):
        if entry == "model" or entry in state:
            problem = _tensor_problem(state.get(entry), entry)
            if problem is not None:
                raise CheckpointError(f"checkpoint {path} {problem}: it cannot be resumed")
    return state


def _tensor_problem(value: object, entry: str) -> str | None:
    """What is wrong with a checkpoint's `entry` (a state dict, or the optimizer's), or None."""
    if entry == "optimizer":
        if not isinstance(value, dict) or not isinstance(value.get("state"), dict):
            return f"holds a malformed '{entry}' entry ({type(value).__name__}, not an optimizer's state)"
        tensors = {
            f"optimizer.state.{k}.{name}": t
            for k, buffers in value["state"].items()
            if isinstance(buffers, dict)
            for name, t in buffers.items()
            if isinstance(t, torch.Tensor)
        }
    else:
        if not isinstance(value, dict) or not value or not all(isinstance(t, torch.Tensor) for t in value.values()):
            shown = "none" if value is None else type(value).__name__
            return f"holds a malformed '{entry}' entry ({shown}, not a dict of tensors)"
        tensors = {f"{entry}.{k}" if entry != "model" else k: t for k, t in value.items()}
    bad = first_non_finite(tensors)
    return None if bad is None else f"holds non-finite values in {bad}"


def latest_valid(directory: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint in `directory` that verifies, loads and holds finite weights.

    Each one skipped is reported in a warning that says why.
    """
    candidates = [directory / LAST, *step_checkpoints(directory)]
    for path in candidates:
        if not path.exists():
            continue
        problem = verify(path)  # here a checksum file is required, not only checked when present
        if problem is None:
            try:
                return path, load_resumable(path)
            except CheckpointError as exc:
                problem = str(exc)
        warnings.warn(f"skipping checkpoint {path}: {problem}", stacklevel=2)
    return None


def restore_training(
    state: dict, path: Path, model: nn.Module, optimizer: Optimizer, ema: WeightAverage | None, device: torch.device
) -> None:
    """Load checkpoint `state` (read from `path`) into a run's network, optimizer and weight average;
    a CheckpointError says what does not fit. How the optimizer steps stays this device's choice."""
    if ema is not None and "ema" not in state:
        raise CheckpointError(f"checkpoint {path} holds no 'ema' entry (--ema's average): it cannot be resumed")
    try:  # shapes and keys that do not fit the run's network: one line, not torch's listing
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not fit this run's network: {first_line(exc)}") from None
    for group in optimizer.param_groups:
        group.update(optimizer_launch(optimizer, device))


def plain_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state for a checkpoint, with the learning rate as a number (a CUDA-graphed run
    holds it in a device tensor), so that the checkpoint loads on any device and in an eager run."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = group["lr"].item()
    return state


# ----------------------------------------------------------------------------- RNG states


def rng_state() -> dict:
    """Python, NumPy, torch and CUDA generator states, as plain values a safe load accepts."""
    np_state = typing.cast(tuple, np.random.get_state())  # the legacy form: (name, keys, pos, has_gauss, gauss)
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, key, *rest = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
