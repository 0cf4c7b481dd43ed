"""Training steps per second on the CPU in NCHW (contiguous) against NHWC (channels_last), alone and
beside a competing process, in one process with the two formats alternating, so that the machine's
drift touches both alike.

Each case trains its model on random batches (forward, backward, SGD step with momentum), the same
step as `resnets train`'s eager step, and reports the median images/s of its rounds in each format.
The competing process is a second Python process spinning on one core, as a data-loading worker or
another user's job would.

    python benchmarks/channels_last_cpu.py --rounds 5 --out channels_last.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import torch

from resnets import create_model
from resnets.hardware import describe

# (model, channels, side, batch): the CIFAR nets at their size, ResNet-18 on Fashion-MNIST-sized and small
# ImageNet-style images.
CASES = (
    ("resnet20", 3, 32, 128),
    ("resnet56", 3, 32, 128),
    ("resnet18", 1, 28, 64),
    ("resnet18", 3, 64, 32),
)
FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def steps(model_name: str, channels: int, side: int, batch: int, fmt: torch.memory_format, n: int) -> float:
    """Images/s of `n` training steps (after 2 of warm-up) in memory format `fmt`."""
    torch.manual_seed(0)
    model = create_model(model_name, in_channels=channels, num_classes=10).to(memory_format=fmt)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, channels, side, side).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(n):
        step()
    return n * batch / (time.perf_counter() - start)


@contextlib.contextmanager
def competing(on: bool) -> Iterator[None]:
    """A second process spinning on one core while the block runs (none when `on` is false)."""
    if not on:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        spinner.kill()
        spinner.wait()


def measure(rounds: int, n: int, load: bool) -> list[dict]:
    results = []
    for model_name, channels, side, batch in CASES:
        rates: dict[str, list[float]] = {name: [] for name in FORMATS}
        with competing(load):
            for r in range(rounds):
                order = list(FORMATS) if r % 2 == 0 else list(reversed(FORMATS))
                for name in order:
                    rates[name].append(steps(model_name, channels, side, batch, FORMATS[name], n))
        median = {name: statistics.median(v) for name, v in rates.items()}
        slower = sum(c < b for c, b in zip(rates["channels_last"], rates["nchw"], strict=True))
        row = {
            "model": model_name, "input": f"{channels}x{side}x{side}", "batch": batch,
            "load": "a competing process" if load else "alone",
            **{f"{name}_img_s": round(median[name], 1) for name in FORMATS},
            "channels_last_vs_nchw": round(median["channels_last"] / median["nchw"], 3),
            "channels_last_slower_rounds": slower,
            "rounds": rounds,
        }  # fmt: skip
        print(
            f"{model_name:9s} {row['input']:9s} b{batch:<4d} {row['load']:20s} NCHW {row['nchw_img_s']:7.1f} img/s  "
            f"channels_last {row['channels_last_img_s']:7.1f} img/s  ({row['channels_last_vs_nchw']:.2f}x; "
            f"slower in {row['channels_last_slower_rounds']} of {rounds} rounds)",
            flush=True,
        )
        results.append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds per case and format")
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per round")
    parser.add_argument("--out", help="write the figures as JSON")
    args = parser.parse_args()
    print(f"machine: {describe(torch.device('cpu'))}; torch {torch.__version__}; {torch.get_num_threads()} threads")
    results = measure(args.rounds, args.steps, load=False) + measure(args.rounds, args.steps, load=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {"machine": describe(torch.device("cpu")), "torch": torch.__version__, "cases": results}, f, indent=1
            )


if __name__ == "__main__":
    main()
