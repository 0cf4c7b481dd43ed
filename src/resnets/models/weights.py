"""Loading weights into a network: prefixes left by wrappers, clear mismatch reports, safe files."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from ..errors import unpickling_reason

# Prefixes that wrappers add to every key: DataParallel/DistributedDataParallel, and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


V = TypeVar("V")


def clean_state_dict(state_dict: Mapping[str, V]) -> dict[str, V]:
    """Strip `module.` (DataParallel, DDP) and `_orig_mod.` (torch.compile) prefixes from every key."""
    cleaned = dict(state_dict)
    changed = True
    while changed and cleaned:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in cleaned):
                cleaned = {k[len(prefix) :]: v for k, v in cleaned.items()}
                changed = True
    return cleaned


def mismatches(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Human-readable differences between a model's state dict and `state_dict` (names and shapes)."""
    own = model.state_dict()
    problems = []
    for k, v in own.items():
        if k not in state_dict:
            problems.append(f"missing {k} {tuple(v.shape)}")
        elif tuple(state_dict[k].shape) != tuple(v.shape):
            problems.append(f"{k}: file has {tuple(state_dict[k].shape)}, model has {tuple(v.shape)}")
        elif v.is_floating_point() and not state_dict[k].is_floating_point():  # copy_ would cast it in silence
            problems.append(f"{k}: file has {state_dict[k].dtype} numbers, the model floating-point ones")
    problems += [f"unexpected {k} {tuple(v.shape)}" for k, v in state_dict.items() if k not in own]
    return problems


def load_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> nn.Module:
    """Load `state_dict` into `model` after stripping wrapper prefixes.

    With `strict`, any missing, unexpected or reshaped entry raises a ValueError that names
    the first few; without it, entries that match by name and shape are loaded.

    >>> from resnets import create_model
    >>> src = create_model("resnet20")
    >>> wrapped = {"module." + k: v for k, v in src.state_dict().items()}
    >>> _ = load_state_dict(create_model("resnet20"), wrapped)
    """
    state_dict = clean_state_dict(state_dict)
    problems = mismatches(model, state_dict)
    if problems and strict:
        shown = "; ".join(problems[:4])
        more = f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""
        name = getattr(model, "model_name", type(model).__name__)
        raise ValueError(f"weights do not fit {name}: {shown}{more}")
    if not strict:
        own = model.state_dict()
        state_dict = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(state_dict, strict=strict)
    return model


# The options that shape a network without changing its weights' shapes: a file built with another value
# loads strictly and computes something else (torchvision's ResNet-50 strides in its 3x3 conv, not the 1x1).
LAYOUT_OPTIONS = ("stride_at", "shortcut", "stem", "block", "groups", "width_per_group")
# Options that change the weights' shapes: taken from the file as defaults (another value fails to load, by name).
SHAPE_OPTIONS = ("num_classes", "in_channels")
# The layout of every bottleneck ResNet that torchvision and timm publish ("ResNet v1.5"): a bare state dict
# with their parameter names is read as theirs.
FOREIGN_LAYOUT = {"stride_at": "3x3"}


def layout_of(path: str | Path) -> dict | None:
    """The layout options a weights file records: a resnets `.safetensors` file (convert, export and training
    write them) or training checkpoint; None for a bare state dict, which records nothing.

    >>> layout_of("runs/r20/model.safetensors")  # a ResNet-20 of greyscale images: its shape options
    {'in_channels': 1}
    """
    return _record(Path(path))[0]


