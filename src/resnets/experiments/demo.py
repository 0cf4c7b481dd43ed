"""`make demo`: the degradation problem on real data, sized to the machine it runs on."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..hardware import resolve_device
from ..text import duration, plural
from .degradation import run_degradation, summary_text

DEPTHS = [20, 56]
# The paper's CIFAR recipe (SGD, momentum 0.9, weight decay 1e-4, He init, lr 0.1), made short:
# the lr rises and falls once over the run (one-cycle) so that 56 layers settle within a few
# hundred steps, and without augmentation, since the degradation problem is about fitting the
# training set (section 4.1: "not caused by overfitting").
SHORT_RECIPE = {"schedule": "onecycle", "lr": 0.1, "augment": False}


def demo_overrides(device_type: str) -> dict:
    """Training length for the device: a subset on a CPU (under 10 minutes on 2 cores), everything on a GPU."""
    if device_type == "cuda":
        return {**SHORT_RECIPE, "epochs": 10, "batch_size": 128, "device": "cuda"}
    # On a 2-core CPU ResNet-56 trains at about 130 img/s (BENCHMARKS.md): 16k images a net fit the budget.
    return {**SHORT_RECIPE, "epochs": 8, "batch_size": 64, "subset": 2000, "test_subset": 1000, "device": device_type}


def run_demo(out: str | Path = "runs/demo", device: str = "auto", stream=None) -> dict:
    """Train plain-20, ResNet-20, plain-56 and ResNet-56 on Fashion-MNIST; print the table and the verdict."""
    stream = stream or sys.stderr
    target = resolve_device(device)
    o = demo_overrides(target.type)
    scope = (
        "the whole dataset"
        if "subset" not in o
        else f"the first {plural(o['subset'], 'training image')} and {plural(o['test_subset'], 'test image')} "
        "(a CPU run; a GPU uses all)"
    )
    print(
        f"demo: plain and residual nets of 20 and 56 layers on Fashion-MNIST, {plural(o['epochs'], 'epoch')} "
        f"on {scope}; "
        f"SGD with momentum 0.9, weight decay 1e-4, He init, batch {o['batch_size']}, one-cycle lr peaking at "
        f"{o['lr']}, no augmentation; device {target}",
        file=stream,
        flush=True,
    )
    started = time.perf_counter()
    summary = run_degradation("fashion-mnist", DEPTHS, overrides=o, out=out, stream=stream)
    out = Path(out)
    print()
    table, _, findings = summary_text(summary, "fashion-mnist").partition("\n\n")
    print(table)
    print()
    print(findings)
    print(
        f"\nfinished in {duration(time.perf_counter() - started)}; outputs: {out / 'fig6.png'} (the paper's Fig. 6), "
        f"{out / 'table.txt'}, {out / 'summary.json'}, and one run folder per model under {out}/"
    )
    return summary
