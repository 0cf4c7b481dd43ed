"""Exporting a network to ONNX, TorchScript, a torch.export program or safetensors, with a parity check.

Each artefact is written into a fresh folder next to its destination, read back and run against
the PyTorch model on the same random batch, and only then renamed into place: a failed export or
a failed check leaves nothing behind. Artefacts are written for the CPU so that they load anywhere.
"""

from __future__ import annotations

import copy
import errno
import importlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from .errors import MissingExtra, write_error
from .files import check_output_file
from .models.registry import build, model_entry, registered_name
from .models.vgg import VGG
from .models.weights import load_state_dict

FORMATS = ("onnx", "torchscript", "exported-program", "safetensors")
ONNX_OPSET = 18
ONNX_EXTRA = ("onnx", "onnxscript", "onnxruntime")
# torch.export specialises a dimension whose example size is 0 or 1, so the example batch is 2;
# the check runs a batch of 3 through the formats whose batch dimension is meant to be free.
EXPORT_BATCH, CHECK_BATCH = 2, 3
DYNAMIC_BATCH = ("onnx", "torchscript", "exported-program")
# Keys written by export_model itself; the `metadata` argument may not reuse them.
RESERVED_KEYS = ("format", "model_name", "config", "options")
EXTRA_FILE = "resnets.json"  # the metadata inside TorchScript and .pt2 archives


@dataclass(frozen=True)
class ExportResult:
    format: str
    path: Path
    max_abs_diff: float | None  # None when the check was skipped
    seconds: float  # export and check together


