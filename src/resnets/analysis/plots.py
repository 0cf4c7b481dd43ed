"""Figures in the style of the paper, written with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO, overload

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import ticker

from ..files import atomic_path

DEPTH = re.compile(r"(\d+)")


def _is_plain(name: str) -> bool:
    return name.startswith(("plain", "cifar_plain"))


def _depth(name: str) -> int:
    m = DEPTH.search(name)
    return int(m.group(1)) if m else 0


@overload
def _save(fig, path: str | Path, dpi: int = 120) -> Path: ...
@overload
def _save(fig, path: BinaryIO, dpi: int = 120) -> BinaryIO: ...
def _save(fig, path: str | Path | BinaryIO, dpi: int = 120) -> Path | BinaryIO:
    """Write atomically: a figure is either complete or absent. A file object (an in-memory
    buffer for a page that embeds the figure) is written as it is."""
    if not isinstance(path, str | Path):
        try:
            fig.savefig(path, format="png", dpi=dpi)
        finally:
            plt.close(fig)
        return path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


AXES = ("iterations", "epochs")


def plot_training_curves(
    curves: Mapping[str, Sequence[Mapping]], path: str | Path, title: str = "", axis: str = "iterations"
) -> Path:
    """The paper's Fig. 6: training error dashed, test error bold, one colour per depth.

    `curves` maps a model name (plain20, resnet56, ...) to its per-epoch records (`epoch`,
    `step`, `train_err`, `test_err`, and `train_err_std`, `test_err_std` for a mean over seeds,
    drawn as a band of one standard deviation). Plain nets go left, residual nets right, on a
    shared error axis. The x axis counts iterations, as the paper's does; `axis="epochs"` counts
    epochs.

    >>> plot_training_curves({"plain20": [{"epoch": 1, "step": 50, "train_err": 0.3, "test_err": 0.32}]},
    ...                      "fig6.png")
    PosixPath('fig6.png')
    """
    if axis not in AXES:
        raise ValueError(f"axis={axis!r} is not one of {', '.join(AXES)}")
    x_key = "step" if axis == "iterations" else "epoch"
    families = [
        ("plain", [n for n in curves if _is_plain(n)]),
        ("ResNet", [n for n in curves if not _is_plain(n)]),
    ]
    families = [(label, sorted(names, key=_depth)) for label, names in families if names]
    depths = sorted({_depth(n) for n in curves})
    colours = {d: plt.cm.viridis(i / max(1, len(depths) - 1) * 0.85) for i, d in enumerate(depths)}
    fig, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 4.2), sharey=True, squeeze=False)
    top = 0.0
    for ax, (label, names) in zip(axes[0], families, strict=True):
        for name in names:
            records = curves[name]
            xs = [r[x_key] for r in records]
            colour = colours[_depth(name)]
            for key, style, width in (("train_err", "--", 1.2), ("test_err", "-", 2.2)):
                ys = [100 * r[key] for r in records]
                top = max(top, *ys)
                line_label = f"{label}-{_depth(name)}" if key == "test_err" else None
                marker = "o" if len(xs) == 1 else None  # a line of one point draws nothing
                ax.plot(xs, ys, style, color=colour, linewidth=width, label=line_label, marker=marker)
                if all(r.get(f"{key}_std") is not None for r in records):  # a mean over seeds: +- one std
                    std = [100 * r[f"{key}_std"] for r in records]
                    low = [y - s for y, s in zip(ys, std, strict=True)]
                    high = [y + s for y, s in zip(ys, std, strict=True)]
                    ax.fill_between(xs, low, high, color=colour, alpha=0.15, linewidth=0)
        ax.set_xlabel("iterations" if axis == "iterations" else "epoch")
        # Iterations and epochs are whole numbers: a short run must not get ticks at 2.5 iterations (nor, with
        # one point, at 1.975: one whole tick is enough).
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_title("plain nets" if label == "plain" else "residual nets")
        ax.grid(alpha=0.3)
        ax.legend(title="dashed: training, bold: test", fontsize=8, title_fontsize=8)
    axes[0][0].set_ylabel("error (%)")
    axes[0][0].set_ylim(0, min(100, top * 1.1 + 1))
    if title:
        fig.suptitle(title)
    return _save(fig, Path(path))


def plot_run_curves(curves: Mapping[str, Sequence[Mapping]], path: str | Path | BinaryIO) -> Path | BinaryIO:
    """Error (and loss, when recorded) per epoch of single runs: training dashed, test solid, validation dotted.

    `curves` maps a run's label to its epoch records (metrics.jsonl); `path` is a file, or a
    binary buffer that receives the PNG (the report embeds it).

    >>> import io
    >>> buffer = plot_run_curves({"run": [{"epoch": 1, "train_err": 0.3, "test_err": 0.32}]}, io.BytesIO())
    >>> buffer.getvalue()[:4]
    b'\\x89PNG'
    """
    with_loss = any(r.get("train_loss") is not None for records in curves.values() for r in records)
    fig, axes = plt.subplots(1, 2 if with_loss else 1, figsize=(10 if with_loss else 6, 3.8), squeeze=False)
    panels = [(axes[0][0], "error (%)", ("train_err", "test_err", "val_err"), 100)]
    if with_loss:
        panels.append((axes[0][1], "loss", ("train_loss", "test_loss", "val_loss"), 1))
    colours = matplotlib.colormaps["tab10"]
    for i, (label, records) in enumerate(curves.items()):
        epochs = [r.get("epoch") for r in records]
        for ax, _, keys, scale in panels:
            for key, style in zip(keys, ("--", "-", ":"), strict=True):
                ys = [scale * r[key] if r.get(key) is not None else math.nan for r in records]
                if any(not math.isnan(y) for y in ys):
                    ax.plot(epochs, ys, style, marker=".", color=colours(i % 10), label=label if style == "-" else None)
    for ax, ylabel, _, _ in panels:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if len(curves) > 1:
        axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi=110)


def _as_dict(result) -> dict:
    return result.to_dict() if hasattr(result, "to_dict") else dict(result)


def _depth_colours(depths: Sequence[int]) -> dict[int, tuple]:
    depths = sorted(set(depths))
    return {d: plt.cm.viridis(i / max(1, len(depths) - 1) * 0.85) for i, d in enumerate(depths)}


def _label(result: Mapping) -> str:
    label = f"{'plain' if result['plain'] else 'ResNet'}-{result['depth']}"
    return label + (", trained" if result.get("weights") == "trained" else "")


def _style(result: Mapping, colours: dict[int, tuple]) -> dict:
    """Plain dashed, residual solid, one colour per depth; trained weights drawn thin with dots."""
    trained = result.get("weights") == "trained"
    style = dict(color=colours[result["depth"]], linestyle="--" if result["plain"] else "-", linewidth=1.6)
    return {**style, "linewidth": 1.0, "marker": "o", "markersize": 2} if trained else style


def plot_gradient_flow(results: Sequence, path: str | Path, title: str = "") -> Path:
    """The gradient reaching each layer (RMS at its input, by depth, log scale) and the gain through each block.

    `results` are `GradFlow`s (or their `to_dict()`s); plain nets dashed, residual nets solid,
    one colour per depth. A gain above 1 means the gradient grows on its way back through the block.

    >>> from resnets.analysis.gradflow import gradient_flow_for
    >>> plot_gradient_flow([gradient_flow_for(n, batch_size=32) for n in ("plain56", "resnet56")], "gradflow.png")
    PosixPath('gradflow.png')
    """
    dicts = [_as_dict(r) for r in results]
    colours = _depth_colours([d["depth"] for d in dicts])
    # Constrained layout makes room beside the axes for the legend, which would otherwise cover the curves.
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2), layout="constrained")
    for d in dicts:
        style = _style(d, colours)
        layers = [layer for layer in d["layers"] if layer["depth"] is not None]
        left.plot([la["depth"] for la in layers], [la["input_grad_rms"] for la in layers], **style, label=_label(d))
        blocks = d["blocks"]
        right.plot([b["index"] for b in blocks], [b["gain"] for b in blocks], **style, label=_label(d))
    left.set_yscale("log")
    left.set_xlabel("layer (depth index)")
    left.set_ylabel("RMS of dL/d(input)")
    left.set_title("gradient reaching each layer")
    right.axhline(1.0, color="grey", linewidth=0.8)
    right.set_yscale("log")
    right.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    right.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
    right.set_xlabel("block")
    right.set_ylabel("RMS(dL/dx) / RMS(dL/dy)")
    right.set_title("gradient gain through each block")
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
    # One legend for both panels (the same nets, drawn alike), outside them on the right.
    right.legend(
        title="dashed: plain, solid: residual",
        fontsize=8,
        title_fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
    )
    if title:
        fig.suptitle(title)
    return _save(fig, Path(path))


def plot_responses(results: Sequence, path: str | Path, title: str = "") -> Path:
    """The paper's Fig. 7: std of each 3x3 layer's response, by layer (top) and sorted (bottom).

    `results` are `Responses` (or their `to_dict()`s); plain nets dashed, ResNets solid, one
    colour per depth.

    >>> from resnets.analysis.responses import responses_for_checkpoints
    >>> plot_responses(responses_for_checkpoints(["runs/plain20/checkpoints/best.pt", "runs/r20/checkpoints/best.pt"]),
    ...                "fig7.png")
    PosixPath('fig7.png')
    """
    dicts = [_as_dict(r) for r in results]
    colours = _depth_colours([d["depth"] for d in dicts])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7))
    for d in dicts:
        style = _style(d, colours)
        top.plot([la["index"] for la in d["layers"]], [la["std"] for la in d["layers"]], **style, label=_label(d))
        bottom.plot(range(1, len(d["sorted"]) + 1), d["sorted"], **style, label=_label(d))
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    stds = [s for d in dicts for s in d["sorted"] if s > 0]
    for ax in (top, bottom):
        ax.set_ylabel("std")
        ax.grid(alpha=0.3, which="both")
        if stds and max(stds) > 20 * min(stds):  # a net that failed to train would flatten the others
            ax.set_yscale("log")
    top.legend(title="dashed: plain, solid: ResNet", fontsize=8, title_fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, Path(path))
