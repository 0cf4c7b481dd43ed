"""Where a classifier fails: accuracy per class, the confusion matrix, calibration (expected
calibration error and its bins) and the test images it gets wrong with the most confidence.

The functions take whole tensors of scores and labels; `ErrorCounter` gathers the same numbers
batch by batch on the device, every count a tensor until `ErrorCounter.result`, so the host
waits for a GPU once, not once per batch. `resnets.inference.analyse_checkpoint`
runs it over a test set; `write_error_analysis` writes eval.json and the figures.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..errors import NonFiniteOutputs
from ..files import atomic_write, check_output_folder, fsync_dir
from .error_plots import plot_confusion, plot_reliability, plot_worst

# Guo et al. 2017, "On Calibration of Modern Neural Networks", section 2: M = 15 equal-width bins.
CALIBRATION_BINS = 15
WORST = 32  # images on the contact sheet of confident mistakes: four rows of eight
# What `write_error_analysis` writes into its folder (the report reads them back from a run's eval/).
DATA_FILE = "eval.json"
FIGURES = ("confusion.png", "reliability.png", "worst.png")
FILES = (DATA_FILE, *FIGURES)


def confusion_matrix(predicted: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Counts (C, C) int64: row i holds the images of true class i, column j those predicted as j.

    >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 2).tolist()
    [[1, 1], [0, 1]]
    """
    counts = torch.zeros(num_classes * num_classes, dtype=torch.long, device=labels.device)
    _count(counts, labels * num_classes + predicted)
    return counts.view(num_classes, num_classes)


def _count(counts: Tensor, index: Tensor, weights: Tensor | None = None) -> None:
    # index_add_, not bincount: bincount reads its input's largest value back to the host, a sync per batch.
    counts.index_add_(0, index, torch.ones_like(index, dtype=counts.dtype) if weights is None else weights)


def per_class_accuracy(confusion: Tensor) -> list[float | None]:
    """Correct / images of each true class, from a confusion matrix; None for a class without images.

    >>> per_class_accuracy(torch.tensor([[3, 1], [0, 0]]))
    [0.75, None]
    """
    counts = confusion.sum(dim=1).tolist()
    right = confusion.diagonal().tolist()
    return [r / n if n else None for r, n in zip(right, counts, strict=True)]


def bin_index(confidence: Tensor, bins: int = CALIBRATION_BINS) -> Tensor:
    """The calibration bin of each confidence: bin m holds ((m - 1)/M, m/M], as in Guo et al. 2017.

    >>> bin_index(torch.tensor([0.05, 1 / 15, 0.07, 1.0])).tolist()
    [0, 0, 1, 14]
    """
    # A softmax maximum is at least 1/C > 0, so the clamp at 0 only guards against rounding.
    return (torch.ceil(confidence * bins).long() - 1).clamp_(0, bins - 1)


def calibration_sums(confidence: Tensor, correct: Tensor, bins: int = CALIBRATION_BINS) -> Tensor:
    """Per bin (bins, 3) float64: the images in it, the sum of their confidences, how many are right.

    >>> calibration_sums(torch.tensor([0.5, 0.55, 0.95]), torch.tensor([True, False, True]), bins=2).tolist()
    [[1.0, 0.5, 1.0], [2.0, 1.5, 1.0]]
    """
    sums = torch.zeros(bins * 3, dtype=torch.float64, device=confidence.device)
    _add_to_bins(sums, confidence, correct, bins)
    return sums.view(bins, 3)


def _add_to_bins(sums: Tensor, confidence: Tensor, correct: Tensor, bins: int) -> None:
    """Add to a flat (bins * 3) float64 tensor of (images, confidence sum, right) per bin."""
    at = bin_index(confidence, bins) * 3
    _count(sums, at)
    _count(sums, at + 1, confidence.double())
    _count(sums, at + 2, correct.double())


