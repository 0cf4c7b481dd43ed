"""Figures of where a classifier fails (see `errors`): the confusion matrix, the reliability
diagram and a contact sheet of the most confident mistakes. matplotlib's Agg backend, as in `plots`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from torch import Tensor

from ..text import plural
from .plots import _save

NAMED_TICKS = 30  # up to this many classes the axes name them; beyond, the names would overlap
COUNTED_CELLS = 15  # up to this many classes each cell of the confusion matrix shows its count
SHEET_COLUMNS = 8


def _short(name: str, width: int = 16) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def plot_confusion(
    confusion: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """The confusion matrix as an image: row i is true class i, each cell the share of its images
    predicted as column j (so a class with few images is as visible as one with many).

    >>> plot_confusion([[8, 2], [1, 9]], ["cat", "dog"], "confusion.png")
    PosixPath('confusion.png')
    """
    c = len(class_names)
    totals = [sum(row) for row in confusion]
    share = [[v / t if t else 0.0 for v in row] for row, t in zip(confusion, totals, strict=True)]
    side = min(12.0, max(4.5, 0.45 * c + 2))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's images")
    if c <= NAMED_TICKS:
        names = [_short(n) for n in class_names]
        ax.set_xticks(range(c), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(c), names, fontsize=8)
    if c <= COUNTED_CELLS:
        for i, row in enumerate(confusion):
            for j, count in enumerate(row):
                if count:
                    colour = "white" if share[i][j] > 0.5 else "black"
                    ax.text(j, i, str(count), ha="center", va="center", fontsize=8, color=colour)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or f"confusion matrix ({plural(sum(totals), 'test image')})")
    _save(fig, Path(path))
    return Path(path)


def plot_reliability(bins: Sequence[dict], ece: float, path: str | Path, title: str = "") -> Path:
    """The reliability diagram (Guo et al. 2017, Fig. 1): accuracy against confidence per bin, the gap
    to the diagonal hatched; below, the share of the images in each bin.

    `bins` are `ErrorAnalysis.calibration()`'s: lower, upper, n, accuracy, confidence.

    >>> plot_reliability([{"lower": 0.0, "upper": 1.0, "n": 4, "accuracy": 0.5, "confidence": 0.8}], 0.3,
    ...                  "reliability.png")
    PosixPath('reliability.png')
    """
    n = sum(b["n"] for b in bins)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True
    )
    filled = [b for b in bins if b["n"]]
    lefts = [b["lower"] for b in filled]
    widths = [b["upper"] - b["lower"] for b in filled]
    top.bar(
        lefts, [b["accuracy"] for b in filled], widths, align="edge", color="C0", edgecolor="white", label="accuracy"
    )
    top.bar(
        lefts,
        [abs(b["confidence"] - b["accuracy"]) for b in filled],
        widths,
        bottom=[min(b["confidence"], b["accuracy"]) for b in filled],
        align="edge",
        color="C3",
        alpha=0.3,
        hatch="//",
        edgecolor="C3",
        label="gap to the mean confidence",
    )
    top.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(title or f"reliability: ECE {100 * ece:.2f}% ({plural(n, 'image')}, {plural(len(bins), 'bin')})")
    top.grid(alpha=0.3)
    bottom.bar(
        [b["lower"] for b in bins], [b["n"] / max(n, 1) for b in bins], [1 / len(bins)] * len(bins), align="edge"
    )
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (largest softmax probability)")
    bottom.set_ylabel("share of images")
    bottom.grid(alpha=0.3)
    _save(fig, Path(path))
    return Path(path)


def plot_worst(
    pixels: Tensor | None, labels: Sequence[tuple[str, str, float]], path: str | Path, title: str = ""
) -> Path:
    """A contact sheet of mistakes: each image (uint8 (C, H, W) of `pixels`) over its true class, the
    predicted one and the confidence in it, from `labels` (true, predicted, confidence), in order.

    >>> import torch
    >>> plot_worst(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), [("cat", "dog", 0.97)], "worst.png")
    PosixPath('worst.png')
    """
    if pixels is None or not labels:
        fig, ax = plt.subplots(figsize=(4, 1.2))
        ax.axis("off")
        text = "no misclassified test image" if not labels else "the images were not kept"
        ax.text(0.5, 0.5, text, ha="center", va="center")
        _save(fig, Path(path))
        return Path(path)
    k = len(labels)
    columns = min(SHEET_COLUMNS, k)
    rows = math.ceil(k / columns)
    # Constrained layout keeps each image's three caption lines clear of the row below it (tight_layout let
    # them run into the next row's images once the sheet has two rows).
    fig, axes = plt.subplots(
        rows, columns, figsize=(1.7 * columns, 2.05 * rows + 0.4), squeeze=False, layout="constrained"
    )
    for i, ax in enumerate(axes.flat):
        if i >= k:
            ax.axis("off")
            continue
        image = pixels[i]
        grey = image.shape[0] == 1
        shown = image[0] if grey else image.permute(1, 2, 0)
        ax.imshow(shown.numpy(), cmap="gray" if grey else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        true, predicted, confidence = labels[i]
        ax.set_xlabel(f"true: {_short(true)}\npred: {_short(predicted)}\n{100 * confidence:.1f}%", fontsize=7)
    fig.suptitle(title or ("the most confident mistake" if k == 1 else f"the {k} most confident mistakes"), fontsize=10)
    _save(fig, Path(path))
    return Path(path)
