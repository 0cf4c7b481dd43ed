"""Checkpoints that survive crashes: atomic writes, a checksum beside each file, safe loading.

A checkpoint is written to a temporary file, fsynced and renamed, so a file under its final
name is always complete; its SHA-256 goes to `NAME.sha256` first. On resume the newest file
whose checksum matches is used; a truncated or corrupt one is reported and skipped.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import warnings
from pathlib import Path

import numpy as np
import torch

FORMAT = "resnets-checkpoint"
STEP_FILE = re.compile(r"step-(\d+)\.pt")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, unsafe, or of another kind."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _link_or_copy(src: Path, dst: Path) -> None:
    """Point `dst` at `src`'s bytes: a hard link where the file system allows it, else a copy."""
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)


def save_checkpoint(state: dict, directory: Path, step: int, keep: int, best: bool) -> Path:
    """Write `step-NNNNNNNN.pt` (+ checksum), point last.pt (and best.pt) at it, prune old steps."""
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    path = directory / f"step-{step:08d}.pt"
    atomic_write(path.with_name(path.name + ".sha256"), f"{digest}  {len(data)}\n".encode())
    atomic_write(path, data)
    for alias in ["last.pt"] + (["best.pt"] if best else []):
        target = directory / alias
        atomic_write(target.with_name(alias + ".sha256"), f"{digest}  {len(data)}\n".encode())
        _link_or_copy(path, target)
    for old in step_checkpoints(directory)[keep:]:
        old.unlink(missing_ok=True)
        old.with_name(old.name + ".sha256").unlink(missing_ok=True)
    _fsync_dir(directory)
    return path


def step_checkpoints(directory: Path) -> list[Path]:
    """Step checkpoints in `directory`, newest first."""
    found = [(int(m.group(1)), p) for p in directory.glob("step-*.pt") if (m := STEP_FILE.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def verify(path: Path) -> str | None:
    """None when `path` matches its recorded checksum, else why it does not."""
    sidecar = path.with_name(path.name + ".sha256")
    if not path.is_file():
        return "file is missing"
    if not sidecar.is_file():
        return "no checksum file beside it"
    expected, _, size = sidecar.read_text().strip().partition("  ")
    actual_size = path.stat().st_size
    if size and int(size) != actual_size:
        return f"{actual_size} bytes, expected {int(size)} (truncated?)"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        return f"checksum {digest[:12]}... does not match the recorded {expected[:12]}..."
    return None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint safely (`torch.load(weights_only=True)`, never a fallback).

    A checksum file beside it, when present, must match. A file that needs full unpickling
    is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if path.with_name(path.name + ".sha256").is_file():
        problem = verify(path)
        if problem:
            raise CheckpointError(f"checkpoint {path} is corrupt: {problem}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # the unpickler raises many kinds
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"checkpoint {path} refused: it does not load with weights_only=True ({first})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a resnets training checkpoint (no '{FORMAT}' marker)")
    return state


def latest_valid(directory: Path) -> tuple[Path, dict] | None:
    """The newest checkpoint in `directory` that verifies and loads, warning about each one skipped."""
    candidates = [directory / "last.pt", *step_checkpoints(directory)]
    for path in candidates:
        if not path.exists():
            continue
        problem = verify(path)
        if problem is None:
            try:
                return path, load_checkpoint(path)
            except CheckpointError as exc:
                problem = str(exc)
        warnings.warn(f"skipping checkpoint {path}: {problem}", stacklevel=2)
    return None


# ----------------------------------------------------------------------------- RNG states


def rng_state() -> dict:
    """Python, NumPy, torch and CUDA generator states, as plain values a safe load accepts."""
    np_state = np.random.get_state()
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


# ----------------------------------------------------------------------------- models from files


def read_trained(path: str | Path) -> tuple[dict, dict]:
    """(state dict, metadata) from a training checkpoint or a run's `model.safetensors`.

    The metadata holds `model_name`, `model_options` (for `create_model`), `class_names`,
    the training `config` and the input `normalization` (mean, std tensors in pixel units).
    """
    import json

    path = Path(path)
    if path.suffix != ".safetensors":
        state = load_checkpoint(path)
        keys = ("model_name", "model_options", "class_names", "config", "normalization", "data")
        return state["model"], {k: state[k] for k in keys if k in state}
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} does not exist")
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as f:
            raw = f.metadata() or {}
        weights = load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    if "model_name" not in raw:
        raise CheckpointError(f"{path} has no resnets metadata (model_name); load it with create_model(weights=...)")
    meta = {"model_name": raw["model_name"], "model_options": json.loads(raw.get("options", "{}"))}
    for key, name in (
        ("class_names", "class_names"),
        ("train_config", "config"),
        ("normalization", "normalization"),
        ("data", "data"),
    ):
        if key in raw:
            meta[name] = json.loads(raw[key])
    if "normalization" in meta:
        meta["normalization"] = {k: torch.tensor(v) for k, v in meta["normalization"].items()}
    return weights, meta


def model_from_checkpoint(path: str | Path):
    """The trained network saved in `path` (checkpoint or safetensors), in eval mode, with its metadata.

    >>> model, meta = model_from_checkpoint("runs/demo/resnet20/checkpoints/best.pt")  # doctest: +SKIP
    >>> meta["class_names"][:2]  # doctest: +SKIP
    ['T-shirt/top', 'Trouser']
    """
    from ..models import create_model
    from ..models.weights import load_state_dict

    weights, meta = read_trained(path)
    model = create_model(meta["model_name"], **meta.get("model_options", {}))
    load_state_dict(model, weights)
    return model.eval(), meta
