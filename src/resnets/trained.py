"""A trained run on disk, read in one place: the folder's layout, safe reading of its checkpoints
and safetensors, the metadata a trained network carries, the network itself, and the data as it
saw them.

A run folder holds:

    config.yaml          the resolved TrainConfig (`resnets train --config` takes it back)
    hardware.json        the machine it trained on
    metrics.jsonl        one record an epoch (metrics.csv: the same as a table)
    model.safetensors    the final weights, with the metadata below (model-ema.safetensors: their average)
    checkpoints/         last.pt, best.pt and step-NNNNNNNN.pt, each with a .sha256 beside it

Every command and analysis that reads a trained network goes through `model_from_checkpoint`
and `trained_data`, so that what a network is shown is what it was trained on: the run's own
normalisation (its statistics, never ones recomputed on other data) and, for image folders, its
own test view.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import DataBundle, DatasetInfo, FolderTransforms, LoaderOptions, load_dataset
from .data.base import of_image_files
from .data.images import DEFAULT_MAX_PIXELS
from .data.transforms import paper_test_resize
from .errors import NormalizationMismatch, unpickling_reason
from .models import create_model
from .models.weights import CHECKPOINT_FORMAT, load_state_dict
from .train.config import MAX_SIDE, TrainConfig

# The run folder's files, named once.
CONFIG = "config.yaml"
HARDWARE = "hardware.json"
METRICS = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "model-ema.safetensors"
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"


@dataclass(frozen=True)
class RunFolder:
    """The paths of a run folder's files.

    >>> RunFolder(Path("runs/r20")).last
    PosixPath('runs/r20/checkpoints/last.pt')
    """

    path: Path

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def hardware(self) -> Path:
        return self.path / HARDWARE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def metrics_csv(self) -> Path:
        return self.path / METRICS_CSV

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS

    @property
    def ema_weights(self) -> Path:
        return self.path / EMA_WEIGHTS

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.path / CHECKPOINTS / LAST

    @property
    def best(self) -> Path:
        return self.path / CHECKPOINTS / BEST


FORMAT = CHECKPOINT_FORMAT  # the marker of a resnets training checkpoint
# Bounds on what a file's metadata may ask to build, checked before anything is allocated: sides of
# images as the training config's (MAX_SIDE), classes (ImageNet-21k has 21,841; a million is ample).
MAX_CLASSES = 1_000_000


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, unsafe, or of another kind."""


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

    path = weights_file(path)
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


def weights_file(path: str | Path) -> Path:
    """`path`, or for a run folder its final weights (`model.safetensors`), as timm takes a run's folder.

    >>> weights_file("runs/r20")
    PosixPath('runs/r20/model.safetensors')
    """
    path = Path(path)
    if not path.is_dir():
        return path
    run = RunFolder(path)
    if run.weights.is_file():
        return run.weights
    if run.config.is_file():
        raise CheckpointError(
            f"run folder {path} holds no {WEIGHTS} (not finished?): give --checkpoint {run.last} or {run.best}"
        )
    raise CheckpointError(f"{path} is a folder but not a run folder (no {CONFIG}, no {WEIGHTS})")