def export_model(
    model: nn.Module,
    fmt: str,
    out: str | Path,
    *,
    input_size: tuple[int, int, int] | None = None,
    check: bool = True,
    atol: float = 1e-4,
    metadata: dict | None = None,
    check_inputs: torch.Tensor | None = None,
) -> ExportResult:
    """Write `model` to `out` as `fmt` (onnx, torchscript, exported-program or safetensors).

    `input_size` is (C, H, W), by default the size the model's family was designed for; ONNX,
    TorchScript and exported programs take any batch size. With `check`, the artefact is loaded
    back and run on `check_inputs` (real images, when the caller has them; else a random batch),
    and must match PyTorch within `atol` times the output's scale, else a ValueError names the
    difference. `metadata` entries (e.g. class names) are stored JSON-encoded in the artefact.

    >>> from resnets import create_model
    >>> model = create_model("resnet20")
    >>> export_model(model, "torchscript", "resnet20.pt").max_abs_diff < 1e-4
    True
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; accepted: {', '.join(FORMATS)}")
    if fmt == "onnx":
        require_onnx_extra()
    out = check_output_file(out, f"{fmt} file", make_folder=True)
    input_size = _check_input_size(model, input_size or default_input_size(model))
    out.parent.mkdir(parents=True, exist_ok=True)  # as torch.save and timm's exporters do: runs/x/export/
    model = _on_cpu(model)
    meta = export_metadata(model, metadata)
    start = time.perf_counter()
    with _eval_mode(model), _staged(out) as staging:
        _check_room(model, staging.parent, out)
        example = torch.randn(EXPORT_BATCH, *input_size, generator=torch.Generator().manual_seed(0))
        try:
            WRITERS[fmt](model, example, staging, meta)
        except SafetensorError as exc:  # safetensors' own error for a failed write: an OSError naming the file
            raise write_error(exc, out) from exc
        diff = check_export(fmt, model, staging, input_size, atol, check_inputs) if check else None
    return ExportResult(fmt, out, diff, time.perf_counter() - start)


def require_onnx_extra() -> None:
    """Raise MissingExtra naming the packages of the `export` extra that are not installed."""
    missing = []
    for name in ONNX_EXTRA:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtra("onnx, onnxscript and onnxruntime", "export", f" (missing: {', '.join(missing)})")


def default_input_size(model: nn.Module) -> tuple[int, int, int]:
    """(C, H, W): the model's input channels and its family's design size (224 without a registered name)."""
    config = getattr(model, "config", None)
    channels = config.in_channels if config is not None else getattr(model, "in_channels", 3)
    name = registered_name(model)
    _, height, width = model_entry(name).input_size if name else (3, 224, 224)
    return (channels, height, width)


def export_metadata(model: nn.Module, extra: dict | None = None) -> dict[str, str]:
    """The string metadata stored in every artefact: model name, config and rebuild options, `extra` as JSON."""
    meta = {"format": "pt"}  # the key safetensors readers (transformers, timm) look for
    name = registered_name(model)
    if name is not None:
        meta["model_name"] = name
        meta["options"] = json.dumps(rebuild_options(model))
    meta["config"] = json.dumps(model_config(model))
    for key, value in (extra or {}).items():
        if key in RESERVED_KEYS:
            raise ValueError(f"metadata key {key!r} is reserved; reserved keys: {', '.join(RESERVED_KEYS)}")
        try:
            meta[str(key)] = json.dumps(value)
        except TypeError as exc:
            raise ValueError(f"metadata[{key!r}] is not JSON-serialisable ({exc})") from exc
    return meta


def model_config(model: nn.Module) -> dict:
    """A ResNet's config, or a VGG's constructor arguments, as a JSON-ready dict."""
    config = getattr(model, "config", None)
    if config is not None:
        return config.to_dict()
    if isinstance(model, VGG):
        dropout = next((m.p for m in model.classifier if isinstance(m, nn.Dropout)), 0.0)
        keys = ("depth", "num_classes", "in_channels", "init")
        return {**{k: getattr(model, k) for k in keys}, "dropout": dropout}
    return {}


def rebuild_options(model: nn.Module) -> dict:
    """The `create_model` options that rebuild `model` from its name: its config where it differs from the default."""
    with torch.device("meta"):  # builds without allocating or initialising weights
        default = model_config(build(str(model.model_name)))
    return {k: v for k, v in model_config(model).items() if default.get(k) != v}


def check_export(
    fmt: str,
    model: nn.Module,
    path: Path,
    input_size: tuple[int, int, int],
    atol: float,
    inputs: torch.Tensor | None = None,
) -> float:
    """Run the artefact at `path` and `model` on `inputs` (default: a random batch); the max abs difference.

    The difference may be at most `atol` times the output's scale (`compare_outputs`).
    """
    batch = CHECK_BATCH if fmt in DYNAMIC_BATCH else EXPORT_BATCH
    if inputs is None:
        x = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(1))
    else:
        x = inputs.detach().float().cpu().contiguous()
        if tuple(x.shape[1:]) != tuple(input_size):
            raise ValueError(f"check inputs of shape {tuple(x.shape)} do not match input_size {tuple(input_size)}")
    with torch.no_grad():
        expected = model(x)
        actual = RUNNERS[fmt](path, x)
    return compare_outputs(expected, actual, atol, fmt)


def compare_outputs(expected: torch.Tensor, actual: torch.Tensor, atol: float, what: str) -> float:
    """The max abs difference of two outputs; a ValueError naming it when it is too large (or NaN).

    Too large is above `atol` times the output's scale, its largest magnitude (at least 1): float32
    holds about 7 digits, so logits near 1e10 (a plain net at initialisation) differ by thousands
    between two correct computations that sum in another order (another memory format).

    >>> compare_outputs(torch.zeros(2, 3), torch.full((2, 3), 1e-6), 1e-4, "onnx") <= 1e-4
    True
    >>> compare_outputs(torch.full((2, 3), 1e10), torch.full((2, 3), 1e10 + 8192), 1e-4, "onnx")
    8192.0
    """
    if tuple(actual.shape) != tuple(expected.shape):
        raise ValueError(f"{what} output has shape {tuple(actual.shape)}, PyTorch's has {tuple(expected.shape)}")
    expected, actual = expected.float(), actual.float()
    diff = (actual - expected).abs().max().item()
    scale = max(1.0, expected.abs().max().item())
    if not diff <= atol * scale:  # written so that NaN fails too
        raise ValueError(
            f"{what} output differs from PyTorch's: max abs difference {diff:.3g} > {atol * scale:.3g} "
            f"(atol {atol:g} x output scale {scale:.3g})"
        )
    return diff


def _write_onnx(model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, str]) -> None:
    # The torch.export-based exporter (dynamo=True, the default since torch 2.9): the TorchScript-based
    # one is deprecated. It traces with a symbolic batch and emits a 'batch' dimension in the graph.
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset_version=ONNX_OPSET,
        input_names=["input"],
        output_names=["output"],
        verbose=False,
    )
    assert program is not None  # dynamo=True always returns the program
    program.model.metadata_props.update(meta)
    # One self-contained file; a model over the 2 GB protobuf limit still gets its weights in a .data file beside it.
    program.save(str(path), external_data=False)


def _write_torchscript(model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, str]) -> None:
    with _torchscript_asked_for():
        # The input-shape check compares Python values; tracing evaluates it once on the example and
        # records nothing, so the traced graph has no check. That is the warning's whole content.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        # check_trace re-traces and compares on the same batch; check_export does more, on the saved file.
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={EXTRA_FILE: json.dumps(meta)})


@contextmanager
def _torchscript_asked_for() -> Iterator[None]:
    """Silence torch's deprecation of torch.jit (3 warnings a file): the user asked for TorchScript, whose
    readers (LibTorch, older deployments) still need it; --help and docs/using.md say to prefer
    torch.export."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        yield