def expected_calibration_error(sums: Tensor) -> float:
    """ECE = sum over bins of |B| / n * |accuracy(B) - mean confidence(B)| (Guo et al. 2017, section 2).

    `sums` is `calibration_sums`'s (bins, 3). |B| / n * |right / |B| - confidences / |B|| is
    |right - confidences| / n, which is what is summed: no division by an empty bin.

    >>> expected_calibration_error(torch.tensor([[1.0, 0.5, 1.0], [2.0, 1.5, 1.0]], dtype=torch.float64))
    0.3333333333333333
    """
    n = sums[:, 0].sum()
    if n == 0:
        raise ValueError("calibration of no images: the bins are empty")
    return float((sums[:, 2] - sums[:, 1]).abs().sum() / n)


def most_confident_errors(confidence: Tensor, predicted: Tensor, labels: Tensor, k: int = WORST) -> Tensor:
    """Indices of the (up to) `k` misclassified images of highest confidence, the most confident first.

    >>> most_confident_errors(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1, 0, 1, 1]),
    ...                       torch.tensor([0, 0, 0, 0]), k=2).tolist()
    [0, 2]
    """
    wrong = torch.where(predicted != labels, confidence, -1.0)  # a right answer never outranks a wrong one
    values, index = wrong.topk(min(k, wrong.numel()))
    return index[values >= 0]


@dataclass
class Mistake:
    """One misclassified test image: its position in the test set, true and predicted class, confidence."""

    index: int
    label: int
    predicted: int
    confidence: float


@dataclass
class ErrorAnalysis:
    """What `ErrorCounter` found over a test set; `to_dict` is eval.json.

    `confusion[i][j]` counts images of true class i predicted as j; `bins` holds the calibration
    sums (images, confidence sum, right) of each of the equal-width bins; `worst_pixels` are the
    images of `worst` as uint8 (K, C, H, W), un-normalised, or None when not kept.
    """

    class_names: list[str]
    confusion: list[list[int]]
    top5_correct: int
    loss_sum: float
    bins: list[tuple[float, float, float]]
    worst: list[Mistake]
    worst_pixels: Tensor | None = None
    context: dict = field(default_factory=dict)  # what was evaluated: checkpoint, data, view
    unreadable: list[str] = field(default_factory=list)  # test images left out: their files could not be read

    @property
    def n(self) -> int:
        return sum(map(sum, self.confusion))

    @property
    def correct(self) -> int:
        return sum(row[i] for i, row in enumerate(self.confusion))

    @property
    def top1_err(self) -> float:
        # wrong / n, as `evaluate` computes it: the same float, bit for bit
        return (self.n - self.correct) / self.n

    @property
    def top5_err(self) -> float:
        return (self.n - self.top5_correct) / self.n

    @property
    def loss(self) -> float:
        return self.loss_sum / self.n

    @property
    def ece(self) -> float:
        return expected_calibration_error(torch.tensor(self.bins, dtype=torch.float64))

    def per_class(self) -> list[dict]:
        """Per class, in label order: index, name, images, right ones and their share (None without images)."""
        accuracy = per_class_accuracy(torch.tensor(self.confusion))
        return [
            {"index": i, "class": name, "n": sum(row), "correct": row[i], "accuracy": acc}
            for i, (name, row, acc) in enumerate(zip(self.class_names, self.confusion, accuracy, strict=True))
        ]

    def worst_classes(self, k: int = 3) -> list[dict]:
        """The `k` classes of lowest accuracy (ties: the one with more images first, then label order)."""
        scored = [c for c in self.per_class() if c["accuracy"] is not None]
        return sorted(scored, key=lambda c: (c["accuracy"], -c["n"], c["index"]))[:k]

    def calibration(self) -> list[dict]:
        """Each bin's range, images, accuracy and mean confidence (None for an empty bin)."""
        m = len(self.bins)
        return [
            {
                "lower": i / m,
                "upper": (i + 1) / m,
                "n": int(count),
                "accuracy": right / count if count else None,
                "confidence": total / count if count else None,
            }
            for i, (count, total, right) in enumerate(self.bins)
        ]

    def summary(self) -> dict:
        """The errors, the ECE and the accuracy of each class: what `resnets eval --json` prints."""
        return {
            "top1_err": self.top1_err,
            "top5_err": self.top5_err,
            "loss": self.loss,
            "n": self.n,
            "ece": self.ece,
            "per_class": self.per_class(),
            **({"unreadable": self.unreadable} if self.unreadable else {}),
        }

    def to_dict(self) -> dict:
        """Everything but the pixels: the summary, the confusion matrix, the bins and the mistakes."""
        names = self.class_names
        worst = [{**asdict(m), "class": names[m.label], "predicted_class": names[m.predicted]} for m in self.worst]
        return {
            **self.context,
            **self.summary(),
            "calibration_bins": self.calibration(),
            "class_names": names,
            "confusion": self.confusion,
            "worst": worst,
        }


