"""Top-1 and top-5 error of a model over a loader, with test-time views (flips, crops, scales)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data import VIEWS, load_dataset
from ..data.base import check_positive
from ..data.images import DEFAULT_MAX_PIXELS
from ..hardware import autocast, resolve_device
from .checkpoint import model_from_checkpoint
from .config import legacy_values


class NonFiniteOutputs(ValueError):
    """The model's outputs hold NaN or infinity: its weights are unusable (a diverged run?)."""


@dataclass
class EvalResult:
    top1_err: float
    top5_err: float
    loss: float
    n: int

    def to_dict(self) -> dict:
        return {"top1_err": self.top1_err, "top5_err": self.top5_err, "loss": self.loss, "n": self.n}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor | list[torch.Tensor], torch.Tensor]],
    *,
    amp: bool = True,
    channels_last: bool = True,
    tta_flip: bool = False,
) -> EvalResult:
    """Errors of `model` (put in eval mode, restored after) over `batches` of (images, labels).

    `images` is a batch, or a list of views of the same images (ten crops, scales) whose
    softmax scores are averaged, as in the paper's 10-crop and multi-scale testing.
    With `tta_flip` each view's mirror image is added.

    >>> import torch
    >>> from resnets import create_model
    >>> x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    >>> evaluate(create_model("resnet20"), [(x, y)]).n
    4
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct1 = torch.zeros((), device=device, dtype=torch.long)
    correct5 = torch.zeros((), device=device, dtype=torch.long)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    finite = torch.ones((), device=device, dtype=torch.bool)  # checked once at the end: no sync per batch
    n = 0
    try:
        for images, labels in batches:
            views = list(images) if isinstance(images, list | tuple) else [images]
            if tta_flip:
                views += [v.flip(-1) for v in views]
            probs = None
            for view in views:
                if channels_last:
                    view = view.contiguous(memory_format=torch.channels_last)
                with autocast(device, amp):
                    logits = model(view)
                p = F.softmax(logits.float(), dim=1)
                probs = p if probs is None else probs + p
            probs = probs / len(views)
            finite &= torch.isfinite(probs).all()
            labels = labels.to(device)
            k = min(5, probs.shape[1])
            top = probs.topk(k, dim=1).indices
            hits = top == labels[:, None]
            correct1 += hits[:, 0].sum()
            correct5 += hits.any(dim=1).sum()
            loss_sum += -torch.log(probs.gather(1, labels[:, None]).clamp_min(1e-12)).sum().double()
            n += labels.shape[0]
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("evaluation got no images")
    if not finite.item():
        raise NonFiniteOutputs("the model's outputs are not finite (NaN or infinity): its weights are unusable")
    # wrong / n, not 1 - right / n: the same number without float noise in the JSON (0.0005, not 0.000499...)
    return EvalResult((n - correct1.item()) / n, (n - correct5.item()) / n, loss_sum.item() / n, n)


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
) -> EvalResult:
    """Top-1/top-5 test error of a trained checkpoint, on its own dataset unless `data` names another.

    The images are normalised as the model was trained (the checkpoint's statistics, never ones
    recomputed on other data), and a dataset whose class names differ from the checkpoint's is
    refused unless `allow_other_classes`. `view` is the paper's test protocol: `center`,
    `ten_crop`, or `multi_scale` (fully convolutional, shorter side in {224, 256, 384, 480, 640};
    image folders only). `flip` adds each view's mirror image (as does the run's own `tta_flip`).

    >>> evaluate_checkpoint("runs/r20/model.safetensors", view="ten_crop").top1_err  # doctest: +SKIP
    0.0619
    """
    if view not in VIEWS:
        raise ValueError(f"view={view!r} is not one of {', '.join(VIEWS)}")
    if batch_size is not None:
        check_positive("batch_size", batch_size)
    model, meta = model_from_checkpoint(path)
    config = meta.get("config") or {}
    norm = meta.get("normalization")
    target = resolve_device(device)
    model.to(target, memory_format=torch.channels_last)
    own = data is None
    name = config.get("data") if own else data
    if name is None:
        raise ValueError(f"{path} does not record its dataset: name one with --data")
    bundle = load_dataset(
        name,
        data_dir=data_dir or (config.get("data_dir") if own else None),
        device=target,
        batch_size=batch_size or config.get("batch_size", 128),
        eval_batch_size=batch_size or config.get("eval_batch_size", 512),
        seed=config.get("seed", 0),
        subset=config.get("subset") if own else None,
        val_split=config.get("val_split", 0) if own else 0,
        augment=False,
        num_workers=config.get("num_workers", 4),
        max_image_pixels=max_image_pixels,
        normalization=(norm["mean"], norm["std"]) if norm is not None else None,
        normalize={**config, **legacy_values(config)}.get("normalize", "pixel-mean"),  # ten crops padded as in training
    )
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
    return evaluate(model, bar, tta_flip=flip or bool(config.get("tta_flip", False)))
