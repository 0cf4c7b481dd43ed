"""Using a trained network: its test error (`evaluate_checkpoint`, the paper's test views), where it
fails (`analyse_checkpoint`: per class, calibration, worst mistakes), and class predictions and
embeddings for image files (`Predictor`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from tqdm import tqdm

from .analysis.mistakes import WORST, ErrorAnalysis, ErrorCounter
from .data import VIEWS, DatasetInfo, normalize
from .data.base import check_positive, of_image_files
from .data.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, check_max_pixels, read_image
from .data.transforms import FolderTransforms, center_view
from .errors import NonFiniteOutputs
from .files import atomic_write, check_output_file
from .hardware import autocast, resolve_device
from .models.fuse import fuse_bn
from .train.evaluate import EvalResult, evaluate
from .trained import model_from_checkpoint, recorded_view, run_config, trained_data

IMAGE_SUFFIXES = set(IMAGE_EXTENSIONS)


def expand_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders replaced by the image files under them (sorted); a missing path is an error."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            paths.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {str(p)!r}")
    if not paths:
        raise ValueError(f"no image files found in {', '.join(map(str, inputs))}")
    return paths


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]] = field(default_factory=list)  # (class name, probability), best first
    error: str | None = None
    indices: list[int] = field(default_factory=list)  # the class index of each of `top`

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        top = [{"class": c, "index": i, "probability": p} for (c, p), i in zip(self.top, self.indices, strict=True)]
        return {"path": self.path, "top": top}


def predictions_csv(predictions: Sequence[Prediction], topk: int) -> str:
    """The predictions as CSV: the path, then the class, index and probability of each of the top k, then
    the error of an unreadable image (as timm's inference.py writes its top-k, one row an image).

    >>> print(predictions_csv([Prediction("a.png", [("cat", 0.75)], indices=[3])], 1), end="")
    path,class_1,index_1,probability_1,error
    a.png,cat,3,0.750000,
    """
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["path", *(f"{what}_{k}" for k in range(1, topk + 1) for what in ("class", "index", "probability")), "error"]
    )
    for r in predictions:
        cells: list[object] = []
        for (name, prob), index in zip(r.top, r.indices, strict=True):
            cells += [name, index, f"{prob:.6f}"]
        cells += [""] * (3 * topk - len(cells))
        writer.writerow([r.path, *cells, r.error or ""])
    return out.getvalue()


class Predictor:
    """A trained network with the preprocessing it was trained with.

    Small-image models (Fashion-MNIST, CIFAR) see each image at their training size (its shorter side
    resized to it, then the central square, as `resnets eval` shows them image files); image-folder
    models see the paper's centre view (shorter side to 256/224 of the crop, then the central crop).
    Both then get the training set's normalisation.

    >>> predictor = Predictor("runs/r20/model.safetensors")
    >>> predictor.predict(["boot.png"], topk=1)[0].top
    [('class ...', 0...)]
    """

    def __init__(
        self,
        checkpoint: str | Path,
        device: str = "auto",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        *,
        test_size: int | None = None,
        test_resize: int | None = None,
    ) -> None:
        self.max_pixels = check_max_pixels(max_pixels)
        self.device = resolve_device(device)
        model, meta = model_from_checkpoint(checkpoint)
        # BN folded into the convs: same outputs, 10-15% faster; a registry network (forward_features, forward_head)
        self.model: Any = fuse_bn(model).to(self.device)
        n = model.num_classes
        self.class_names = list(meta.get("class_names") or [str(i) for i in range(n)])
        if "normalization" not in meta:
            raise ValueError(
                f"{checkpoint} holds no input normalisation: convert it again with --mean and --std, "
                "or use a resnets checkpoint or model.safetensors"
            )
        norm = meta["normalization"]
        self.mean, self.std = (torch.as_tensor(norm[k], dtype=torch.float32).to(self.device) for k in ("mean", "std"))
        data, config = meta.get("data") or {}, meta.get("config") or {}
        self.folder_style = of_image_files(data.get("name") or config.get("data", ""))
        self.in_channels = self.mean.shape[0]
        spatial = tuple(self.mean.shape[-2:])  # a mean image (small datasets) has the training size
        size = tuple(data["image_size"]) if "image_size" in data else spatial if spatial != (1, 1) else None
        self.folder_style = self.folder_style or "test_resize" in data  # converted weights record their view
        self.size: tuple[int, ...]
        if self.folder_style:  # the run's own test view (it may train at 160, test at 224), or the file's
            self.view = recorded_view(meta, checkpoint, test_size, test_resize)
            self.size = (self.view.tested, self.view.tested)
        elif size is None:
            raise ValueError(f"{checkpoint} records no input size (metadata field 'data'): export it from a run again")
        else:
            self.size = tuple(int(v) for v in size)
            if self.size[0] == self.size[1]:  # the whole image at the network's size, as eval shows image files
                side = self.size[0]
                self.view = FolderTransforms(image_size=side, resize_range=(side, side), test_resize=side)
                self.folder_style = True

    def load(self, path: str | Path) -> Tensor:
        """An image file decoded to uint8 (C, H, W) with the model's channel count; ValueError if unreadable."""
        return read_image(str(path), self.in_channels, self.max_pixels)

    def preprocess(self, image: Tensor) -> Tensor:
        """uint8 (C, H, W) of any size -> the normalised float input (C, h, w) the model was trained on."""
        if self.folder_style:
            image = center_view(image, self.view)
        else:
            image = TF.resize(image, list(self.size), antialias=True)
        return normalize(image[None].to(self.device), self.mean, self.std)[0]

    def _batches(self, paths: Sequence[Path], batch_size: int) -> Iterator[tuple[list[Path], Tensor | None, dict]]:
        """(readable paths, their input batch, {path: error} for the unreadable ones), batch by batch."""
        for i in range(0, len(paths), batch_size):
            chunk, inputs, errors = [], [], {}
            for path in paths[i : i + batch_size]:
                try:
                    inputs.append(self.preprocess(self.load(path)))
                    chunk.append(path)
                except ValueError as exc:
                    errors[path] = str(exc)
            yield chunk, (torch.stack(inputs) if inputs else None), errors

    @torch.no_grad()
    def predict(self, paths: Sequence[str | Path], topk: int = 5, batch_size: int = 64) -> list[Prediction]:
        """Top-k classes with probabilities for each image, in the order given; unreadable ones carry an error."""
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk={topk!r} must be a positive integer")
        check_positive("batch_size", batch_size)
        k = min(topk, len(self.class_names))
        results: dict[Path, Prediction] = {}
        ordered = [Path(p) for p in paths]
        for chunk, batch, errors in self._batches(ordered, batch_size):
            for path, error in errors.items():
                results[path] = Prediction(str(path), error=error)
            if batch is None:
                continue
            probs = F.softmax(finite_outputs(self.model(batch).float(), chunk), dim=1)
            values, indices = probs.topk(k, dim=1)
            for path, v, idx in zip(chunk, values.tolist(), indices.tolist(), strict=True):
                top = [(self.class_names[j], p) for j, p in zip(idx, v, strict=True)]
                results[path] = Prediction(str(path), top, indices=idx)
        return [results[p] for p in ordered]

    @torch.no_grad()
    def embed(self, paths: Sequence[str | Path], batch_size: int = 64) -> Embeddings:
        """Pre-logits embeddings (N, num_features) of the readable images, the file of each row, and the failures."""
        check_positive("batch_size", batch_size)
        rows, kept, failures = [], [], []
        for chunk, batch, errors in self._batches([Path(p) for p in paths], batch_size):
            failures += [Prediction(str(p), error=e) for p, e in errors.items()]
            if batch is not None:
                features = self.model.forward_head(self.model.forward_features(batch), pre_logits=True).float()
                rows.append(finite_outputs(features, chunk).cpu())
                kept += [str(p) for p in chunk]
        if not rows:
            raise ValueError("no readable image to embed")
        return Embeddings(torch.cat(rows), kept, failures)


@dataclass
class Embeddings:
    """Embeddings of the readable images: row i is the file `paths[i]`; `failures` were skipped."""

    vectors: Tensor  # (N, num_features)
    paths: list[str]
    failures: list[Prediction]

    def save(self, out: str | Path) -> tuple[Path, Path]:
        """Write the vectors to `out` (.npy) and the file of each row to `out` with .paths.json beside it.

        The JSON list keeps the row-to-file mapping when unreadable files were skipped (and any
        character a file name may hold). Both files are replaced atomically.
        """
        import io
        import json

        import numpy as np

        out = check_output_file(out, ".npy")
        buffer = io.BytesIO()
        np.save(buffer, self.vectors.numpy())
        index = out.with_name(out.name.removesuffix(".npy") + ".paths.json")
        atomic_write(index, (json.dumps(self.paths, ensure_ascii=False, indent=0) + "\n").encode())
        atomic_write(out, buffer.getvalue())
        return out, index


def evaluate_checkpoint(
    path: str,
    data: str | None = None,
    data_dir: str | None = None,
    view: str = "center",
    device: str = "auto",
    batch_size: int | None = None,
    *,
    allow_other_classes: bool = False,
    max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
    flip: bool = False,
    bad_images: str = "skip",
    test_size: int | None = None,
    test_resize: int | None = None,
) -> EvalResult:
    """Top-1/top-5 test error of a trained checkpoint, on its own dataset unless `data` names another.

    The images are normalised as the model was trained (the checkpoint's statistics, never ones
    recomputed on other data), and a dataset whose class names differ from the checkpoint's is
    refused unless `allow_other_classes`. `view` is the paper's test protocol: `center`,
    `ten_crop`, or `multi_scale` (fully convolutional, shorter side in {224, 256, 384, 480, 640};
    image folders only). `flip` adds each view's mirror image (as does the run's own `tta_flip`).
    An unreadable test image is left out and named in the result's `unreadable` (`bad_images="fail"`:
    an error naming it). `test_size` and `test_resize` replace the recorded test view's sides (image files).

    >>> evaluate_checkpoint("runs/r20/model.safetensors", view="ten_crop").top1_err
    0...
    """
    where = (path, data, data_dir, view, device, batch_size, allow_other_classes, max_image_pixels, flip, bad_images)
    test = _test_set(*where, test_size=test_size, test_resize=test_resize)
    result = evaluate(test.model, test.batches, tta_flip=test.flip)
    result.unreadable = test.unreadable()
    return result


def analyse_checkpoint(
    path: str,
    data: str | None = None,
    data_dir: str | None = None,
    view: str = "center",
    device: str = "auto",
    batch_size: int | None = None,
    *,
    allow_other_classes: bool = False,
    max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
    flip: bool = False,
    worst: int = WORST,
    bad_images: str = "skip",
    test_size: int | None = None,
    test_resize: int | None = None,
) -> ErrorAnalysis:
    """Where a trained checkpoint fails on its test set: `evaluate_checkpoint`'s errors (the same
    numbers, in the same single pass) with accuracy per class, the confusion matrix, the expected
    calibration error and the `worst` misclassified images of highest confidence.

    The arguments are `evaluate_checkpoint`'s. Class names are the checkpoint's. The worst images
    are shown as the model saw them, un-normalised: the image itself (the centre crop among ten
    crops; the smallest scale, centre-cropped to the training size, among multi-scale views).

    >>> analysis = analyse_checkpoint("runs/r20/model.safetensors")
    >>> analysis.ece, analysis.worst_classes(1)[0]["class"]
    (0..., 'class ...')
    """
    where = (path, data, data_dir, view, device, batch_size, allow_other_classes, max_image_pixels, flip, bad_images)
    test = _test_set(*where, test_size=test_size, test_resize=test_resize)
    model, target = test.model, test.device
    names = test.meta.get("class_names") or test.info.class_names
    counter = ErrorCounter(list(names), target, worst=worst)
    model.eval()
    with torch.no_grad():
        for images, labels in test.batches:
            views = list(images) if isinstance(images, list | tuple) else [images]
            shown = _shown_view(views, view, test.info.image_size) if worst else None
            if test.flip:
                views += [v.flip(-1) for v in views]
            # As `evaluate` scores them: the softmax scores of the views, averaged (He et al. 2016, section 3.4).
            probs = _softmax(model, views[0], target)
            for v in views[1:]:
                probs = probs + _softmax(model, v, target)
            probs = probs / len(views)
            counter.update(probs, labels.to(target), shown)
    norm = test.meta.get("normalization") or {}
    result = counter.result(norm.get("mean"), norm.get("std"))
    result.context = {"checkpoint": str(path), "data": test.info.name, "view": view, "flip": test.flip}
    result.unreadable = test.unreadable()
    return result


def finite_outputs(outputs: Tensor, paths: Sequence[Path]) -> Tensor:
    """`outputs` (N, K) of the images `paths`, refused (as `resnets eval` refuses them) when not finite."""
    finite = torch.isfinite(outputs).all(1)
    if not bool(finite.all()):
        first = paths[int((~finite).nonzero()[0])]
        raise NonFiniteOutputs(
            f"the model's outputs are not finite (NaN or infinity) for {first}: its weights are unusable"
        )
    return outputs


def _softmax(model: torch.nn.Module, view: Tensor, device: torch.device) -> Tensor:
    """Class probabilities of one view, computed as `evaluate` computes them (channels last, autocast)."""
    with autocast(device, True):
        logits = model(view.contiguous(memory_format=torch.channels_last))
    return F.softmax(logits.float(), dim=1)


def _shown_view(views: list[Tensor], view: str, size: tuple[int, int]) -> Tensor:
    """The view of a batch that shows each image as it is: a sheet of mistakes needs one picture per image."""
    if view == "ten_crop":
        return views[4]  # corners first, then the centre: the order of torchvision's ten_crop and ours
    if view == "multi_scale":  # sizes differ from image to image: cut the smallest scale to the training size
        return TF.center_crop(views[0], list(size))
    return views[0]


class GreyscaleInput(torch.nn.Module):
    """A greyscale network shown colour images: its input is their luminance (ITU-R 601-2, the weights of
    PIL's conversion to grey), taken of the normalised channels (`trained_data` normalises each channel as
    the network's grey channel, so the weighted sum is the normalised grey image).

    >>> net = GreyscaleInput(torch.nn.Identity())
    >>> net(torch.ones(1, 3, 2, 2)).shape
    torch.Size([1, 1, 2, 2])
    """

    WEIGHTS = (0.299, 0.587, 0.114)

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.weights: Tensor
        self.register_buffer("weights", torch.tensor(self.WEIGHTS).reshape(1, 3, 1, 1), persistent=False)
        self.num_classes = getattr(model, "num_classes", None)
        self.in_channels = 3

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x * self.weights).sum(1, keepdim=True))