def model_from_checkpoint(path: str | Path):
    """The trained network saved in `path` (checkpoint or safetensors), in eval mode, with its metadata.

    Refuses, naming the file and the field, metadata that does not describe the weights (class
    names of another count, options the model does not take) and weights that are not finite.

    >>> model, meta = model_from_checkpoint("runs/r20/checkpoints/best.pt")
    >>> meta["model_name"], meta["class_names"][:2]
    ('resnet20', ['class 0', 'class 1'])
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


def describe_run(config: TrainConfig, info: DatasetInfo, mean: torch.Tensor, std: torch.Tensor) -> dict:
    """What a trained network carries besides its weights, as a checkpoint stores it (`trained_metadata`
    turns it into a safetensors file's JSON): class names, training config, input normalisation (in
    pixel units) and the data's description, with an image folder's test view (a run may train at
    one size and test at another, as RSB does)."""
    data = {"name": config.data, "image_size": list(info.image_size), "in_channels": info.in_channels}
    if of_image_files(config.data):
        data.update(test_size=config.test_size, test_resize=config.test_resize, interpolation=config.interpolation)
    return {
        "class_names": list(info.class_names),
        "config": config.to_dict(),
        "normalization": {"mean": mean, "std": std},
        "data": data,
    }


def run_config(meta: dict, path: str | Path) -> TrainConfig | None:
    """The training config a trained network records (a run saved before a field existed reads as it
    ran: `legacy_values`), or None for weights that record none (converted or bare ones)."""
    values = meta.get("config")
    if not values:
        return None
    try:
        return TrainConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise _field_error(path, "config", f"is not a training config ({exc})") from None


def trained_data(
    meta: dict,
    path: str | Path,
    data: str | None = None,
    *,
    data_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
    bad_images: str = "skip",
    test_size: int | None = None,
    test_resize: int | None = None,
) -> DataBundle:
    """The data as the trained network `meta` (from `model_from_checkpoint(path)`) saw them, unaugmented.

    Its own dataset unless `data` names another, with the run's subset and validation split (so that
    its test and validation images are the run's own); always the run's normalisation: its recorded
    statistics (never ones recomputed on other data) and its mode (padding of the ten crops), and an
    image folder's test view (`recorded_view`). `batch_size` defaults to the run's (training split) and its
    evaluation batch (the others); the seed is the run's; `max_image_pixels=None` reads images of any size.

    >>> model, meta = model_from_checkpoint("runs/r20/model.safetensors")
    >>> images, labels = next(iter(trained_data(meta, "runs/r20/model.safetensors").test.epoch(0)))
    >>> images.shape, labels.shape  # the run's evaluation batch
    (torch.Size([64, 1, 16, 16]), torch.Size([64]))
    """
    config = run_config(meta, path)
    own = data is None
    name = (config.data if config is not None else None) if own else data
    if name is None:
        raise ValueError(f"{path} does not record its dataset: name one with --data")
    base = config or TrainConfig()
    norm = meta.get("normalization")
    if norm is not None and of_image_files(name) and norm["std"].shape[0] == 1:
        # A greyscale network on image files, decoded to RGB: each channel normalised as its grey was, the
        # network's input the channels' luminance (inference.GreyscaleInput), as PIL converts RGB to grey.
        norm = {"mean": norm["mean"].expand(3, *norm["mean"].shape[1:]), "std": norm["std"].expand(3, 1, 1)}
    options = LoaderOptions(
        device=torch.device(device),
        batch_size=batch_size or base.batch_size,
        eval_batch_size=batch_size or base.eval_batch_size,
        seed=base.seed,  # the order of its images (and synthetic images themselves) follow the run's seed
        subset=base.subset if own else None,
        val_split=base.val_split if own else 0,
        augment=False,
        num_workers=base.num_workers,
        max_image_pixels=max_image_pixels,
        bad_images=bad_images,
        decode=base.decode if own else "workers",
        normalization=(norm["mean"], norm["std"]) if norm is not None else None,
        normalize=base.normalize,
    )
    view = recorded_view(meta, path, test_size, test_resize) if of_image_files(name) else None
    try:
        return load_dataset(
            name, options, data_dir=data_dir or (base.data_dir if own else None), folder_transforms=view
        )
    except NormalizationMismatch as exc:  # other data than the run's, of another shape: say the run's
        trained = meta.get("data") or {}
        if "in_channels" not in trained or "image_size" not in trained:
            raise
        expected = (trained["in_channels"], *trained["image_size"])
        raise ValueError(
            f"checkpoint {path} was trained on {trained.get('name', 'images')} of shape {expected}, "
            f"but {name} gives {exc.shape}"
        ) from None


def test_view(config: TrainConfig) -> FolderTransforms:
    """An image-folder run's test view: its own crop sizes and resampling (a run may train at 160 and test at 224)."""
    return FolderTransforms(
        image_size=config.image_size,
        test_size=config.test_size,
        test_resize=config.test_resize,
        crop=config.crop,
        interpolation=config.interpolation,
    )


test_view.__test__ = False  # type: ignore[attr-defined]  # a view for testing, not a test of pytest's


def recorded_view(
    meta: dict, path: str | Path, test_size: int | None = None, test_resize: int | None = None
) -> FolderTransforms:
    """The test view that the trained network `meta` records (its run's, or a converted file's `data`),
    with `test_size` and `test_resize` in place of the recorded sides where given. Weights that record
    none (a bare state dict saved with metadata of one's own) are refused: testing them at another
    size than they were trained at gives a wrong error in silence.

    >>> recorded_view({"data": {"test_size": 32, "test_resize": 36}}, "w.safetensors").test_resize
    36
    """
    config = run_config(meta, path)
    data = meta.get("data") or {}
    if config is not None and not of_image_files(config.data) and "image_size" in data:
        # A network of small images (Fashion-MNIST, CIFAR) tested on image files: the whole image at its size.
        side0 = int(data["image_size"][0])
        view = None
        recorded: tuple[int | None, int | None] = (side0, side0)
    elif config is not None:  # the run's own view (it may train at 160 and test at 224)
        view = test_view(config)
        recorded = (view.tested, view.test_resize)
    else:  # a converted file's
        recorded = (data.get("test_size"), data.get("test_resize"))
        view = None
    side = test_size or recorded[0]
    if side is None:
        raise ValueError(
            f"{path} records no test view (the crop it is tested at): give --test-size and --test-resize "
            "(ImageNet's: 224 and 256)"
        )
    # A test crop given alone is resized in the paper's ratio (256 for 224), not to the recorded side.
    resize = test_resize or (recorded[1] if not test_size else None) or paper_test_resize(side)
    if resize < side:
        raise ValueError(f"--test-resize {resize} must be at least the test crop's {side}")
    if view is not None:
        return dataclasses.replace(view, test_size=side, test_resize=resize)
    resampling = str(data.get("interpolation", "bilinear"))
    return FolderTransforms(image_size=side, resize_range=(side, side), test_resize=resize, interpolation=resampling)