def with_layout(path: str | Path, options: dict) -> dict:
    """`options` completed with the layout `path` records; an option given that contradicts it is refused.

    A bare state dict records nothing: one of a bottleneck ResNet (torchvision's or timm's `.pth`) is
    read in their layout, `stride_at="3x3"`, unless `stride_at` is given (a resnets network saved with
    `torch.save(model.state_dict())` loads with its own `stride_at="1x1"`).

    >>> with_layout("runs/r20/model.safetensors", {"num_classes": 10})
    {'in_channels': 1, 'num_classes': 10}
    """
    recorded, keys = _record(Path(path))
    if recorded is None:
        # A bottleneck ResNet's first block has a `conv3` (1x1-3x3-1x1), whatever wrapper prefixed the keys.
        bottleneck = "layer1.0.conv3.weight" in clean_state_dict(dict.fromkeys(keys))
        return {**options, **FOREIGN_LAYOUT} if bottleneck and "stride_at" not in options else dict(options)
    for key, value in recorded.items():
        if key in LAYOUT_OPTIONS and key in options and options[key] != value:
            raise ValueError(
                f"{path} holds a network built with {key}={value!r}, and {key}={options[key]!r} is asked for: "
                "its weights would load and compute something else; leave the option out"
            )
    return {**recorded, **options}


def _record(path: Path) -> tuple[dict | None, list[str]]:
    """(the options `path` records, or None for a bare state dict; the state dict's keys), the file read once
    (a `.pt` file memory-mapped where its format allows)."""
    if not path.is_file():
        return None, []
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), "pt") as f:
                metadata, keys = f.metadata() or {}, list(f.keys())
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
        if "model_name" not in metadata:
            return None, keys
        try:
            options = json.loads(metadata["options"]) if metadata.get("options") else {}
        except json.JSONDecodeError:
            raise ValueError(f"{path}: its metadata field 'options' is not JSON") from None
    else:
        obj = _load_pickle(path, mmap=True)
        if not (isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT):
            return None, list(_state_dict_in(obj, path)[0])
        options, keys = obj.get("model_options") or {}, []
    if not isinstance(options, dict):
        raise ValueError(f"{path}: its metadata field 'options' is not a JSON object")
    return {k: v for k, v in options.items() if k in LAYOUT_OPTIONS + SHAPE_OPTIONS}, keys


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a `.safetensors` file or a `.pt`/`.pth` file, never unpickling code.

    `.pt` files are read with `torch.load(weights_only=True)`; a resnets training checkpoint
    gives its model weights, and a timm or torchvision training checkpoint (`.pth.tar`, with its
    arguments as an `argparse.Namespace`) its `state_dict` (see `read_weights_entry`).
    """
    return read_weights_entry(path)[0]


def read_weights_entry(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """`read_weights`, and the checkpoint entry the weights were taken from (None for a bare state dict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), None
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
    return _state_dict_in(_load_pickle(path), path)


# The entries of a training checkpoint that hold weights, in the order taken: resnets' own ("model"),
# then timm's train.py and torchvision's references ("state_dict", "model"), then timm's averaged
# weights alone (as timm's clean_checkpoint.py falls back to them).
WEIGHT_ENTRIES = ("model", "state_dict", "state_dict_ema", "model_ema")
CHECKPOINT_FORMAT = "resnets-checkpoint"


def _load_pickle(path: Path, mmap: bool = False) -> object:
    """`torch.load(weights_only=True)`, also allowing `argparse.Namespace` (the arguments that timm's and
    torchvision's training scripts store beside the weights: plain values, no code)."""
    import argparse

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError as exc:  # a file of the legacy (pre-1.6) format cannot be mapped
                if not mmap or "mmap" not in str(exc):
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises many kinds
        raise ValueError(
            f"{path}: refused: it cannot be loaded safely, as plain weights (torch.load with weights_only=True: "
            f"{unpickling_reason(exc)})"
        ) from exc


def _state_dict_in(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict that `obj` (a loaded `.pt`/`.pth` file) is or holds, and the entry it was taken from."""
    entry = None
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        entry = next((k for k in WEIGHT_ENTRIES if isinstance(obj.get(k), Mapping)), None)
        if entry is None:
            found = ", ".join(map(str, list(obj)[:6]))
            raise ValueError(
                f"{path}: a checkpoint with no weights entry ({', '.join(WEIGHT_ENTRIES)}); it holds {found}"
            )
        obj = obj[entry]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, found {type(obj).__name__}")
    return dict(obj), entry