@dataclass
class _TestSet:
    model: torch.nn.Module
    meta: dict
    info: DatasetInfo
    batches: Iterable
    device: torch.device
    flip: bool
    unreadable: Callable[[], list[str]]  # the test images left out so far


def _test_set(
    path: str,
    data: str | None,
    data_dir: str | None,
    view: str,
    device: str,
    batch_size: int | None,
    allow_other_classes: bool,
    max_image_pixels: int | None,
    flip: bool,
    bad_images: str = "skip",
    *,
    test_size: int | None = None,
    test_resize: int | None = None,
) -> _TestSet:
    """The checkpoint's model on the device and the test batches of `view`, checked against each other."""
    if view not in VIEWS:
        raise ValueError(f"view={view!r} is not one of {', '.join(VIEWS)}")
    if batch_size is not None:
        check_positive("batch_size", batch_size)
    model, meta = model_from_checkpoint(path)
    config = run_config(meta, path)
    target = resolve_device(device)
    model.to(target, memory_format=torch.channels_last)
    bundle = trained_data(
        meta,
        path,
        data,
        data_dir=data_dir,
        device=target,
        batch_size=batch_size,
        max_image_pixels=max_image_pixels,
        bad_images=bad_images,
        test_size=test_size,
        test_resize=test_resize,
    )
    if model.in_channels == 1 and bundle.info.in_channels == 3:  # a greyscale network on colour images
        model = GreyscaleInput(model).to(target)
    if bundle.info.num_classes != model.num_classes:
        raise ValueError(
            f"the checkpoint predicts {model.num_classes} classes, {bundle.info.name} has {bundle.info.num_classes}"
        )
    names = meta.get("class_names")
    if names is not None and list(names) != list(bundle.info.class_names) and not allow_other_classes:
        i = next(i for i, (a, b) in enumerate(zip(names, bundle.info.class_names, strict=True)) if a != b)
        raise ValueError(
            f"{bundle.info.name}'s classes are not the checkpoint's (class {i} is {bundle.info.class_names[i]!r} "
            f"there, {names[i]!r} in {path}); --allow-other-classes evaluates anyway, label by label"
        )
    batches = bundle.test.epoch(0) if view == "center" else bundle.test_views(view)
    # A bar on a terminal: ten crops or five scales of a large test set take minutes.
    n = bundle.info.n_test if view == "multi_scale" else len(bundle.test)
    bar = tqdm(
        batches, total=n, desc=f"evaluating ({view})", unit="batch", leave=False, disable=not sys.stderr.isatty()
    )
    flip = flip or (config is not None and config.tta_flip)
    return _TestSet(model, meta, bundle.info, bar, target, flip, bundle.unreadable)
