"""Checkpoints that survive crashes: atomic writes, a checksum beside each file, safe loading.

A checkpoint is written to a temporary file, fsynced and renamed, so a file under its final
name is always complete; its SHA-256 goes to `NAME.sha256` first. On resume the newest file
whose checksum matches is used; a truncated or corrupt one is reported and skipped.
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

from ..errors import unpickling_reason
from ..files import atomic_write, fsync_dir, link_or_copy
from ..models import create_model
from ..models.weights import load_state_dict
from .config import MAX_SIDE

FORMAT = "resnets-checkpoint"
# Bounds on what a file's metadata may ask to build, checked before anything is allocated: sides of
# images as the training config's (MAX_SIDE), classes (ImageNet-21k has 21,841; a million is ample).
MAX_CLASSES = 1_000_000
STEP_FILE = re.compile(r"step-(\d+)\.pt")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, unsafe, or of another kind."""


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
        for alias in ["last.pt"] + (["best.pt"] if best else []):
            target = directory / alias
            # The checksum first: a crash between the two leaves a mismatch, which resume skips.
            atomic_write(target.with_name(alias + ".sha256"), f"{digest}  {len(data)}\n".encode())
            link_or_copy(path, target)
    except OSError as exc:
        intact = directory / "last.pt"
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


def first_non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, or None.

    >>> first_non_finite({"a": torch.ones(2), "b": torch.tensor([1.0, float("inf")])})
    'b'
    """
    names = [k for k, v in tensors.items() if v.is_floating_point()]
    if not names:
        return None
    finite = torch.stack([torch.isfinite(tensors[k]).all() for k in names]).tolist()  # one device sync
    return next((k for k, ok in zip(names, finite, strict=True) if not ok), None)


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
    try:
        expected, _, size = sidecar.read_text(encoding="ascii").strip().partition("  ")
    except (OSError, UnicodeDecodeError) as exc:
        return f"checksum file {sidecar.name} is unreadable ({exc})"
    if not re.fullmatch(r"[0-9a-f]{64}", expected) or (size and not size.isdigit()):
        return f"checksum file {sidecar.name} is malformed (expected 'SHA256  SIZE')"
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
        raise CheckpointError(
            f"checkpoint {path} refused: it does not load with weights_only=True ({unpickling_reason(exc)})"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a resnets training checkpoint (no '{FORMAT}' marker)")
    return state


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
    candidates = [directory / "last.pt", *step_checkpoints(directory)]
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


# ----------------------------------------------------------------------------- models from files

# What a trained network carries besides its weights, under the names of a checkpoint's entries;
# a safetensors file stores each as JSON under the name on the right ("config" is taken there by
# the model's own config, so the training config is "train_config").
TRAINED_FIELDS = {
    "class_names": "class_names",
    "config": "train_config",
    "normalization": "normalization",
    "data": "data",
}


def trained_metadata(meta: dict) -> dict:
    """The JSON-ready metadata that an exported file carries, from `read_trained`'s metadata.

    The same entries as a run's own `model.safetensors`: class names, training config, input
    normalisation and data description, so that an exported file evaluates and predicts alike.

    >>> trained_metadata({"class_names": ["a"], "normalization": {"mean": torch.zeros(1), "std": torch.ones(1)}})
    {'class_names': ['a'], 'normalization': {'mean': [0.0], 'std': [1.0]}}
    """
    extra = {}
    for key, stored in TRAINED_FIELDS.items():
        if key not in meta:
            continue
        value = meta[key]
        if key == "normalization":
            value = {k: torch.as_tensor(v).tolist() for k, v in value.items()}
        extra[stored] = value
    return extra


def _field_error(path: str | Path, name: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: metadata field {name!r} {problem}")


def check_metadata(meta: dict, path: Path) -> dict:
    """`meta` with its types checked; a CheckpointError names the file and the first bad field.

    A forged or damaged file must fail here in one line, not deep inside the model or the
    preprocessing: model_name a string, model_options a mapping, class_names a list of strings,
    config and data mappings, normalisation finite numbers of matching channels.
    """
    if not isinstance(meta.get("model_name"), str):
        raise _field_error(path, "model_name", f"must be a model name, found {meta.get('model_name')!r}")
    options = meta.get("model_options", {})
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise _field_error(path, "model_options", f"must be a mapping of option names, found {type(options).__name__}")
    names = meta.get("class_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise _field_error(path, "class_names", "must be a list of strings")
    for key in ("config", "data"):
        if key in meta and not isinstance(meta[key], dict):
            raise _field_error(path, key, f"must be a mapping, found {type(meta[key]).__name__}")
    data = meta.get("data") or {}
    size = data.get("image_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(_whole(n, MAX_SIDE) for n in size)):
        raise _field_error(path, "data", f"image_size must be two sides in pixels, 1 to {MAX_SIDE}, found {size!r:.60}")
    for key in ("test_size", "test_resize"):  # an image folder's test view
        if data.get(key) is not None and not _whole(data[key], MAX_SIDE):
            raise _field_error(
                path, "data", f"{key} must be a side in pixels, 1 to {MAX_SIDE}, found {data[key]!r:.60}"
            )
    for where, values in (("model_options", options), ("config", meta.get("config") or {})):
        classes = values.get("num_classes")
        if classes is not None and not _whole(classes, MAX_CLASSES):
            raise _field_error(path, where, f"num_classes must be 1 to {MAX_CLASSES:,}, found {classes!r:.60}")
    if "normalization" in meta:
        meta["normalization"] = _check_normalization(meta["normalization"], path)
    return meta


def _whole(value: object, largest: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= largest


def _check_normalization(norm: object, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(norm, dict) or set(norm) != {"mean", "std"}:
        raise _field_error(path, "normalization", "must be a mapping of 'mean' and 'std'")
    tensors = {}
    for key in ("mean", "std"):
        try:
            tensors[key] = torch.as_tensor(norm[key], dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise _field_error(path, "normalization", f"{key} must be numbers, found {norm[key]!r:.60}") from None
    mean, std = tensors["mean"], tensors["std"]
    channels = std.numel()
    if mean.ndim not in (1, 3) or mean.shape[0] != channels or channels not in (1, 3) or std.ndim not in (1, 3):
        raise _field_error(
            path, "normalization", f"mean {tuple(mean.shape)} and std {tuple(std.shape)} must have 1 or 3 channels"
        )
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
        raise _field_error(path, "normalization", "must hold finite numbers and a positive std")
    if mean.ndim == 1:
        mean = mean.reshape(-1, 1, 1)
    return {"mean": mean, "std": std.reshape(-1, 1, 1)}


def read_trained(path: str | Path) -> tuple[dict, dict]:
    """(state dict, metadata) from a training checkpoint or a run's `model.safetensors`.

    The metadata holds `model_name`, `model_options` (for `create_model`), `class_names`,
    the training `config`, the input `normalization` (mean, std tensors in pixel units) and
    `data` (name, image_size, in_channels), each checked (`check_metadata`).
    """
    import json

    path = Path(path)
    if path.suffix != ".safetensors":
        state = load_checkpoint(path)
        keys = ("model_name", "model_options", *TRAINED_FIELDS)
        if not isinstance(state.get("model"), dict):
            raise CheckpointError(f"{path} holds no model weights")
        return state["model"], check_metadata({k: state[k] for k in keys if k in state}, path)
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
    meta: dict = {"model_name": raw["model_name"]}
    for name, stored in (("model_options", "options"), *TRAINED_FIELDS.items()):
        if stored in raw:
            try:
                meta[name] = json.loads(raw[stored])
            except json.JSONDecodeError as exc:
                raise _field_error(path, stored, f"is not valid JSON ({exc})") from None
    meta.setdefault("model_options", {})
    return weights, check_metadata(meta, path)


def model_from_checkpoint(path: str | Path):
    """The trained network saved in `path` (checkpoint or safetensors), in eval mode, with its metadata.

    Refuses, naming the file and the field, metadata that does not describe the weights (class
    names of another count, options the model does not take) and weights that are not finite.

    >>> model, meta = model_from_checkpoint("runs/demo/resnet20/checkpoints/best.pt")  # doctest: +SKIP
    >>> meta["class_names"][:2]  # doctest: +SKIP
    ['T-shirt/top', 'Trouser']
    """
    weights, meta = read_trained(path)
    try:
        model = create_model(meta["model_name"], **meta.get("model_options", {}))
    except (TypeError, ValueError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        raise CheckpointError(f"{path}: model_name/model_options do not build a model ({message})") from None
    try:
        load_state_dict(model, weights)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    bad = first_non_finite(model.state_dict())
    if bad is not None:
        raise CheckpointError(f"{path} holds non-finite values in {bad} (a diverged run?): refused")
    names = meta.get("class_names")
    if names is not None and len(names) != model.num_classes:
        raise _field_error(path, "class_names", f"lists {len(names)} names for a model of {model.num_classes} classes")
    norm = meta.get("normalization")
    in_channels = model.in_channels
    if norm is not None and in_channels is not None and norm["std"].shape[0] != in_channels:
        raise _field_error(
            path, "normalization", f"has {norm['std'].shape[0]} channels for a model of {in_channels} input channels"
        )
    return model.eval(), meta