def _write_exported_program(model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, str]) -> None:
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path), extra_files={EXTRA_FILE: json.dumps(meta)})


def _write_safetensors(model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    state_dict = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state_dict, str(path), metadata=meta)


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def _run_torchscript(path: Path, x: torch.Tensor) -> torch.Tensor:
    with _torchscript_asked_for():
        return torch.jit.load(str(path), map_location="cpu")(x)


def _run_exported_program(path: Path, x: torch.Tensor) -> torch.Tensor:
    return torch.export.load(str(path)).module()(x)


def _run_safetensors(path: Path, x: torch.Tensor) -> torch.Tensor:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "model_name" not in meta:
        raise ValueError("checking safetensors needs a model built by create_model (it has no model_name); check=False")
    with torch.device("meta"):  # every value comes from the file: skip the initialisation (and its random draws)
        model = build(meta["model_name"], **json.loads(meta["options"]))
    model = load_state_dict(model.to_empty(device="cpu"), load_file(str(path)))
    return model.eval()(x)


WRITERS: dict[str, Callable[[nn.Module, torch.Tensor, Path, dict[str, str]], None]] = {
    "onnx": _write_onnx,
    "torchscript": _write_torchscript,
    "exported-program": _write_exported_program,
    "safetensors": _write_safetensors,
}
RUNNERS: dict[str, Callable[[Path, torch.Tensor], torch.Tensor]] = {
    "onnx": _run_onnx,
    "torchscript": _run_torchscript,
    "exported-program": _run_exported_program,
    "safetensors": _run_safetensors,
}


def _check_input_size(model: nn.Module, size: tuple[int, ...]) -> tuple[int, int, int]:
    if len(size) != 3 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in size):
        raise ValueError(f"input_size={tuple(size)!r} must be three positive integers (C, H, W)")
    check = getattr(model, "check_input", None)  # before tracing, which would show the shape as tensors
    if check is not None:
        check(torch.empty(EXPORT_BATCH, *size, device="meta"))
    return size[0], size[1], size[2]


def _on_cpu(model: nn.Module) -> nn.Module:
    """`model` itself when it lives on the CPU, else a CPU copy (the caller's model stays where it is)."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.device.type == "cpu" for t in tensors):
        return model
    return copy.deepcopy(model).cpu()


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def _check_room(model: nn.Module, folder: Path, out: Path) -> None:
    """Refuse (ENOSPC, naming `out`) an export the disk cannot hold: TorchScript's and torch.export's
    writers abort the whole process when the disk fills, which no error handling can catch. The
    artefact holds the weights and buffers, plus some room for the graph."""
    needed = sum(t.numel() * t.element_size() for t in model.state_dict().values()) + 16 * 2**20
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(
            errno.ENOSPC,
            f"No space left on device (the export needs about {needed / 2**20:.0f} MB, {free / 2**20:.0f} MB free)",
            str(out),
        )


@contextmanager
def _staged(out: Path) -> Iterator[Path]:
    """A path in a fresh folder next to `out`; the folder's files replace `out` only if the block succeeds."""
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield folder / out.name
        # Some writers (safetensors) create their file 0600; give it the mode any new file gets here.
        probe = folder / ".mode"
        probe.touch()
        mode = probe.stat().st_mode & 0o777
        probe.unlink()
        for f in folder.iterdir():  # the artefact, and an ONNX model's .data file when it has one
            f.chmod(mode)
            os.replace(f, out.parent / f.name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