class ErrorCounter:
    """Gathers an `ErrorAnalysis` batch by batch, on the scores' device, without a host sync per batch.

    `update` takes each batch's class probabilities (B, C) (softmax scores, averaged over test
    views), labels (B,) and, to show the worst mistakes, the images as the model saw them.

    >>> counter = ErrorCounter(["cat", "dog"], worst=1)
    >>> counter.update(torch.tensor([[0.9, 0.1], [0.3, 0.7]]), torch.tensor([0, 0]))
    >>> result = counter.result()
    >>> result.confusion, result.top1_err, [(m.index, m.predicted) for m in result.worst]
    ([[1, 1], [0, 0]], 0.5, [(1, 1)])
    """

    def __init__(
        self,
        class_names: list[str],
        device: torch.device | str = "cpu",
        worst: int = WORST,
        bins: int = CALIBRATION_BINS,
    ) -> None:
        if isinstance(worst, bool) or not isinstance(worst, int) or worst < 0:
            raise ValueError(f"worst={worst!r} must be a whole number of images, 0 or more")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins={bins!r} must be a positive integer")
        self.class_names = list(class_names)
        self.k, self.bins = worst, bins
        c = len(self.class_names)
        self.confusion = torch.zeros(c * c, dtype=torch.long, device=device)
        self.top5 = torch.zeros((), dtype=torch.long, device=device)
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.calibration = torch.zeros(bins * 3, dtype=torch.float64, device=device)
        self.finite = torch.ones((), dtype=torch.bool, device=device)
        # The running `worst` most confident mistakes; -1 marks a free place (a confidence is never negative).
        self.worst_confidence = torch.full((worst,), -1.0, device=device)
        self.worst_index = torch.zeros(worst, dtype=torch.long, device=device)
        self.worst_label = torch.zeros(worst, dtype=torch.long, device=device)
        self.worst_predicted = torch.zeros(worst, dtype=torch.long, device=device)
        self.worst_images: Tensor | None = None
        self.seen = 0  # images so far: a shape, known on the host without waiting for the device

    def update(self, probs: Tensor, labels: Tensor, images: Tensor | None = None) -> None:
        """Count one batch: `probs` (B, C), `labels` (B,), `images` (B, C, H, W) or None."""
        c = len(self.class_names)
        if probs.ndim != 2 or probs.shape[1] != c:
            raise ValueError(f"scores of shape {tuple(probs.shape)} for {c} classes; expected (batch, {c})")
        probs = probs.float()
        self.finite &= torch.isfinite(probs).all()
        top = probs.topk(min(5, c), dim=1)
        # The first of topk, not argmax: the prediction `evaluate` counts, ties included.
        confidence, predicted = top.values[:, 0], top.indices[:, 0]
        _count(self.confusion, labels * c + predicted)
        self.top5 += (top.indices == labels[:, None]).any(dim=1).sum()
        self.loss += -torch.log(probs.gather(1, labels[:, None]).clamp_min(1e-12)).sum().double()
        _add_to_bins(self.calibration, confidence, predicted == labels, self.bins)
        if self.k:
            self._keep_worst(confidence, predicted, labels, images)
        self.seen += labels.shape[0]

    def _keep_worst(self, confidence: Tensor, predicted: Tensor, labels: Tensor, images: Tensor | None) -> None:
        """Merge the batch's mistakes into the running top `k`, all on the device."""
        k = self.k
        candidates = torch.where(predicted != labels, confidence, -1.0)
        _, pick = torch.cat([self.worst_confidence, candidates]).topk(k)
        old = pick < k
        i_old, i_new = pick.clamp(max=k - 1), (pick - k).clamp(min=0)  # both valid, one of them used

        def merge(kept: Tensor, batch: Tensor) -> Tensor:
            mask = old.view(-1, *([1] * (kept.ndim - 1)))
            return torch.where(mask, kept[i_old], batch[i_new])

        self.worst_confidence = merge(self.worst_confidence, candidates)
        self.worst_index = merge(self.worst_index, torch.arange(labels.shape[0], device=labels.device) + self.seen)
        self.worst_label = merge(self.worst_label, labels)
        self.worst_predicted = merge(self.worst_predicted, predicted)
        if images is not None:
            if self.worst_images is None:
                self.worst_images = images.new_zeros((k, *images.shape[1:]))
            self.worst_images = merge(self.worst_images, images)

    def result(self, mean: Tensor | None = None, std: Tensor | None = None) -> ErrorAnalysis:
        """The analysis (one wait for the device). With the inputs' normalisation (`mean` (C, H, W) or
        (C, 1, 1), `std` (C, 1, 1), pixel units) the worst images are kept as uint8 pixels."""
        if self.seen == 0:
            raise ValueError("evaluation got no images")
        if not bool(self.finite):
            raise NonFiniteOutputs("the model's outputs are not finite (NaN or infinity): its weights are unusable")
        c = len(self.class_names)
        found = (self.worst_confidence >= 0).nonzero().flatten()
        worst = [
            Mistake(*row)
            for row in zip(
                self.worst_index[found].tolist(),
                self.worst_label[found].tolist(),
                self.worst_predicted[found].tolist(),
                self.worst_confidence[found].tolist(),
                strict=True,
            )
        ]
        pixels = None
        if self.worst_images is not None and mean is not None and std is not None:
            pixels = to_pixels(self.worst_images[found], mean, std).cpu()
        return ErrorAnalysis(
            class_names=self.class_names,
            confusion=self.confusion.view(c, c).tolist(),
            top5_correct=int(self.top5),
            loss_sum=float(self.loss),
            bins=[tuple(row) for row in self.calibration.view(self.bins, 3).tolist()],
            worst=worst,
            worst_pixels=pixels,
        )


