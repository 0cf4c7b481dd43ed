"""The degradation problem (section 4.2, Fig. 6): plain and residual nets of growing depth.

Deeper plain nets reach a *higher training error* than shallower ones; residual nets do
not. Every run is an ordinary resumable training run in its own folder, so an interrupted
experiment picks up where it stopped and a finished run is reused.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from ..analysis.plots import plot_training_curves
from ..models.cifar import cifar_resnet
from ..paper import TABLE6_TEST_ERR
from ..text import table
from ..train import get_recipe, train
from ..train.checkpoint import atomic_write

FAMILIES = ("plain", "resnet")


def check_depths(depths: list[int]) -> None:
    """Refuse, before any training, a depth the CIFAR-style family does not have."""
    import torch

    for depth in depths:
        with torch.device("meta"):
            cifar_resnet(depth)  # raises with the accepted form (6n+2)


def run_degradation(
    data: str,
    depths: list[int],
    *,
    seeds: int = 1,
    recipe: str = "paper-cifar",
    overrides: dict | None = None,
    out: str | Path = "runs/degradation",
    stream=None,
) -> dict:
    """Train plain-d and ResNet-d for each depth and seed; write summary.json, fig6.png and table.txt.

    `overrides` are TrainConfig fields applied on top of the recipe (epochs, subset, ...).
    Returns the summary: per model name, the final training and test error (mean and
    standard deviation over seeds, as fractions), parameters, seeds, and per-epoch curves.

    >>> run_degradation("fashion-mnist", [20, 56], overrides={"epochs": 2, "subset": 2000})  # doctest: +SKIP
    """
    stream = stream or sys.stderr
    check_depths(depths)
    if seeds < 1:
        raise ValueError(f"seeds={seeds} must be at least 1")
    out = Path(out)
    overrides = dict(overrides or {})
    summary: dict[str, dict] = {}
    for depth in depths:
        for family in FAMILIES:
            name = f"{family}{depth}"
            finals, curves, seconds = [], None, 0.0
            for seed in range(seeds):
                config = get_recipe(recipe, name)
                if "epochs" in overrides and "iterations" not in overrides:
                    config = config.replace(iterations=None)
                config = config.replace(
                    **overrides, model=name, data=data, seed=seed, out=str(out / f"{name}-seed{seed}")
                )
                print(f"== {name}, seed {seed}: {config.out}", file=stream, flush=True)
                result = train(config, stream=stream)
                finals.append(result.final)
                seconds += result.final.get("elapsed", result.seconds)
                curves = curves or result.history
                model = result.model
            summary[name] = {
                "family": family,
                "depth": depth,
                "train_err_mean": statistics.fmean(f["train_err"] for f in finals),
                "train_err_std": statistics.pstdev(f["train_err"] for f in finals) if seeds > 1 else 0.0,
                "test_err_mean": statistics.fmean(f["test_err"] for f in finals),
                "test_err_std": statistics.pstdev(f["test_err"] for f in finals) if seeds > 1 else 0.0,
                "params": sum(p.numel() for p in model.parameters()),
                "seeds": seeds,
                "seconds": seconds,
                "curves": [{k: r.get(k) for k in ("epoch", "step", "train_err", "test_err")} for r in curves],
            }
    write_outputs(summary, out, data)
    return summary


def verdict(summary: dict) -> list[str]:
    """Sentences saying whether the degradation problem showed, depth by depth."""
    lines = []
    depths = sorted({v["depth"] for v in summary.values()})
    shallow = depths[0]
    for family, label in (("plain", "plain"), ("resnet", "ResNet")):
        base = summary.get(f"{family}{shallow}")
        for depth in depths[1:]:
            deep = summary.get(f"{family}{depth}")
            if base is None or deep is None:
                continue
            a, b = 100 * base["train_err_mean"], 100 * deep["train_err_mean"]
            relation = "higher than" if b > a else "at or below"
            lines.append(f"{label}-{depth} training error {b:.2f}% is {relation} {label}-{shallow}'s {a:.2f}%")
    return lines


def summary_table(summary: dict, data: str) -> str:
    cifar10 = data == "cifar10"
    headers = ["model", "params", "train err %", "test err %", "time s"] + (["paper test err %"] if cifar10 else [])
    rows = []

    def spread(mean: float, std: float, seeds: int) -> str:
        return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if seeds > 1 else "")

    for name, v in summary.items():
        row = [
            name,
            f"{v['params'] / 1e6:.2f}M",
            spread(v["train_err_mean"], v["train_err_std"], v["seeds"]),
            spread(v["test_err_mean"], v["test_err_std"], v["seeds"]),
            f"{v['seconds']:.0f}",
        ]
        if cifar10:
            row.append(f"{TABLE6_TEST_ERR[name]:.2f}" if name in TABLE6_TEST_ERR else "")
        rows.append(row)
    return table(headers, rows)


def write_outputs(summary: dict, out: Path, data: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    slim = {k: {f: v[f] for f in v if f != "curves"} for k, v in summary.items()}
    atomic_write(out / "summary.json", (json.dumps(slim, indent=2) + "\n").encode())
    atomic_write(out / "curves.json", (json.dumps({k: v["curves"] for k, v in summary.items()}) + "\n").encode())
    text = summary_table(summary, data) + "\n\n" + "\n".join(verdict(summary)) + "\n"
    atomic_write(out / "table.txt", text.encode())
    plot_training_curves(
        {k: v["curves"] for k, v in summary.items()},
        out / "fig6.png",
        title=f"{data}: training error (dashed) and test error (bold)",
    )