def to_pixels(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Normalised inputs (N, C, H, W) back to uint8 pixels: the inverse of `resnets.data.normalize`.

    >>> to_pixels(torch.tensor([[[[3.0, -2.0]]]]), torch.full((1, 1, 1), 4.0), torch.tensor([2.0])).tolist()
    [[[[10, 0]]]]
    """
    mean, std = mean.to(images.device), std.to(images.device).reshape(-1, 1, 1)
    return (images * std + mean).round().clamp(0, 255).to(torch.uint8)


def write_error_analysis(analysis: ErrorAnalysis, out: str | Path, title: str = "") -> list[Path]:
    """Write eval.json, confusion.png, reliability.png and worst.png into the folder `out`; return their paths.

    Each file is replaced atomically. `worst.png` shows `analysis.worst_pixels` (nothing to show
    when they were not kept: an empty sheet that says so).

    >>> from resnets.inference import analyse_checkpoint
    >>> write_error_analysis(analyse_checkpoint("runs/r20/model.safetensors"), "runs/r20/eval")
    [PosixPath('runs/r20/eval/eval.json'), ...]
    """
    out = check_output_folder(out, FILES)
    out.mkdir(parents=True, exist_ok=True)
    # The set is written apart, then moved in at once: an interrupted evaluation leaves the previous set
    # whole, never the eval.json of one model beside the figures of another.
    staging = Path(tempfile.mkdtemp(prefix=".eval-", dir=out))
    try:
        staged = [staging / name for name in FILES]
        atomic_write(staged[0], (json.dumps(analysis.to_dict(), indent=1, ensure_ascii=False) + "\n").encode())
        plot_confusion(analysis.confusion, analysis.class_names, staged[1], title=title)
        plot_reliability(analysis.calibration(), analysis.ece, staged[2], title=title)
        names = analysis.class_names
        labels = [(names[m.label], names[m.predicted], m.confidence) for m in analysis.worst]
        plot_worst(analysis.worst_pixels, labels, staged[3], title=title)
        for source in staged:
            os.replace(source, out / source.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    fsync_dir(out)
    return [out / name for name in FILES]
